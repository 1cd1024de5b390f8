"""E-mail over SMTP (smtplib): text + HTML alternative, List-Unsubscribe, a Message-ID derived from the key.

Security: ``starttls`` (port 587, the default), ``tls`` (implicit TLS, port 465) or ``none`` (a relay on
localhost only). Certificates are verified against the system store or `ca_file`. One connection per send:
simple, and safe from many worker threads.

Idempotency: ``Message-ID: <sha256(key)[:32]@domain>`` — the same send always carries the same id, so
receivers and archives that de-duplicate on Message-ID keep one copy, and bounces name the send.

Marketing e-mail must carry an unsubscribe (Advertising Law Art 43): a marketing message without
`unsubscribe_url` (or a configured `unsubscribe_mailto`) fails without being sent. ``List-Unsubscribe``
gets the link (and the mailto); an https link also gets ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
(RFC 8058).

Receipts: SMTP has no callback. `parse_receipts` reads (a) a bounce — a DSN (RFC 3464,
``multipart/report; report-type=delivery-status``) as raw bytes, failed / delivered per recipient, matched by
the original Message-ID — and (b) careloop's own open-pixel and link-redirect hits as
``{"event": "open" | "click", "message_id", "at", "url"}``.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import smtplib
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult
from careloop.errors import ChannelError

_TRACKING = {"open": "message_opened", "click": "message_clicked"}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class SmtpConfig(ChannelConfig):
    host: str = Field(description="SMTP server")
    port: int = Field(587, gt=0, lt=65536)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (587), tls = implicit TLS (465), none = only for a local relay"
    )
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = Field(description="envelope and From address, e.g. noreply@hospital.example.cn")
    from_name: str | None = Field(None, description="display name, e.g. 某某医院患者服务中心")
    reply_to: str | None = None
    message_id_domain: str | None = Field(
        None, description="right side of Message-IDs; default: from's domain"
    )
    unsubscribe_mailto: str | None = Field(
        None, description="address that unsubscribes (added to the header)"
    )
    ca_file: str | None = Field(None, description="CA bundle to trust (an internal relay's certificate)")
    timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _no_clear_text_login(self) -> SmtpConfig:
        if self.security == "none" and self.username and self.host not in _LOOPBACK:
            raise ValueError(
                f"security 'none' would send the password to {self.host} in clear text: use starttls or tls"
            )
        return self


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the send with idempotency key `key`."""
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


class SmtpChannel(Channel[SmtpConfig]):
    """E-mail over SMTP (STARTTLS / TLS, text + HTML, List-Unsubscribe, Message-ID from the key)."""

    name: ClassVar[str] = "smtp"
    kind: ClassVar[str] = "email"
    Config: ClassVar[type[ChannelConfig]] = SmtpConfig

    @property
    def domain(self) -> str:
        return (
            self.config.message_id_domain or self.config.from_address.rpartition("@")[2] or "careloop.local"
        )

    def build(self, message: OutboundMessage) -> EmailMessage:
        """The e-mail `send` would hand to the server."""
        c = self.config
        _, address = parseaddr(message.to)
        if (
            not address
            or "@" not in address
            or address != message.to.strip()
            or any(ch in message.to for ch in "\r\n")
        ):
            raise ChannelError("the address is not an e-mail address", code="invalid_address")
        unsubscribe = [f"<{u}>" for u in (message.unsubscribe_url,) if u]
        if c.unsubscribe_mailto:
            unsubscribe.append(f"<mailto:{c.unsubscribe_mailto}?subject=unsubscribe>")
        if message.purpose == "marketing" and not unsubscribe:
            raise ChannelError(
                "marketing e-mail needs an unsubscribe link (Advertising Law Art 43): give the message an "
                "unsubscribe_url or set unsubscribe_mailto",
                code="no_unsubscribe",
            )
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = formataddr((c.from_name or "", c.from_address))
        msg["To"] = address
        msg["Subject"] = message.subject or ""
        msg["Date"] = format_datetime(self.clock.now())
        msg["Message-ID"] = message_id(message.idempotency_key, self.domain)
        if c.reply_to:
            msg["Reply-To"] = c.reply_to
        if unsubscribe:
            msg["List-Unsubscribe"] = ", ".join(unsubscribe)
            if message.unsubscribe_url and message.unsubscribe_url.startswith("https://"):
                msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(message.body or "", charset="utf-8")
        if message.html:
            msg.add_alternative(message.html, subtype="html", charset="utf-8")
        return msg

    def _send(self, message: OutboundMessage) -> SendResult:
        c = self.config
        msg = self.build(message)
        context = ssl.create_default_context(cafile=c.ca_file)
        try:
            smtp: smtplib.SMTP
            if c.security == "tls":
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_seconds, context=context)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds)
            with smtp:
                if c.security == "starttls":
                    smtp.starttls(context=context)
                if c.username:
                    smtp.login(c.username, c.password.get_secret_value() if c.password else "")
                smtp.send_message(msg, from_addr=c.from_address, to_addrs=[msg["To"]])
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            return _by_code(
                int(code), _text(text), "the server refused the recipient", self.config.retry_after_seconds
            )
        except smtplib.SMTPAuthenticationError as e:
            return SendResult.failed(
                f"SMTP {e.smtp_code} {_text(e.smtp_error)}: the server refused the login — check username / password",
                str(e.smtp_code),
            )
        except smtplib.SMTPNotSupportedError as e:
            return SendResult.failed(
                f"the SMTP server does not support what the settings ask ({e}): check security / username",
                "unsupported",
            )
        except smtplib.SMTPResponseException as e:  # sender refused, data refused, …
            return _by_code(
                e.smtp_code,
                _text(e.smtp_error),
                "the server refused the message",
                self.config.retry_after_seconds,
            )
        except ssl.SSLCertVerificationError as e:
            return SendResult.failed(
                f"the SMTP server's certificate is not trusted ({e.verify_message}): set ca_file or fix the host name",
                "tls",
            )
        except (smtplib.SMTPException, OSError) as e:  # disconnected, refused, timeout, TLS handshake
            raise ChannelError(
                f"the SMTP server could not be reached ({type(e).__name__})", retryable=True, code="network"
            ) from None
        return SendResult.sent(str(msg["Message-ID"]))

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """A DSN bounce (raw bytes) or careloop's open / click tracking hits (JSON)."""
        if isinstance(payload, bytes) and not payload.lstrip().startswith((b"{", b"[")):
            return self._dsn(payload)
        try:
            data: Any = orjson.loads(payload) if isinstance(payload, bytes) else payload
        except orjson.JSONDecodeError:
            raise ChannelError("an e-mail receipt is a DSN message or JSON tracking hits") from None
        items = data if isinstance(data, list) else [data]
        now = self.clock.now()
        out = []
        for item in items:
            if (
                not isinstance(item, Mapping)
                or item.get("event") not in _TRACKING
                or not item.get("message_id")
            ):
                raise ChannelError(
                    'an e-mail tracking hit is {"event": "open" | "click", "message_id", "at"}'
                )
            try:
                at = datetime.fromisoformat(str(item["at"])) if item.get("at") else now
                out.append(
                    Receipt(
                        _TRACKING[item["event"]],
                        str(item["message_id"]),
                        at,
                        channel=self.name,
                        status=str(item["event"]),
                        url=item.get("url"),
                    )
                )
            except ValueError as e:
                raise ChannelError(f"e-mail tracking hit: {e}") from None
        return out

    def _dsn(self, raw: bytes) -> list[Receipt]:
        report = email.message_from_bytes(raw, policy=email.policy.default)
        if report.get_content_type() != "multipart/report":
            raise ChannelError("an e-mail bounce is a DSN: multipart/report; report-type=delivery-status")
        original: str | None = None
        blocks: list[Message] = []
        for part in report.walk():
            ctype = part.get_content_type()
            if ctype == "message/delivery-status":
                blocks = [b for b in part.get_payload() if isinstance(b, Message)]  # type: ignore[union-attr]
            elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
                headers = email.message_from_string(str(part.get_content()), policy=email.policy.default)
                original = headers.get("Message-ID")
            elif ctype == "message/rfc822":
                inner = part.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    original = inner[0].get("Message-ID")
        if not blocks:
            raise ChannelError("the DSN has no message/delivery-status part")
        if not original:
            raise ChannelError(
                "the DSN does not quote the original Message-ID: it cannot be matched to a send"
            )
        at = self.clock.now()
        arrival = blocks[0].get("Arrival-Date")
        if arrival:
            with contextlib.suppress(TypeError, ValueError):
                at = email.utils.parsedate_to_datetime(str(arrival))
        out = []
        for block in blocks[1:] or blocks:
            action = str(block.get("Action", "")).strip().lower()
            if action not in ("failed", "delivered", "relayed", "expanded"):
                continue  # "delayed": not final, the server keeps trying
            status = str(block.get("Status", "")).strip()
            failed = action == "failed"
            out.append(
                Receipt(
                    "message_failed" if failed else "message_delivered",
                    str(original).strip(),
                    at,
                    channel=self.name,
                    status=status or action,
                    error=f"{status} {block.get('Diagnostic-Code', '')}".strip() if failed else None,
                )
            )
        return out


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _by_code(code: int, text: str, what: str, wait: float) -> SendResult:
    """SMTP reply codes: 4xx = try later, 5xx = will not work."""
    message = f"SMTP {code} {text}: {what}"
    if 400 <= code < 500:
        return SendResult.retry(message, str(code), wait)
    return SendResult.failed(message, str(code))
