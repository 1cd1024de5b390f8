"""Manual merges and splits: `careloop identity merge|split`, honoured by every later run.

A merge stores a must-link between one record of each person; a split stores cannot-links between
the records taken out and those left (and must-links holding the taken-out records together). Both
take effect at once — the links move and `identity_history` records who, when, why and which
records — and live in `identity_override`, so a later resolution run keeps them: clustering joins
must-links first, unconditionally, and never joins across a cannot-link. A merge lifts earlier
splits between the two persons.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from careloop.clock import Clock
from careloop.errors import ConfigError, NotFoundError
from careloop.identity.records import parse_record_ref, record_ref
from careloop.identity.stable_ids import derived_id
from careloop.storage.workspace import WorkspaceStore

MERGE, SPLIT = "merge", "split"


def constraints(
    store: WorkspaceStore, index: Mapping[str, int]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(must-links, cannot-links) of the active overrides, as record indices; records no longer in
    the store are skipped."""
    must: list[tuple[int, int]] = []
    cannot: list[tuple[int, int]] = []
    for o in store.rows(
        "SELECT action, record_a, record_b FROM identity_override WHERE active ORDER BY created_at, id"
    ):
        a, b = index.get(o["record_a"]), index.get(o["record_b"])
        if a is None or b is None or a == b:
            continue
        (must if o["action"] == MERGE else cannot).append((a, b))
    return must, cannot


def list_overrides(store: WorkspaceStore, *, include_inactive: bool = True) -> list[dict[str, Any]]:
    where = "" if include_inactive else " WHERE active"
    return store.rows(
        "SELECT id, action, record_a, record_b, actor, reason, created_at, active FROM identity_override"  # noqa: S608
        + where
        + " ORDER BY created_at, id"
    )


def person_records(store: WorkspaceStore, person_id: str) -> list[str]:
    """The records linked to a person, sorted; NotFoundError when there are none."""
    rows = store.rows(
        "SELECT source, patient_key FROM identity_link WHERE person_id = :p ORDER BY source, patient_key",
        {"p": person_id},
    )
    if not rows:
        raise NotFoundError(
            f"no person {person_id!r} in this workspace; find ids with `careloop identity history` "
            "or run `careloop identity resolve` first"
        )
    return [record_ref(r["source"], r["patient_key"]) for r in rows]


def history(store: WorkspaceStore, person_id: str) -> list[dict[str, Any]]:
    """Every history row about a person (as the subject or as another person involved), oldest first."""
    rows = store.rows(
        "SELECT id, at, action, person_id, other_person_ids, records, actor, reason, evidence, run_id "
        "FROM identity_history WHERE person_id = :p OR CAST(other_person_ids AS TEXT) LIKE :pat "
        "ORDER BY at, id",
        {"p": person_id, "pat": f'%"{person_id}"%'},
    )
    for r in rows:
        for k in ("other_person_ids", "records", "evidence"):
            if isinstance(r[k], str):
                r[k] = orjson.loads(r[k])
    if not rows:
        raise NotFoundError(f"no history for person {person_id!r} in this workspace")
    return rows


def _oid(clock: Clock) -> str:
    return f"o{clock.now():%Y%m%d%H%M%S}{secrets.token_hex(4)}"


def _history_row(
    hid: str,
    clock: Clock,
    action: str,
    person: str,
    others: list[str],
    records: list[str],
    actor: str,
    reason: str,
) -> dict[str, Any]:
    return {
        "id": hid,
        "at": clock.now(),
        "action": action,
        "person_id": person,
        "other_person_ids": orjson.dumps(others).decode(),
        "records": orjson.dumps(records).decode(),
        "actor": actor,
        "reason": reason,
        "evidence": orjson.dumps({"override": action}).decode(),
        "run_id": None,
    }


def _check_reason(reason: str, actor: str) -> None:
    if not reason.strip():
        raise ConfigError("give a --reason: every manual merge or split records why")
    if not actor.strip():
        raise ConfigError("give an --actor: every manual merge or split records who made it")


def merge(
    store: WorkspaceStore, person_a: str, person_b: str, *, reason: str, actor: str, clock: Clock
) -> dict[str, Any]:
    """Merge person B into person A (A's id survives); returns what was done."""
    _check_reason(reason, actor)
    if person_a == person_b:
        raise ConfigError("merge needs two different persons")
    recs_a, recs_b = person_records(store, person_a), person_records(store, person_b)
    now = clock.now()
    lifted = _lift_splits(store, set(recs_a), set(recs_b))
    with store.backend.transaction():
        store.insert(
            "identity_override",
            [
                {
                    "id": _oid(clock),
                    "action": MERGE,
                    "record_a": recs_a[0],
                    "record_b": recs_b[0],
                    "actor": actor,
                    "reason": reason,
                    "created_at": now,
                    "active": True,
                }
            ],
        )
        for oid in lifted:
            store.execute("UPDATE identity_override SET active = FALSE WHERE id = :id", {"id": oid})
        store.execute(
            "UPDATE identity_link SET person_id = :a, rule = 'manual', match_probability = NULL, "
            "run_id = NULL, linked_at = :now WHERE person_id = :b",
            {"a": person_a, "b": person_b, "now": now},
        )
        store.insert(
            "identity_history",
            [
                _history_row(
                    f"{_oid(clock)}-1", clock, "manual_merge", person_a, [person_b], recs_b, actor, reason
                )
            ],
        )
    return {
        "person_id": person_a,
        "merged": person_b,
        "records": len(recs_a) + len(recs_b),
        "lifted_splits": len(lifted),
    }


def _lift_splits(store: WorkspaceStore, a: set[str], b: set[str]) -> list[str]:
    out = []
    for o in store.rows(
        "SELECT id, record_a, record_b FROM identity_override WHERE active AND action = 'split'"
    ):
        ra, rb = o["record_a"], o["record_b"]
        if (ra in a and rb in b) or (ra in b and rb in a):
            out.append(str(o["id"]))
    return out


def split(
    store: WorkspaceStore, person: str, records: Collection[str], *, reason: str, actor: str, clock: Clock
) -> dict[str, Any]:
    """Take `records` out of `person` into a new person; returns the new person's id."""
    _check_reason(reason, actor)
    for r in records:
        parse_record_ref(r)
    members = person_records(store, person)
    out = sorted(set(records))
    foreign = [r for r in out if r not in members]
    if foreign:
        raise ConfigError(
            f"{len(foreign)} of the records are not linked to {person} (e.g. {foreign[0].split(':')[0]}:…); "
            f"list its records with `careloop identity history {person}`"
        )
    stay = [r for r in members if r not in set(out)]
    if not out or not stay:
        raise ConfigError("split needs some of the person's records, not none or all of them")
    taken = {r["person_id"] for r in store.rows("SELECT DISTINCT person_id FROM identity_link")}
    taken |= {r["person_id"] for r in store.rows("SELECT DISTINCT person_id FROM identity_history")}
    new_id = derived_id(out[0], taken)
    now = clock.now()
    hid = _oid(clock)
    rows = [{"action": SPLIT, "record_a": a, "record_b": b} for a in out for b in stay] + [
        {"action": MERGE, "record_a": out[0], "record_b": b} for b in out[1:]
    ]
    with store.backend.transaction():
        store.insert(
            "identity_override",
            [
                {
                    **r,
                    "id": f"{_oid(clock)}{i:04d}",
                    "actor": actor,
                    "reason": reason,
                    "created_at": now,
                    "active": True,
                }
                for i, r in enumerate(rows)
            ],
        )
        for ref in out:
            source, key = parse_record_ref(ref)
            store.execute(
                "UPDATE identity_link SET person_id = :n, rule = 'manual', match_probability = NULL, "
                "run_id = NULL, linked_at = :now WHERE source = :s AND patient_key = :k",
                {"n": new_id, "now": now, "s": source, "k": key},
            )
        store.insert(
            "identity_history",
            [
                _history_row(f"{hid}-1", clock, "manual_split", person, [new_id], out, actor, reason),
                _history_row(f"{hid}-2", clock, "created", new_id, [person], out, actor, reason),
            ],
        )
    return {
        "person_id": person,
        "new_person_id": new_id,
        "records_moved": len(out),
        "records_left": len(stay),
    }
