"""A journey worker process for the crash test: `python -m tests.journeys.crash_worker URL OFFSET_MIN MODE [BATCH]`.

MODE ``loop`` works in small batches until killed; ``drain`` works until nothing is left, then exits.
The clock runs OFFSET_MIN minutes ahead of real time (a restarted worker after the leases expired).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta

from careloop.channels.outbox import OutboxChannel, OutboxConfig
from careloop.clock import SystemClock
from careloop.journeys.worker import JourneyWorker
from careloop.messaging.dispatch import Dispatcher
from careloop.storage import connect


class AheadClock(SystemClock):
    def __init__(self, minutes: float) -> None:
        self.ahead = timedelta(minutes=minutes)

    def now(self) -> datetime:
        return super().now() + self.ahead


def main(url: str, offset: float, mode: str, batch: int = 15) -> None:
    clock = AheadClock(offset)
    backend = connect(url, clock=clock)
    store = backend.workspace("default")
    outbox = OutboxChannel(OutboxConfig(), store, clock=clock)
    dispatcher = Dispatcher(lambda s, kind: outbox, clock=clock, batch=batch)
    worker = JourneyWorker(backend, clock=clock, batch=batch, deliver=dispatcher)
    while True:
        out = worker.tick(["default"])["default"]
        idle = out["steps"] == 0 and sum(out["delivered"].values()) == 0
        if mode == "drain" and idle:
            return
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:5]))
