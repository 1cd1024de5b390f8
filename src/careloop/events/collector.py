"""The collection service: write keys, the durable writer, the stream and (optionally) a processor,
started and stopped together by the server."""

from __future__ import annotations

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


@dataclass
class Collector:
    keys: KeyRegistry
    writer: EventWriter
    stream: Stream
    metrics: EventMetrics
    processor: StreamProcessor | None = None
    started: bool = field(default=False)

    def start(self) -> None:
        self.writer.start()
        if self.processor is not None:
            self.processor.start()
        self.started = True

    def stop(self) -> None:
        """Finish the writes already accepted, then stop processing."""
        self.writer.stop()
        if self.processor is not None:
            self.processor.stop()
        self.stream.close()
        self.started = False


def build_collector(settings: Settings, backend: Backend, *, clock: Clock = SYSTEM_CLOCK) -> Collector:
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
        StreamProcessor(backend, stream, metrics=metrics, clock=clock, max_batch_events=settings.events_batch)
        if settings.events_processor
        else None
    )
    return Collector(KeyRegistry(backend), writer, stream, metrics, processor)
