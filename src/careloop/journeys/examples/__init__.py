"""The example journeys shipped with careloop for the seed scenarios (docs/journeys.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.journeys.engine import save_journey, set_status
from careloop.messaging.content import get_content, list_content, move, save_content
from careloop.profiles.segments import all_segments, refresh, save_segment
from careloop.storage import WorkspaceStore

HERE = Path(__file__).parent
REVIEWER = "careloop-examples"


def _load(name: str) -> Any:
    return yaml.safe_load((HERE / name).read_text(encoding="utf-8"))


def example_journeys() -> list[tuple[Path, dict[str, Any]]]:
    """(file, definition) of every example journey."""
    skip = {"content.yaml", "segments.yaml"}
    return [(p, _load(p.name)) for p in sorted(HERE.glob("*.yaml")) if p.name not in skip]


def install_examples(
    store: WorkspaceStore, *, publish: bool = False, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """Save the example content (approved for a year by the example reviewer, unless an approved version
    exists), the segments they listen to (when missing) and the journeys (drafts, or published)."""
    now = clock.now()
    have = {(c.content_id, c.status) for c in list_content(store)}
    content = []
    for cid, spec in _load("content.yaml")["content"].items():
        if (cid, "approved") not in have:
            item = save_content(
                store,
                cid,
                kind=spec["kind"],
                body=spec["body"],
                title=spec.get("title", ""),
                purpose=spec.get("purpose", "marketing"),
                clock=clock,
            )
            move(
                store,
                cid,
                item.version,
                "approve",
                by=REVIEWER,
                expires_at=now + timedelta(days=365),
                clock=clock,
            )
        content.append(get_content(store, cid).content_id)
    existing = {s.name for s in all_segments(store)}
    for name, spec in _load("segments.yaml")["segments"].items():
        if name not in existing:
            save_segment(store, name, spec["definition"], spec.get("description", ""), clock=clock)
            refresh(store, name, clock=clock)
    journeys = {}
    for _, spec in example_journeys():
        pub = save_journey(store, spec, clock=clock)
        if publish:
            pub = set_status(store, pub.name, "published", clock=clock)
        journeys[pub.name] = {"version": pub.version, "status": pub.status}
    return {"content": content, "journeys": journeys}
