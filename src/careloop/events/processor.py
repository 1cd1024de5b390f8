"""Real-time processing: each stored event updates the patient's live activity and is offered to the
triggers that listen (journeys subscribe here; segments re-evaluate the patients an event touched).

A processor reads batches from a stream (`careloop.events.stream`), runs every handler, commits, then
records its checkpoint — the commit time of the last batch it finished — and acknowledges the batch.
With the in-process stream it first catches up from the store (events received after its checkpoint),
so a crash or a full queue loses nothing; with Redis the consumer group re-delivers what was not
acknowledged. Handlers must be idempotent per event batch or tolerate a repeat after a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.events.metrics import EventMetrics
from careloop.events.stream import InProcessStream, StoredEvent, Stream
from careloop.storage import Backend, WorkspaceStore

log = logging.getLogger("careloop.events")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLS = "source, key, event_type, name, channel, person_id, occurred_at, received_at"

#: a trigger gets the store of the events' workspace and the batch's events
Trigger = Callable[[WorkspaceStore, Sequence[StoredEvent]], None]

_ACTIVITY_UPDATE = {
    "first_event_at": "least({t}.first_event_at, {s}.first_event_at)",
    "last_event_name": "CASE WHEN {s}.last_event_at >= {t}.last_event_at THEN {s}.last_event_name "
    "ELSE {t}.last_event_name END",
    "last_event_at": "greatest({t}.last_event_at, {s}.last_event_at)",
    "events": "{t}.events + {s}.events",
    "updated_at": "{s}.updated_at",
}


def update_activity(store: WorkspaceStore, events: Sequence[StoredEvent], now: datetime) -> int:
    """Per person and channel: first / last event time, last event name, event count."""
    agg: dict[tuple[str, str], dict[str, object]] = {}
    for e in events:
        if e.person_id is None:
            continue
        a = agg.get((e.person_id, e.channel))
        if a is None:
            agg[(e.person_id, e.channel)] = {
                "person_id": e.person_id,
                "channel": e.channel,
                "first_event_at": e.occurred_at,
                "last_event_at": e.occurred_at,
                "last_event_name": e.name,
                "events": 1,
                "updated_at": now,
            }
            continue
        a["events"] = int(a["events"]) + 1  # type: ignore[call-overload]
        if e.occurred_at < a["first_event_at"]:  # type: ignore[operator]
            a["first_event_at"] = e.occurred_at
        if e.occurred_at >= a["last_event_at"]:  # type: ignore[operator]
            a["last_event_at"], a["last_event_name"] = e.occurred_at, e.name
    if agg:
        store.merge("live_activity", list(agg.values()), ("person_id", "channel"), _ACTIVITY_UPDATE)
    return len(agg)


class StreamProcessor:
    """Consumes a stream in a thread (or `run_once` in the caller's), one batch at a time."""

    def __init__(
        self,
        backend: Backend,
        stream: Stream,
        *,
        consumer: str = "processor",
        metrics: EventMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_batch_events: int = 5_000,
        linger: float = 0.0,
    ) -> None:
        self.backend = backend
        self.stream = stream
        self.consumer = consumer
        self.metrics = metrics or EventMetrics()
        self.clock = clock
        self.max_batch_events = max_batch_events
        self.triggers: list[Trigger] = []
        self.processed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._caught_up = False
        self._positions: dict[str, datetime] = {}
        self._stores: dict[str, WorkspaceStore] = {}
        self.linger = linger

    def subscribe(self, trigger: Trigger) -> None:
        """Offer every processed batch to `trigger` (journeys call this)."""
        self.triggers.append(trigger)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"careloop-{self.consumer}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(timeout=0.2)
            except Exception:
                log.exception("stream processing failed; retrying in a second")
                time.sleep(1.0)

    def run_once(self, timeout: float = 0.0) -> int:
        """Process what is waiting (catching up from the store first when needed); returns events done."""
        if isinstance(self.stream, InProcessStream) and (not self._caught_up or self.stream.behind.is_set()):
            self.stream.behind.clear()
            self.stream.drain()
            self._caught_up = True
            return self._catch_up()
        delivery = self.stream.read(self.max_batch_events, timeout)
        if delivery is None:
            self.metrics.lag.set(0)
            self.metrics.lag_seconds.set(0)
            return 0
        if self.linger and len(delivery.events) < self.max_batch_events:
            # gather what arrives in the next moment too: fewer, larger commits under load
            time.sleep(self.linger)
            more = self.stream.read(self.max_batch_events - len(delivery.events), 0.0)
            if more is not None:
                self._process(delivery.events + more.events)
                self.stream.ack(delivery)
                self.stream.ack(more)
                return len(delivery.events) + len(more.events)
        self._process(delivery.events)
        self.stream.ack(delivery)
        return len(delivery.events)

    def _process(self, events: Sequence[StoredEvent]) -> None:
        if isinstance(self.stream, InProcessStream):
            # one writer stamps commits in increasing order: a notice at or before the checkpoint was
            # already processed by a catch-up
            events = [e for e in events if e.received_at > self._positions.get(e.workspace, _EPOCH)]
            if not events:
                return
        by_ws: dict[str, list[StoredEvent]] = defaultdict(list)
        for e in events:
            by_ws[e.workspace].append(e)
        now = self.clock.now()
        for ws, evs in by_ws.items():
            store = self._stores.get(ws) or self._stores.setdefault(
                ws, self.backend.workspace(ws, create=False)
            )
            checkpoint = max(e.received_at for e in evs)
            with self.backend.transaction():
                update_activity(store, evs, now)
                self._save_checkpoint(store, checkpoint, now)
            self._positions[ws] = max(checkpoint, self._positions.get(ws, _EPOCH))
            for trigger in self.triggers:
                trigger(store, evs)
        done = time.time()
        for e in events:
            self.metrics.process_seconds.observe(max(0.0, done - e.received_at.timestamp()))
        oldest = min(e.received_at for e in events)
        self.metrics.lag_seconds.set(max(0.0, done - oldest.timestamp()))
        if isinstance(self.stream, InProcessStream):
            self.metrics.lag.set(self.stream.depth())
        self.metrics.processed.inc(len(events))
        self.processed += len(events)

    def _save_checkpoint(self, store: WorkspaceStore, position: datetime, now: datetime) -> None:
        store.merge(
            "stream_checkpoint",
            [{"consumer": self.consumer, "position": position, "updated_at": now}],
            ("consumer",),
            {"position": "greatest({t}.position, {s}.position)", "updated_at": "{s}.updated_at"},
        )

    def _catch_up(self) -> int:
        """Process stored events received after this consumer's checkpoint, in commit order."""
        done = 0
        for ws in self.backend.workspaces():
            store = self.backend.workspace(ws, create=False)
            position = store.scalar(
                "SELECT position FROM stream_checkpoint WHERE consumer = :c", {"c": self.consumer}
            )
            while True:
                params: dict[str, object] = {"n": self.max_batch_events}
                where = "received_at IS NOT NULL"
                if position is not None:
                    where += " AND received_at > :p"
                    params["p"] = position
                # whole commit batches only: stop before the last received_at when the page is full
                sql = f"SELECT {_COLS} FROM event WHERE {where} ORDER BY received_at LIMIT :n"  # noqa: S608 - fixed text
                rows = store.rows(sql, params)
                if not rows:
                    break
                if len(rows) == self.max_batch_events and rows[0]["received_at"] != rows[-1]["received_at"]:
                    last = rows[-1]["received_at"]
                    rows = [r for r in rows if r["received_at"] != last]
                elif len(rows) == self.max_batch_events:  # one commit batch larger than a page
                    sql = f"SELECT {_COLS} FROM event WHERE received_at = :r"  # noqa: S608 - fixed text
                    rows = store.rows(sql, {"r": rows[0]["received_at"]})
                events = [StoredEvent(ws, **r) for r in rows]
                self._process(events)
                done += len(events)
                position = events[-1].received_at
        return done
