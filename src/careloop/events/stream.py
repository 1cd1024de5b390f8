"""The stream between the durable write and the processors: in-process (embedded) or Redis Streams.

Both carry `StoredEvent` notices — identifiers are blind indexes at most, never values — after the
events are committed to the store. The store stays the log of record:

- **in-process** (default): a bounded queue. When it is full the writer never waits (the events are
  already safe); the stream marks itself behind and the processor catches up from the store, from its
  checkpoint (`stream_checkpoint`). A restart catches up the same way.
- **redis**: ``XADD`` to one stream per workspace; processors in any process read it with a consumer
  group (``XREADGROUP``), acknowledge with ``XACK`` only after their work is committed, and take over
  the notices a dead consumer left pending (``XAUTOCLAIM``). The stream is capped (``MAXLEN ~``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from careloop.errors import ConfigError


@dataclass(frozen=True)
class StoredEvent:
    """What processors need to know about one stored event."""

    workspace: str
    source: str
    key: str
    event_type: str
    name: str
    channel: str
    person_id: str | None
    occurred_at: datetime
    received_at: datetime

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredEvent:
        d = orjson.loads(raw)
        for k in ("occurred_at", "received_at"):
            d[k] = datetime.fromisoformat(d[k])
        return cls(**d)


@dataclass
class Delivery:
    """A batch handed to a processor; `ack` once its work is committed."""

    events: list[StoredEvent]
    token: Any = None


class Stream(Protocol):
    name: str

    def publish(self, events: Sequence[StoredEvent]) -> None: ...

    def read(self, max_events: int, timeout: float) -> Delivery | None: ...

    def ack(self, delivery: Delivery) -> None: ...

    def close(self) -> None: ...


class InProcessStream:
    """A bounded in-memory queue; overflow sets `behind` instead of blocking the writer."""

    name = "inprocess"

    def __init__(self, capacity: int = 100_000) -> None:
        self._q: queue.Queue[StoredEvent] = queue.Queue(maxsize=capacity)
        self.behind = threading.Event()

    def publish(self, events: Sequence[StoredEvent]) -> None:
        for e in events:
            try:
                self._q.put_nowait(e)
            except queue.Full:
                self.behind.set()
                return

    def read(self, max_events: int, timeout: float) -> Delivery | None:
        try:
            first = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        events = [first]
        while len(events) < max_events:
            try:
                events.append(self._q.get_nowait())
            except queue.Empty:
                break
        return Delivery(events)

    def ack(self, delivery: Delivery) -> None:
        """Nothing to do: the processor's checkpoint in the store is what survives a restart."""

    def drain(self) -> None:
        """Forget queued notices (the processor is about to catch up from the store)."""
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return

    def depth(self) -> int:
        return self._q.qsize()

    def close(self) -> None:
        self.drain()


class RedisStream:
    """Redis Streams with one consumer group; notices survive processor crashes until acknowledged."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        key: str = "careloop:events",
        group: str = "processors",
        consumer: str = "c1",
        maxlen: int = 1_000_000,
        claim_idle_ms: int = 30_000,
    ) -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - redis is a dependency
            raise ConfigError("the Redis stream needs the redis package: pip install redis") from e
        self._r = redis.Redis.from_url(url)
        self.key, self.group, self.consumer = key, group, consumer
        self.maxlen, self.claim_idle_ms = maxlen, claim_idle_ms
        try:
            self._r.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        except redis.ConnectionError as e:
            raise ConfigError(
                f"cannot reach Redis at {url}: {e}. Start it or set CARELOOP_STREAM=inprocess"
            ) from e
        self._own_pending = True  # first read re-delivers what this consumer had not acknowledged

    def publish(self, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        pipe = self._r.pipeline(transaction=False)
        for e in events:
            pipe.xadd(self.key, {"e": e.to_json()}, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def read(self, max_events: int, timeout: float) -> Delivery | None:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        if self._own_pending:
            entries = _entries(
                self._r.xreadgroup(self.group, self.consumer, {self.key: "0"}, count=max_events)
            )
            self._own_pending = bool(entries)
        if not entries:
            claimed = self._r.xautoclaim(
                self.key, self.group, self.consumer, self.claim_idle_ms, "0-0", count=max_events
            )
            entries = [e for e in claimed[1] if e[1]]
        if not entries:
            entries = _entries(
                self._r.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.key: ">"},
                    count=max_events,
                    block=max(1, int(timeout * 1000)),
                )
            )
        if not entries:
            return None
        return Delivery([StoredEvent.from_json(f[b"e"]) for _, f in entries], [i for i, _ in entries])

    def ack(self, delivery: Delivery) -> None:
        if delivery.token:
            self._r.xack(self.key, self.group, *delivery.token)

    def pending(self) -> int:
        info = self._r.xpending(self.key, self.group)
        return int(info["pending"])

    def close(self) -> None:
        self._r.close()


def _entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 map)."""
    if not got:
        return []
    if isinstance(got, dict):
        (value,) = got.values()
        return list(value[0] if value and isinstance(value[0], list) else value)
    return list(got[0][1])


def open_stream(kind: str, redis_url: str, *, consumer: str = "c1", key: str = "careloop:events") -> Stream:
    """The stream named by CARELOOP_STREAM; `consumer` names this process in the Redis consumer group."""
    if kind == "inprocess":
        return InProcessStream()
    if kind == "redis":
        return RedisStream(redis_url, key=key, consumer=consumer)
    raise ConfigError(f"CARELOOP_STREAM={kind!r} is not known; use inprocess or redis")
