"""The collection service: write keys, the durable writer, the stream and (optionally) a processor,
started and stopped together by the server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings
from careloop.events.metrics import EventMetrics
from careloop.events.processor import StreamProcessor
from careloop.events.sources import KeyRegistry
from careloop.events.stream import Stream, open_stream
from careloop.events.writer import EventWriter
from careloop.identity.records import cipher_for
from careloop.storage import Backend

log = logging.getLogger("careloop.events")


class IdleCheckpointer:
    """Folds the embedded store's write-ahead log into the file when writes pause for a second, so
    that checkpoints (which stop every writer) do not land in the middle of traffic."""

    def __init__(self, backend: Backend, writer: EventWriter, *, min_wal_bytes: int = 16 * 2**20) -> None:
        self.backend, self.writer, self.min_wal_bytes = backend, writer, min_wal_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="careloop-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if self.writer.idle_seconds() >= 1.0 and self.backend.wal_bytes() >= self.min_wal_bytes:
                try:
                    self.backend.checkpoint()
                    self.checkpoints += 1
                except Exception:
                    log.exception("idle checkpoint failed; DuckDB will checkpoint at its threshold")


@dataclass
class Collector:
    keys: KeyRegistry
    writer: EventWriter
    stream: Stream
    metrics: EventMetrics
    processor: StreamProcessor | None = None
    checkpointer: IdleCheckpointer | None = None
    started: bool = field(default=False)

    def start(self) -> None:
        self.writer.start()
        if self.processor is not None:
            self.processor.start()
        if self.checkpointer is not None:
            self.checkpointer.start()
        self.started = True

    def stop(self) -> None:
        """Finish the writes already accepted, then stop processing."""
        self.started = False
        self.writer.stop()
        if self.processor is not None:
            self.processor.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.stream.close()


def build_collector(
    settings: Settings,
    backend: Backend,
    *,
    clock: Clock = SYSTEM_CLOCK,
    wake_journeys: Callable[[], None] | None = None,
) -> Collector:
    metrics = EventMetrics()
    stream = open_stream(settings.stream, settings.redis_url, consumer="server")
    writer = EventWriter(
        backend,
        cipher_for(settings),
        stream=stream,
        metrics=metrics,
        clock=clock,
        max_batch_events=settings.events_batch,
        max_pending_events=settings.events_max_pending,
    )
    processor = (
        StreamProcessor(
            backend, stream, metrics=metrics, clock=clock, max_batch_events=settings.events_batch, linger=0.25
        )
        if settings.events_processor
        else None
    )
    if processor is not None:
        from careloop.journeys.worker import JourneyEvents
        from careloop.profiles.live import SegmentTrigger

        processor.subscribe(SegmentTrigger(metrics, clock=clock))
        processor.subscribe(JourneyEvents(clock=clock, wake=wake_journeys))
    backend.serve_tuning(settings.serve_wal_mb * 2**20)
    return Collector(
        KeyRegistry(backend), writer, stream, metrics, processor, IdleCheckpointer(backend, writer)
    )
