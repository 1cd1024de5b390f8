"""Small helpers the channels share: phone numbers, provider-side references, provider times."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from careloop.errors import ChannelError

CHINA = ZoneInfo("Asia/Shanghai")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SAFE_REF = re.compile(r"^[A-Za-z0-9_\-:.]+$")


def e164(phone: str) -> str:
    """A phone number as E.164 (+8613800138000). An 11-digit mainland mobile gets +86; 0086 / 86 prefixes
    and separators are accepted. Raises a non-retryable ChannelError for anything else."""
    text = re.sub(r"[\s\-()]", "", phone or "")
    if text.startswith("00"):
        text = "+" + text[2:]
    if _CN_MOBILE.match(text):
        return "+86" + text
    if text.startswith("86") and _CN_MOBILE.match(text[2:]):
        return "+" + text
    if text.startswith("+86") and not _CN_MOBILE.match(text[3:]):
        raise ChannelError(
            "the address is not a mainland mobile number (+86 1xxxxxxxxxx)", code="invalid_number"
        )
    if _E164.match(text):
        return text
    raise ChannelError(
        "the address is not a phone number: give an 11-digit mainland mobile or +<country><number>",
        code="invalid_number",
    )


def national(phone: str) -> str:
    """The number the way Chinese providers take it: 11 digits for the mainland, country code + number
    (no +) for the rest."""
    number = e164(phone)
    return number[3:] if number.startswith("+86") else number[1:]


def provider_ref(key: str, max_len: int = 64) -> str:
    """The idempotency key as a provider-side reference: the key itself when it is short and plain (so
    receipts that echo it map straight back), else a stable 32-hex digest of it."""
    if len(key) <= max_len and _SAFE_REF.match(key):
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def china_time(text: str | None, default: datetime) -> datetime:
    """A provider's ``2024-01-02 10:00:00`` (Beijing time) as an aware datetime; `default` when absent."""
    if not text:
        return default
    try:
        at = datetime.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        raise ChannelError(f"receipt time {text!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
    return at if at.tzinfo else at.replace(tzinfo=CHINA)


def unix_time(value: str | int | None, default: datetime) -> datetime:
    if value in (None, ""):
        return default
    try:
        return datetime.fromtimestamp(int(value), UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ChannelError(f"receipt time {value!r} is not a unix timestamp") from None
