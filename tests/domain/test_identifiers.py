"""Identifier rules (DOMAIN.md) in Python and, vectorised, in the ingestion SQL: both must agree."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.domain.identifiers import (
    IdentifierError,
    id_birth_date,
    id_check_char,
    id_sex,
    is_bank_card,
    luhn_ok,
    normalize_id_number,
    normalize_mobile,
)
from careloop.ingest.rules import id_number_checks, phone_value


@pytest.mark.parametrize("valid", ["11010519491231002X", "440524188001010014", "11010519491231002x"])
def test_domain_examples_are_valid(valid: str) -> None:
    assert normalize_id_number(valid) == valid.upper()


def test_id_derives_birth_date_and_sex() -> None:
    assert id_birth_date("11010519491231002X") == date(1949, 12, 31)
    assert id_sex("11010519491231002X") == "female"  # sequence digit 2 is even
    assert id_sex("440524188001010014") == "male"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("110105194912310021", "check character"),
        ("11010519491331002X", "impossible birth date"),
        ("1101051949123100", "17 digits"),
        ("abcdefghijklmnopqr", "17 digits"),
    ],
)
def test_invalid_ids_say_why_without_echoing_the_value(bad: str, message: str) -> None:
    with pytest.raises(IdentifierError, match=message) as e:
        normalize_id_number(bad)
    assert bad not in str(e.value)


def test_id_in_future_rejected_with_clock() -> None:
    future = "110105" + "20991231" + "001"
    future += id_check_char(future)
    with pytest.raises(IdentifierError, match="future"):
        normalize_id_number(future, today=date(2026, 1, 1))


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13812345678", "+8613812345678"),
        ("+86 138-1234-5678", "+8613812345678"),
        ("008613812345678", "+8613812345678"),
    ],
)
def test_mobile_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalize_mobile(raw) == e164


@pytest.mark.parametrize("bad", ["12812345678", "1381234567", "abc"])
def test_bad_mobiles(bad: str) -> None:
    with pytest.raises(IdentifierError):
        normalize_mobile(bad)


def test_bank_card_luhn_scored() -> None:
    assert is_bank_card("6222 0212 3456 7890 128")
    assert not is_bank_card("6222 0212 345")
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")
    assert is_bank_card("4111111111111112")  # shape ok even though Luhn fails: scored, not rejected


# --- the SQL rules agree with the Python rules -------------------------------------------------

_con = duckdb.connect()
_fmt, _birth, _check = id_number_checks("upper($v)")
_SQL_ID = f"SELECT {_fmt} AND {_birth} AND {_check}"
_SQL_PHONE = f"SELECT {phone_value('$v')}"

id_like = st.builds(
    lambda area, y, m, d, seq: f"{area:06d}{y:04d}{m:02d}{d:02d}{seq:03d}",
    st.integers(110000, 659999),
    st.integers(1900, 2020),
    st.integers(1, 13),
    st.integers(1, 31),
    st.integers(0, 999),
)


@settings(max_examples=300, deadline=None)
@given(id_like, st.sampled_from(list("0123456789X")), st.booleans())
def test_sql_and_python_agree_on_id_numbers(first17: str, last: str, use_right_check: bool) -> None:
    value = first17 + (id_check_char(first17) if use_right_check else last)
    try:
        normalize_id_number(value, today=date.today())
        python_ok = True
    except IdentifierError:
        python_ok = False
    sql_ok = bool(_con.execute(_SQL_ID, {"v": value}).fetchall()[0][0])
    assert sql_ok == python_ok


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["", "+86", "0086", "86"]), st.integers(3, 9), st.integers(0, 999_999_999))
def test_sql_and_python_agree_on_mobiles(prefix: str, second: int, rest: int) -> None:
    raw = f"{prefix}1{second}{rest:09d}"
    assert _con.execute(_SQL_PHONE, {"v": raw}).fetchall()[0][0] == normalize_mobile(raw)
