"""Evidence for resolution, computed on a private DuckDB connection holding the matching tables.

Tables (created by `careloop.identity.resolve`): `person_std` (the standardised records, see
`careloop.identity.standardise`), `record_meta` (unique_id, source, patient_key, household_key,
relationship, guardian_key, is_new) and `record_ids` (unique_id, kind, system, value_bidx).

- `rule_edges`: the pairs each deterministic rule joins (a star per group: every member to the group's
  smallest record), honouring the rule's limits;
- `household_cannot_links`: records that are certainly different people — profiles of one family
  account (same source and household key) and a minor's record and their guardian's;
- `attach_edges`: for records left alone after clustering, the one compatible person sharing their
  phone (or name), if there is exactly one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pypinyin import Style, pinyin

from careloop.identity.bookings import BOOKINGS_TABLE
from careloop.identity.cluster import close_birth
from careloop.identity.rules import Rule
from careloop.identity.standardise import to_pinyin
from careloop.ingest.rules import ident, lit


@dataclass
class Edges:
    """Pairs of unique ids with the index of the rule that proposed them."""

    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    rule: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Edges:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy())

    def __len__(self) -> int:
        return len(self.left)


def _star(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    t = con.sql(sql).to_arrow_table()
    return t.column(0).to_numpy().astype(np.int64), t.column(1).to_numpy().astype(np.int64)


def _field_sql(rule: Rule, columns: set[str], only_new: bool) -> str | None:
    assert rule.field is not None
    name_col = "name" if rule.name_match == "exact" else "name_pinyin"
    need = {rule.field, *rule.also} | ({name_col} if rule.names_agree else set())
    if not need <= columns:
        return None
    f = ident(rule.field)
    group = [f, *(ident(c) for c in rule.also)]
    name_key = name_col if rule.names_agree else "NULL"
    births = rule.names_agree and "birth_year" in columns
    where = " AND ".join(f"{c} IS NOT NULL" for c in sorted({ident(x) for x in need}))
    limits = [f"s.n <= {int(rule.max_group_size)}"]
    if rule.max_distinct_names is not None:
        limits.append(f"s.names <= {int(rule.max_distinct_names)}")
    return _star_sql(
        f"SELECT unique_id, {f} AS v, {name_key} AS nk, {'birth_year' if births else 'NULL'} AS by, "  # noqa: S608
        f"{', '.join(group)} FROM person_std WHERE {where}",
        ["nk", *group[1:]] if rule.also else ["nk"],
        " AND ".join(limits),
        only_new,
        names=rule.names_agree,
        one_birth_year=births,
    )


def _star_sql(
    base: str,
    extra_keys: list[str],
    limits: str,
    only_new: bool,
    *,
    names: bool = False,
    one_birth_year: bool = False,
) -> str:
    """Every member of a group (same v and extra keys) to the group's smallest member, within limits.

    `one_birth_year`: a group whose records show more than one birth year is two people sharing a
    name and a phone (a father and son both called 郑杰) and joins nothing.
    """
    part = ", ".join(["g.v", *(f"g.{k}" for k in extra_keys)])
    new_filter = (
        " JOIN record_meta ma ON ma.unique_id = e.a JOIN record_meta mb ON mb.unique_id = e.b"
        " WHERE (ma.is_new = 1 OR mb.is_new = 1)"
        if only_new
        else ""
    )
    names_count = "count(DISTINCT nk)" if names else "1"
    spread = (
        f"max(g.by) OVER (PARTITION BY {part}) - min(g.by) OVER (PARTITION BY {part})"
        if one_birth_year
        else "0"
    )
    return (
        f"WITH g AS ({base}), "  # noqa: S608 - built from quoted identifiers and integers
        f"s AS (SELECT v, count(DISTINCT unique_id) AS n, {names_count} AS names FROM g GROUP BY v), "
        f"w AS (SELECT g.unique_id AS a, min(g.unique_id) OVER (PARTITION BY {part}) AS b, "
        f"{spread} AS spread "
        f"FROM g JOIN s ON s.v = g.v WHERE {limits}), "
        "e AS (SELECT DISTINCT a, b FROM w WHERE spread IS NULL OR spread = 0) "
        f"SELECT e.b, e.a FROM e{new_filter} {'AND' if new_filter else 'WHERE'} e.a <> e.b ORDER BY 1, 2"
    )


def _identifier_sql(rule: Rule, only_new: bool) -> str:
    assert rule.identifier is not None
    v = "system || ':' || value_bidx" if rule.same_system else "value_bidx"
    base = (
        f"SELECT unique_id, {v} AS v FROM record_ids "  # noqa: S608
        f"WHERE kind = {lit(rule.identifier)} AND value_bidx IS NOT NULL"
        + (" AND system IS NOT NULL" if rule.same_system else "")
    )
    return _star_sql(base, [], f"s.n <= {int(rule.max_group_size)}", only_new)


def rule_edges(
    con: duckdb.DuckDBPyConnection, rules: list[Rule], columns: set[str], *, only_new: bool = False
) -> Edges:
    """The pairs the join rules propose, tagged with the rule's position in `rules`.

    With `only_new`, only pairs with at least one new record (record_meta.is_new = 1); the limits
    still count every record carrying the value.
    """
    lefts, rights, idx = [], [], []
    for i, rule in enumerate(rules):
        sql = _field_sql(rule, columns, only_new) if rule.kind == "field" else _identifier_sql(rule, only_new)
        if sql is None:
            continue
        a, b = _star(con, sql)
        lefts.append(a)
        rights.append(b)
        idx.append(np.full(len(a), i, dtype=np.int64))
    if not lefts:
        return Edges.empty()
    return Edges(np.concatenate(lefts), np.concatenate(rights), np.concatenate(idx))


def sparse_records(con: duckdb.DuckDBPyConnection, columns: set[str], n: int) -> npt.NDArray[np.bool_]:
    """Records without name, birth date and ID number: a phone or address alone cannot tell which
    member of a household they are, so the model's pairs with them are not used (attach decides)."""
    have = [c for c in ("name", "birth_str", "id_number") if c in columns]
    if not have:
        return np.ones(n, dtype=np.bool_)
    cond = " AND ".join(f"{c} IS NULL" for c in have)
    t = con.sql(f"SELECT unique_id FROM person_std WHERE {cond}").to_arrow_table()  # noqa: S608
    mask = np.zeros(n, dtype=np.bool_)
    mask[t.column(0).to_numpy()] = True
    return mask


def supported_pairs(
    con: duckdb.DuckDBPyConnection,
    left: npt.NDArray[np.int64],
    right: npt.NDArray[np.int64],
    columns: set[str],
) -> npt.NDArray[np.bool_]:
    """Which model pairs carry evidence of *who* the person is, not just where they live.

    A pair is used when the names do not disagree (exact, same pinyin, same characters, one character
    different) and it has the same exact name, a close birth date or the same ID number. Phone,
    address and sex agree across a whole household; a pair held up by them alone (吴林 and her
    mother-in-law 刘英莲 at one phone and address) would merge family members.
    """
    n = len(left)
    if n == 0:
        return np.zeros(0, dtype=np.bool_)
    has = {
        c: c in columns
        for c in ("name", "name_pinyin", "name_sorted", "birth_str", "birth_swapped", "id_number")
    }
    conflict = (
        "(a.name IS NOT NULL AND b.name IS NOT NULL AND a.name <> b.name"
        + (" AND a.name_pinyin IS DISTINCT FROM b.name_pinyin" if has["name_pinyin"] else "")
        + (" AND a.name_sorted IS DISTINCT FROM b.name_sorted" if has["name_sorted"] else "")
        + " AND damerau_levenshtein(a.name, b.name) > 1)"
        if has["name"]
        else "false"
    )
    support = ["a.name = b.name"] if has["name"] else []
    if has["birth_str"]:
        support.append("a.birth_str = b.birth_str OR damerau_levenshtein(a.birth_str, b.birth_str) <= 1")
        if has["birth_swapped"]:
            support.append("a.birth_str = b.birth_swapped")
    if has["id_number"]:
        support.append("a.id_number = b.id_number")
    cond = f"NOT {conflict} AND coalesce({' OR '.join(f'({x})' for x in support) or 'false'}, false)"
    con.register("_pairs", pa.table({"i": np.arange(n, dtype=np.int64), "l": left, "r": right}))
    try:
        t = con.sql(
            f"SELECT p.i FROM _pairs p JOIN person_std a ON a.unique_id = p.l "  # noqa: S608
            f"JOIN person_std b ON b.unique_id = p.r WHERE {cond}"
        ).to_arrow_table()
    finally:
        con.unregister("_pairs")
    keep = np.zeros(n, dtype=np.bool_)
    keep[t.column(0).to_numpy()] = True
    return keep


def household_cannot_links(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int]]:
    """Pairs of records that are different people by the source's own account of the family."""
    rows = con.execute(
        "SELECT DISTINCT least(a, b), greatest(a, b) FROM ("
        " SELECT x.unique_id AS a, y.unique_id AS b FROM record_meta x JOIN record_meta y"
        " ON x.source = y.source AND x.household_key = y.household_key AND x.unique_id < y.unique_id"
        " UNION ALL"
        " SELECT x.unique_id, y.unique_id FROM record_meta x JOIN record_meta y"
        " ON x.source = y.source AND y.patient_key = x.guardian_key AND x.unique_id <> y.unique_id"
        ") ORDER BY 1, 2"
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


@dataclass
class _Person:
    sexes: set[str]
    births: set[str]
    ids: set[str]
    names: set[str]
    pinyins: set[str]
    phones: set[str]
    sources: set[str]


def _swapped(a: str, b: str) -> bool:
    """The same characters in another order (swapped given-name characters)."""
    return a != b and sorted(a) == sorted(b)


def _identified(p: _Person) -> bool:
    """A cluster that says who the person is (a name, a birth date or an ID number), not just a number."""
    return bool(p.names or p.births or p.ids)


def _adult(p: _Person, adult_by: str) -> bool:
    """The cluster shows a birth date, and every one is on or before `adult_by` (YYYYMMDD)."""
    return bool(p.births) and all(b <= adult_by for b in p.births)


def _minor(p: _Person, adult_by: str) -> bool:
    """Every birth date the cluster shows is after `adult_by` (YYYYMMDD)."""
    return bool(p.births) and all(b > adult_by for b in p.births)


#: sounds that southern Mandarin speakers and call-centre agents confuse (zh/z, ch/c, sh/s, h/f, n/l,
#: huang/wang, -ng/-n), applied to a surname's pinyin
_SOUNDS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("hu", "w"), ("f", "h"), ("l", "n"), ("ng", "n"))


def _sound(surname: str) -> str:
    out = to_pinyin(surname)
    for a, b in _SOUNDS:
        out = out.replace(a, b)
    return out


#: characters commonly mistaken for each other in writing (形近字)
_LOOK_ALIKE = tuple(
    frozenset(g)
    for g in (
        "王玉",
        "己已巳",
        "未末",
        "土士",
        "日曰",
        "戊戌戍",
        "人入",
        "大太犬",
        "天夫",
        "干千于",
        "午牛",
        "刀力",
        "贝见",
        "候侯",
        "折拆",
        "辨辩",
        "侍待",
        "洒酒",
    )
)


def _readings(char: str) -> set[str]:
    return set(pinyin(char, style=Style.NORMAL, heteronym=True)[0])


def _one_char_confused(a: str, b: str) -> bool:
    """One character heard, read or typed wrong: 程欣琳 / 陈欣琳 and 王贵 / 黄贵 (a surname that sounds
    alike), 江东波 / 江东柏 (characters sharing a reading), 王林军 / 玉林军 (look-alikes). Relatives at one
    phone differ by unrelated characters (宋朋浩 / 宋涵浩; a mother 吕雨涵 and child 雷雨涵)."""
    if len(a) != len(b) or len(a) < 2:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) != 1:
        return False
    x, y = a[diff[0]], b[diff[0]]
    if any(x in g and y in g for g in _LOOK_ALIKE) or _readings(x) & _readings(y):
        return True
    return diff[0] == 0 and _sound(x) == _sound(y)


def _names_agree(weak: _Person, cand: _Person) -> bool:
    """Same name, same pinyin (汪/王), the same characters swapped or one character confused; not "one
    character different": within a family that is a father and son (宋朋浩 / 宋涵浩) as often as a typo."""
    return bool(
        weak.names & cand.names
        or weak.pinyins & cand.pinyins
        or any(_swapped(a, b) or _one_char_confused(a, b) for a in weak.names for b in cand.names)
    )


def _compatible(weak: _Person, cand: _Person, field: str, adult_by: str = "99991231") -> bool:
    """Whether the weak cluster can be the candidate person, judged on what both hold."""
    if field == "phone" and not (weak.names or weak.births):
        # a bare phone: the caller is the one identified person known at that number. Where a
        # household shares it (a child's or a grandparent's record carries the head's phone), several
        # identified clusters hold it and `attach_edges` attaches nothing.
        return _identified(cand) and not (weak.sexes and cand.sexes and weak.sexes.isdisjoint(cand.sexes))
    if weak.sexes and cand.sexes and weak.sexes.isdisjoint(cand.sexes):
        return False
    if weak.ids and cand.ids and weak.ids.isdisjoint(cand.ids):
        return False
    if weak.births and cand.births and not any(close_birth(x, y) for x in weak.births for y in cand.births):
        return False
    if field == "phone":
        if not cand.names:  # a nameless cluster is no better identified than the phone itself
            return False
        if not weak.names:  # phone and birth date: the candidate must show the birth date too
            return bool(weak.births and cand.births)
        return _names_agree(weak, cand)
    if field == "booking":
        # the account booked for this patient; it is the patient only if it is an adult and what the
        # account says of itself agrees (another name is a relative booking for them)
        if not _adult(cand, adult_by) or weak.sources & cand.sources:
            return False  # a child is booked for by a guardian; one account per person per channel
        return not (weak.names and cand.names) or _names_agree(weak, cand)
    # by name (the exact name, rare enough): a cluster without a phone, or whose phones nobody else
    # has (a new or old number of the same person); a shared phone is left to the phone rules
    return True


def attach_edges(
    con: duckdb.DuckDBPyConnection,
    rules: list[Rule],
    cluster: npt.NDArray[np.int64],
    columns: set[str],
    *,
    only_new: bool = False,
    adult_by: str = "99991231",
) -> Edges:
    """Edges from each weak cluster to the only compatible cluster sharing one of its values.

    A weak cluster holds no valid ID number: a record alone, or a few records held together by an
    openid / unionid, say a follower's nickname and their birth date. `cluster` is the cluster
    (smallest member id) of each unique id after clustering; the edge joins the two clusters'
    smallest members, and the caller clusters them with the usual constraints. With `only_new`, only
    weak clusters holding a new record are attached.
    """
    n = len(cluster)
    con.register("_cl", pa.table({"unique_id": np.arange(n, dtype=np.int64), "cluster": cluster}))
    weak_filter = "NOT bool_or(s.id_number IS NOT NULL)" if "id_number" in columns else "true"
    if only_new:
        weak_filter += " AND max(m.is_new) = 1"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _weak AS SELECT c.cluster FROM _cl c "  # noqa: S608
        "JOIN person_std s ON s.unique_id = c.unique_id JOIN record_meta m ON m.unique_id = c.unique_id "
        f"GROUP BY c.cluster HAVING {weak_filter}"
    )
    cols: list[str] = [
        c for c in ("sex", "birth_str", "id_number", "name", "name_pinyin", "phone") if c in columns
    ]
    lone_phone = _clusters_with_unshared_phones(con) if "phone" in columns else set()
    lefts, rights, idx = [], [], []
    try:
        attached: set[int] = set()
        for i, rule in enumerate(rules):
            field = rule.field
            if field == "booking":
                cand = _booking_candidates(con, rule.name)
            elif field is None or field not in columns:
                continue
            else:
                cand = _value_candidates(con, field, rule.max_group_size)
            if not cand:
                continue
            people = _people(con, {c for pair in cand for c in pair}, cols)
            by_cluster: dict[int, list[int]] = defaultdict(list)
            for x, c in cand:
                by_cluster[int(x)].append(int(c))
            for x, clusters in by_cluster.items():
                weak = people[x]
                if field == "booking" and (x in attached or len(clusters) != 1 or clusters[0] == x):
                    continue  # a booking account counts only if all it booked was for one other person
                if field == "phone" and not (weak.names or weak.births):
                    # the one identified adult at the number, compatible or not: a child's records
                    # carry a guardian's number, and phones are adults' (measured: counting
                    # children as candidates too lost recall and prevented no family merge)
                    known = [
                        c for c in clusters if _identified(people[c]) and not _minor(people[c], adult_by)
                    ]
                    if len(known) != 1:
                        continue
                    if weak.sources & people[known[0]].sources:
                        continue  # a second record at the same number in the same system: a relative
                if field == "name":
                    if weak.phones and x not in lone_phone:
                        continue  # its phone is someone else's too: the phone rules decide
                    # the one person known by this name and something more; other bare names
                    # (a follower's, a contact's) are no person of their own to choose
                    clusters = [c for c in clusters if people[c].births or people[c].ids or people[c].phones]
                ok = [c for c in clusters if _compatible(weak, people[c], field, adult_by)]
                if len(ok) == 1:
                    lefts.append(x)
                    rights.append(ok[0])
                    idx.append(i)
                    attached.add(x)
    finally:
        con.unregister("_cl")
        con.execute("DROP TABLE IF EXISTS _weak")
    if not lefts:
        return Edges.empty()
    a, b = np.array(lefts, dtype=np.int64), np.array(rights, dtype=np.int64)
    return Edges(np.minimum(a, b), np.maximum(a, b), np.array(idx, dtype=np.int64))


def _value_candidates(
    con: duckdb.DuckDBPyConnection, field: str, max_group_size: int
) -> list[tuple[int, int]]:
    """(weak cluster, other cluster) pairs sharing a value of `field` carried by few enough records."""
    f = ident(field)
    rows = con.execute(
        f"WITH v AS (SELECT {f} AS v, count(*) AS n FROM person_std WHERE {f} IS NOT NULL GROUP BY 1) "  # noqa: S608
        f"SELECT DISTINCT c1.cluster, c2.cluster FROM person_std s "
        f"JOIN _cl c1 ON c1.unique_id = s.unique_id JOIN _weak w ON w.cluster = c1.cluster "
        f"JOIN v ON v.v = s.{f} AND v.n <= {int(max_group_size)} "
        f"JOIN person_std o ON o.{f} = s.{f} "
        f"JOIN _cl c2 ON c2.unique_id = o.unique_id AND c2.cluster <> c1.cluster ORDER BY 1, 2"
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def _booking_candidates(con: duckdb.DuckDBPyConnection, rule: str) -> list[tuple[int, int]]:
    """(weak cluster, cluster of a patient it booked for) pairs, its own cluster included."""
    present = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [BOOKINGS_TABLE]
    ).fetchall()
    if not present[0][0]:
        return []
    rows = con.execute(
        f"SELECT DISTINCT c1.cluster, c2.cluster FROM {BOOKINGS_TABLE} b "  # noqa: S608 - constant
        "JOIN _cl c1 ON c1.unique_id = b.booker JOIN _weak w ON w.cluster = c1.cluster "
        "JOIN _cl c2 ON c2.unique_id = b.patient WHERE b.rule = ? ORDER BY 1, 2",
        [rule],
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def _clusters_with_unshared_phones(con: duckdb.DuckDBPyConnection) -> set[int]:
    """Weak clusters none of whose phones appears in another cluster."""
    rows = con.execute(
        "WITH p AS (SELECT DISTINCT s.phone, c.cluster FROM person_std s JOIN _cl c ON c.unique_id = s.unique_id"
        " WHERE s.phone IS NOT NULL), shared AS (SELECT phone FROM p GROUP BY phone HAVING count(*) > 1)"
        " SELECT DISTINCT p.cluster FROM p JOIN _weak w ON w.cluster = p.cluster"
        " WHERE p.cluster NOT IN (SELECT p2.cluster FROM p p2 JOIN shared USING (phone))"
    ).fetchall()
    return {int(r[0]) for r in rows}


def _people(con: duckdb.DuckDBPyConnection, clusters: set[int], cols: list[str]) -> dict[int, _Person]:
    """Attribute sets of the given clusters."""
    con.register("_want_c", pa.table({"cluster": pa.array(sorted(clusters), pa.int64())}))
    sel = ", ".join(
        f"list(DISTINCT s.{ident(c)}) FILTER (WHERE s.{ident(c)} IS NOT NULL)"
        if c in cols
        else "[]::VARCHAR[]"
        for c in ("sex", "birth_str", "id_number", "name", "name_pinyin", "phone")
    )
    try:
        rows = con.execute(
            f"SELECT c.cluster, {sel}, list(DISTINCT m.source) FROM person_std s "  # noqa: S608
            "JOIN _cl c ON c.unique_id = s.unique_id JOIN record_meta m ON m.unique_id = s.unique_id "
            "JOIN _want_c w ON w.cluster = c.cluster GROUP BY c.cluster"
        ).fetchall()
    finally:
        con.unregister("_want_c")
    return {int(key): _Person(*[set(v or []) for v in vals]) for key, *vals in rows}
