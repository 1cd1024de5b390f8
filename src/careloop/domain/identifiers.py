"""Chinese personal identifiers: resident ID (GB 11643-1999), mobile numbers, bank cards, WeChat ids.

Pure functions; ingestion applies the same rules vectorised in SQL (see `careloop.ingest.rules`),
and the test suite checks that both agree.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK_CHARS = "10X98765432"

_ID_RE = re.compile(r"^\d{17}[\dXx]$")
_MOBILE_RE = re.compile(r"^(?:\+86|0086|86)?[ -]?(1[3-9]\d{9})$")


class IdentifierError(ValueError):
    """An identifier that fails its format or checksum; the message names the rule, never the value."""


def id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK_CHARS[total % 11]


def normalize_id_number(value: str, *, today: date | None = None) -> str:
    """Validate an 18-character resident ID number and return it upper-cased.

    Raises IdentifierError when the format, the birth date or the check character is wrong.
    """
    v = value.strip().upper()
    if not _ID_RE.match(v):
        raise IdentifierError("ID number must be 17 digits followed by a digit or X")
    birth = _birth_date(v)
    if birth is None:
        raise IdentifierError("ID number holds an impossible birth date")
    if today is not None and birth > today:
        raise IdentifierError("ID number holds a birth date in the future")
    if id_check_char(v[:17]) != v[17]:
        raise IdentifierError("ID number check character does not match (GB 11643 checksum)")
    return v


def _birth_date(v: str) -> date | None:
    try:
        return date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        return None


def id_birth_date(id_number: str) -> date:
    """Birth date encoded in a valid ID number."""
    birth = _birth_date(normalize_id_number(id_number))
    assert birth is not None  # normalize_id_number checked it
    return birth


def id_sex(id_number: str) -> Literal["male", "female"]:
    """Sex encoded in a valid ID number: odd sequence digit is male, even is female."""
    return "male" if int(normalize_id_number(id_number)[16]) % 2 else "female"


def normalize_mobile(value: str) -> str:
    """A mainland mobile number (optionally +86 / 0086) in E.164 form, e.g. +8613812345678."""
    m = _MOBILE_RE.match(value.strip().replace(" ", "").replace("-", ""))
    if not m:
        raise IdentifierError("mobile number must be a mainland number 1[3-9]XXXXXXXXX, optionally +86")
    return "+86" + m.group(1)


def luhn_ok(digits: str) -> bool:
    """Luhn check for bank cards (score it, don't hard-reject: some valid cards fail)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_bank_card(value: str) -> bool:
    """16-19 digits; the Luhn result is reported separately by `luhn_ok`."""
    v = value.replace(" ", "")
    return v.isdigit() and 16 <= len(v) <= 19


_OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def is_wechat_id(value: str) -> bool:
    """Shape of a WeChat openid / unionid (opaque, 28 chars in practice; accept 20-64 URL-safe chars)."""
    return bool(_OPENID_RE.match(value))
