"""E-mail over SMTP against a local aiosmtpd server: plain relay, STARTTLS + AUTH, implicit TLS, refusals,
and bounces / tracking hits as receipts."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from careloop.channels import OutboundMessage, build_channel
from careloop.channels.email import SmtpChannel, message_id
from careloop.clock import FixedClock
from careloop.errors import ConfigError
from tests.channels.fakes import closed_port

aiosmtpd = pytest.importorskip("aiosmtpd", reason="the e-mail tests need aiosmtpd: pip install -e '.[dev]'")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

CLOCK = FixedClock(datetime(2026, 11, 1, 1, 0, tzinfo=UTC))
TO = "zhang.san@example.cn"


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps what it receives; refuses some recipients the way real servers do."""

    messages: list[tuple[str, list[str], EmailMessage, bool]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed, session.ssl is not None))
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"careloop", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "careloop test smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return d / "cert.pem", d / "key.pem"


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))
    return ctx


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=closed_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@pytest.fixture
def tls_inbox(tls_files: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=closed_port(),
        tls_context=_server_context(tls_files),
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def channel(port: int, **over: Any) -> SmtpChannel:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "noreply@renji.example.cn",
        "from_name": "仁济医院患者服务",
        "timeout_seconds": 5,
        **over,
    }
    ch = build_channel("smtp", config, clock=CLOCK)
    assert isinstance(ch, SmtpChannel)
    return ch


def message(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": "j5:e3:mail:1",
        "person_id": "p3",
        "to": TO,
        "subject": "复诊提醒",
        "body": "张三您好，您的复诊在11月3日上午9点。",
        "html": "<p>张三您好，您的复诊在<b>11月3日上午9点</b>。</p>",
        "unsubscribe_url": "https://care.example.cn/u/abc123",
        "purpose": "marketing",
    }
    fields.update(over)
    return OutboundMessage(**fields)


def test_multipart_mail_with_list_unsubscribe(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    result = channel(port, unsubscribe_mailto="unsubscribe@renji.example.cn").send(message())
    assert result.status == "sent", result.error
    assert result.provider_message_id == message_id("j5:e3:mail:1", "renji.example.cn")
    ((mail_from, rcpt, mail, _tls),) = handler.messages
    assert mail_from == "noreply@renji.example.cn" and rcpt == [TO]
    assert mail["Subject"] == "复诊提醒" and mail["To"] == TO
    assert mail["From"].addresses[0].display_name == "仁济医院患者服务"
    assert mail["Message-ID"] == result.provider_message_id
    assert mail["List-Unsubscribe"] == (
        "<https://care.example.cn/u/abc123>, <mailto:unsubscribe@renji.example.cn?subject=unsubscribe>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "张三您好，您的复诊在11月3日上午9点。"
    assert "<b>11月3日上午9点</b>" in html.get_content()


def test_same_key_same_message_id(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    ch = channel(port)
    assert ch.send(message()).provider_message_id == ch.send(message()).provider_message_id
    assert (
        ch.send(message(idempotency_key="other")).provider_message_id != handler.messages[0][2]["Message-ID"]
    )


def test_starttls_and_login(tls_inbox: tuple[Inbox, int], tls_files: tuple[Path, Path]) -> None:
    handler, port = tls_inbox
    good = channel(
        port, security="starttls", username="careloop", password="s3cret", ca_file=str(tls_files[0])
    )
    assert good.send(message()).status == "sent"
    assert handler.messages[0][3] is True  # the message travelled over TLS
    wrong = channel(
        port, security="starttls", username="careloop", password="nope", ca_file=str(tls_files[0])
    )
    refused = wrong.send(message())
    assert (
        refused.status == "failed"
        and refused.code == "535"
        and "username / password" in (refused.error or "")
    )
    untrusted = channel(port, security="starttls", username="careloop", password="s3cret").send(message())
    assert untrusted.status == "failed" and untrusted.code == "tls" and "ca_file" in (untrusted.error or "")
    plain = channel(port, security="none", username="careloop", password="s3cret").send(message())
    assert plain.status == "failed"  # the server requires STARTTLS first
    assert len(handler.messages) == 1


def test_implicit_tls(tls_files: tuple[Path, Path]) -> None:
    handler = Inbox()
    controller = Controller(
        handler, hostname="127.0.0.1", port=closed_port(), ssl_context=_server_context(tls_files)
    )
    controller.start()
    try:
        result = channel(controller.port, security="tls", ca_file=str(tls_files[0])).send(message())
        untrusted = channel(controller.port, security="tls").send(message())  # the server did speak TLS
    finally:
        controller.stop()
    assert result.status == "sent" and len(handler.messages) == 1
    assert untrusted.code == "tls"


def test_refusals_are_classified(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    handler.refuse = {
        "nobody@example.cn": "550 5.1.1 <nobody@example.cn>: user unknown",
        "busy@example.cn": "451 4.3.0 mailbox busy, try later",
    }
    unknown = channel(port).send(message(to="nobody@example.cn"))
    assert (
        unknown.status == "failed"
        and unknown.code == "550"
        and "nobody@example.cn" not in (unknown.error or "")
    )
    busy = channel(port, retry_after_seconds=30).send(message(to="busy@example.cn"))
    assert (busy.status, busy.code, busy.retry_after) == ("retry", "451", 30)
    assert handler.messages == []


def test_guards_and_network(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    no_unsub = channel(port).send(message(unsubscribe_url=None))
    assert no_unsub.status == "failed" and no_unsub.code == "no_unsubscribe"
    assert channel(port).send(message(unsubscribe_url=None, purpose="service")).ok  # service mail may go
    injected = channel(port).send(message(to="a@example.cn\r\nBcc: b@example.cn"))
    assert injected.code == "invalid_address"
    assert len(handler.messages) == 1
    assert channel(closed_port()).send(message()).code == "network"
    with pytest.raises(ConfigError, match="in clear text"):
        channel(25, host="smtp.example.cn", username="careloop", password="x")


DSN = b"""From: MAILER-DAEMON@mx.example.cn
To: noreply@renji.example.cn
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"

--BOUND
Content-Type: text/plain

Your message could not be delivered.

--BOUND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.cn
Arrival-Date: Sun, 1 Nov 2026 09:00:00 +0800

Final-Recipient: rfc822; nobody@example.cn
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--BOUND
Content-Type: text/rfc822-headers

From: noreply@renji.example.cn
To: nobody@example.cn
Subject: =?utf-8?b?5aSN6K+K5o+Q6YaS?=
Message-ID: <0123456789abcdef0123456789abcdef@renji.example.cn>

--BOUND--
"""


def test_bounces_and_tracking_hits_become_receipts() -> None:
    ch = channel(1)
    (bounce,) = ch.parse_receipts(DSN, {"Content-Type": "message/rfc822"})
    assert bounce.event == "message_failed"
    assert bounce.provider_message_id == "<0123456789abcdef0123456789abcdef@renji.example.cn>"
    assert bounce.status == "5.1.1" and "user unknown" in (bounce.error or "")
    assert bounce.at == datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    opened, clicked = ch.parse_receipts(
        [
            {"event": "open", "message_id": bounce.provider_message_id, "at": "2026-11-01T10:00:00+08:00"},
            {
                "event": "click",
                "message_id": bounce.provider_message_id,
                "url": "https://care.example.cn/visit",
            },
        ],
        {},
    )
    assert (opened.event, clicked.event, clicked.url) == (
        "message_opened",
        "message_clicked",
        "https://care.example.cn/visit",
    )
