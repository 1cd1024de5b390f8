"""Channel discovery through entry points, settings validated by each channel's pydantic model (served as
JSON Schema), secrets from the environment, the base class's send contract, and `careloop channel`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import orjson
import pytest
import typer
from typer.testing import CliRunner

from careloop.channels import (
    GROUP,
    Channel,
    ChannelConfig,
    ChannelError,
    OutboundMessage,
    Receipt,
    SendResult,
    build_channel,
    load_channels,
)
from careloop.channels import registry as registry
from careloop.cli import channel as channel_cli
from careloop.errors import ConfigError

SHIPPED = {
    "aliyun_sms": "sms",
    "tencent_sms": "sms",
    "wechat": "wechat",
    "http_push": "app_push",
    "smtp": "email",
    "outbox": "outbox",
}


class EchoChannel(Channel[ChannelConfig]):
    """A test channel: outcome chosen by the message's metadata."""

    name: ClassVar[str] = "echo"
    kind: ClassVar[str] = "app_push"
    Config: ClassVar[type[ChannelConfig]] = ChannelConfig

    def _send(self, message: OutboundMessage) -> SendResult:
        outcome = message.metadata.get("outcome")
        if outcome == "refuse":
            raise ChannelError(f"refused {message.to}", code="E1")
        if outcome == "later":
            raise ChannelError("busy", retryable=True, code="E2")
        return SendResult.sent("m1")

    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        return []


class Impostor(EchoChannel):
    name: ClassVar[str] = "aliyun_sms"


class NotAChannel:
    name = "plain"


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    load_channels.cache_clear()
    yield
    load_channels.cache_clear()


_REAL_ENTRY_POINTS = registry.entry_points


def _with_extra(monkeypatch: pytest.MonkeyPatch, *extra: tuple[str, str]) -> None:
    """The installed entry points plus `extra` (name, "module:Class") ones."""

    def fake(*, group: str) -> list[EntryPoint]:
        return [*_REAL_ENTRY_POINTS(group=group), *(EntryPoint(n, v, GROUP) for n, v in extra)]

    monkeypatch.setattr(registry, "entry_points", fake)


def test_shipped_channels_are_discovered(fresh_registry: None) -> None:
    found = load_channels()
    assert {n: c.kind for n, c in found.items() if n in SHIPPED} == SHIPPED
    for name, cls in found.items():
        schema = cls.config_schema()
        assert schema["type"] == "object" and "retry_after_seconds" in schema["properties"], name
    aliyun = found["aliyun_sms"].config_schema()
    assert set(aliyun["required"]) == {"access_key_id", "access_key_secret"}
    assert aliyun["properties"]["access_key_secret"]["writeOnly"] is True
    assert aliyun["additionalProperties"] is False


def test_third_party_plugins_and_clear_errors(fresh_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_extra(monkeypatch, ("echo", "tests.channels.test_registry:EchoChannel"))
    assert load_channels()["echo"] is EchoChannel
    for extra, problem in [
        (
            ("aliyun_sms", "tests.channels.test_registry:Impostor"),
            "two plugins declare the channel 'aliyun_sms'",
        ),
        (
            ("plain", "tests.channels.test_registry:NotAChannel"),
            "not a subclass of careloop.channels.Channel",
        ),
        (("other", "tests.channels.test_registry:EchoChannel"), "must be the same"),
        (("gone", "tests.channels.no_such_module:X"), "cannot be imported"),
    ]:
        load_channels.cache_clear()
        _with_extra(monkeypatch, extra)
        with pytest.raises(ConfigError, match=problem):
            load_channels()


def test_settings_are_validated_and_secrets_come_from_env(fresh_registry: None) -> None:
    with pytest.raises(ConfigError) as e:
        build_channel("aliyun_sms", {"access_key_id": "AK", "sign_name": "医院", "endpont": "x"}, env={})
    text = str(e.value)
    assert (
        "access_key_secret: Field required" in text
        and "CARELOOP_CHANNEL_ALIYUN_SMS_ACCESS_KEY_SECRET" in text
    )
    assert "endpont: Extra inputs are not permitted" in text and "careloop channel schema aliyun_sms" in text
    env = {"CARELOOP_CHANNEL_SMTP_PASSWORD": "from-env", "CARELOOP_CHANNEL_SMTP_PORT": "465"}
    ch = build_channel("smtp", {"host": "mail.example.cn", "from_address": "a@example.cn"}, env=env)
    assert ch.config.password.get_secret_value() == "from-env"
    assert ch.config.port == 465  # the environment's text is validated like any other value
    assert "from-env" not in repr(ch.config)  # secrets never print
    given = build_channel("smtp", {"host": "h", "from_address": "a@example.cn", "port": 25}, env=env)
    assert given.config.port == 25  # the settings win over the environment
    with pytest.raises(ConfigError, match=r"no channel named 'fax'.*installed: "):
        build_channel("fax", {})


def test_a_missing_sdk_is_a_config_error_saying_what_to_install(
    fresh_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = load_channels()["tencent_sms"]
    monkeypatch.setattr(cls, "requires", ("careloop_no_such_sdk.sms",))
    assert cls.available() == (False, "needs careloop_no_such_sdk.sms: pip install 'careloop[channels]'")
    config = {"secret_id": "AKID", "secret_key": "k", "sms_sdk_app_id": "1400006666"}
    with pytest.raises(ConfigError, match=r"tencent_sms.*pip install 'careloop\[channels\]'"):
        build_channel("tencent_sms", config, env={})


def test_send_turns_channel_errors_into_results_and_logs_no_personal_data(
    fresh_registry: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _with_extra(monkeypatch, ("echo", "tests.channels.test_registry:EchoChannel"))
    ch = build_channel("echo", {"retry_after_seconds": 12})
    msg = OutboundMessage(idempotency_key="key-1", person_id="p", to="13800138000", body="您的化验结果已出")
    with caplog.at_level(logging.INFO, logger="careloop.channels"):
        ok = ch.send(msg)
        refused = ch.send(OutboundMessage(**{**msg.__dict__, "metadata": {"outcome": "refuse"}}))
        later = ch.send(OutboundMessage(**{**msg.__dict__, "metadata": {"outcome": "later"}}))
    assert ok == SendResult("sent", "m1")
    assert (refused.status, refused.code, refused.error) == ("failed", "E1", "refused ***")
    assert (later.status, later.retry_after) == ("retry", 12)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "key-1" in logged and "13800138000" not in logged and "化验" not in logged
    assert "13800138000" not in repr(msg) and "化验" not in repr(msg)


def test_cli_list_and_schema(fresh_registry: None) -> None:
    app = typer.Typer()
    channel_cli.register(app)
    runner = CliRunner()
    listed = runner.invoke(app, ["channel", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in orjson.loads(listed.stdout)}
    assert {n: rows[n]["kind"] for n in SHIPPED} == SHIPPED
    assert rows["outbox"]["ready"] is True and rows["smtp"]["env_prefix"] == "CARELOOP_CHANNEL_SMTP_"
    table = runner.invoke(app, ["channel", "list"])
    assert table.exit_code == 0 and "tencent_sms" in table.output
    schema = runner.invoke(app, ["channel", "schema", "wechat"])
    assert schema.exit_code == 0
    assert {"app_id", "app_secret"} <= set(orjson.loads(schema.stdout)["required"])
    missing = runner.invoke(app, ["channel", "schema", "fax"])
    assert missing.exit_code == 2 and "no channel named 'fax'" in missing.output
