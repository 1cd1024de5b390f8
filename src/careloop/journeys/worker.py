"""The journey worker: triggers, due entries and deliveries, in a loop — in-process for the embedded
store (`careloop serve`), or as its own process against PostgreSQL (`careloop worker`, several of them
share the work through entry leases and row locks).

`JourneyEvents` subscribes to the event stream processor: goals, waits for events and event triggers
react to live events within the processor's batch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.events.stream import StoredEvent
from careloop.journeys import engine, triggers
from careloop.storage import Backend, WorkspaceStore

log = logging.getLogger("careloop.journeys")


class JourneyEvents:
    """Stream processor subscriber: hands each batch's events to the journeys, then wakes the worker
    (`wake`) when the events entered or woke someone, so the first step runs at once, not at the next poll."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, wake: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.wake = wake

    def __call__(self, store: WorkspaceStore, events: Sequence[StoredEvent]) -> None:
        arrivals = [(e.person_id, e.name, e.occurred_at) for e in events if e.person_id]
        if arrivals:
            out = engine.on_events(store, arrivals, clock=self.clock)
            if self.wake is not None and (out["entered"] or out["woken"]):
                self.wake()


Deliver = Callable[[WorkspaceStore], dict[str, Any]]


class JourneyWorker:
    """One worker over the workspaces of a backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = SYSTEM_CLOCK,
        batch: int = 1000,
        interval: float = 1.0,
        deliver: Deliver | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.backend, self.clock, self.batch, self.interval = backend, clock, batch, interval
        self.deliver = deliver
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, workspaces: Sequence[str] | None = None) -> dict[str, Any]:
        """One pass: triggers, every due entry (batch after batch), then deliveries."""
        out: dict[str, Any] = {}
        for ws in workspaces or self.backend.workspaces():
            store = self.backend.workspace(ws, create=False)
            entered = triggers.tick(store, clock=self.clock)
            steps = sends = 0
            while True:
                summary = engine.run_due(store, worker=self.worker_id, limit=self.batch, clock=self.clock)
                steps, sends = steps + summary.steps, sends + summary.sends
                if summary.claimed < self.batch:
                    break
            delivered = self.deliver(store) if self.deliver else {}
            out[ws] = {"entered": entered, "steps": steps, "reserved": sends, "delivered": delivered}
        return out

    def wake(self) -> None:
        """Run the next pass now (events entered or woke someone)."""
        self._wake.set()

    def run_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # a bad tick is logged and retried; the worker keeps running
                log.exception("journey worker tick failed")
            self._wake.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_until_stopped, name="careloop-journeys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
