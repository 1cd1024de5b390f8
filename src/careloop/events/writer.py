"""The durable write: a 200 is sent only after the event is committed to the store.

Request handlers hand their checked messages to one writer thread and wait. The writer takes every
request waiting (group commit, up to `max_batch_events`), attributes the events to patients, and in
one transaction inserts the events it has not stored before (same source and messageId = a retry),
logs the repeats, and quarantines the malformed messages with their reasons. Only then are the
requests answered and the stored events published to the stream. When more events wait than
`max_pending_events`, new requests are refused with 503 and Retry-After (the SDKs retry) — back-pressure
instead of unbounded memory.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import CareloopError
from careloop.events.attribution import Attributor
from careloop.events.metrics import EventMetrics
from careloop.events.rows import event_rows, identity_hints
from careloop.events.sources import Source
from careloop.events.spec import Accepted, Parsed, Rejected
from careloop.events.stream import StoredEvent, Stream
from careloop.privacy.dsr import SUPPRESSED_PREFIX, suppressed_events
from careloop.privacy.fields import FieldCipher
from careloop.storage import Backend, WorkspaceStore

log = logging.getLogger("careloop.events")

#: Earlier deliveries of a message are looked for among the events received since its time minus a
#: margin. With a sender timestamp the skew-corrected time (receivedAt - (sentAt - timestamp)) is the
#: same for every delivery up to network transit, so a short margin is exact; without one the time is
#: this delivery's own receipt, and the margin is how late a retry may come.
DEDUPE_MARGIN_TIMED = timedelta(minutes=15)
DEDUPE_MARGIN_UNTIMED = timedelta(days=1)


class Overloaded(CareloopError):
    """More events wait for their write than the server holds; retry after a second (HTTP 503)."""

    http_status = 503


@dataclass
class Receipt:
    """What became of one request's messages."""

    stored: int = 0
    duplicates: int = 0
    quarantined: list[Rejected] = field(default_factory=list)


@dataclass
class _Submission:
    source: Source
    parsed: Parsed
    request_id: str
    future: Future[Receipt]


class EventWriter:
    """One thread that commits what request handlers submit (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        cipher: FieldCipher,
        *,
        stream: Stream | None = None,
        metrics: EventMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_batch_events: int = 5_000,
        max_pending_events: int = 50_000,
    ) -> None:
        self.backend = backend
        self.cipher = cipher
        self.stream = stream
        self.metrics = metrics or EventMetrics()
        self.clock = clock
        self.max_batch_events = max_batch_events
        self.max_pending_events = max_pending_events
        self._q: queue.Queue[_Submission | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._attributors: dict[str, Attributor] = {}
        self._stores: dict[str, WorkspaceStore] = {}
        self._last_stamp: datetime | None = None
        self._last_write = time.monotonic()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="careloop-event-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what was submitted, then stop."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None

    # ---- submitting -----------------------------------------------------------------------------
    def submit(self, source: Source, parsed: Parsed) -> Future[Receipt]:
        """Queue one request's messages; the future resolves once they are committed."""
        n = len(parsed.accepted) + len(parsed.rejected)
        with self._pending_lock:
            if self._pending + n > self.max_pending_events and self._pending > 0:
                self.metrics.requests_refused.labels("overloaded").inc()
                raise Overloaded(
                    f"{self._pending} events are waiting to be written; retry in a second (Retry-After)"
                )
            self._pending += n
            self.metrics.pending.set(self._pending)
        fut: Future[Receipt] = Future()
        self._q.put(_Submission(source, parsed, secrets.token_hex(6), fut))
        if self._thread is None:  # not started: write in the caller's thread (CLI, tests)
            self._write(self._take_waiting([self._q.get()]))
        return fut

    # ---- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = self._take_waiting([first])
            stop = batch and batch[-1] is None
            self._write([s for s in batch if s is not None])
            if stop:
                return

    def _take_waiting(self, batch: list[_Submission | None]) -> list[_Submission | None]:
        n = sum(len(s.parsed.accepted) for s in batch if s is not None)
        while n < self.max_batch_events:
            try:
                s = self._q.get_nowait()
            except queue.Empty:
                break
            batch.append(s)
            if s is None:
                break
            n += len(s.parsed.accepted)
        return batch

    def idle_seconds(self) -> float:
        """Seconds since the last write finished (0 while requests wait)."""
        return 0.0 if self._pending else time.monotonic() - self._last_write

    def _write(self, batch: Sequence[_Submission | None]) -> None:
        subs = [s for s in batch if s is not None]
        if not subs:
            return
        self._last_write = time.monotonic()
        try:
            published = self._commit_isolating(subs)
        finally:
            self._last_write = time.monotonic()
            with self._pending_lock:
                self._pending -= sum(len(s.parsed.accepted) + len(s.parsed.rejected) for s in subs)
                self.metrics.pending.set(self._pending)
        if published and self.stream is not None:
            try:
                self.stream.publish(published)
            except Exception:
                # the events are stored; processors catch up from the store (see careloop.events.stream)
                log.exception(
                    "publishing %d stored events to the %s stream failed", len(published), self.stream.name
                )

    def _commit_isolating(self, subs: list[_Submission]) -> list[StoredEvent]:
        """Commit the group; if it fails, commit each request alone so that one request the store refuses
        fails only itself (its sender gets a 5xx and retries; nothing of it was acknowledged)."""
        try:
            return self._commit(subs)
        except Exception as e:
            if len(subs) == 1:
                log.exception("event write failed; the request is answered with an error")
                if not subs[0].future.done():
                    subs[0].future.set_exception(e)
                return []
        published: list[StoredEvent] = []
        for s in subs:
            published.extend(self._commit_isolating([s]))
        return published

    def _store(self, workspace: str) -> WorkspaceStore:
        store = self._stores.get(workspace)
        if store is None:
            store = self._stores[workspace] = self.backend.workspace(workspace, create=False)
        return store

    def _stamp(self) -> datetime:
        """The commit time of a batch, strictly increasing (processors resume after the last one seen)."""
        now = self.clock.now()
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _commit(self, subs: list[_Submission]) -> list[StoredEvent]:
        received_at = self._stamp()
        by_ws: dict[str, list[_Submission]] = defaultdict(list)
        for s in subs:
            by_ws[s.source.workspace].append(s)
        receipts = {id(s): Receipt() for s in subs}
        published: list[StoredEvent] = []
        with self.backend.transaction():
            for ws, group in by_ws.items():
                published.extend(self._commit_workspace(self._store(ws), group, receipts, received_at))
        for s in subs:
            r = receipts[id(s)]
            labels = (s.source.name,)
            for acc in s.parsed.accepted:
                self.metrics.received.labels(*labels, acc.type).inc()
            for rej in s.parsed.rejected:
                self.metrics.received.labels(*labels, rej.type or "unknown").inc()
                self.metrics.quarantined.labels(*labels, rej.type or "unknown").inc()
            s.future.set_result(r)
        return published

    def _commit_workspace(
        self,
        store: WorkspaceStore,
        subs: list[_Submission],
        receipts: dict[int, Receipt],
        received_at: datetime,
    ) -> list[StoredEvent]:
        seen: set[tuple[str, str]] = set()
        firsts: list[tuple[_Submission, Accepted]] = []
        repeats: list[tuple[_Submission, Accepted]] = []
        for s in subs:
            for acc in s.parsed.accepted:
                k = (s.source.name, acc.message_id)
                (repeats if k in seen else firsts).append((s, acc))
                seen.add(k)
        attributor = self._attributors.get(store.workspace)
        if attributor is None:
            attributor = self._attributors[store.workspace] = Attributor(store, clock=self.clock)
        hints = [identity_hints(acc, s.source, self.cipher) for s, acc in firsts]
        erased_rows: list[dict[str, Any]] = []
        erased_by = suppressed_events(store, hints)
        if any(erased_by):  # events of a person erased by a data-subject request: quarantined, no values kept
            for (s, acc), request in zip(firsts, erased_by, strict=True):
                if request:
                    erased_rows.append(
                        {
                            "id": f"q{received_at:%Y%m%d%H%M%S}{secrets.token_hex(5)}",
                            "run_id": "live",
                            "source": s.source.name,
                            "entity": "event",
                            "file": f"request {s.request_id}",
                            "field": "userId",
                            "reason": f"{SUPPRESSED_PREFIX}{request}",
                            "created_at": received_at,
                            "event_type": acc.type,
                        }
                    )
            kept = [i for i, r in enumerate(erased_by) if not r]
            firsts = [firsts[i] for i in kept]
            hints = [hints[i] for i in kept]
        who = attributor.attribute(hints, [acc.anonymous_id for _, acc in firsts])
        violations = [s.source.plan.check(acc.type, acc.name, _props(acc)) for s, acc in firsts]
        violations_of = {
            (s.source.name, acc.message_id): len(v)
            for (s, acc), v in zip(firsts, violations, strict=True)
            if v
        }
        rows = event_rows(
            [(acc, s.source) for s, acc in firsts], self.cipher, received_at, hints, violations, who.persons
        )
        since = min(
            (
                acc.occurred_at - (DEDUPE_MARGIN_TIMED if acc.timed else DEDUPE_MARGIN_UNTIMED)
                for _, acc in firsts
            ),
            default=received_at,
        )
        inserted = set(store.insert_new("event", rows, ("source", "key"), recent=("received_at", since)))
        attributor.save(who)
        published, dup_rows = [], []
        for (s, acc), person in zip(firsts, who.persons, strict=True):
            k = (s.source.name, acc.message_id)
            if k in inserted:
                receipts[id(s)].stored += 1
                self.metrics.stored.labels(s.source.name, acc.type).inc()
                if k in violations_of:
                    self.metrics.violations.labels(s.source.name, acc.type).inc()
                published.append(
                    StoredEvent(
                        store.workspace,
                        s.source.name,
                        acc.message_id,
                        acc.type,
                        acc.name,
                        s.source.channel,
                        person,
                        acc.occurred_at,
                        received_at,
                    )
                )
            else:
                repeats.append((s, acc))
        for s, acc in repeats:
            receipts[id(s)].duplicates += 1
            self.metrics.duplicates.labels(s.source.name, acc.type).inc()
            dup_rows.append(
                {
                    "source": s.source.name,
                    "message_id": acc.message_id,
                    "event_type": acc.type,
                    "received_at": received_at,
                }
            )
        if dup_rows:
            store.insert("event_duplicate", dup_rows)
        q_rows = erased_rows
        for s in subs:
            receipts[id(s)].quarantined.extend(s.parsed.rejected)
            for rej in s.parsed.rejected:
                q_rows.append(
                    {
                        "id": f"q{received_at:%Y%m%d%H%M%S}{secrets.token_hex(5)}",
                        "run_id": "live",
                        "source": s.source.name,
                        "entity": "event",
                        "file": f"request {s.request_id}",
                        "line": rej.index,
                        "field": rej.field,
                        "reason": rej.reason,
                        "raw": self.cipher.encrypt(_raw(rej.message), "raw"),
                        "created_at": received_at,
                        "event_type": rej.type,
                    }
                )
        if q_rows:
            store.insert("quarantine", q_rows)
        return published


def _props(acc: Accepted) -> Any:
    return acc.message.get("properties")


def _raw(message: Any) -> str:
    try:
        return orjson.dumps(message).decode()
    except TypeError:
        return repr(message)
