"""The one base class of every channel, and the values that go in and out of it.

A channel is a plugin (entry point group ``careloop.channels``): a `Channel` subclass with a `name`, a
`kind` and a pydantic `Config`. The engine builds one instance per configured channel and calls `send` from
worker threads; providers call back with delivery receipts, opens and clicks, which `parse_receipts` turns
into `Receipt` values the caller records as events (``message_delivered`` …).

``send`` never raises for a delivery outcome: every answer of the provider (sent, refused, throttled, the
network down) comes back as a `SendResult` with status ``sent``, ``failed`` (trying again will not help) or
``retry`` (try again after ``retry_after`` seconds). Implementations raise `ChannelError` inside `_send`
and the base turns it into that result. Bugs (a ``TypeError`` …) are not caught.

PIPL: the address (``to``) and the text are personal data. They are left out of ``repr``, never logged
(the log line carries the idempotency key, the channel and the status), and scrubbed from error texts.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError

if TYPE_CHECKING:
    from careloop.storage import WorkspaceStore

log = logging.getLogger("careloop.channels")

#: the kinds of channel a journey can name
KINDS = ("sms", "wechat", "app_push", "email", "outbox")
#: the events a receipt becomes
RECEIPT_EVENTS = ("message_delivered", "message_failed", "message_opened", "message_clicked")

SendStatus = Literal["sent", "failed", "retry"]


@dataclass(frozen=True)
class OutboundMessage:
    """One message to one person, rendered and addressed.

    `to` is the address, already decrypted by the caller: a phone number (SMS), an openid (WeChat), a device
    token (app push) or an e-mail address. `body` is the rendered text (SMS counts it; e-mail and push send
    it); `template_code` + `template_params` name a provider-side template (Aliyun / Tencent SMS, WeChat),
    which those providers send instead of `body`. `idempotency_key` is unique per intended send: retries of
    the same send reuse it, and channels pass it to the provider where it has a place for one.
    """

    idempotency_key: str
    person_id: str
    to: str = field(repr=False)
    body: str = field(default="", repr=False)
    subject: str | None = field(default=None, repr=False)
    html: str | None = field(default=None, repr=False)  # e-mail: the HTML alternative
    template_code: str | None = None
    template_params: Mapping[str, str] = field(default_factory=dict, repr=False)
    sign_name: str | None = None  # SMS signature 签名 (without 【】); default: the channel's
    purpose: str = "service"  # service | marketing | care | research
    link: str | None = None  # where a tap leads: WeChat url / page, push deep link
    unsubscribe_url: str | None = None  # e-mail List-Unsubscribe
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What happened to one send. `error` says what went wrong and what to do; it never holds the address."""

    status: SendStatus
    provider_message_id: str | None = None
    error: str | None = None
    code: str | None = None  # the provider's own code (isv.MOBILE_NUMBER_ILLEGAL, 43004, 550 …)
    retry_after: float | None = None  # seconds, for status "retry"

    @property
    def ok(self) -> bool:
        return self.status == "sent"

    @classmethod
    def sent(cls, provider_message_id: str | None) -> SendResult:
        return cls("sent", provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, error: str, code: str | None = None) -> SendResult:
        return cls("failed", error=error, code=code)

    @classmethod
    def retry(cls, error: str, code: str | None = None, retry_after: float | None = None) -> SendResult:
        return cls("retry", error=error, code=code, retry_after=retry_after)


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt, open or click reported by a provider, ready to be recorded as an event."""

    event: str  # one of RECEIPT_EVENTS
    provider_message_id: str
    at: datetime
    channel: str = ""
    idempotency_key: str | None = None  # when the provider echoes what careloop passed (Aliyun out_id …)
    status: str | None = None  # the provider's status text (DELIVRD, success, failed:user block …)
    error: str | None = None
    url: str | None = None  # message_clicked: the link

    def __post_init__(self) -> None:
        if self.event not in RECEIPT_EVENTS:
            raise ValueError(f"receipt event {self.event!r} is not one of {', '.join(RECEIPT_EVENTS)}")
        if self.at.tzinfo is None:
            raise ValueError("receipt times are timezone-aware")

    def properties(self) -> dict[str, Any]:
        """The event's properties (no personal data: providers' phone numbers are never copied here)."""
        out: dict[str, Any] = {"channel": self.channel, "provider_message_id": self.provider_message_id}
        for key in ("idempotency_key", "status", "error", "url"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class ChannelConfig(BaseModel):
    """Settings every channel has. Subclasses add theirs; unknown keys are an error (typos are caught)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_after_seconds: float = Field(
        60.0,
        ge=0,
        description="wait before trying again after a network error or a 5xx, when the provider says no time",
    )


ConfigT = TypeVar("ConfigT", bound=ChannelConfig)


class Channel(ABC, Generic[ConfigT]):
    """Base of every channel plugin.

    Subclasses set `name` (the entry-point name), `kind` (one of `KINDS`), `Config` (a `ChannelConfig`
    subclass) and `requires` (importable modules the channel needs, for `available`), and implement
    `_send` and `parse_receipts`. `needs_store` channels get a `WorkspaceStore` as second argument.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[ChannelConfig]]
    requires: ClassVar[tuple[str, ...]] = ()
    needs_store: ClassVar[bool] = False

    def __init__(self, config: ConfigT, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock

    @classmethod
    def create(
        cls, config: ChannelConfig, *, store: WorkspaceStore | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> Channel[Any]:
        """An instance from validated settings (`build_channel` calls this; `needs_store` channels
        override it to take the store)."""
        return cls(config, clock=clock)  # type: ignore[arg-type]

    # ---- description ---------------------------------------------------------------------------
    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this channel's settings (secrets are marked ``writeOnly``)."""
        schema: dict[str, Any] = cls.Config.model_json_schema()
        schema.setdefault("title", f"{cls.name} channel")
        return schema

    @classmethod
    def description(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the modules this channel needs import; if not, what to install."""
        import importlib.util

        def importable(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is not None
            except ImportError:  # a dotted name whose parent package is missing
                return False

        missing = [m for m in cls.requires if not importable(m)]
        if missing:
            return False, f"needs {', '.join(missing)}: pip install 'careloop[channels]'"
        return True, "ready"

    # ---- sending -------------------------------------------------------------------------------
    def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; the outcome, never an exception, says what happened (see the module doc)."""
        if not message.idempotency_key:
            raise ValueError("an OutboundMessage needs an idempotency_key")
        try:
            result = self._send(message)
        except ChannelError as e:
            if e.retryable:
                result = SendResult.retry(str(e), e.code, e.retry_after or self.config.retry_after_seconds)
            else:
                result = SendResult.failed(str(e), e.code)
        if result.status == "retry" and result.retry_after is None:
            result = replace(result, retry_after=self.config.retry_after_seconds)
        if result.error and message.to:
            result = replace(result, error=scrub(result.error, message.to))
        log.info(
            "send %s via %s: %s",
            message.idempotency_key,
            self.name,
            result.status,
            extra={"status": result.status, "reason": result.code, "source": self.name},
        )
        return result

    def send_many(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send several messages, each on its own; channels that can batch (the outbox) override it."""
        return [self.send(m) for m in messages]

    @abstractmethod
    def _send(self, message: OutboundMessage) -> SendResult:
        """Deliver `message`; return the provider's answer or raise `ChannelError`."""

    # ---- receipts ------------------------------------------------------------------------------
    @abstractmethod
    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """Receipts in a provider's callback: `payload` is the body (parsed JSON or raw bytes), `headers`
        its HTTP headers and `params` its query parameters (WeChat signs those). Raises `ChannelError` for a
        payload that is not this provider's or whose signature does not match."""

    def close(self) -> None:
        """Release connections (default: nothing to release)."""


# ---- helpers shared by the channels ---------------------------------------------------------------


def scrub(text: str, address: str) -> str:
    """`text` without the address (providers sometimes echo the number in their messages)."""
    if not address:
        return text
    out = text.replace(address, "***")
    digits = re.sub(r"\D", "", address)
    if len(digits) >= 7:
        for form in sorted({digits, digits[-11:]}, key=len, reverse=True):  # +86… is also echoed as 11 digits
            out = out.replace(form, "***")
    return out


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name."""
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None
