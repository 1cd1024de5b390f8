"""Validation and normalisation rules, compiled to DuckDB SQL so they run vectorised.

For every field of an entity `field_rule` returns a normalising expression (the value to store) and a
reason expression (NULL when the value is fine, else ``"field: what is wrong"``). Reasons never contain
personal values. The rules mirror `careloop.domain.identifiers`; tests check both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from careloop.domain.base import FieldSpec
from careloop.domain.identifiers import ID_CHECK_CHARS, ID_WEIGHTS

ICD10_SYSTEMS = ("ICD-10", "ICD-10-CN", "ICD10", "ICD-10-CM")

#: extra date / time formats tried when a plain cast fails (strptime syntax)
DATE_FORMATS = ("%Y/%m/%d", "%Y%m%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y-%m", "%Y")  # partial: first day
TIME_FORMATS = (
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d",
    "%Y%m%d%H%M%S",
    "%Y%m%d",
)


def lit(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Rule:
    value: str  # SQL expression of the normalised value
    reason: str | None  # SQL expression: NULL when fine, else a message


def _text(src: str) -> str:
    return f"NULLIF(trim(CAST({src} AS VARCHAR)), '')"


def _fmt_list(formats: tuple[str, ...]) -> str:
    return "[" + ", ".join(lit(f) for f in formats) + "]"


def _when(cond: str, message: str) -> str:
    return f"CASE WHEN {cond} THEN {lit(message)} END"


def id_number_checks(v: str) -> tuple[str, str, str]:
    """SQL conditions (format ok, birth date ok, checksum ok) for an upper-cased ID number `v`."""
    fmt_ok = f"regexp_full_match({v}, '[0-9]{{17}}[0-9X]')"
    birth = f"try_strptime(substr({v}, 7, 8), '%Y%m%d')"
    birth_ok = f"({birth} IS NOT NULL AND {birth} <= current_date AND {birth} >= DATE '1880-01-01')"
    total = " + ".join(f"CAST(substr({v}, {i + 1}, 1) AS INTEGER) * {w}" for i, w in enumerate(ID_WEIGHTS))
    check_ok = f"(substr({lit(ID_CHECK_CHARS)}, (({total}) % 11) + 1, 1) = substr({v}, 18, 1))"
    return fmt_ok, birth_ok, check_ok


def id_number_reason(v: str, field: str) -> str:
    fmt_ok, birth_ok, check_ok = id_number_checks(v)
    return (
        f"CASE WHEN {v} IS NULL THEN NULL "
        f"WHEN NOT {fmt_ok} THEN {lit(field + ': ID number must be 17 digits and a digit or X')} "
        f"WHEN NOT {birth_ok} THEN {lit(field + ': ID number holds an impossible birth date')} "
        f"WHEN NOT {check_ok} THEN {lit(field + ': ID number check character is wrong (GB 11643)')} END"
    )


def phone_value(src: str) -> str:
    """Mainland mobiles and landlines to E.164; other numbers keep their digits (and a leading +)."""
    d = f"regexp_replace(trim(CAST({src} AS VARCHAR)), '[\\s()\\-.]', '', 'g')"
    return (
        f"CASE WHEN {src} IS NULL OR {d} = '' THEN NULL "
        f"WHEN regexp_full_match({d}, '(\\+86|0086|86)?1[3-9][0-9]{{9}}') THEN '+86' || right({d}, 11) "
        f"WHEN regexp_full_match({d}, '0[1-9][0-9]{{8,10}}') THEN '+86' || substr({d}, 2) "
        f"WHEN regexp_full_match({d}, '00[1-9][0-9]{{6,14}}') THEN '+' || substr({d}, 3) "
        f"ELSE {d} END"
    )


def phone_reason(v: str, field: str) -> str:
    return _when(
        f"{v} IS NOT NULL AND NOT regexp_full_match({v}, '\\+?[0-9]{{5,15}}')",
        f"{field}: not a phone number (digits, optionally +86 / +country code)",
    )


def date_value(src: str, src_type: str, fmt: str | None) -> str:
    t = src_type.upper()
    if t == "DATE":
        return src
    if t.startswith("TIMESTAMP"):
        return f"CAST({src} AS DATE)"
    s = _text(src)
    if fmt:
        return f"CAST(try_strptime({s}, {lit(fmt)}) AS DATE)"
    return (
        f"coalesce(TRY_CAST({s} AS DATE), TRY_CAST(TRY_CAST({s} AS TIMESTAMPTZ) AS DATE), "
        f"CAST(try_strptime({s}, {_fmt_list(DATE_FORMATS)}) AS DATE))"
    )


def timestamp_value(src: str, src_type: str, fmt: str | None) -> str:
    t = src_type.upper()
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return src
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST({src} AS TIMESTAMPTZ)"
    s = _text(src)
    if fmt:
        return f"CAST(try_strptime({s}, {lit(fmt)}) AS TIMESTAMPTZ)"
    return (
        f"coalesce(TRY_CAST({s} AS TIMESTAMPTZ), "
        f"CAST(try_strptime({s}, {_fmt_list(TIME_FORMATS)}) AS TIMESTAMPTZ))"
    )


def field_rule(spec: FieldSpec, src: str, src_type: str, fmt: str | None = None) -> Rule:
    """Normalise and check one field. `src` is an SQL expression over the input, `src_type` its type."""
    f = spec.name
    raw_present = f"({src} IS NOT NULL AND trim(CAST({src} AS VARCHAR)) <> '')"
    t = spec.py_type
    reasons: list[str] = []
    if spec.pii == "phone":
        value = phone_value(src)
        reasons.append(phone_reason(value, f))
    elif spec.pii == "id_number":
        value = f"upper({_text(src)})"
        reasons.append(id_number_reason(value, f))
    elif spec.pii == "email":
        value = f"lower(NULLIF(regexp_replace(CAST({src} AS VARCHAR), '\\s', '', 'g'), ''))"
        reasons.append(
            _when(
                f"{value} IS NOT NULL AND NOT regexp_full_match({value}, '[^@\\s]+@[^@\\s]+\\.[^@\\s]+')",
                f"{f}: not an e-mail address",
            )
        )
    elif spec.pii == "name":
        value = f"regexp_replace({_text(src)}, '\\s+', ' ', 'g')"
    elif spec.enum is not None:
        lower = all(v == v.lower() for v in spec.enum)
        value = f"lower({_text(src)})" if lower else _text(src)
        allowed = ", ".join(lit(v) for v in spec.enum)
        reasons.append(
            f"CASE WHEN {value} IS NOT NULL AND {value} NOT IN ({allowed}) THEN "
            f"{lit(f + ': unknown value ')} || {lit(chr(39))} || left({value}, 40) || {lit(chr(39))} || "
            f"{lit(' (expected one of ' + ', '.join(spec.enum) + ')')} END"
        )
    elif t is str:
        value = _text(src)
    elif t is int:
        value = (
            src
            if src_type.upper() in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT")
            else (
                f"coalesce(TRY_CAST({_text(src)} AS BIGINT), "
                f"CASE WHEN TRY_CAST({_text(src)} AS DOUBLE) = round(TRY_CAST({_text(src)} AS DOUBLE)) "
                f"THEN CAST(TRY_CAST({_text(src)} AS DOUBLE) AS BIGINT) END)"
            )
        )
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not a whole number"))
    elif t is float:
        value = (
            src if src_type.upper() in ("DOUBLE", "FLOAT", "REAL") else f"TRY_CAST({_text(src)} AS DOUBLE)"
        )
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not a number"))
    elif t.__name__ == "Decimal":
        value = f"TRY_CAST({src if src_type.upper().startswith(('DECIMAL', 'DOUBLE')) else _text(src)} AS DECIMAL(18,2))"
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not an amount"))
    elif t is bool:
        s = f"lower({_text(src)})"
        value = (
            src
            if src_type.upper() == "BOOLEAN"
            else (
                f"CASE WHEN {s} IN ('true','t','1','yes','y','是') THEN true "
                f"WHEN {s} IN ('false','f','0','no','n','否') THEN false END"
            )
        )
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not true / false"))
    elif t.__name__ == "date":
        value = date_value(src, src_type, fmt)
        hint = f" (expected {fmt})" if fmt else " (expected YYYY-MM-DD; set format: in the mapping)"
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not a valid date{hint}"))
    elif t.__name__ == "datetime":
        value = timestamp_value(src, src_type, fmt)
        hint = f" (expected {fmt})" if fmt else " (expected ISO 8601; set format: in the mapping)"
        reasons.append(_when(f"{raw_present} AND {value} IS NULL", f"{f}: not a valid date-time{hint}"))
    elif t in (dict, list):
        if src_type.upper() in ("VARCHAR", "JSON"):
            value = f"CAST({_text(src)} AS VARCHAR)"
            reasons.append(_when(f"{value} IS NOT NULL AND NOT json_valid({value})", f"{f}: not valid JSON"))
        else:
            value = f"CAST(to_json({src}) AS VARCHAR)"
    else:  # pragma: no cover - field_specs rejects other types
        raise TypeError(f"no rule for {spec.name}: {t}")
    if spec.default is not None and not spec.required:
        value = f"coalesce({value}, {_default_literal(spec.default)})"
    if spec.required:
        reasons.insert(0, _when(f"NOT {raw_present}", f"{f}: required field is missing"))
    reason = None
    if reasons:
        reason = reasons[0] if len(reasons) == 1 else f"coalesce({', '.join(reasons)})"
    return Rule(value=value, reason=reason)


def _default_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return lit(str(value))


def icd10_rule(code: str, system: str) -> Rule:
    """ICD-10 codes: upper-case, dot inserted after the category (E119 -> E11.9), format checked."""
    c = f"upper(replace({code}, ' ', ''))"
    value = (
        f"CASE WHEN {system} IN ({', '.join(lit(s) for s in ICD10_SYSTEMS)}) "
        f"AND regexp_full_match({c}, '[A-Z][0-9][0-9A-Z][0-9A-Z]{{1,4}}') "
        f"THEN substr({c}, 1, 3) || '.' || substr({c}, 4) ELSE {code} END"
    )
    reason = _when(
        f"{system} IN ({', '.join(lit(s) for s in ICD10_SYSTEMS)}) AND {code} IS NOT NULL AND NOT "
        f"regexp_full_match({value}, '[A-Z][0-9][0-9A-Z](\\.[0-9A-Z]{{1,4}})?')",
        "code: not an ICD-10 code (expected e.g. E11.9)",
    )
    return Rule(value=value, reason=reason)
