"""The Segment HTTP tracking spec: reading a request body and checking each message in it.

Pure functions, no I/O. A body is one message (``/v1/track`` ...) or ``{"batch": [...]}`` (``/v1/batch``);
batch-level ``context`` and ``integrations`` apply to every message that lacks its own. Each message
becomes an `Accepted` (normalised, with the skew-corrected time it happened) or a `Rejected` with the
field at fault and a reason a sender can act on. Limits follow Segment's: 32 KB per message, 500 KB per
request (after gzip is undone).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from careloop.errors import CareloopError

TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_ID_CHARS = 200


class PayloadTooLarge(CareloopError):
    """A request body is over the size limit (HTTP 413); split the batch and send again."""

    http_status = 413


class MalformedBody(CareloopError):
    """The body is not JSON or not a message / batch at all (HTTP 400)."""


@dataclass(frozen=True)
class Accepted:
    """A message that follows the spec, ready to be stored."""

    index: int
    type: str
    message_id: str
    name: str
    occurred_at: datetime
    user_id: str | None
    anonymous_id: str | None
    message: dict[str, Any]  # the message as sent (batch context applied), kept whole, encrypted
    timed: bool = True  # the sender gave a timestamp (occurred_at is not simply the receive time)


@dataclass(frozen=True)
class Rejected:
    """A message that cannot be stored as an event; it goes to quarantine with this reason."""

    index: int
    type: str | None
    field: str
    reason: str
    message: Any


@dataclass
class Parsed:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def read_body(raw: bytes, content_encoding: str | None, *, limit: int = MAX_REQUEST_BYTES) -> Any:
    """The JSON value of a request body, gunzipped when the sender compressed it."""
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {limit}: send smaller batches")
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            d = zlib.decompressobj(wbits=31 if "gzip" in encoding else 15)
            raw = d.decompress(raw, limit + 1)
        except (zlib.error, OSError, EOFError) as e:
            raise MalformedBody(
                f"Content-Encoding says {encoding} but the body does not decompress: {e}"
            ) from e
        if len(raw) > limit or d.unconsumed_tail:
            raise PayloadTooLarge(
                f"request body is over {limit} bytes once decompressed: send smaller batches"
            )
    elif encoding not in ("", "identity"):
        raise MalformedBody(f"Content-Encoding {encoding!r} is not supported; send gzip or plain JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedBody(f"body is not valid JSON: {e}") from e


def gzip_json(value: Any) -> bytes:
    """A gzip-compressed JSON body (for tests and benchmarks)."""
    return gzip.compress(orjson.dumps(value))


def parse(body: Any, received_at: datetime, *, call_type: str | None = None) -> Parsed:
    """Check every message of a body sent to ``/v1/<call_type>`` (None: ``/v1/batch``)."""
    if not isinstance(body, dict):
        raise MalformedBody('body must be a JSON object: a message, or {"batch": [messages]}')
    if call_type is None:
        batch = body.get("batch")
        if not isinstance(batch, list):
            raise MalformedBody('a /v1/batch body needs "batch": a list of messages')
        shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
        sent_at = body.get("sentAt")
        items: list[Any] = batch
    else:
        shared, sent_at, items = {}, body.get("sentAt"), [body]
    out = Parsed()
    for i, msg in enumerate(items):
        result = check(msg, i, received_at, call_type=call_type, shared=shared, batch_sent_at=sent_at)
        (out.accepted if isinstance(result, Accepted) else out.rejected).append(result)  # type: ignore[arg-type]
    return out


def check(
    msg: Any,
    index: int,
    received_at: datetime,
    *,
    call_type: str | None = None,
    shared: dict[str, Any] | None = None,
    batch_sent_at: Any = None,
) -> Accepted | Rejected:
    """One message: normalised, or rejected with the field at fault."""
    if not isinstance(msg, dict):
        return Rejected(index, None, "message", "a message must be a JSON object", msg)
    claimed = msg.get("type")
    mtype = call_type or (claimed if isinstance(claimed, str) else None)
    if call_type and claimed not in (None, call_type):
        return Rejected(index, call_type, "type", f"type {claimed!r} sent to /v1/{call_type}", msg)
    if mtype not in TYPES:
        return Rejected(index, None, "type", f"type must be one of {', '.join(TYPES)}", msg)
    for key, value in (shared or {}).items():
        msg.setdefault(key, value)
    encoded = orjson.dumps(msg)
    if len(encoded) > MAX_MESSAGE_BYTES:
        return Rejected(index, mtype, "message", f"message is over {MAX_MESSAGE_BYTES} bytes", msg)
    if (
        b"\\u0000" in encoded
    ):  # PostgreSQL text and JSON cannot hold it; one such message must not fail a batch
        return Rejected(index, mtype, "message", "message contains a NUL (\\u0000) character", msg)
    user_id, anonymous_id = _id(msg.get("userId")), _id(msg.get("anonymousId"))
    if msg.get("userId") is not None and user_id is None:
        return Rejected(
            index, mtype, "userId", f"userId must be a string of 1-{MAX_ID_CHARS} characters", msg
        )
    if msg.get("anonymousId") is not None and anonymous_id is None:
        return Rejected(
            index, mtype, "anonymousId", f"anonymousId must be a string of 1-{MAX_ID_CHARS} characters", msg
        )
    if user_id is None and anonymous_id is None:
        return Rejected(index, mtype, "userId", "every message needs a userId or an anonymousId", msg)
    for obj in ("properties", "traits", "context", "integrations"):
        if msg.get(obj) is not None and not isinstance(msg[obj], dict):
            return Rejected(index, mtype, obj, f"{obj} must be a JSON object", msg)
    name, problem = _name(msg, mtype)
    if problem:
        return Rejected(index, mtype, problem[0], problem[1], msg)
    message_id = msg.get("messageId")
    if message_id is None:
        message_id = "h-" + hashlib.sha256(orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    elif _id(message_id) is None:
        return Rejected(
            index, mtype, "messageId", f"messageId must be a string of 1-{MAX_ID_CHARS} characters", msg
        )
    occurred, problem = _occurred_at(msg, received_at, batch_sent_at)
    if problem:
        return Rejected(index, mtype, problem[0], problem[1], msg)
    return Accepted(
        index=index,
        type=mtype,
        message_id=str(message_id),
        name=name,
        occurred_at=occurred,
        user_id=user_id,
        anonymous_id=anonymous_id,
        message=msg,
        timed=msg.get("timestamp", msg.get("originalTimestamp")) is not None,
    )


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_ID_CHARS:
        return value.strip()
    return None


def _name(msg: dict[str, Any], mtype: str) -> tuple[str, tuple[str, str] | None]:
    if mtype == "track":
        event = msg.get("event")
        if not isinstance(event, str) or not event.strip() or len(event) > MAX_ID_CHARS:
            return "", ("event", f'a track call needs "event": its name, 1-{MAX_ID_CHARS} characters')
        return event.strip(), None
    if mtype in ("page", "screen"):
        name = msg.get("name")
        if name is not None and not isinstance(name, str):
            return "", ("name", f"a {mtype} name must be a string")
        return (name or "").strip() or mtype, None
    if mtype == "group" and _id(msg.get("groupId")) is None:
        return "", ("groupId", "a group call needs a groupId")
    if mtype == "alias" and (_id(msg.get("previousId")) is None or _id(msg.get("userId")) is None):
        return "", ("previousId", "an alias call needs previousId and userId")
    return mtype, None


def _occurred_at(
    msg: dict[str, Any], received_at: datetime, batch_sent_at: Any
) -> tuple[datetime, tuple[str, str] | None]:
    """Segment's clock-skew correction: timestamp = receivedAt - (sentAt - timestamp)."""
    raw_ts = msg.get("timestamp", msg.get("originalTimestamp"))
    if raw_ts is None:
        return received_at, None
    ts = _time(raw_ts)
    if ts is None:
        return received_at, ("timestamp", "timestamp must be an ISO-8601 date-time with a time zone")
    sent = _time(msg.get("sentAt", batch_sent_at))
    if sent is not None:
        return received_at - (sent - ts), None
    return ts, None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None
