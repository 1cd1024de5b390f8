"""Segment membership kept current by the event stream.

`SegmentTrigger` subscribes to the stream processor (`careloop.events.processor`). For each processed
batch it re-evaluates — for the persons of the batch only (and their household members when a segment
looks at households) — every segment whose members events can change (it counts events, looks at
households, or contains another segment), in dependency order, stores who entered and who left
(`segment_change`, cause ``event``) and records how long the event took from its durable write to an
up-to-date membership (`careloop_event_to_segment_seconds`).
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
        live = self._live_segments(store)
        if not persons or not live:
            return
        out = seg.update_memberships(store, persons, live, clock=self.clock, cause="event")
        self.changes += sum(o["entered"] + o["left"] for o in out.values())
        if self.metrics is not None:
            done = time.time()
            for e in events:
                if e.person_id:
                    self.metrics.segment_seconds.observe(max(0.0, done - e.received_at.timestamp()))

    def _live_segments(self, store: WorkspaceStore) -> list[seg.Segment]:
        """Segments events can change (cached for a few seconds)."""
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
        self._segments[store.workspace] = (time.monotonic(), found)
        return found
