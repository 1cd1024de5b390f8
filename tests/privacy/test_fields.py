"""Field encryption, blind indexes (Python and SQL agree) and masking."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.errors import PrivacyError
from careloop.ingest.pipeline import _register_udfs
from careloop.privacy.fields import FieldCipher, mask
from careloop.privacy.keys import KeyRing

CIPHER = FieldCipher(KeyRing.generate())


def test_roundtrip_and_kind_binding() -> None:
    token = CIPHER.encrypt("13812345678", "phone")
    assert token is not None and token.startswith("v1:k1:") and "138" not in token
    assert CIPHER.decrypt(token, "phone") == "13812345678"
    assert CIPHER.encrypt("x", "phone") != CIPHER.encrypt("x", "phone")  # random nonces
    with pytest.raises(PrivacyError, match="integrity"):
        CIPHER.decrypt(token, "name")  # moved to another field
    with pytest.raises(PrivacyError, match="key ring"):
        FieldCipher(KeyRing.generate()).decrypt(token.replace("k1", "k9"), "phone")


def test_blind_index_is_keyed_and_deterministic() -> None:
    other = FieldCipher(KeyRing.generate())
    assert CIPHER.blind_index("+8613812345678", "phone") == CIPHER.blind_index("+8613812345678", "phone")
    assert CIPHER.blind_index("+8613812345678", "phone") != other.blind_index("+8613812345678", "phone")
    assert CIPHER.blind_index("x", "phone") != CIPHER.blind_index("x", "name")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sampled_from(["phone", "name", "id_number", "openid"]))
def test_sql_blind_index_equals_python(value: str, kind: str) -> None:
    con = duckdb.connect()
    try:
        _register_udfs(con, CIPHER)
        sql_value = con.execute("SELECT cl_bidx($k, $v)", {"k": kind, "v": value}).fetchall()[0][0]
        enc = con.execute("SELECT cl_encrypt($k, $v)", {"k": kind, "v": value}).fetchall()[0][0]
    finally:
        con.close()
    assert sql_value == CIPHER.blind_index(value, kind)
    assert CIPHER.decrypt(enc, kind) == value


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        ("张三明", "name", "张*明"),
        ("张三", "name", "张*"),
        ("+8613812345678", "phone", "138****5678"),
        ("11010519491231002X", "id_number", "1101**********002X"),
        ("ann@example.com", "email", "a***@example.com"),
    ],
)
def test_masking(value: str, kind: str, shown: str) -> None:
    assert mask(value, kind) == shown


def test_encrypt_udf_is_safe_across_threads_while_its_cache_is_refilled() -> None:
    """DuckDB runs the UDF on several threads; a tiny cache is cleared constantly while others read it."""
    con = duckdb.connect(config={"threads": 4})
    try:
        _register_udfs(con, CIPHER, reuse_cap=50)
        rows = con.execute(
            "SELECT v, cl_encrypt('phone', v) FROM (SELECT '+86138' || lpad((i % 5000)::VARCHAR, 8, '0') AS v "
            "FROM range(300000) t(i))"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 300_000
    sample = rows[::997]
    assert all(CIPHER.decrypt(token, "phone") == value for value, token in sample)
