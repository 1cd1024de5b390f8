"""Vectorised Chinese identifiers: resident ID numbers (GB 11643-1999 with its check character), mainland
mobile numbers, WeChat openids / unionids, app user ids and source-system keys.

The check character uses the same weights and table as `careloop.domain.identifiers.id_check_char`;
`tests/synth` verifies every generated number with that function.
"""

from __future__ import annotations

import numpy as np

from careloop.domain.identifiers import ID_CHECK_CHARS, ID_WEIGHTS
from careloop.synth.arrays import (
    EPOCH,
    BoolArray,
    Column,
    IntArray,
    ascii_strings,
    categorical,
    digit_matrix,
    null_where,
    numbered,
    permute,
    prefixed,
)

#: mobile number prefixes of the three carriers, with rough market weights
MOBILE_PREFIXES: tuple[tuple[int, float], ...] = (
    (134, 2), (135, 5), (136, 5), (137, 5), (138, 7), (139, 8), (147, 1), (150, 4), (151, 4),
    (152, 3), (157, 2), (158, 4), (159, 4), (178, 2), (182, 3), (183, 2), (187, 4), (188, 3),
    (198, 2), (130, 3), (131, 3), (132, 3), (155, 2), (156, 3), (166, 2), (175, 1), (176, 2),
    (185, 2), (186, 3), (133, 3), (153, 2), (173, 1), (177, 2), (180, 2), (181, 2), (189, 3),
    (191, 1), (199, 2),
)  # fmt: skip
_PREFIX = np.array([p for p, _ in MOBILE_PREFIXES], dtype=np.int64)
_PREFIX_W = [w for _, w in MOBILE_PREFIXES]

_WEIGHTS = np.array(ID_WEIGHTS, dtype=np.int64)
_CHECK = np.frombuffer(ID_CHECK_CHARS.encode("ascii"), dtype=np.uint8)
_URLSAFE = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def birth_ymd(birth_day: IntArray) -> IntArray:
    """YYYYMMDD integers of day numbers."""
    d = (np.datetime64(EPOCH.isoformat(), "D") + birth_day.astype("timedelta64[D]")).astype("datetime64[D]")
    years = d.astype("datetime64[Y]").astype(np.int64) + 1970
    months = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    days = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    return np.asarray(years * 10000 + months * 100 + days, dtype=np.int64)


def id_numbers(area_code: IntArray, birth_day: IntArray, sequence: IntArray) -> Column:
    """18-character resident ID numbers: area code, birth date, 3-digit sequence (odd = male), check."""
    body = np.hstack(
        [digit_matrix(area_code, 6), digit_matrix(birth_ymd(birth_day), 8), digit_matrix(sequence, 3)]
    )
    total = ((body.astype(np.int64) - 48) * _WEIGHTS).sum(axis=1)
    return ascii_strings(np.hstack([body, _CHECK[total % 11][:, None]]))


def id_sequences(rng: np.random.Generator, female: BoolArray) -> IntArray:
    """3-digit sequence numbers: odd for men, even for women."""
    base = rng.integers(0, 500, len(female)) * 2
    return np.asarray(np.where(female, base, base + 1), dtype=np.int64)


def mobile_numbers(rng: np.random.Generator, n: int) -> IntArray:
    """11-digit mainland mobile numbers as integers."""
    prefix = _PREFIX[categorical(rng, _PREFIX_W, n)]
    return np.asarray(prefix * 10**8 + rng.integers(0, 10**8, n), dtype=np.int64)


def e164(numbers: IntArray, valid: BoolArray | None = None) -> Column:
    """ "+86" + the 11 digits; null where not valid (or the number is 0)."""
    ok = numbers > 0 if valid is None else valid & (numbers > 0)
    text = ascii_strings(prefixed("+86", digit_matrix(numbers, 11)))
    return null_where(text, ~ok)


def local_mobile(numbers: IntArray, valid: BoolArray | None = None) -> Column:
    """The bare 11 digits, as HIS and pharmacy systems store them."""
    ok = numbers > 0 if valid is None else valid & (numbers > 0)
    return null_where(ascii_strings(digit_matrix(numbers, 11)), ~ok)


def wechat_ids(rng: np.random.Generator, n: int, lead: str) -> Column:
    """Opaque 28-character WeChat ids (openid / unionid shape): a fixed lead then URL-safe characters."""
    head = lead.encode("ascii")
    body = _URLSAFE[rng.integers(0, 64, (n, 28 - len(head)))]
    return ascii_strings(np.hstack([np.broadcast_to(np.frombuffer(head, np.uint8), (n, len(head))), body]))


def hex_ids(rng: np.random.Generator, n: int, length: int, prefix: str = "") -> Column:
    """Random lowercase hex strings (device ids, anonymous ids)."""
    body = _HEX[rng.integers(0, 16, (n, length))]
    return ascii_strings(prefixed(prefix, body) if prefix else body)


def scrambled_keys(prefix: str, values: IntArray, width: int, key: int) -> Column:
    """Source keys: a keyed permutation of `values` over 10**width digits, so that keys of one person
    in different systems (and person order) reveal nothing."""
    return numbered(prefix, permute(values, key, 10**width), width)
