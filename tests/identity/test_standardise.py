from __future__ import annotations

import duckdb
import pytest

from careloop.identity.cluster import close_birth
from careloop.identity.standardise import (
    normalise_sex,
    split_chinese_name,
    standardise,
    standardise_name,
    to_pinyin,
)


@pytest.mark.parametrize(
    ("name", "surname", "given"),
    [
        ("欧阳娜娜", "欧阳", "娜娜"),
        ("司马光", "司马", "光"),
        ("诸葛亮", "诸葛", "亮"),
        ("上官婉儿", "上官", "婉儿"),
        ("王勇宏", "王", "勇宏"),
        ("李四", "李", "四"),
        ("欧阳", "欧", "阳"),  # two characters only: a plain surname and given name
    ],
)
def test_split_chinese_name(name: str, surname: str, given: str) -> None:
    assert split_chinese_name(name) == (surname, given)


def test_pinyin_and_western_names() -> None:
    assert to_pinyin("王勇宏") == "wangyonghong"
    assert to_pinyin("汪勇宏") == to_pinyin("王勇宏")
    assert standardise_name("欧阳 娜娜") == (
        "欧阳娜娜",
        "欧阳",
        "娜娜",
        "ouyangnana",
        "".join(sorted("欧阳娜娜")),
    )
    full, sur, given, pinyin, key = standardise_name("John  SMITH")
    assert (full, sur, given, pinyin) == ("john smith", "smith", "john", "johnsmith")
    assert key == standardise_name("Smith John")[4]


@pytest.mark.parametrize(
    ("raw", "sex"),
    [("男", "male"), ("女", "female"), ("M", "male"), ("f", "female"), ("Male", "male"), ("FEMALE", "female"),
     ("1", "male"), ("2", "female"), (" 男 ", "male"), ("x", None), (None, None)],
)  # fmt: skip
def test_normalise_sex(raw: str | None, sex: str | None) -> None:
    assert normalise_sex(raw) == sex


def _std(rows: list[tuple[object, ...]], fields: dict[str, str]) -> list[dict[str, object]]:
    con = duckdb.connect()
    cols = list(fields.values())
    con.execute(f"CREATE TABLE t ({', '.join(f'{c} VARCHAR' for c in cols)})")
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in cols)})", rows)
    standardise(con, "t", fields)
    rel = con.sql("SELECT * FROM person_std ORDER BY unique_id")
    names = rel.columns
    return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


def test_id_numbers_validated_and_birth_and_sex_derived() -> None:
    rows = _std(
        [
            ("11010519491231002x", None, None),  # valid, lower-case x
            ("440524188001010014", "1880-01-02", "女"),  # valid; the file's own birth date and sex win
            ("110105194912310021", None, None),  # wrong check character
            ("11010519491331002X", None, None),  # impossible birth date
            ("1101051949123100", None, None),  # too short
            (None, None, None),
        ],
        {"id_number": "idn", "birth_date": "bd", "sex": "sx"},
    )
    assert rows[0]["id_number"] == "11010519491231002X"
    assert str(rows[0]["birth_date"]) == "1949-12-31" and rows[0]["sex"] == "female"
    assert rows[0]["birth_str"] == "19491231" and rows[0]["birth_swapped"] == "19493112"
    assert rows[1]["id_number"] == "440524188001010014"
    assert str(rows[1]["birth_date"]) == "1880-01-02" and rows[1]["sex"] == "female"
    for r in rows[2:]:
        assert r["id_number"] is None and r["birth_date"] is None and r["sex"] is None


def test_phones_to_e164() -> None:
    rows = _std(
        [("13812345678",), ("+86 138-1234-5678",), ("0086 13812345678",), ("138 1234 5678",),
         ("0571-87654321",), ("12345",), ("",), (None,)],
        {"phone": "ph"},
    )  # fmt: skip
    assert [r["phone"] for r in rows] == ["+8613812345678"] * 4 + ["+8657187654321", None, None, None]


def test_names_dates_addresses() -> None:
    rows = _std(
        [
            ("王勇宏", "1971/01/31", "浙江省杭州市余杭区仓兴街118号3幢", "311121"),
            ("汪 勇宏", "19710131", "余杭区仓兴街118号3幢", "31112"),
            (None, "1971年1月31日", "  ", None),
        ],
        {"name": "nm", "birth_date": "bd", "address": "addr", "postcode": "pc"},
    )
    assert rows[0]["name"] == "王勇宏" and rows[0]["surname"] == "王" and rows[0]["given_name"] == "勇宏"
    assert rows[1]["name"] == "汪勇宏" and rows[1]["name_pinyin"] == rows[0]["name_pinyin"] == "wangyonghong"
    assert rows[0]["address"] == rows[1]["address"] == "余杭区仓兴街118号3幢"
    assert [r["birth_str"] for r in rows] == ["19710131"] * 3
    assert [r["postcode"] for r in rows] == ["311121", None, None]
    assert rows[2]["name"] is None and rows[2]["address"] is None


def test_surname_and_given_name_columns() -> None:
    rows = _std([("欧阳", "娜娜"), ("Smith", "John")], {"surname": "s", "given_name": "g"})
    assert (rows[0]["name"], rows[0]["surname"], rows[0]["given_name"]) == ("欧阳娜娜", "欧阳", "娜娜")
    assert (rows[1]["name"], rows[1]["surname"], rows[1]["given_name"]) == ("john smith", "smith", "john")


@pytest.mark.parametrize(
    ("a", "b", "close"),
    [("19710131", "19710131", True), ("19710305", "19710503", True), ("19710131", "19170131", True),
     ("19710131", "19710132", True), ("19710131", "20140820", False), ("19710131", "19710213", False)],
)  # fmt: skip
def test_close_birth(a: str, b: str, close: bool) -> None:
    assert close_birth(a, b) is close
