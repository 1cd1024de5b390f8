"""Prometheus metrics of the collection API and the stream (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EventMetrics:
    """One registry per app, so that several apps (tests, benchmarks) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("source", "type")
        self.received = Counter(
            "careloop_events_received", "messages received (valid or not)", labels, registry=self.registry
        )
        self.stored = Counter(
            "careloop_events_stored", "events stored, first delivery", labels, registry=self.registry
        )
        self.duplicates = Counter(
            "careloop_events_duplicate",
            "repeated deliveries (same messageId), not stored again",
            labels,
            registry=self.registry,
        )
        self.quarantined = Counter(
            "careloop_events_quarantined",
            "malformed messages kept in quarantine",
            labels,
            registry=self.registry,
        )
        self.violations = Counter(
            "careloop_events_plan_violations",
            "stored events that break their source's tracking plan",
            labels,
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "careloop_requests_refused", "requests refused whole", ("reason",), registry=self.registry
        )
        self.processed = Counter(
            "careloop_events_processed", "events the stream processor finished", registry=self.registry
        )
        self.pending = Gauge(
            "careloop_events_write_pending",
            "events received, waiting for their durable write",
            registry=self.registry,
        )
        self.lag = Gauge(
            "careloop_stream_lag_events",
            "stored events the stream processor has not finished yet",
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "careloop_stream_lag_seconds",
            "age of the oldest event waiting for the processor",
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "careloop_ack_seconds",
            "request received -> durably stored and acknowledged",
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.segment_seconds = Histogram(
            "careloop_event_to_segment_seconds",
            "event stored -> segment memberships of its person re-evaluated",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5),
        )
        self.process_seconds = Histogram(
            "careloop_event_to_profile_seconds",
            "event stored -> profile updated and triggers offered",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5),
        )
