"""WeChat official account (微信公众号 / 服务号) template and subscribe messages over the documented HTTP API.

- access token: ``GET cgi-bin/token?grant_type=client_credential&appid=…&secret=…`` (or ``POST
  cgi-bin/stable_token`` with ``token_api: stable_token``), cached until ``expires_in`` minus a margin on the
  injected clock, fetched by one thread at a time, and fetched again when a call answers 40001 / 40014 /
  42001 (another process took a new token, or it expired early);
- template message: ``POST cgi-bin/message/template/send`` with touser (openid), template_id, data
  (``{"keyword1": {"value": …}}`` from the template parameters), url and miniprogram;
- subscribe message: ``POST cgi-bin/message/subscribe/bizsend`` with touser, template_id, data, page and
  miniprogram (the patient must have subscribed to the template).

Idempotency: template messages carry ``client_msg_id`` (the key, or its 32-hex digest): WeChat sends one
message per openid + client_msg_id within 10 minutes, so a retry soon after a lost answer does not send
twice. ``bizsend`` has no such field.

Receipts: the event pushes to the account's server URL — ``TEMPLATESENDJOBFINISH`` (Status ``success``,
``failed:user block``, ``failed: system failed``) and ``subscribe_msg_sent_event`` (ErrorCode per message).
With `callback_token` set the query signature is checked; with `encoding_aes_key` the 安全模式 envelope is
verified (msg_signature) and decrypted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import struct
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr

from careloop.channels._util import provider_ref, unix_time
from careloop.channels.base import Channel, ChannelConfig, OutboundMessage, Receipt, SendResult
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ChannelError

_SECRET_PARAMS = re.compile(r"((?:secret|access_token)=)[^&\s\"']+")


class _RedactSecrets(logging.Filter):
    """httpx logs each request's URL at INFO; WeChat puts the AppSecret and the access token in URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_PARAMS.sub(r"\1***", str(a)) if "=" in str(a) else a for a in record.args
            )
        return True


if not any(isinstance(f, _RedactSecrets) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactSecrets())

_TOKEN_INVALID = frozenset({40001, 40014, 42001})
#: WeChat is busy or a quota is used up: the same call works later (seconds to wait; None = the default)
_RETRY: dict[int, float | None] = {-1: None, 45009: 3600.0, 45011: 60.0, 45047: 60.0}
_HINTS = {
    43004: "the patient does not follow the official account: they cannot receive template messages",
    43101: "the patient has not subscribed to this template (or refused it): ask them to subscribe again",
    43019: "the patient blocked the official account",
    40003: "the openid is not valid for this app_id: check the patient's WeChat identifier",
    40037: "the template id is not valid: check the content item's template_code in the WeChat console",
    47003: "the data does not fit the template's fields: check the parameter names and value lengths",
    40165: "the mini program page path is not valid",
    48001: "the account may not call this API: check its permissions (template / subscribe messages)",
    40013: "the app_id is not valid: check app_id",
    40125: "the app secret is not valid: check app_secret",
    40164: "this server's IP is not on the official account's IP allow-list: add it in the WeChat console",
    89503: "the call from this IP waits for an administrator's confirmation in the WeChat console",
}


class WeChatConfig(ChannelConfig):
    app_id: str = Field(description="the official account's AppID")
    app_secret: SecretStr = Field(description="its AppSecret")
    base_url: str = Field("https://api.weixin.qq.com", description="API base URL (tests point it at a fake)")
    message_type: Literal["template", "subscribe"] = Field(
        "template",
        description="template messages or subscribe messages (bizsend); a message's "
        "metadata['wechat_message_type'] overrides it",
    )
    token_api: Literal["token", "stable_token"] = Field(
        "token", description="cgi-bin/token, or cgi-bin/stable_token when several processes share the account"
    )
    token_margin_seconds: float = Field(300.0, ge=0, description="fetch a new token this long before expiry")
    miniprogram_app_id: str | None = Field(
        None, description="mini program opened when a message names a page"
    )
    callback_token: SecretStr | None = Field(
        None, description="the 服务器配置 Token: event pushes are verified"
    )
    encoding_aes_key: SecretStr | None = Field(None, description="EncodingAESKey for 安全模式 event pushes")
    timeout_seconds: float = Field(10.0, gt=0)


@dataclass
class _Token:
    value: str
    expires_at: datetime


class WeChatChannel(Channel[WeChatConfig]):
    """WeChat official-account template / subscribe messages (HTTP API, cached access token)."""

    name: ClassVar[str] = "wechat"
    kind: ClassVar[str] = "wechat"
    Config: ClassVar[type[ChannelConfig]] = WeChatConfig

    def __init__(self, config: WeChatConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(config, clock=clock)
        self._http = httpx.Client(base_url=config.base_url.rstrip("/"), timeout=config.timeout_seconds)
        self._token_lock = threading.Lock()
        self._token: _Token | None = None
        self.token_fetches = 0  # how many tokens this instance fetched (operators watch it; tests too)

    def close(self) -> None:
        self._http.close()

    # ---- access token ------------------------------------------------------------------------
    def access_token(self, *, stale: str | None = None) -> str:
        """The cached token, or a new one when it is near expiry or equals `stale` (refused by WeChat).
        One thread fetches; the others wait for its token."""
        with self._token_lock:
            now = self.clock.now()
            t = self._token
            margin = timedelta(seconds=self.config.token_margin_seconds)
            if t is not None and t.value != stale and now < t.expires_at - margin:
                return t.value
            data = self._fetch_token()
            token = data.get("access_token")
            if not token:
                raise ChannelError(f"WeChat gave no access_token: {data}", code="protocol")
            self._token = _Token(str(token), now + timedelta(seconds=int(data.get("expires_in", 7200))))
            self.token_fetches += 1
            return self._token.value

    def _fetch_token(self) -> dict[str, Any]:
        c = self.config
        if c.token_api == "stable_token":
            body = {
                "grant_type": "client_credential",
                "appid": c.app_id,
                "secret": c.app_secret.get_secret_value(),
            }
            data = self._call("POST", "/cgi-bin/stable_token", json=body)
        else:
            query = {
                "grant_type": "client_credential",
                "appid": c.app_id,
                "secret": c.app_secret.get_secret_value(),
            }
            data = self._call("GET", "/cgi-bin/token", params=query)
        errcode = int(data.get("errcode", 0) or 0)
        if errcode in _TOKEN_INVALID:  # on cgi-bin/token this means the AppSecret is wrong
            raise ChannelError(
                f"WeChat access token errcode {errcode}: {data.get('errmsg', '')} — check app_secret",
                code=str(errcode),
            )
        if errcode:
            raise self._error("access token", errcode, str(data.get("errmsg", "")))
        return data

    # ---- sending -----------------------------------------------------------------------------
    def _send(self, message: OutboundMessage) -> SendResult:
        if not message.template_code:
            raise ChannelError(
                "WeChat sends templates only: give the content item a template_code (the template id)",
                code="no_template",
            )
        kind = str(message.metadata.get("wechat_message_type", self.config.message_type))
        if kind not in ("template", "subscribe"):
            raise ChannelError(f"wechat_message_type is template or subscribe, not {kind!r}", code="bad_type")
        body: dict[str, Any] = {
            "touser": message.to,
            "template_id": message.template_code,
            "data": {k: {"value": str(v)} for k, v in message.template_params.items()},
        }
        page = message.metadata.get("miniprogram_pagepath")
        if page:
            appid = message.metadata.get("miniprogram_app_id") or self.config.miniprogram_app_id
            if not appid:
                raise ChannelError(
                    "a mini program page needs miniprogram_app_id (channel or message metadata)"
                )
            body["miniprogram"] = {"appid": appid, "pagepath": page}
        if kind == "template":
            path = "/cgi-bin/message/template/send"
            if message.link:
                body["url"] = message.link
            body["client_msg_id"] = provider_ref(message.idempotency_key, 32)
        else:
            path = "/cgi-bin/message/subscribe/bizsend"
            if message.link:
                body["page"] = message.link
        token = self.access_token()
        data = self._call("POST", path, params={"access_token": token}, json=body)
        errcode = int(data.get("errcode", 0) or 0)
        if errcode in _TOKEN_INVALID:  # refused token: fetch a new one and try once more
            token = self.access_token(stale=token)
            data = self._call("POST", path, params={"access_token": token}, json=body)
            errcode = int(data.get("errcode", 0) or 0)
        if errcode == 0:
            msgid = data.get("msgid")
            return SendResult.sent(str(msgid) if msgid is not None else None)
        raise self._error(kind, errcode, str(data.get("errmsg", "")))

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ChannelError(
                f"WeChat could not be reached ({type(e).__name__})", retryable=True, code="network"
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ChannelError(
                f"WeChat answered HTTP {response.status_code}",
                retryable=True,
                code=f"http_{response.status_code}",
            )
        try:
            data = response.json()
        except ValueError:
            raise ChannelError(
                f"WeChat answered HTTP {response.status_code} without JSON", retryable=True, code="protocol"
            ) from None
        if not isinstance(data, dict):
            raise ChannelError("WeChat answered with JSON that is not an object", code="protocol")
        return data

    def _error(self, what: str, errcode: int, errmsg: str) -> ChannelError:
        hint = _HINTS.get(errcode)
        text = f"WeChat {what} errcode {errcode}: {errmsg}" + (f" — {hint}" if hint else "")
        if errcode in _RETRY or errcode in _TOKEN_INVALID:
            return ChannelError(text, retryable=True, code=str(errcode), retry_after=_RETRY.get(errcode))
        return ChannelError(text, code=str(errcode))

    # ---- receipts ----------------------------------------------------------------------------
    def parse_receipts(
        self,
        payload: Mapping[str, Any] | list[Any] | bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> list[Receipt]:
        """Event pushes (XML): TEMPLATESENDJOBFINISH and subscribe_msg_sent_event; other events give none."""
        if not isinstance(payload, bytes):
            raise ChannelError("WeChat event pushes are XML: pass the raw body")
        root = _xml(payload)
        query = dict(params or {})
        encrypted = root.findtext("Encrypt")
        if encrypted is not None:
            if self.config.encoding_aes_key is None or self.config.callback_token is None:
                raise ChannelError("an encrypted (安全模式) push needs callback_token and encoding_aes_key")
            _check_signature(self.config.callback_token, query, "msg_signature", encrypted)
            root = _xml(self._decrypt(encrypted))
        elif self.config.callback_token is not None:
            _check_signature(self.config.callback_token, query, "signature", None)
        if root.findtext("MsgType") != "event":
            return []
        event = root.findtext("Event") or ""
        at = unix_time(root.findtext("CreateTime"), self.clock.now())
        if event == "TEMPLATESENDJOBFINISH":
            msgid = root.findtext("MsgID") or root.findtext("MsgId")
            status = (root.findtext("Status") or "").strip()
            if not msgid:
                raise ChannelError("a TEMPLATESENDJOBFINISH push has no MsgID")
            ok = status == "success"
            return [
                Receipt(
                    "message_delivered" if ok else "message_failed",
                    msgid,
                    at,
                    channel=self.name,
                    status=status,
                    error=None if ok else status,
                )
            ]
        if event == "subscribe_msg_sent_event":
            out = []
            for item in root.iter("List"):
                msgid = item.findtext("MsgID") or ""
                code = (item.findtext("ErrorCode") or "").strip()
                status = (item.findtext("ErrorStatus") or "").strip()
                ok = code == "0"
                out.append(
                    Receipt(
                        "message_delivered" if ok else "message_failed",
                        msgid,
                        at,
                        channel=self.name,
                        status=status,
                        error=None if ok else f"{code}: {status}",
                    )
                )
            return out
        return []

    def _decrypt(self, encrypted: str) -> bytes:
        """The 安全模式 envelope: AES-256-CBC, key = base64(EncodingAESKey + "="), IV = key[:16], 32-byte
        PKCS#7 padding; plaintext = 16 random bytes, 4-byte length, message, AppID."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        assert self.config.encoding_aes_key is not None
        try:
            key = base64.b64decode(self.config.encoding_aes_key.get_secret_value() + "=")
            decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
            plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
            pad = plain[-1]
            if not 1 <= pad <= 32:
                raise ValueError("bad padding")
            plain = plain[:-pad]
            (length,) = struct.unpack(">I", plain[16:20])
            xml_bytes, app_id = plain[20 : 20 + length], plain[20 + length :]
        except (ValueError, struct.error) as e:
            raise ChannelError(
                f"the encrypted push cannot be decrypted ({e}): check encoding_aes_key"
            ) from None
        if app_id.decode("utf-8", "replace") != self.config.app_id:
            raise ChannelError("the encrypted push is for another AppID")
        return xml_bytes


def _xml(payload: bytes) -> ET.Element:
    if b"<!DOCTYPE" in payload or b"<!ENTITY" in payload:
        raise ChannelError("WeChat pushes have no DOCTYPE or entities; refusing the payload")
    try:
        return ET.fromstring(payload)
    except ET.ParseError as e:
        raise ChannelError(f"a WeChat push is XML: {e}") from None


def _check_signature(token: SecretStr, query: Mapping[str, str], field: str, encrypted: str | None) -> None:
    """signature = sha1(sorted(token, timestamp, nonce[, Encrypt]) joined), as WeChat computes it."""
    given = query.get(field)
    if not given or "timestamp" not in query or "nonce" not in query:
        raise ChannelError(f"the push has no {field} / timestamp / nonce query parameters")
    parts = [token.get_secret_value(), query["timestamp"], query["nonce"]]
    if encrypted is not None:
        parts.append(encrypted)
    expected = hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise ChannelError("the push's signature does not match callback_token: it is not from WeChat")
