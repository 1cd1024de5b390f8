"""Keeping live events on the right person when identity resolution changes its mind.

After a resolution run, a manual merge or a split, `follow_identity_changes` reads the identity
history written since it last ran and:

- a person **merged** into another (``retired`` with one target, ``manual_merge``): its events, ties
  and activity move to the survivor;
- a person **split** (or retired into several): its events and ties are released and attributed
  again from the identifiers they carried — each lands on the person its ids now name;
- then every event still without a person is attributed again (`reattribute`), and the live activity
  of every person concerned is recomputed from the stored events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.events.attribution import reattribute
from careloop.patients.lookup import in_list
from careloop.storage import WorkspaceStore

CONSUMER = "identity-followup"


@dataclass
class FollowSummary:
    moved: int = 0  # persons whose events moved to a survivor
    released: int = 0  # persons whose events were attributed again
    attributed: int = 0  # events attributed by this run

    def as_dict(self) -> dict[str, int]:
        return {
            "persons_moved": self.moved,
            "persons_released": self.released,
            "events_attributed": self.attributed,
        }


def follow_identity_changes(store: WorkspaceStore, *, clock: Clock = SYSTEM_CLOCK) -> FollowSummary:
    since = store.scalar("SELECT position FROM stream_checkpoint WHERE consumer = :c", {"c": CONSUMER})
    params: dict[str, Any] = {}
    where = ""
    if since is not None:
        where, params = "WHERE at > :since", {"since": since}
    sql = f"SELECT at, action, person_id, other_person_ids FROM identity_history {where} ORDER BY at"  # noqa: S608
    history = store.rows(sql, params)
    moves: dict[str, str] = {}
    released: set[str] = set()
    for h in history:
        others = h["other_person_ids"]
        others = orjson.loads(others) if isinstance(others, str) else (others or [])
        if h["action"] == "retired":
            (
                moves.__setitem__(h["person_id"], others[0])
                if len(others) == 1
                else released.add(h["person_id"])
            )
        elif h["action"] == "manual_merge":
            for o in others:
                moves[o] = h["person_id"]
        elif h["action"] in ("split", "manual_split"):
            released.add(h["person_id"])
            released.update(others)
    summary = FollowSummary()
    touched: set[str] = set()
    for old, new in moves.items():
        seen = {old}
        while new in moves and new not in seen:  # chains of merges within the window
            seen.add(new)
            new = moves[new]
        for table in ("event", "event_identity"):
            store.execute(f"UPDATE {table} SET person_id = :n WHERE person_id = :o", {"n": new, "o": old})  # noqa: S608
        touched.update((old, new))
        summary.moved += 1
    if released:
        lst, p = in_list("r", sorted(released))
        store.execute(f"UPDATE event SET person_id = NULL WHERE person_id IN {lst}", p)  # noqa: S608
        store.execute(f"DELETE FROM event_identity WHERE person_id IN {lst}", p)  # noqa: S608
        touched.update(released)
        summary.released = len(released)
    gained = reattribute(store, clock=clock)
    summary.attributed = sum(gained.values())
    touched.update(gained)
    if touched:
        rebuild_activity(store, sorted(touched), clock.now())
    if history:
        last: datetime = history[-1]["at"]
        store.merge(
            "stream_checkpoint",
            [{"consumer": CONSUMER, "position": last, "updated_at": clock.now()}],
            ("consumer",),
            {"position": "{s}.position", "updated_at": "{s}.updated_at"},
        )
    return summary


def rebuild_activity(store: WorkspaceStore, persons: list[str], now: datetime) -> None:
    """Recompute `live_activity` of these persons from their stored live events."""
    for start in range(0, len(persons), 500):
        chunk = persons[start : start + 500]
        lst, p = in_list("p", chunk)
        store.execute(f"DELETE FROM live_activity WHERE person_id IN {lst}", p)  # noqa: S608
        rows = store.rows(
            "SELECT person_id, channel, name, occurred_at FROM event "  # noqa: S608 - placeholders only
            f"WHERE received_at IS NOT NULL AND person_id IN {lst} ORDER BY occurred_at",
            p,
        )
        agg: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
        for r in rows:
            a = agg[(r["person_id"], r["channel"])]
            if not a:
                a.update(
                    person_id=r["person_id"], channel=r["channel"], first_event_at=r["occurred_at"], events=0
                )
            a["events"] += 1
            a["last_event_at"], a["last_event_name"], a["updated_at"] = r["occurred_at"], r["name"], now
        if agg:
            store.insert("live_activity", list(agg.values()))
