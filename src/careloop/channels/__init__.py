"""Message channels as plugins: SMS (Aliyun, Tencent Cloud), WeChat, app push, e-mail and the outbox.

    from careloop.channels import build_channel, OutboundMessage

    sms = build_channel("aliyun_sms", {"access_key_id": "…", "sign_name": "某某医院"})  # secret from env
    result = sms.send(OutboundMessage(idempotency_key="…", person_id="p1", to="13800138000",
                                      body="…", template_code="SMS_123", template_params={"name": "张"}))
    result.status  # "sent" | "failed" | "retry" (+ retry_after seconds)

Errors: `build_channel` raises `ConfigError` (unknown channel, invalid settings, missing SDK); `send`
returns a `SendResult` for every outcome; `parse_receipts` raises `ChannelError` for a payload it
cannot accept. See docs/channels.md.
"""

from careloop.channels.base import (
    KINDS,
    RECEIPT_EVENTS,
    Channel,
    ChannelConfig,
    OutboundMessage,
    Receipt,
    SendResult,
)
from careloop.channels.registry import GROUP, build_channel, channel_class, env_prefix, load_channels
from careloop.errors import ChannelError

__all__ = [
    "GROUP",
    "KINDS",
    "RECEIPT_EVENTS",
    "Channel",
    "ChannelConfig",
    "ChannelError",
    "OutboundMessage",
    "Receipt",
    "SendResult",
    "build_channel",
    "channel_class",
    "env_prefix",
    "load_channels",
]
