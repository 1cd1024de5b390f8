"""Whatever a sender posts, checking it never raises: each message is accepted or rejected with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.events.plan import TrackingPlan
from careloop.events.rows import event_rows, identity_hints
from careloop.events.sources import Source
from careloop.events.spec import TYPES, Accepted, Rejected, parse
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import KeyRing

SOURCE = Source("default", "app", "app", "phone", None, TrackingPlan())
CIPHER = FieldCipher(KeyRing.generate())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
messages = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from([*TYPES, "nonsense"]) | json_values,
            "userId": st.text(max_size=250) | st.integers(-(2**63), 2**63 - 1) | json_values,
            "anonymousId": st.text(max_size=20) | json_values,
            "event": st.text(max_size=250) | json_values,
            "messageId": st.text(max_size=250) | json_values,
            "timestamp": st.sampled_from(["2026-11-20T08:00:00+08:00", "2026-11-20", "yesterday"])
            | json_values,
            "properties": json_values,
            "traits": json_values,
            "context": json_values,
            "groupId": json_values,
            "previousId": json_values,
        },
    )
    | json_values
)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, max_size=6), st.sampled_from([None, *TYPES]))
def test_every_message_is_accepted_or_rejected_with_a_reason(batch: list[object], call: str | None) -> None:
    received = datetime(2026, 11, 20, tzinfo=UTC)
    bodies = [{"batch": batch}] if call is None else [m for m in batch if isinstance(m, dict)]
    for body in bodies:
        out = parse(orjson.loads(orjson.dumps(body)), received, call_type=call)
        n = len(body["batch"]) if call is None else 1
        assert len(out.accepted) + len(out.rejected) == n
        for a in out.accepted:
            assert isinstance(a, Accepted) and a.type in TYPES and a.message_id and a.name
            assert a.user_id or a.anonymous_id
        # and every accepted message becomes a storable row
        hints = [identity_hints(a, SOURCE, CIPHER) for a in out.accepted]
        rows = event_rows(
            [(a, SOURCE) for a in out.accepted],
            CIPHER,
            received,
            hints,
            [[]] * len(hints),
            [None] * len(hints),
        )
        assert all(r["message"] and r["key"] for r in rows)
        for r in out.rejected:
            assert isinstance(r, Rejected) and r.reason and r.field
