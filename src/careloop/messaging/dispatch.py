"""Delivery of reserved sends: the ledger's pending rows go out through their channel, with retries,
back-off and a dead letter.

The journey engine reserves a send (`message_send`, status ``pending``) in the same transaction that
moves the patient on. The dispatcher then claims due pending rows (a lease on ``next_attempt_at``: a
crashed dispatcher's rows come back after `LEASE`), renders the approved content version for the
patient, looks up the address (decrypted only here, in memory: the golden record's phone for SMS, the
patient's openid / e-mail / app user id for the other channels) and calls the channel with the row's
idempotency key. ``sent`` and ``failed`` are final; ``retry`` waits (the provider's ``retry_after``, or
30 s doubling per attempt) until `send_max_attempts`, then the row is dead-lettered (``dead``) with the
last error. The outbox channel writes its row keyed by the same idempotency key, so a delivery repeated
after a crash is a no-op there: each reserved send is in the outbox exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from careloop.channels.base import KINDS, Channel, OutboundMessage, SendResult
from careloop.channels.registry import build_channel
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError
from careloop.messaging.content import ContentItem, get_content
from careloop.privacy.fields import FieldCipher
from careloop.profiles.segment_eval import person_traits
from careloop.storage import WorkspaceStore

LEASE = timedelta(minutes=5)
#: channel kind -> the identifier kind that addresses it (SMS uses the golden record's phone)
ADDRESS_KINDS = {"wechat": "openid", "email": "email", "app_push": "app_user_id"}

Render = Callable[[ContentItem, Mapping[str, Any], str], tuple[str, str | None]]  # -> body, subject


def rich_render(item: ContentItem, variables: Mapping[str, Any], language: str) -> tuple[str, str | None]:
    """`careloop.messaging.templates.render`: the patient's language, sandboxed Jinja2 with the patient's
    traits, and for SMS the signature, the opt-out text and the segment limit."""
    from careloop.messaging.templates import MessageTemplate, SmsRules, personalisation, render

    rendered = render(
        MessageTemplate.from_content({k: v for k, v in item.body.items() if k != "params"}, item.content_id),
        personalisation(None, variables),
        kind=item.kind,
        language=language,
        sms=SmsRules(sign_name=get_settings().sms_sign_name),
    )
    return rendered.body, rendered.subject


def template_params(item: ContentItem, variables: Mapping[str, Any]) -> dict[str, str]:
    """The parameters of a provider-side template (SMS template codes, WeChat template messages), as the
    content item's ``params`` names them: ``"name=surname,date=next_visit"`` maps the provider's parameter
    names to traits (Aliyun, WeChat); ``"surname,next_visit"`` gives them in order as 1, 2, … (Tencent).
    No ``params``: none — traits are never sent to a provider unasked."""
    spec = item.body.get("params", "")
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
        key, _, trait = part.partition("=") if "=" in part else (str(i + 1), "", part)
        if trait not in variables:
            raise ConfigError(
                f"content {item.content_id}: template parameter {key} needs trait {trait!r}, which this patient has not"
            )
        value = variables[trait]
        out[key] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def load_routes(path: Path | None) -> dict[str, dict[str, Any]]:
    """kind -> {channel: plugin name, config: {...}}: the file's, over the default of the outbox for all."""
    routes: dict[str, dict[str, Any]] = {
        k: {"channel": "outbox", "config": {"stands_in_for": k}} for k in KINDS
    }
    if path is None:
        return routes
    if not path.exists():
        raise ConfigError(f"CARELOOP_CHANNELS_FILE {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    given = data.get("channels", data) if isinstance(data, dict) else None
    if not isinstance(given, dict):
        raise ConfigError(
            f"{path}: `channels:` maps kinds ({', '.join(KINDS)}) to {{channel: NAME, config: {{...}}}}"
        )
    for kind, route in given.items():
        if kind not in KINDS:
            raise ConfigError(f"{path}: unknown channel kind {kind!r}; kinds are {', '.join(KINDS)}")
        if not isinstance(route, dict) or not isinstance(route.get("channel"), str):
            raise ConfigError(f"{path}: {kind}: {{channel: NAME, config: {{...}}}} (`careloop channel list`)")
        routes[kind] = {"channel": route["channel"], "config": dict(route.get("config") or {})}
    return routes


class Router:
    """The channel instance serving each kind, per workspace (built once, validated on first use)."""

    def __init__(self, routes: dict[str, dict[str, Any]], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.routes, self.clock = routes, clock
        self._built: dict[tuple[str, str], Channel[Any]] = {}

    def __call__(self, store: WorkspaceStore, kind: str) -> Channel[Any]:
        key = (store.workspace, kind)
        if key not in self._built:
            route = self.routes.get(kind)
            if route is None:
                raise ConfigError(f"no channel serves {kind!r}; route it in CARELOOP_CHANNELS_FILE")
            self._built[key] = build_channel(route["channel"], route["config"], store=store, clock=self.clock)
        return self._built[key]


@dataclass
class Dispatcher:
    """Delivers due pending sends of a workspace; `channel_for(store, kind)` gives the channel of a kind."""

    channel_for: Callable[[WorkspaceStore, str], Channel[Any]]
    cipher: FieldCipher | None = None
    clock: Clock = SYSTEM_CLOCK
    render: Render = rich_render
    batch: int = 500

    @classmethod
    def from_settings(cls, *, clock: Clock = SYSTEM_CLOCK) -> Dispatcher:
        """Channels routed by CARELOOP_CHANNELS_FILE (default: the outbox), the configured key ring."""
        from careloop.identity.records import cipher_for

        settings = get_settings()
        return cls(
            Router(load_routes(settings.channels_file), clock=clock), cipher=cipher_for(settings), clock=clock
        )

    def __call__(self, store: WorkspaceStore) -> dict[str, int]:
        now = self.clock.now()
        rows = self._claim(store, now)
        counts = {"sent": 0, "failed": 0, "retry": 0, "dead": 0}
        if not rows:
            return counts
        traits = person_traits(store, sorted({r["person_id"] for r in rows}))
        contents: dict[tuple[str, int], ContentItem] = {}
        ready: dict[str, list[tuple[dict[str, Any], OutboundMessage]]] = {}
        done: list[tuple[dict[str, Any], SendResult]] = []
        for row in rows:
            prepared = self._prepare(store, row, traits.get(row["person_id"], {}), contents)
            if isinstance(prepared, SendResult):
                done.append((row, prepared))
            else:
                ready.setdefault(row["channel"], []).append((row, prepared))
        for kind, group in ready.items():
            channel = self.channel_for(store, kind)
            send_many = getattr(channel, "send_many", None)
            results = (
                send_many([m for _, m in group])
                if callable(send_many)
                else [channel.send(m) for _, m in group]
            )
            done.extend((row, result) for (row, _), result in zip(group, results, strict=True))
        # the common case — sent, the provider's id being the key itself (the outbox) or none — in one
        # statement; any other outcome row by row
        bulk = {
            row["idempotency_key"]
            for row, r in done
            if r.status == "sent" and r.provider_message_id in (None, row["idempotency_key"])
        }
        if bulk:
            store.execute(
                "UPDATE message_send SET status = 'sent', attempts = attempts + 1, reason = NULL, "
                "provider_message_id = idempotency_key, sent_at = :now, updated_at = :now, next_attempt_at = NULL "
                "WHERE idempotency_key = ANY(:k)",
                {"now": now, "k": sorted(bulk)},
            )
            counts["sent"] += len(bulk)
        for row, r in done:
            if row["idempotency_key"] not in bulk:
                counts[self._finish(store, row, r, int(row["attempts"] or 0) + 1, now)] += 1
        self._audit(store, rows, counts)
        return counts

    def _audit(self, store: WorkspaceStore, rows: list[dict[str, Any]], counts: dict[str, int]) -> None:
        """One audit entry per batch (action send): outcomes, channels and purposes counted, no one named."""
        from careloop.privacy.audit import audit_event

        channels: dict[str, int] = {}
        purposes: dict[str, int] = {}
        for row in rows:
            channels[row["channel"]] = channels.get(row["channel"], 0) + 1
            purpose = row["purpose"] or "service"
            purposes[purpose] = purposes.get(purpose, 0) + 1
        audit_event(
            store,
            actor="worker:dispatcher",
            action="send",
            target_kind="send_batch",
            target_id=None,
            detail={**counts, "messages": len(rows), "channels": channels, "purposes": purposes},
        )

    def _claim(self, store: WorkspaceStore, now: datetime) -> list[dict[str, Any]]:
        keys = [
            r[0]
            for r in store.tuples(
                "SELECT idempotency_key FROM message_send WHERE status = 'pending' AND next_attempt_at <= :now "
                "ORDER BY next_attempt_at LIMIT :lim",
                {"now": now, "lim": self.batch},
            )
        ]
        if not keys:
            return []
        lease = now + LEASE
        store.execute(
            "UPDATE message_send SET next_attempt_at = :lease WHERE idempotency_key = ANY(:k) "
            "AND status = 'pending' AND next_attempt_at <= :now",
            {"lease": lease, "k": keys, "now": now},
        )
        return store.rows(
            "SELECT idempotency_key, person_id, channel, purpose, content_id, content_version, attempts "
            "FROM message_send WHERE idempotency_key = ANY(:k) AND status = 'pending' AND next_attempt_at = :lease",
            {"k": keys, "lease": lease},
        )

    def _prepare(
        self,
        store: WorkspaceStore,
        row: dict[str, Any],
        traits: dict[Any, Any],
        contents: dict[tuple[str, int], ContentItem],
    ) -> OutboundMessage | SendResult:
        """The message to send, or the final result when it cannot be sent (template, address)."""
        ref = (row["content_id"], int(row["content_version"]))
        if ref not in contents:
            contents[ref] = get_content(store, *ref)
        item = contents[ref]
        variables = {t: v for (t, k), v in traits.items() if k == ""}
        try:
            body, subject = self.render(item, variables, "zh")
            params = template_params(item, variables)
        except Exception as e:  # a template that cannot render for this patient never will
            return SendResult.failed(f"template: {type(e).__name__}: {e}")
        to = self._address(store, row["channel"], row["person_id"])
        if to is None:
            return SendResult.failed("no_address")
        return OutboundMessage(
            idempotency_key=row["idempotency_key"],
            person_id=row["person_id"],
            to=to,
            body=body,
            subject=subject,
            template_code=item.template_code,
            template_params=params,
            purpose=row["purpose"] or "service",
            unsubscribe_url=self._unsubscribe_url(row),
        )

    def _unsubscribe_url(self, row: dict[str, Any]) -> str | None:
        """E-mail carries a one-click unsubscribe link (List-Unsubscribe), signed for its person."""
        if row["channel"] != "email" or self.cipher is None:
            return None
        from careloop.messaging.inbound import unsubscribe_token

        token = unsubscribe_token(self.cipher, row["person_id"], "email")
        return f"{get_settings().public_url.rstrip('/')}/v1/unsubscribe?t={token}"

    def _finish(
        self, store: WorkspaceStore, row: dict[str, Any], result: SendResult, attempts: int, now: datetime
    ) -> str:
        status: str = result.status
        params: dict[str, Any] = {"k": row["idempotency_key"], "a": attempts, "now": now}
        if status == "retry":
            if attempts >= get_settings().send_max_attempts:
                status = "dead"
            else:
                wait = result.retry_after if result.retry_after is not None else 30.0 * 2 ** (attempts - 1)
                params["next"] = now + timedelta(seconds=wait)
        params.update(
            s="pending" if status == "retry" else status, reason=result.error, pid=result.provider_message_id
        )
        sets = "status = :s, attempts = :a, reason = :reason, provider_message_id = :pid, updated_at = :now"
        if status == "sent":
            sets += ", sent_at = :now, next_attempt_at = NULL"
        elif status == "retry":
            sets += ", next_attempt_at = :next"
        else:
            sets += ", next_attempt_at = NULL"
        store.execute(f"UPDATE message_send SET {sets} WHERE idempotency_key = :k", params)  # noqa: S608 - fixed fragments
        return status

    def _address(self, store: WorkspaceStore, channel: str, person: str) -> str | None:
        if channel == "outbox":
            return person  # the outbox records the person, not an address
        if self.cipher is None:
            return None
        if channel == "sms":
            token = store.scalar("SELECT phone FROM person WHERE person_id = :p", {"p": person})
            return self.cipher.decrypt(token, "phone") if token else None
        kind = ADDRESS_KINDS.get(channel)
        if kind is None:
            return None
        token = store.scalar(
            "SELECT i.value FROM patient_identifier i JOIN identity_link l ON l.source = i.source "
            "AND l.patient_key = i.patient_key WHERE l.person_id = :p AND i.kind = :kind "
            "ORDER BY i.valid_from DESC NULLS LAST LIMIT 1",
            {"p": person, "kind": kind},
        )
        return self.cipher.decrypt(token, kind) if token else None
