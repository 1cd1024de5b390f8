"""Segment membership kept current by the event stream.

`SegmentTrigger` subscribes to the stream processor (`careloop.events.processor`). For each processed
batch it re-evaluates — for the persons of the batch only — every segment whose members events can
change (it counts events, or contains such a segment), in dependency order, stores who entered and who
left (`segment_change`, cause ``event``) and records how long the event took from its durable write to
an up-to-date membership (`careloop_event_to_segment_seconds`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.events.metrics import EventMetrics
from careloop.events.stream import StoredEvent
from careloop.profiles import segments as seg
from careloop.storage import WorkspaceStore

log = logging.getLogger("careloop.profiles")
_RELOAD_SECONDS = 10.0


class SegmentTrigger:
    def __init__(self, metrics: EventMetrics | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.metrics = metrics
        self.clock = clock
        self._segments: dict[str, tuple[float, list[seg.Segment]]] = {}
        self.changes = 0

    def __call__(self, store: WorkspaceStore, events: Sequence[StoredEvent]) -> None:
        persons = sorted({e.person_id for e in events if e.person_id})
        if not persons:
            return
        for s in self._live_segments(store):
            out = seg._apply(store, s, as_of=None, clock=self.clock, persons=persons, cause="event")
            self.changes += out["entered"] + out["left"]
        if self.metrics is not None:
            done = time.time()
            for e in events:
                if e.person_id:
                    self.metrics.segment_seconds.observe(max(0.0, done - e.received_at.timestamp()))

    def _live_segments(self, store: WorkspaceStore) -> list[seg.Segment]:
        """Segments events can change, referenced ones first (cached for a few seconds)."""
        cached = self._segments.get(store.workspace)
        if cached and time.monotonic() - cached[0] < _RELOAD_SECONDS:
            return cached[1]
        found = []
        for s in seg.all_segments(store):  # one query: definitions only, no member counts
            try:
                if seg.has_event_conditions(s.definition):
                    found.append(s)
            except Exception:  # a stored definition that no longer parses is skipped, not fatal
                log.warning("segment skipped by the live trigger: its definition does not parse")
        ordered = _dependency_order(found)
        self._segments[store.workspace] = (time.monotonic(), ordered)
        return ordered


def _dependency_order(segments: list[seg.Segment]) -> list[seg.Segment]:
    by_name = {s.name: s for s in segments}
    done: list[seg.Segment] = []
    seen: set[str] = set()

    def visit(s: seg.Segment) -> None:
        if s.name in seen:
            return
        seen.add(s.name)
        for ref in sorted(seg._segment_refs(seg.parse(s.definition))):
            if ref in by_name:
                visit(by_name[ref])
        done.append(s)

    for s in segments:
        visit(s)
    return done
