"""Identity on arrival: which unified patient an event belongs to.

For each event, in this order, the first that names exactly one person wins:

1. the ``userId`` — an id this workspace has tied to a person before (`event_identity`), else, when
   the source says what its userIds are (`--user-id-kind`), the patient whose records carry it
   (HIS number, app user id, openid / unionid, phone, ID number — through identity resolution's links),
   or careloop's own person id;
2. identifiers in the traits (identify traits, ``context.traits``): phone, ID number, e-mail, unionid,
   openid — accepted only when they lead to one person (a phone shared by a family names nobody);
3. the ``anonymousId``, when an earlier call tied that device to a person.

When a userId or trait names the person, the userId and the anonymousId are tied to them
(`event_identity`), and the device's earlier anonymous events are attributed too (stitching). An
``alias`` ties ``previousId`` to the person of ``userId``. Everything is compared by keyed blind index;
no identifier is decrypted. Events whose person is not known yet keep their hints and are attributed
by `reattribute` once identity resolution has linked the records that name them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.patients.lookup import RecordRef
from careloop.storage import WorkspaceStore

ANON = "anonymous_id"
_NEGATIVE_TTL = 30.0  # seconds an unknown id is remembered as unknown
_IDENTITY_CHECK = 5.0  # seconds between checks for identity changes that void the caches
#: ties that identity data can always derive again are cached in memory, not stored
_DERIVABLE = (
    "userId is a person id",
    *(f"userId {k}" for k in ("app_user_id", "his_number", "openid", "unionid", "phone", "id_number")),
)
#: patient_identifier kinds a userId / trait kind may be stored under
_IDENTIFIER_KINDS = {
    "app_user_id": ("app_user_id",),
    "his_number": ("his_number",),
    "openid": ("openid",),
    "unionid": ("unionid",),
    "phone": ("phone",),
    "id_number": ("id_number",),
    "email": ("email",),
}


@dataclass
class Attribution:
    """The outcome for a batch: a person (or None) per event, new ties, and devices stitched."""

    persons: list[str | None]
    vias: list[str | None]
    ties: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (ns, bidx) -> (person, via)
    stitched: dict[str, str] = field(default_factory=dict)  # anonymous id -> person


class Attributor:
    """Attributes batches of events; caches what it learns (ids -> persons) between batches."""

    def __init__(
        self, store: WorkspaceStore, *, clock: Clock = SYSTEM_CLOCK, cache_size: int = 500_000
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_size = cache_size
        self._ties: dict[tuple[str, str], str] = {}
        self._unknown: dict[tuple[str, str], float] = {}
        self._identity_seen: Any = None
        self._identity_checked = -1e9

    def _forget_if_identity_changed(self) -> None:
        """Merges and splits move ids between persons: drop what the caches learnt when one happened."""
        now = time.monotonic()
        if now - self._identity_checked < _IDENTITY_CHECK:
            return
        self._identity_checked = now
        seen = self.store.tuples("SELECT count(*), max(at) FROM identity_history")[0]
        if seen != self._identity_seen:
            self._ties.clear()
            self._unknown.clear()
            self._identity_seen = seen

    def attribute(self, hints: Sequence[dict[str, Any]], anonymous_ids: Sequence[str | None]) -> Attribution:
        self._forget_if_identity_changed()
        self._load_ties(hints)
        lookups = self._lookups(hints)
        out = Attribution(persons=[], vias=[])
        for h, anon in zip(hints, anonymous_ids, strict=True):
            person, via = self._decide(h, lookups)
            out.persons.append(person)
            out.vias.append(via)
            if person is None:
                continue
            user = h.get("user")
            trusted = via not in ("userId tie", "anonymousId tie")  # a shared device must not rename a user
            if user and trusted and self._ties.get((user["ns"], user["bidx"])) != person:
                self._tie(out, (user["ns"], user["bidx"]), person, via or "")
            if h.get("anon") and anon and self._ties.get((ANON, h["anon"])) != person:
                self._tie(out, (ANON, h["anon"]), person, f"anonymousId with {via}")
                out.stitched[anon] = person
            prev = h.get("previous")
            if prev:
                for key in ((user["ns"], prev["user"]) if user else None, (ANON, prev["anon"])):
                    if key and self._ties.get(key) != person:
                        self._tie(out, key, person, "alias previousId")
        return out

    def _tie(self, out: Attribution, key: tuple[str, str], person: str, via: str) -> None:
        out.ties[key] = (person, via)
        self._ties[key] = person
        self._unknown.pop(key, None)

    def save(self, result: Attribution) -> None:
        """Store the new ties (those identity data cannot derive again) and attribute the stitched
        devices' earlier anonymous events."""
        now = self.clock.now()
        rows = [
            {
                "namespace": ns,
                "id_bidx": b,
                "person_id": p,
                "via": via,
                "first_seen_at": now,
                "updated_at": now,
            }
            for (ns, b), (p, via) in result.ties.items()
            if via not in _DERIVABLE
        ]
        if rows:
            self.store.merge(
                "event_identity",
                rows,
                ("namespace", "id_bidx"),
                {"person_id": "{s}.person_id", "via": "{s}.via", "updated_at": "{s}.updated_at"},
            )
        by_person: dict[str, list[str]] = defaultdict(list)
        for anon, person in result.stitched.items():
            by_person[person].append(anon)
        for person, anons in by_person.items():
            self.store.execute(
                "UPDATE event SET person_id = :p WHERE person_id IS NULL AND anonymous_id = ANY(:a)",
                {"a": anons, "p": person},
            )
        if len(self._ties) > self.cache_size:
            self._ties.clear()

    # ---- look-ups ---------------------------------------------------------------------------------
    def _load_ties(self, hints: Sequence[dict[str, Any]]) -> None:
        now = time.monotonic()
        wanted = {k for h in hints for k in _tie_keys(h) if k not in self._ties}
        wanted = {k for k in wanted if now - self._unknown.get(k, -1e9) > _NEGATIVE_TTL}
        if not wanted:
            return
        for r in self.store.tuples(
            "SELECT namespace, id_bidx, person_id FROM event_identity WHERE id_bidx = ANY(:b)",
            {"b": sorted({b for _, b in wanted})},
        ):
            self._ties[(r[0], r[1])] = r[2]
        for k in wanted:  # (not `wanted - self._ties.keys()`: that walks the whole cache)
            if k not in self._ties:
                self._unknown[k] = now
        if len(self._unknown) > self.cache_size:
            self._unknown.clear()

    def _lookups(self, hints: Sequence[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
        """Persons behind each identifier hint not settled by a tie: {(kind, ibidx): {person ids}}."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        person_ids: set[str] = set()
        for h in hints:
            user = h.get("user")
            if user and (user["ns"], user["bidx"]) in self._ties:
                continue
            if user and user.get("person_id"):
                person_ids.add(user["person_id"])
            for idh in ([user] if user and "kind" in user else []) + list(h.get("ids", [])):
                wanted.setdefault((idh["kind"], idh["ibidx"]), idh)
        found: dict[tuple[str, str], set[str]] = {}
        if person_ids:
            for r in self.store.tuples(
                "SELECT person_id FROM person WHERE person_id = ANY(:p)", {"p": sorted(person_ids)}
            ):
                found[("person_id", r[0])] = {r[0]}
        if not wanted:
            return found
        records: dict[tuple[str, str], set[RecordRef]] = defaultdict(set)
        self._by_identifier(wanted, records)
        self._by_field(wanted, records, found)
        owners = self._owners({r for refs in records.values() for r in refs})
        for key, refs in records.items():
            found.setdefault(key, set()).update(owners[r] for r in refs if r in owners)
        return found

    def _owners(self, refs: set[RecordRef]) -> dict[RecordRef, str]:
        """The person each record is linked to (keys matched in the query, (source, key) pairs here)."""
        out: dict[RecordRef, str] = {}
        if not refs:
            return out
        for source, key, person in self.store.tuples(
            "SELECT source, patient_key, person_id FROM identity_link WHERE patient_key = ANY(:k)",
            {"k": sorted({r.key for r in refs})},
        ):
            ref = RecordRef(source, key)
            if ref in refs:
                out[ref] = person
        return out

    def _by_identifier(
        self, wanted: dict[tuple[str, str], dict[str, Any]], records: dict[tuple[str, str], set[RecordRef]]
    ) -> None:
        by_ibidx = {k[1]: k for k in wanted}
        if by_ibidx:
            rows = self.store.tuples(
                "SELECT source, patient_key, kind, system, value_bidx FROM patient_identifier "
                "WHERE value_bidx = ANY(:b)",
                {"b": sorted(by_ibidx)},
            )
            for source, key, kind, system, b in rows:
                want = by_ibidx[b]
                hint = wanted[want]
                if kind not in _IDENTIFIER_KINDS.get(want[0], ()):
                    continue
                if hint.get("system") and system and hint["system"] != system:
                    continue
                records[want].add(RecordRef(source, key))

    def _by_field(
        self,
        wanted: dict[tuple[str, str], dict[str, Any]],
        records: dict[tuple[str, str], set[RecordRef]],
        found: dict[tuple[str, str], set[str]],
    ) -> None:
        for fld in ("phone", "id_number", "email"):
            by_fbidx = {h["fbidx"]: k for k, h in wanted.items() if h["kind"] == fld and h.get("fbidx")}
            if not by_fbidx:
                continue
            params = {"b": sorted(by_fbidx)}
            for source, key, b in self.store.tuples(
                f"SELECT source, key, {fld}_bidx FROM patient WHERE {fld}_bidx = ANY(:b)",  # noqa: S608 - fixed names
                params,
            ):
                records[by_fbidx[b]].add(RecordRef(source, key))
            if fld == "email":
                continue
            for pid, b in self.store.tuples(
                f"SELECT person_id, {fld}_bidx FROM person WHERE {fld}_bidx = ANY(:b)",  # noqa: S608 - fixed names
                params,
            ):
                found.setdefault(by_fbidx[b], set()).add(pid)

    def _decide(
        self, h: dict[str, Any], lookups: dict[tuple[str, str], set[str]]
    ) -> tuple[str | None, str | None]:
        user = h.get("user")
        if user:
            tied = self._ties.get((user["ns"], user["bidx"]))
            if tied:
                return tied, "userId tie"
            if user.get("person_id") and ("person_id", user["person_id"]) in lookups:
                return user["person_id"], "userId is a person id"
            if "kind" in user:
                persons = lookups.get((user["kind"], user["ibidx"]), set())
                if len(persons) == 1:
                    return next(iter(persons)), f"userId {user['kind']}"
        for idh in h.get("ids", []):
            persons = lookups.get((idh["kind"], idh["ibidx"]), set())
            if len(persons) == 1:
                return next(iter(persons)), f"trait {idh['kind']}"
        if h.get("anon"):
            tied = self._ties.get((ANON, h["anon"]))
            if tied:
                return tied, "anonymousId tie"
        return None, None


def _tie_keys(h: dict[str, Any]) -> Iterable[tuple[str, str]]:
    if h.get("user"):
        yield (h["user"]["ns"], h["user"]["bidx"])
    if h.get("anon"):
        yield (ANON, h["anon"])


def reattribute(store: WorkspaceStore, *, clock: Clock = SYSTEM_CLOCK, batch: int = 5000) -> dict[str, int]:
    """Attribute stored events that have no person yet (e.g. after identity resolution linked the records
    that name them); returns the events attributed per person."""
    attributor = Attributor(store, clock=clock)
    done: dict[str, int] = defaultdict(int)
    rows = store.rows(
        "SELECT source, key, anonymous_id, identity FROM event WHERE person_id IS NULL AND identity IS NOT NULL "
        "ORDER BY received_at"
    )
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        hints = [
            orjson.loads(r["identity"]) if isinstance(r["identity"], str) else r["identity"] for r in chunk
        ]
        result = attributor.attribute(hints, [r["anonymous_id"] for r in chunk])
        attributor.save(result)
        by_person: dict[tuple[str, str], list[str]] = defaultdict(list)
        for r, p in zip(chunk, result.persons, strict=True):
            if p is not None:
                by_person[(p, r["source"])].append(r["key"])
        for (person, source), keys in by_person.items():
            store.execute(
                "UPDATE event SET person_id = :p WHERE person_id IS NULL AND source = :s AND key = ANY(:k)",
                {"k": keys, "p": person, "s": source},
            )
            done[person] += len(keys)
    return dict(done)
