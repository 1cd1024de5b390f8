"""The outbox channel: each message becomes one row of ``outbox_message`` (the demo default).

Nothing leaves the machine. The table is what a demo shows, what tests and simulations count, and a relay
point for an organisation that sends through its own system (it reads new rows). One row per
(workspace, idempotency key): sending the same message again changes nothing and reports ``sent`` — on
PostgreSQL the unique index decides across processes, on DuckDB the single writer does. The address is not
stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import Field

from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult, log
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError, ConfigError

if TYPE_CHECKING:
    from careloop.storage import WorkspaceStore

TABLE = "outbox_message"


class OutboxConfig(ChannelConfig):
    stands_in_for: Literal["outbox", "sms", "wechat", "app_push", "email"] = Field(
        "outbox", description="the channel kind recorded in the `kind` column (a demo can stand in for SMS)"
    )


class OutboxChannel(Channel[OutboxConfig]):
    """Writes each message to the outbox_message table once (idempotent on the key); sends nothing."""

    name: ClassVar[str] = "outbox"
    kind: ClassVar[str] = "outbox"
    Config: ClassVar[type[ChannelConfig]] = OutboxConfig
    needs_store: ClassVar[bool] = True

    def __init__(self, config: OutboxConfig, store: WorkspaceStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(config, clock=clock)
        self.store = store

    @classmethod
    def create(
        cls, config: ChannelConfig, *, store: WorkspaceStore | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> Channel[Any]:
        if store is None:
            raise ConfigError("the outbox channel writes to the database: give it a WorkspaceStore")
        assert isinstance(config, OutboxConfig)
        return cls(config, store, clock=clock)

    def _row(self, m: OutboundMessage, at: datetime) -> dict[str, Any]:
        return {
            "idempotency_key": m.idempotency_key,
            "person_id": m.person_id,
            "channel": self.name,
            "kind": self.config.stands_in_for,
            "subject": m.subject,
            "body": m.body,
            "template_code": m.template_code,
            "template_params": orjson.dumps(dict(m.template_params)).decode() if m.template_params else None,
            "purpose": m.purpose,
            "created_at": at,
        }

    def _send(self, message: OutboundMessage) -> SendResult:
        self.store.insert_new(TABLE, [self._row(message, self.clock.now())], ["idempotency_key"])
        return SendResult.sent(message.idempotency_key)

    def send_many(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One insert for a batch (the engine's fast path); a key repeated in the batch is written once."""
        at = self.clock.now()
        rows = {m.idempotency_key: self._row(m, at) for m in messages}
        if rows:
            new = self.store.insert_new(TABLE, list(rows.values()), ["idempotency_key"])
            log.info("outbox wrote %d of %d messages (the rest were there already)", len(new), len(rows))
        return [SendResult.sent(m.idempotency_key) for m in messages]

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """Simulated receipts (demos, simulations): ``{"receipts": [{"idempotency_key", "event", "at"}]}``,
        a list of those, or one."""
        data: Any = orjson.loads(payload) if isinstance(payload, bytes) else payload
        if isinstance(data, Mapping) and "receipts" in data:
            data = data["receipts"]
        items = data if isinstance(data, list) else [data]
        out = []
        for item in items:
            if not isinstance(item, Mapping) or "idempotency_key" not in item or "event" not in item:
                raise ChannelError("an outbox receipt is {'idempotency_key': ..., 'event': ..., 'at': ...}")
            at = datetime.fromisoformat(item["at"]) if item.get("at") else self.clock.now()
            try:
                out.append(
                    Receipt(
                        event=str(item["event"]),
                        provider_message_id=str(item["idempotency_key"]),
                        at=at,
                        channel=self.name,
                        idempotency_key=str(item["idempotency_key"]),
                        url=item.get("url"),
                    )
                )
            except ValueError as e:
                raise ChannelError(f"outbox receipt: {e}") from None
        return out
