"""Households: different persons who live together, linked from the evidence their records carry.

Evidence, strongest first (a household is what the evidence connects, within a size limit):

1. ``family_account`` — records of one source sharing a `household_key` (an app's family profiles),
   with each record's `relationship` to the account holder;
2. ``guardian`` — a record naming its guardian's record (`guardian_key`, paediatric records);
3. ``address_phone`` — persons whose golden addresses are the same once normalised and who share a
   phone (blind index, any of their records);
4. ``address`` — persons with the same normalised golden address that few persons share (a flat, not
   a building);
5. ``phone_surname`` — persons sharing a phone that few persons share, with the same surname and no
   address that tells them apart.

Explicit evidence (1, 2) always links. Heuristic links (3–5) never grow a household beyond
`HouseholdSettings.max_size`. Roles come from the evidence: the account's relationships, guardian and
ward, a minor sharing an adult member's surname is a child; otherwise `member`.

The evidence is read from the store with scoped SQL, addresses and golden names are decrypted in
memory only, grouped in an in-process DuckDB, and the result written back (`household_member`,
`person.household_id`). Household ids stay as they were when the membership does not change.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from careloop.clock import Clock
from careloop.config import get_settings
from careloop.identity.golden import refresh_statistics, sync_rows
from careloop.identity.standardise import split_chinese_name
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage.workspace import WorkspaceStore

#: evidence kinds, strongest first
EVIDENCE: tuple[str, ...] = ("family_account", "guardian", "address_phone", "address", "phone_surname")
EXPLICIT = frozenset({"family_account", "guardian"})
#: a record's relationship to its family account's holder -> the member's role
ROLE_OF_RELATIONSHIP: dict[str, str] = {
    "self": "head",
    "spouse": "spouse",
    "child": "child",
    "grandchild": "child",
    "parent": "parent",
    "grandparent": "parent",
    "sibling": "member",
    "other": "member",
}
#: when evidence gives a person several roles, the first of these wins (a role relative to someone
#: else's account says more than being the holder of one's own)
ROLE_PRIORITY: tuple[str, ...] = ("child", "parent", "spouse", "head", "member")
#: evidence entries kept per member (a member of a large account would otherwise carry long lists)
MAX_EVIDENCE_LINKS = 10
_IN_CHUNK = 1_000


@dataclass(frozen=True)
class HouseholdSettings:
    """Limits that keep a building or a switchboard from becoming a household."""

    max_size: int = 8  # heuristic links never make a household larger than this
    max_address_persons: int = 8  # an address shared by more persons is a building, not a home
    max_phone_persons: int = 5  # a phone shared by more persons is a desk or a call centre
    adult_age: int = 18


@dataclass
class HouseholdSummary:
    """What a linking run did."""

    households: int = 0  # households written (of the persons re-linked)
    members: int = 0  # persons in those households
    by_evidence: dict[str, int] = field(default_factory=dict)  # members by their strongest evidence
    persons_relinked: int = 0  # persons whose household was recomputed and rewritten
    refused_links: int = 0  # heuristic links refused because the household would exceed max_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "households": self.households,
            "members": self.members,
            "by_evidence": dict(self.by_evidence),
            "persons_relinked": self.persons_relinked,
            "refused_links": self.refused_links,
        }


@dataclass(frozen=True)
class _Edge:
    kind: str
    a: str
    b: str
    detail_a: dict[str, Any]  # what the evidence says about a (its record, relationship ...)
    detail_b: dict[str, Any]


# ---- evidence -------------------------------------------------------------------------------------

_LINKED = "FROM identity_link AS l JOIN patient AS p ON p.source = l.source AND p.key = l.patient_key"

_ADDRESS_NOISE = re.compile(r"[\s\u3000,，]")
_PROVINCE = re.compile(r"^[^省市区县]{2,7}(省|自治区)")
_CITY = re.compile(r"^[^省市区县]{2,6}市")
_DIGIT = re.compile(r"[0-9０-９一二三四五六七八九十]")


def normalise_address(address: str | None) -> str | None:
    """Without spaces and a leading province / city; None when too vague to locate a home (no number)."""
    if not address:
        return None
    a = _CITY.sub("", _PROVINCE.sub("", _ADDRESS_NOISE.sub("", address))).lower()
    return a if len(a) >= 6 and _DIGIT.search(a) else None


def _family_edges(store: WorkspaceStore) -> tuple[list[_Edge], dict[str, list[str]]]:
    """Family-account edges (each profile to the account holder) and the roles they state."""
    rows = store.rows(
        "SELECT l.person_id, p.source, p.key, p.household_key, p.relationship "
        f"{_LINKED} WHERE p.household_key IS NOT NULL ORDER BY p.source, p.household_key, p.key"
    )
    accounts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    roles: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        accounts[(r["source"], r["household_key"])].append(r)
        if r["relationship"]:
            roles[r["person_id"]].append(ROLE_OF_RELATIONSHIP.get(r["relationship"], "member"))
    edges = []
    for members in accounts.values():
        holders = [m for m in members if m["relationship"] == "self"]
        hub = min(holders or members, key=lambda m: (m["person_id"], m["key"]))
        for m in members:
            if m["person_id"] != hub["person_id"]:
                edges.append(
                    _Edge(
                        "family_account",
                        hub["person_id"],
                        m["person_id"],
                        {"record": f"{hub['source']}:{hub['key']}", "relationship": hub["relationship"]},
                        {"record": f"{m['source']}:{m['key']}", "relationship": m["relationship"]},
                    )
                )
    return edges, roles


def _guardian_edges(store: WorkspaceStore) -> list[_Edge]:
    rows = store.rows(
        "SELECT l.person_id, p.source, p.key, g.person_id AS guardian_id, p.guardian_key "
        f"{_LINKED} JOIN identity_link AS g ON g.source = p.source AND g.patient_key = p.guardian_key "
        "WHERE p.guardian_key IS NOT NULL ORDER BY p.source, p.key"
    )
    return [
        _Edge(
            "guardian",
            r["guardian_id"],
            r["person_id"],
            {"record": f"{r['source']}:{r['guardian_key']}", "role": "guardian"},
            {"record": f"{r['source']}:{r['key']}", "role": "ward"},
        )
        for r in rows
        if r["guardian_id"] != r["person_id"]
    ]


def _addresses(store: WorkspaceStore, cipher: FieldCipher) -> pa.Table:
    """(person_id, addr): each person's golden address, normalised; decrypted in memory only.

    The golden address is where the person lives now by the survivorship rules: an address a person
    has left (an older record's) is not evidence of living with its current residents.
    """
    t = store.sql("SELECT person_id, address FROM person WHERE address IS NOT NULL")
    plain = [normalise_address(cipher.decrypt(v, "address")) for v in t.column("address").to_pylist()]
    return pa.table(
        {"person_id": t.column("person_id").cast(pa.string()), "addr": pa.array(plain, pa.string())}
    ).filter(pa.array([p is not None for p in plain], pa.bool_()))


def _heuristic_groups(
    phones: pa.Table, addrs: pa.Table, settings: HouseholdSettings
) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """Groups linked by address (+ phone), and phone-sharing pairs (to be checked for surnames)."""
    con = duckdb.connect()
    try:
        con.register("ph", phones)
        con.register("ad", addrs)
        params = {
            "maxa": settings.max_address_persons,
            "maxp": settings.max_phone_persons,
            "maxs": settings.max_size,
        }
        groups = con.sql(
            "WITH a AS (SELECT DISTINCT CAST(person_id AS VARCHAR) AS person_id, addr FROM ad), "
            "p AS (SELECT DISTINCT CAST(person_id AS VARCHAR) AS person_id, "
            "CAST(phone_bidx AS VARCHAR) AS phone FROM ph), "
            "by_addr AS (SELECT addr, list(person_id ORDER BY person_id) AS m FROM a GROUP BY addr "
            "HAVING count(*) >= 2), "
            "small AS (SELECT 'address' AS kind, addr AS g, m FROM by_addr WHERE len(m) <= $maxa), "
            "big AS (SELECT 'address_phone' AS kind, a.addr || '|' || p.phone AS g, "
            "list(a.person_id ORDER BY a.person_id) AS m FROM a JOIN p ON p.person_id = a.person_id "
            "WHERE a.addr IN (SELECT addr FROM by_addr WHERE len(m) > $maxa) "
            "GROUP BY a.addr, p.phone HAVING count(*) BETWEEN 2 AND $maxs) "
            "SELECT kind, m FROM (SELECT * FROM big UNION ALL SELECT * FROM small) ORDER BY kind, g",
            params={k: params[k] for k in ("maxa", "maxs")},
        ).fetchall()
        pairs = con.sql(
            "WITH p AS (SELECT DISTINCT CAST(person_id AS VARCHAR) AS person_id, "
            "CAST(phone_bidx AS VARCHAR) AS phone FROM ph), "
            "g AS (SELECT phone FROM p GROUP BY phone HAVING count(*) BETWEEN 2 AND $maxp) "
            "SELECT DISTINCT x.person_id, y.person_id FROM p AS x JOIN p AS y "
            "ON x.phone = y.phone AND x.person_id < y.person_id WHERE x.phone IN (SELECT phone FROM g) "
            "ORDER BY 1, 2",
            params={"maxp": params["maxp"]},
        ).fetchall()
    finally:
        con.close()
    return [(k, list(m)) for k, m in groups], [(a, b) for a, b in pairs]


def _people(store: WorkspaceStore, cipher: FieldCipher, ids: set[str]) -> dict[str, tuple[str | None, Any]]:
    """person_id -> (surname, birth_date) from the golden record, for the persons in `ids`.

    One scan of `person` (cheaper than look-ups by id at this size); only the names of `ids` are
    decrypted, each distinct ciphertext once.
    """
    t = store.sql(
        "SELECT person_id, name, birth_date FROM person WHERE name IS NOT NULL OR birth_date IS NOT NULL"
    )
    keep = [p in ids for p in t.column("person_id").to_pylist()]
    t = t.filter(pa.array(keep, pa.bool_()))
    surnames: dict[str, str | None] = {}
    out: dict[str, tuple[str | None, Any]] = {}
    for pid, token, birth in zip(
        *(t.column(c).to_pylist() for c in ("person_id", "name", "birth_date")), strict=True
    ):
        if token is not None and token not in surnames:
            name = cipher.decrypt(token, "name")
            surnames[token] = split_chinese_name(name)[0] if name else None
        out[pid] = (surnames.get(token) if token else None, birth)
    return out


@dataclass(frozen=True)
class _InChunk:
    names: str
    params: dict[str, str]


def _in_chunks(ids: list[str]) -> Iterator[_InChunk]:
    """IN-list parameters in fixed-size chunks (padded), so every chunk is the same statement."""
    names = ", ".join(f":p{i}" for i in range(_IN_CHUNK))
    for start in range(0, len(ids), _IN_CHUNK):
        part = ids[start : start + _IN_CHUNK]
        part = part + [part[-1]] * (_IN_CHUNK - len(part))
        yield _InChunk(names, {f"p{i}": v for i, v in enumerate(part)})


# ---- linking ----------------------------------------------------------------------------------------


class _Groups:
    """Union-find with sizes and the edges that joined each pair."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str, limit: int | None) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        sa, sb = self.size.get(ra, 1), self.size.get(rb, 1)
        if limit is not None and sa + sb > limit:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] = sa + sb
        return True

    def components(self, members: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for m in members:
            out[self.find(m)].append(m)
        return out


def _age(birth: Any, today: date) -> int | None:
    if not isinstance(birth, date):
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _household_ids(components: list[list[str]], previous: dict[str, str], taken: set[str]) -> dict[int, str]:
    """Component index -> household id: the previous id most members held, else one derived from the
    smallest member (sha-256, so ids do not reveal person ids); each id goes to one household."""
    votes = []
    for i, members in enumerate(components):
        for hid, n in Counter(previous[m] for m in members if m in previous).items():
            votes.append((-n, hid, min(members), i))
    out: dict[int, str] = {}
    used: set[str] = set()
    for _, hid, _, i in sorted(votes):
        if i not in out and hid not in used:
            out[i] = hid
            used.add(hid)
    for i, members in enumerate(components):
        if i in out:
            continue
        seed, n = min(members), 0
        while True:
            hid = "hh_" + hashlib.sha256(f"{seed}#{n}".encode()).hexdigest()[:16]
            if hid not in used and hid not in taken:
                break
            n += 1
        out[i] = hid
        used.add(hid)
    return out


@dataclass
class _Evidence:
    """Every link the workspace's records support, strongest kinds first, and what they say of roles."""

    explicit: list[_Edge]  # family accounts and guardians: always applied
    heuristic: list[_Edge]  # applied within the size limit, strongest kind first
    stated_roles: dict[str, list[str]]  # person -> roles its family-account records state
    guardian_roles: dict[str, str]  # person -> child (a ward) or head (a guardian)
    people: dict[str, tuple[str | None, Any]]  # person -> (surname, birth date) of linked persons


def _gather(store: WorkspaceStore, cipher: FieldCipher, settings: HouseholdSettings) -> _Evidence:
    family, stated_roles = _family_edges(store)
    guardian = _guardian_edges(store)
    phones = store.sql(f"SELECT DISTINCT l.person_id, p.phone_bidx {_LINKED} WHERE p.phone_bidx IS NOT NULL")
    addrs = _addresses(store, cipher)
    groups, phone_pairs = _heuristic_groups(phones, addrs, settings)
    addr_sets: dict[str, set[str]] = defaultdict(set)
    for pid, a in zip(addrs.column("person_id").to_pylist(), addrs.column("addr").to_pylist(), strict=True):
        addr_sets[pid].add(a)
    candidates = {m for _, members in groups for m in members} | {x for pair in phone_pairs for x in pair}
    candidates |= {x for e in (*family, *guardian) for x in (e.a, e.b)}
    people = _people(store, cipher, candidates)

    def same_surname(a: str, b: str) -> bool:
        sa, sb = people.get(a, (None, None))[0], people.get(b, (None, None))[0]
        return sa is not None and sa == sb

    heuristic: list[_Edge] = []
    for kind, members in groups:
        hub = members[0]
        for m in members[1:]:
            detail = {"surname_match": same_surname(hub, m)}
            heuristic.append(_Edge(kind, hub, m, detail, detail))
    for a, b in phone_pairs:
        apart = addr_sets.get(a) and addr_sets.get(b) and not (addr_sets[a] & addr_sets[b])
        if same_surname(a, b) and not apart:
            heuristic.append(_Edge("phone_surname", a, b, {"surname_match": True}, {"surname_match": True}))
    heuristic.sort(key=lambda e: EVIDENCE.index(e.kind))
    guardian_roles = {e.b: "child" for e in guardian}
    for e in guardian:
        guardian_roles.setdefault(e.a, "head")
    return _Evidence([*family, *guardian], heuristic, stated_roles, guardian_roles, people)


def link_households(
    store: WorkspaceStore,
    *,
    clock: Clock,
    person_ids: Collection[str] | None = None,
    settings: HouseholdSettings | None = None,
    cipher: FieldCipher | None = None,
) -> HouseholdSummary:
    """(Re)link the households of `person_ids` (None: everyone) and of the households they touch.

    Evidence is gathered for the whole workspace (a new record can join a person to anyone); only
    the households of the given persons, their previous households and whatever those connect to
    are rewritten. Build the golden records first: surnames, ages and addresses come from them.
    """
    settings = settings or HouseholdSettings()
    if cipher is None:
        s = get_settings()
        cipher = FieldCipher(load_keyring(s.key_file, environment=s.environment))
    summary = HouseholdSummary()
    if person_ids is not None and not person_ids:
        return summary
    refresh_statistics(store, ("patient", "identity_link", "person", "household_member"))
    ev = _gather(store, cipher, settings)

    uf = _Groups()
    used: list[_Edge] = []
    for e in ev.explicit:
        uf.union(e.a, e.b, None)
        used.append(e)
    for e in ev.heuristic:
        if uf.union(e.a, e.b, settings.max_size):
            used.append(e)
        else:
            summary.refused_links += 1

    linked = {x for e in used for x in (e.a, e.b)}
    previous = {
        r["person_id"]: r["household_id"]
        for r in store.rows("SELECT person_id, household_id FROM household_member")
    }
    comps = uf.components(sorted(linked))
    comp_of = {m: root for root, members in comps.items() for m in members}
    if person_ids is None:
        relink, roots = set(linked) | set(previous), set(comps)
    else:
        relink, roots = _touched(set(person_ids), previous, comps, comp_of)
    chosen = [sorted(comps[r]) for r in sorted(roots, key=lambda r: min(comps[r]))]
    untouched_ids = {h for p, h in previous.items() if p not in relink}
    ids = _household_ids(chosen, {p: h for p, h in previous.items() if p in relink}, untouched_ids)

    evidence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in used:  # explicit first, then heuristics by strength: the first links are the strongest
        for me, other, detail in ((e.a, e.b, e.detail_a), (e.b, e.a, e.detail_b)):
            if len(evidence[me]) < MAX_EVIDENCE_LINKS:
                evidence[me].append({"kind": e.kind, "with": other, **detail})
    now = clock.now()
    rows = []
    for i, members in enumerate(chosen):
        roles = _roles(members, ev, now.date(), settings)
        for m in members:
            strongest = min((x["kind"] for x in evidence[m]), key=EVIDENCE.index)
            summary.by_evidence[strongest] = summary.by_evidence.get(strongest, 0) + 1
            rows.append(
                {
                    "household_id": ids[i],
                    "person_id": m,
                    "role": roles[m],
                    "evidence": orjson.dumps({"strongest": strongest, "links": evidence[m]}).decode(),
                    "updated_at": now,
                }
            )
    summary.households = len(chosen)
    summary.members = len(rows)
    summary.persons_relinked = len(relink)
    _write(store, rows, relink if person_ids is not None else None)
    return summary


def _roles(members: list[str], ev: _Evidence, today: date, settings: HouseholdSettings) -> dict[str, str]:
    """Each member's role; one head at most (an account holder before a guardian, then the smallest id)."""
    adults = {
        ev.people.get(m, (None, None))[0]
        for m in members
        if (_age(ev.people.get(m, (None, None))[1], today) or 0) >= settings.adult_age
    }
    roles = {
        m: _role(m, ev.stated_roles, ev.guardian_roles, ev.people, adults, today, settings) for m in members
    }
    heads = [m for m in members if roles[m] == "head"]
    if heads:
        keep = min(heads, key=lambda h: ("head" not in ev.stated_roles.get(h, ()), h))
        roles.update({m: "member" for m in heads if m != keep})
    return roles


def _role(
    person: str,
    roles: dict[str, list[str]],
    guardian_roles: dict[str, str],
    people: dict[str, tuple[str | None, Any]],
    adult_surnames: set[str | None],
    today: date,
    settings: HouseholdSettings,
) -> str:
    stated = roles.get(person)
    if stated:
        return min(stated, key=ROLE_PRIORITY.index)
    if person in guardian_roles:
        return guardian_roles[person]
    surname, birth = people.get(person, (None, None))
    age = _age(birth, today)
    if age is not None and age < settings.adult_age and surname is not None and surname in adult_surnames:
        return "child"
    return "member"


def _touched(
    wanted: set[str],
    previous: dict[str, str],
    comps: dict[str, list[str]],
    comp_of: dict[str, str],
) -> tuple[set[str], set[str]]:
    """Persons to rewrite and the components they form: the wanted persons, their components, and
    the members of every previous household any of them was in, until nothing more is reached."""
    members_of: dict[str, set[str]] = defaultdict(set)
    for p, h in previous.items():
        members_of[h].add(p)
    relink: set[str] = set()
    frontier = set(wanted)
    while frontier:
        relink |= frontier
        reached: set[str] = set()
        for p in frontier:
            if p in comp_of:
                reached.update(comps[comp_of[p]])
            if p in previous:
                reached.update(members_of[previous[p]])
        frontier = reached - relink
    roots = {comp_of[p] for p in relink if p in comp_of}
    return relink, roots


def _write(store: WorkspaceStore, rows: list[dict[str, Any]], relink: set[str] | None) -> None:
    """Replace the household rows of the re-linked persons (all when None) and set person.household_id."""
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("household_id", pa.string()),
                ("person_id", pa.string()),
                ("role", pa.string()),
                ("evidence", pa.string()),
                ("updated_at", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    set_household = (
        "UPDATE person SET household_id = (SELECT hm.household_id FROM household_member AS hm "
        "WHERE hm.person_id = person.person_id) WHERE household_id IS DISTINCT FROM "
        "(SELECT hm.household_id FROM household_member AS hm WHERE hm.person_id = person.person_id)"
    )
    with store.backend.transaction():
        if relink is None:  # only the rows that changed: deleting a million index entries takes minutes
            sync_rows(store, "household_member", "person_id", table)
            store.execute(set_household)
            return
        for chunk in _in_chunks(sorted(relink)):
            store.execute(f"DELETE FROM household_member WHERE person_id IN ({chunk.names})", chunk.params)  # noqa: S608 - placeholders only
        store.insert("household_member", table)
        for chunk in _in_chunks(sorted(relink)):
            store.execute(f"{set_household} AND person_id IN ({chunk.names})", chunk.params)
