"""Standardise person records for matching, vectorised in DuckDB SQL.

`standardise(con, source, fields)` reads the relation `source` and creates the table `person_std` with
one row per input row and the canonical matching columns (only those the mapped fields can feed):

====================  ======================================================================
unique_id             the input's row number (BIGINT, 0-based; the order of `source`)
name                  full name: Chinese without spaces, Western lower-cased, single-spaced
surname, given_name   Chinese: first character, or a compound surname (欧阳, 司马 …)
name_pinyin           toneless pinyin of the full name, no spaces (Western: the letters)
name_sorted           the name's characters (Chinese) or words (Western) sorted: catches swaps
birth_date            DATE; from the ID number when missing
birth_str             birth date as YYYYMMDD (for 1-character / transposition comparisons)
birth_swapped         YYYYDDMM (month and day swapped)
birth_year            INTEGER
sex                   male | female (男/女, M/F, male/female, 1/2); from the ID number when missing
phone                 E.164 (mainland mobiles and landlines)
id_number             valid GB 11643 resident ID numbers only, upper-case X; others NULL
address               trimmed, no spaces, leading province and city names removed
postcode              6 digits or NULL
====================  ======================================================================

Pinyin is the one Python pass, over the distinct names only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import duckdb
import pyarrow as pa
from pypinyin import lazy_pinyin
from pypinyin.constants import PHRASES_DICT

from careloop.ingest.rules import id_number_checks, ident, lit, phone_value

#: compound (two-character) surnames recognised when splitting a Chinese full name
COMPOUND_SURNAMES: tuple[str, ...] = (
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "端木", "公孙", "独孤", "南宫", "西门", "百里", "呼延", "万俟", "申屠", "闻人",
    "澹台", "公冶", "太史", "仲孙", "钟离", "宗政", "濮阳", "淳于", "单于", "赫连", "司空", "第五",
)  # fmt: skip

#: input fields a mapping can name (besides `id`)
PERSON_FIELDS: tuple[str, ...] = (
    "name", "given_name", "surname", "birth_date", "sex", "phone", "id_number", "address", "postcode",
)  # fmt: skip

SEX_VALUES: dict[str, str] = {
    "男": "male", "m": "male", "male": "male", "1": "male", "man": "male",
    "女": "female", "f": "female", "female": "female", "2": "female", "woman": "female",
}  # fmt: skip

STD_TABLE = "person_std"

_HAN = re.compile(r"[\u3400-\u9fff]")


def split_chinese_name(name: str) -> tuple[str, str]:
    """(surname, given name) of a Chinese full name; compound surnames take two characters."""
    n = name.strip()
    if len(n) >= 3 and n[:2] in COMPOUND_SURNAMES:
        return n[:2], n[2:]
    return n[:1], n[1:]


@lru_cache(maxsize=65536)
def _char_pinyin(char: str) -> str:
    return "".join(lazy_pinyin(char))


def to_pinyin(name: str) -> str:
    """Toneless pinyin without spaces (王勇宏 -> wangyonghong); non-Han letters are kept, lower-cased.

    pypinyin reads a character differently only inside a phrase of its dictionary (单于, 曾经); a name
    without such a phrase is converted character by character from a cache — the same result, 8x faster.
    """
    n = len(name)
    if n > 12 or any(name[i:j] in PHRASES_DICT for i in range(n - 1) for j in range(i + 2, n + 1)):
        return "".join(lazy_pinyin(name)).replace(" ", "").lower()
    return "".join(map(_char_pinyin, name)).replace(" ", "").lower()


def normalise_sex(value: str | None) -> str | None:
    """male | female | None, with the same table the SQL uses."""
    return None if value is None else SEX_VALUES.get(value.strip().lower())


def _text(expr: str) -> str:
    # full-width spaces and tabs count as blanks too
    return f"NULLIF(trim(regexp_replace(CAST({expr} AS VARCHAR), '[\\s\u3000]+', ' ', 'g')), '')"


def _is_latin(expr: str) -> str:
    return f"regexp_matches({expr}, '[A-Za-z]')"


def _name_sql(fields: Mapping[str, str]) -> tuple[str, str, str]:
    """SQL for (full name, surname, given name) from whatever name columns are mapped."""
    full = _text(ident(fields["name"])) if "name" in fields else None
    sur = _text(ident(fields["surname"])) if "surname" in fields else None
    given = _text(ident(fields["given_name"])) if "given_name" in fields else None
    if full is None:
        s, g = sur or "NULL", given or "NULL"
        full = (
            f"CASE WHEN {_is_latin(f'coalesce({s}, {g})')} THEN concat_ws(' ', {g}, {s}) "
            f"ELSE NULLIF(concat(coalesce({s}, ''), coalesce({g}, '')), '') END"
        )
    return full, sur or "NULL", given or "NULL"


def _birth_sql(fields: Mapping[str, str], col_types: Mapping[str, str], fmt: str | None) -> str:
    col = ident(fields["birth_date"])
    t = col_types[fields["birth_date"]].upper()
    if t == "DATE":
        return col
    if t.startswith("TIMESTAMP"):
        return f"CAST({col} AS DATE)"
    s = _text(col)
    if fmt:
        return f"CAST(try_strptime({s}, {lit(fmt)}) AS DATE)"
    formats = "['%Y-%m-%d', '%Y/%m/%d', '%Y%m%d', '%Y.%m.%d', '%Y年%m月%d日', '%d/%m/%Y']"
    return f"coalesce(TRY_CAST({s} AS DATE), CAST(try_strptime({s}, {formats}) AS DATE))"


def _sex_sql(col: str) -> str:
    whens = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in SEX_VALUES.items())
    return f"CASE lower({_text(col)}) {whens} END"


def _id_clean_sql(col: str) -> str:
    return f"NULLIF(upper(regexp_replace(CAST({col} AS VARCHAR), '[\\s\u3000]', '', 'g')), '')"


def _id_valid_sql(v: str) -> str:
    """`v` when it is a valid GB 11643 number, else NULL (nested CASE: checksum casts run on digits only)."""
    fmt_ok, birth_ok, check_ok = id_number_checks(v)
    return f"CASE WHEN {v} IS NULL OR NOT {fmt_ok} THEN NULL WHEN {birth_ok} AND {check_ok} THEN {v} END"


def _address_sql(col: str) -> str:
    a = f"regexp_replace(CAST({col} AS VARCHAR), '[\\s\u3000,，]', '', 'g')"
    no_province = f"regexp_replace({a}, '^[^省市区县]{{2,7}}(省|自治区)', '')"
    no_city = f"regexp_replace({no_province}, '^[^省市区县]{{2,6}}市', '')"
    return f"NULLIF(lower({no_city}), '')"


def standardise(
    con: duckdb.DuckDBPyConnection,
    source: str,
    fields: Mapping[str, str],
    *,
    birth_date_format: str | None = None,
    table: str = STD_TABLE,
    row_id: str | None = None,
) -> list[str]:
    """Create `table` from the relation `source` (a table or view name); return its matching columns.

    `fields` maps canonical field names (see PERSON_FIELDS) to input column names, all of which
    must exist in `source`. `unique_id` is the SQL expression `row_id` when given (it must number the
    rows 0..n-1, e.g. `rowid` of a freshly created table), else the row number in scan order.
    """
    col_types = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE {ident(source)}").fetchall()}
    sel = [f"CAST({row_id} AS BIGINT) AS unique_id" if row_id else "row_number() OVER () - 1 AS unique_id"]
    if {"name", "surname", "given_name"} & fields.keys():
        full, sur, given = _name_sql(fields)
        sel += [f"{full} AS name_raw", f"{sur} AS surname_raw", f"{given} AS given_raw"]
    if "birth_date" in fields:
        sel.append(f"{_birth_sql(fields, col_types, birth_date_format)} AS birth_raw")
    if "sex" in fields:
        sel.append(f"{_sex_sql(ident(fields['sex']))} AS sex_raw")
    if "phone" in fields:
        e164 = phone_value(ident(fields["phone"]))
        sel.append(f"CASE WHEN starts_with({e164}, '+') THEN {e164} END AS phone")
    if "id_number" in fields:
        sel.append(f"{_id_clean_sql(ident(fields['id_number']))} AS id_raw")
    if "address" in fields:
        sel.append(f"{_address_sql(ident(fields['address']))} AS address")
    if "postcode" in fields:
        pc = f"regexp_replace(CAST({ident(fields['postcode'])} AS VARCHAR), '\\s', '', 'g')"
        sel.append(f"CASE WHEN regexp_full_match({pc}, '[0-9]{{6}}') THEN {pc} END AS postcode")
    # identifiers pass through ident(), literals through lit(): no user text reaches the SQL unquoted
    con.execute(f"CREATE OR REPLACE TEMP TABLE _std_stage AS SELECT {', '.join(sel)} FROM {ident(source)}")  # noqa: S608

    out = ["unique_id"]
    stage_cols = {r[0] for r in con.execute("DESCRIBE _std_stage").fetchall()}
    if "name_raw" in stage_cols:
        _name_table(con)
        out += ["name", "surname", "given_name", "name_pinyin", "name_sorted"]
    id_birth = "CAST(strptime(substr(s.id_number, 7, 8), '%Y%m%d') AS DATE)"
    id_sex = (
        "CASE WHEN s.id_number IS NULL THEN NULL "
        "WHEN CAST(substr(s.id_number, 17, 1) AS INTEGER) % 2 = 1 THEN 'male' ELSE 'female' END"
    )
    has_id = "id_raw" in stage_cols
    birth = (
        "coalesce(s.birth_raw, " + (id_birth if has_id else "NULL") + ")"
        if "birth_raw" in stage_cols
        else id_birth
    )
    sex = "coalesce(s.sex_raw, " + (id_sex if has_id else "NULL") + ")" if "sex_raw" in stage_cols else id_sex
    stage = f"(SELECT *, {_id_valid_sql('id_raw')} AS id_number FROM _std_stage)" if has_id else "_std_stage"  # noqa: S608
    final = ["s.unique_id"]
    join = ""
    if "name_raw" in stage_cols:
        final += ["n.name", "n.surname", "n.given_name", "n.name_pinyin", "n.name_sorted"]
        join = (
            "LEFT JOIN _std_names n ON n.name_raw IS NOT DISTINCT FROM s.name_raw "
            "AND n.surname_raw IS NOT DISTINCT FROM s.surname_raw "
            "AND n.given_raw IS NOT DISTINCT FROM s.given_raw"
        )
    if "birth_raw" in stage_cols or has_id:
        final += [
            f"{birth} AS birth_date",
            f"strftime({birth}, '%Y%m%d') AS birth_str",
            f"strftime({birth}, '%Y%d%m') AS birth_swapped",
            f"year({birth}) AS birth_year",
        ]
        out += ["birth_date", "birth_str", "birth_swapped", "birth_year"]
    if "sex_raw" in stage_cols or has_id:
        final.append(f"{sex} AS sex")
        out.append("sex")
    if has_id:
        stage_cols.add("id_number")
    for c in ("phone", "id_number", "address", "postcode"):
        if c in stage_cols:
            final.append(f"s.{c}")
            out.append(c)
    con.execute(
        f"CREATE OR REPLACE TABLE {ident(table)} AS SELECT {', '.join(final)} FROM {stage} s {join} "  # noqa: S608
        "ORDER BY s.unique_id"
    )
    con.execute("DROP TABLE IF EXISTS _std_stage")
    con.execute("DROP TABLE IF EXISTS _std_names")
    return out


def _name_table(con: duckdb.DuckDBPyConnection) -> None:
    """`_std_names`: one row per distinct (name, surname, given) with the standardised name columns."""
    rows = con.execute(
        "SELECT DISTINCT name_raw, surname_raw, given_raw FROM _std_stage "
        "WHERE name_raw IS NOT NULL OR surname_raw IS NOT NULL OR given_raw IS NOT NULL"
    ).fetchall()
    cols: dict[str, list[str | None]] = {
        k: []
        for k in (
            "name_raw",
            "surname_raw",
            "given_raw",
            "name",
            "surname",
            "given_name",
            "name_pinyin",
            "name_sorted",
        )
    }
    for raw, sur_raw, given_raw in rows:
        std = standardise_name(raw, sur_raw, given_raw)
        for k, v in zip(("name_raw", "surname_raw", "given_raw"), (raw, sur_raw, given_raw), strict=True):
            cols[k].append(v)
        for k, v in zip(("name", "surname", "given_name", "name_pinyin", "name_sorted"), std, strict=True):
            cols[k].append(v)
    names = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
    con.register("_std_names_arrow", names)
    con.execute("CREATE OR REPLACE TEMP TABLE _std_names AS SELECT * FROM _std_names_arrow")
    con.unregister("_std_names_arrow")


def standardise_name(
    name: str | None, surname: str | None = None, given: str | None = None
) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """(name, surname, given name, pinyin, sorted characters or words) of one distinct name."""
    if name is None:
        return None, None, None, None, None
    latin = bool(re.search(r"[A-Za-z]", name)) and not _HAN.search(name)
    if latin:
        full = " ".join(name.lower().replace("·", " ").split())
        words = full.split(" ")
        sur = surname.lower().strip() if surname else (words[-1] if len(words) > 1 else None)
        giv = given.lower().strip() if given else (" ".join(words[:-1]) if len(words) > 1 else words[0])
        pinyin = re.sub(r"[^a-z]", "", full)
        return full, sur, giv, pinyin or None, " ".join(sorted(words))
    full = re.sub(r"[\s·・.]", "", name)
    if not full:
        return None, None, None, None, None
    s, g = split_chinese_name(full)
    sur = surname.strip() if surname else s
    giv = given.strip() if given else g
    return full, sur or None, giv or None, to_pinyin(full) or None, "".join(sorted(full))
