"""The durable journey engine: entries persisted, advanced in batches, every effect idempotent.

Each patient entry is a `journey_entry` row: the node it is at, its status (active, waiting, done,
exited, failed), when it is due (`wake_at`) and the worker that holds it (`lease_owner` until
`lease_until`). `run_due` claims due entries, advances each one in memory node by node until it waits
or ends, and writes everything the batch did in **one transaction**: the entries' new state, the step
log, send intents in the ledger (`message_send`, keyed by ``entry:node:visit`` so a retried step can
never send twice), staff tasks and trait updates. A worker killed at any point leaves either the old
state (the batch is redone; keys make it a no-op where it had got) or the new one; a crashed worker's
leases expire and another worker takes its entries over. Delivery of the reserved sends is the
dispatcher's (`careloop.messaging.dispatch`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, NotFoundError
from careloop.journeys.definition import Journey, Node, parse_journey, seconds
from careloop.messaging import policy
from careloop.privacy.audit import audit_config_change
from careloop.profiles import segment_eval
from careloop.profiles.segment_compile import parse as parse_condition
from careloop.storage import WorkspaceStore

log = logging.getLogger("careloop.journeys")
LEASE = timedelta(seconds=60)
MAX_ROUNDS = 25  # sends in a row without a wait, per batch


# ---- definitions ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    journey: Journey
    version: int
    status: str

    @property
    def name(self) -> str:
        return self.journey.name


def save_journey(
    store: WorkspaceStore,
    spec: Any,
    *,
    clock: Clock = SYSTEM_CLOCK,
    actor: str | None = None,
    role: str | None = None,
) -> Published:
    """Check and store a definition as a draft (a new version when it changed; published ones stay live
    on their version until published again). A write is recorded as `journey.save` in the audit chain."""
    journey = parse_journey(spec)
    text = orjson.dumps(spec).decode()
    now = clock.now()
    rows = store.tuples(
        "SELECT definition, version, status FROM journey WHERE name = :n", {"n": journey.name}
    )
    if not rows:
        store.insert(
            "journey",
            [
                {
                    "name": journey.name,
                    "version": 1,
                    "status": "draft",
                    "definition": text,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        audit_config_change(
            store, "journey.save", "journey", journey.name, {"version": 1}, actor=actor, role=role
        )
        return Published(journey, 1, "draft")
    old, version, status = rows[0]
    old = orjson.loads(old) if isinstance(old, str) else old
    if old == spec:
        return Published(journey, int(version), status)
    store.execute(
        "UPDATE journey SET definition = :d, version = :v, status = 'draft', updated_at = :now WHERE name = :n",
        {"d": text, "v": int(version) + 1, "now": now, "n": journey.name},
    )
    audit_config_change(
        store, "journey.save", "journey", journey.name, {"version": int(version) + 1}, actor=actor, role=role
    )
    return Published(journey, int(version) + 1, "draft")


def set_status(
    store: WorkspaceStore,
    name: str,
    status: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    actor: str | None = None,
    role: str | None = None,
) -> Published:
    """publish / pause / archive: published journeys take entries and run; paused ones keep their
    entries where they are (nothing runs) until published again. Recorded as `journey.publish` etc."""
    if status not in ("published", "paused", "archived"):
        raise ConfigError("a journey's status is published, paused or archived")
    current = get_journey(store, name)
    params: dict[str, Any] = {"s": status, "n": name, "now": clock.now()}
    extra = ", published_at = :now" if status == "published" else ""
    store.execute(f"UPDATE journey SET status = :s, updated_at = :now{extra} WHERE name = :n", params)  # noqa: S608 - fixed fragment
    verb = {"published": "publish", "paused": "pause", "archived": "archive"}[status]
    audit_config_change(
        store, f"journey.{verb}", "journey", name, {"version": current.version}, actor=actor, role=role
    )
    return Published(current.journey, current.version, status)


def get_journey(store: WorkspaceStore, name: str) -> Published:
    rows = store.tuples("SELECT definition, version, status FROM journey WHERE name = :n", {"n": name})
    if not rows:
        raise NotFoundError(f"no journey {name!r}; `careloop journey list` shows them")
    d, version, status = rows[0]
    return Published(parse_journey(orjson.loads(d) if isinstance(d, str) else d), int(version), status)


def published(store: WorkspaceStore) -> dict[str, Published]:
    out = {}
    for d, version, status in store.tuples(
        "SELECT definition, version, status FROM journey WHERE status = 'published'"
    ):
        j = parse_journey(orjson.loads(d) if isinstance(d, str) else d)
        out[j.name] = Published(j, int(version), status)
    return out


# ---- entering -------------------------------------------------------------------------------------------
def _hash(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=10).hexdigest()


def in_holdout(journey: Journey, person: str) -> bool:
    """A stable draw per journey and person: the same patient is always in or out of its holdout."""
    draw = int(_hash(journey.name, "holdout", person)[:8], 16) % 10_000
    return draw < journey.holdout_percent * 100


def enter(
    store: WorkspaceStore,
    pub: Published,
    persons: Sequence[str],
    trigger_key: str,
    *,
    context: dict[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, int]:
    """Enter persons into a published journey (the same trigger never enters a person twice; the
    journey's re-entry rule decides about new triggers). Returns entered / holdout / skipped counts."""
    j = pub.journey
    now = clock.now()
    persons = sorted(set(persons))
    if not persons:
        return {"entered": 0, "holdout": 0, "skipped": 0}
    last: dict[str, tuple[datetime, bool]] = {}
    for pid, entered, status in store.tuples(
        "SELECT person_id, entered_at, status FROM journey_entry WHERE journey = :j AND person_id = ANY(:p)",
        {"j": j.name, "p": persons},
    ):
        running = status in ("active", "waiting")
        prev = last.get(pid)
        last[pid] = (max(entered, prev[0]) if prev else entered, running or bool(prev and prev[1]))
    rows, steps, skipped, held = [], [], 0, 0
    for pid in persons:
        if pid in last:
            at, running = last[pid]
            if (
                running
                or j.re_entry == "once"
                or (j.re_entry == "after" and now - at < timedelta(days=j.re_entry_after_days))
            ):
                skipped += 1
                continue
        entry_id = "e" + _hash(j.name, pid, trigger_key)
        hold = in_holdout(j, pid)
        held += hold
        rows.append(
            {
                "entry_id": entry_id,
                "journey": j.name,
                "version": pub.version,
                "person_id": pid,
                "node": j.start,
                "status": "exited" if hold else "active",
                "wake_at": None if hold else now,
                "arm": "holdout" if hold else None,
                "entered_at": now,
                "updated_at": now,
                "finished_at": now if hold else None,
                "exit_reason": "holdout" if hold else None,
                "context": orjson.dumps({"trigger": trigger_key, **(context or {})}).decode(),
            }
        )
        steps.append(
            _step(
                entry_id,
                j.name,
                j.start,
                "enter",
                "holdout" if hold else "entered",
                now,
                {"trigger": trigger_key},
            )
        )
    with store.backend.transaction():
        new = {k[0] for k in store.insert_new("journey_entry", rows, ["entry_id"])} if rows else set()
        store.insert("journey_step", [s for s in steps if s["entry_id"] in new])
    entered = len([r for r in rows if r["entry_id"] in new])
    holdout = len([r for r in rows if r["entry_id"] in new and r["arm"] == "holdout"])
    return {"entered": entered - holdout, "holdout": holdout, "skipped": skipped + len(rows) - entered}


def _step(
    entry: str, journey: str, node: str, kind: str, outcome: str, at: datetime, detail: Any = None
) -> dict[str, Any]:
    return {
        "entry_id": entry,
        "journey": journey,
        "node": node,
        "kind": kind,
        "outcome": outcome,
        "at": at,
        "detail": None if detail is None else orjson.dumps(detail).decode(),
    }


# ---- advancing ------------------------------------------------------------------------------------------
@dataclass
class Entry:
    entry_id: str
    journey: str
    version: int
    person_id: str
    node: str
    status: str
    wake_at: datetime | None
    arm: str | None
    context: dict[str, Any]
    entered_at: datetime
    finished_at: datetime | None = None
    exit_reason: str | None = None
    wait_event: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    pending_send: policy.SendIntent | None = None
    late_by: timedelta = timedelta(0)  # how late the timer that woke it fired (downtime)

    def visit(self, node: str) -> int:
        visits = self.context.setdefault("visits", {})
        visits[node] = int(visits.get(node, 0)) + 1
        return int(visits[node])

    def key(self, node: str) -> str:
        return f"{self.entry_id}:{node}:{self.context.get('visits', {}).get(node, 1)}"


@dataclass
class Batch:
    """Everything one `run_due` pass wants written, in one transaction."""

    entries: list[Entry] = field(default_factory=list)
    intents: list[policy.SendIntent] = field(default_factory=list)
    decisions: dict[str, policy.Decision] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    traits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunSummary:
    claimed: int = 0
    steps: int = 0
    sends: int = 0
    blocked: dict[str, int] = field(default_factory=dict)
    finished: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Webhook = Callable[[str, dict[str, Any], str], None]  # url, body, idempotency key


def post_webhook(url: str, body: dict[str, Any], key: str) -> None:
    """POST the body as JSON with an Idempotency-Key header (receivers de-duplicate retries by it)."""
    r = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=5.0)
    r.raise_for_status()


def claim(
    store: WorkspaceStore, worker: str, now: datetime, limit: int, journeys: Sequence[str]
) -> list[Entry]:
    """Take up to `limit` due entries of these journeys for this worker (a lease: others skip them)."""
    if not journeys:
        return []
    due = [
        r[0]
        for r in store.tuples(
            "SELECT entry_id FROM journey_entry WHERE status IN ('active', 'waiting') AND wake_at <= :now "
            "AND journey = ANY(:j) AND (lease_until IS NULL OR lease_until < :now) ORDER BY wake_at LIMIT :lim",
            {"now": now, "j": list(journeys), "lim": limit},
        )
    ]
    if not due:
        return []
    store.execute(
        "UPDATE journey_entry SET lease_owner = :w, lease_until = :until WHERE entry_id = ANY(:ids) "
        "AND (lease_until IS NULL OR lease_until < :now)",
        {"w": worker, "until": now + LEASE, "ids": due, "now": now},
    )
    rows = store.tuples(
        "SELECT entry_id, journey, version, person_id, node, status, wake_at, arm, context, entered_at, wait_event "
        "FROM journey_entry WHERE entry_id = ANY(:ids) AND lease_owner = :w AND lease_until = :until",
        {"ids": due, "w": worker, "until": now + LEASE},
    )
    out = []
    for eid, j, v, pid, node, status, wake, arm, ctx, entered, wait_event in rows:
        context = orjson.loads(ctx) if isinstance(ctx, str | bytes) else dict(ctx or {})
        out.append(
            Entry(eid, j, int(v), pid, node, status, wake, arm, context, entered, wait_event=wait_event)
        )
    return out


class Runner:
    """Advances a batch of claimed entries of the published journeys."""

    def __init__(
        self,
        store: WorkspaceStore,
        journeys: dict[str, Published],
        *,
        clock: Clock = SYSTEM_CLOCK,
        webhook: Webhook = post_webhook,
        consents: policy.ConsentSource | None = None,
    ) -> None:
        self.store, self.journeys, self.clock = store, journeys, clock
        self.webhook, self.consents = webhook, consents
        self.tz = ZoneInfo(get_settings().timezone)

    def run(self, entries: list[Entry]) -> RunSummary:
        now = self.clock.now()
        batch = Batch(entries=entries)
        moving = [e for e in entries if e.journey in self.journeys]
        for e in moving:
            e.late_by = now - e.wake_at if e.wake_at is not None and e.status == "waiting" else timedelta(0)
        for _ in range(MAX_ROUNDS):
            self._facts_for_branches(moving)
            for e in moving:
                self._advance(e, now, batch)
            asking = [e for e in moving if e.pending_send is not None]
            if not asking:
                break
            decided = policy.check(
                self.store, [e.pending_send for e in asking if e.pending_send], now, consents=self.consents
            )
            moving = []
            for e in asking:
                intent = e.pending_send
                assert intent is not None
                e.pending_send = None
                d = decided[intent.key]
                node = self.journeys[e.journey].journey.nodes[e.node]
                if d.defer_until is not None:  # quiet hours: the entry waits at the send node
                    e.status, e.wake_at = "waiting", d.defer_until
                    e.context.setdefault("visits", {})[e.node] -= 1  # the same send when it goes
                    e.steps.append(
                        _step(
                            e.entry_id,
                            e.journey,
                            e.node,
                            "send",
                            "deferred",
                            now,
                            {"reason": d.reason, "until": d.defer_until.isoformat()},
                        )
                    )
                    continue
                batch.intents.append(intent)
                batch.decisions[intent.key] = d
                self._goto(e, node.next, now)
                moving.append(e)
        return self._write(batch, now)

    # one entry, until it waits, ends, or asks to send
    def _advance(self, e: Entry, now: datetime, batch: Batch) -> None:
        pub = self.journeys[e.journey]
        for _ in range(200):  # a definition without wait-less cycles ends well before this
            if e.status not in ("active", "waiting") or e.pending_send is not None:
                return
            if e.status == "waiting" and (e.wake_at is None or e.wake_at > now):
                return
            node = pub.journey.nodes.get(e.node)
            if node is None:  # the definition changed under a running entry
                self._finish(e, "exited", "node_removed", now)
                return
            self._execute(e, node, pub.journey, now, batch)
        self._finish(e, "failed", "too_many_steps", now)

    def _execute(self, e: Entry, node: Node, j: Journey, now: datetime, batch: Batch) -> None:
        s = node.spec
        if node.type == "wait":
            if e.status == "waiting":  # woken: by the event, or by the clock
                arrived = e.context.pop("event_arrived", None) == node.id
                outcome = "event" if arrived else "timeout" if "event" in s else "elapsed"
                e.steps.append(_step(e.entry_id, e.journey, node.id, "wait", outcome, now))
                target = node.next if arrived or "event" not in s else s.get("timeout_next")
                self._goto(e, target, now)
                return
            e.visit(node.id)
            e.status = "waiting"
            if "duration" in s:
                e.wake_at = now + timedelta(seconds=seconds(s["duration"], node.id))
            elif "until" in s:
                e.wake_at = _next_local(now, dtime.fromisoformat(str(s["until"])), self.tz)
            else:
                e.wake_at = now + timedelta(seconds=seconds(s["timeout"], node.id))
                e.wait_event = s["event"]
            e.steps.append(
                _step(
                    e.entry_id, e.journey, node.id, "wait", "waiting", now, {"until": e.wake_at.isoformat()}
                )
            )
            return
        e.visit(node.id)
        if node.type == "exit":
            e.steps.append(_step(e.entry_id, e.journey, node.id, "exit", "exit", now))
            self._finish(e, "done", "exit", now)
        elif node.type == "branch":
            facts = self._facts.get(e.person_id) or segment_eval.Facts()
            day = now.astimezone(self.tz).date()
            chosen, label = s.get("default"), "default"
            for i, b in enumerate(s["branches"]):
                if segment_eval.evaluate(parse_condition(b["when"]), facts, day, self.tz).holds:
                    chosen, label = b.get("next"), str(b.get("name", i))
                    break
            e.steps.append(_step(e.entry_id, e.journey, node.id, "branch", label, now))
            self._goto(e, chosen, now)
        elif node.type == "split":
            draw = int(_hash(e.journey, node.id, e.person_id)[:8], 16) % 10_000 / 100
            acc, arm = 0.0, s["arms"][-1]
            for a in s["arms"]:
                acc += float(a["percent"])
                if draw < acc:
                    arm = a
                    break
            e.arm = str(arm["name"])
            e.steps.append(_step(e.entry_id, e.journey, node.id, "split", e.arm, now))
            self._goto(e, arm.get("next"), now)
        elif node.type == "send" and j.catch_up == "skip" and e.late_by > timedelta(seconds=j.late_seconds):
            e.steps.append(
                _step(
                    e.entry_id,
                    e.journey,
                    node.id,
                    "send",
                    "skipped_late",
                    now,
                    {"late_seconds": int(e.late_by.total_seconds())},
                )
            )
            self._goto(e, node.next, now)
        elif node.type == "send":
            e.pending_send = policy.SendIntent(
                key=e.key(node.id),
                person_id=e.person_id,
                channel=s["channel"],
                content_id=s["content"],
                purpose=s.get("purpose", "marketing"),
                journey=e.journey,
                node=node.id,
                entry_id=e.entry_id,
                personalised=bool(s.get("personalised", True)),
                journey_cap_day=j.cap_day,
                journey_cap_week=j.cap_week,
            )
        elif node.type == "task":
            due = now + timedelta(seconds=seconds(s.get("due", "1d"), node.id))
            batch.tasks.append(
                {
                    "task_id": e.key(node.id),
                    "entry_id": e.entry_id,
                    "journey": e.journey,
                    "person_id": e.person_id,
                    "kind": s["task"],
                    "title": s["title"],
                    "assignee": s.get("assignee"),
                    "due_at": due,
                    "status": "open",
                    "created_at": now,
                }
            )
            e.steps.append(
                _step(e.entry_id, e.journey, node.id, "task", "created", now, {"due": due.isoformat()})
            )
            self._goto(e, node.next, now)
        elif node.type == "update":
            value = s["value"]
            batch.traits.append(
                {
                    "person_id": e.person_id,
                    "trait": s["trait"],
                    "key": str(s.get("key", "")),
                    "value_num": None if isinstance(value, str) else float(value),
                    "value_text": value if isinstance(value, str) else None,
                    "computed_at": now,
                    "as_of": now,
                }
            )
            e.steps.append(_step(e.entry_id, e.journey, node.id, "update", "set", now, {"trait": s["trait"]}))
            self._goto(e, node.next, now)
        elif node.type == "webhook":
            body = {
                "journey": e.journey,
                "node": node.id,
                "entry_id": e.entry_id,
                "person_id": e.person_id,
                "payload": s.get("payload"),
            }
            try:
                self.webhook(s["url"], body, e.key(node.id))
                outcome = "delivered"
            except Exception as err:  # recorded, and the journey goes on
                outcome = f"failed: {type(err).__name__}"
            e.steps.append(_step(e.entry_id, e.journey, node.id, "webhook", outcome, now))
            self._goto(e, node.next, now)

    def _goto(self, e: Entry, target: str | None, now: datetime) -> None:
        e.wait_event = None
        if not target:
            self._finish(e, "done", "end", now)
            return
        e.node, e.status, e.wake_at = target, "active", now

    def _finish(self, e: Entry, status: str, reason: str, now: datetime) -> None:
        e.status, e.exit_reason, e.finished_at, e.wake_at, e.wait_event = status, reason, now, None, None

    def _facts_for_branches(self, entries: list[Entry]) -> None:
        trees = []
        for pub in {e.journey: self.journeys[e.journey] for e in entries}.values():
            trees += [
                parse_condition(b["when"])
                for n in pub.journey.nodes.values()
                if n.type == "branch"
                for b in n.spec["branches"]
            ]
        persons = sorted({e.person_id for e in entries})
        self._facts = segment_eval.load_facts(self.store, persons, trees) if trees and persons else {}

    def _write(self, batch: Batch, now: datetime) -> RunSummary:
        summary = RunSummary(claimed=len(batch.entries))
        with policy.reserving(), self.store.backend.transaction():
            allowed_persons = {i.person_id for i in batch.intents if batch.decisions[i.key].allowed}
            policy.lock_persons(self.store, allowed_persons)
            decisions = policy.reserve(self.store, batch.intents, batch.decisions, now)
            ledger = [policy.ledger_row(i, decisions[i.key], now) for i in batch.intents]
            by_id = {e.entry_id: e for e in batch.entries}
            if ledger:
                self.store.insert_new("message_send", ledger, ["idempotency_key"])
            for i in batch.intents:
                d = decisions[i.key]
                e = by_id[i.entry_id or ""]
                e.steps.append(
                    _step(
                        i.entry_id or "",
                        i.journey or "",
                        i.node or "",
                        "send",
                        "reserved" if d.allowed else "blocked",
                        now,
                        {"reason": d.reason, "key": i.key},
                    )
                )
                if d.allowed:
                    summary.sends += 1
                else:
                    summary.blocked[d.reason] = summary.blocked.get(d.reason, 0) + 1
            if batch.tasks:
                self.store.insert_new("staff_task", batch.tasks, ["task_id"])
            if batch.traits:
                self.store.merge(
                    "trait_value",
                    batch.traits,
                    ["person_id", "trait", "key"],
                    {c: "{s}." + c for c in ("value_num", "value_text", "computed_at", "as_of")},
                )
            steps = [s for e in batch.entries for s in e.steps]
            self.store.insert("journey_step", steps)
            self.store.merge(
                "journey_entry",
                [
                    {
                        "entry_id": e.entry_id,
                        "journey": e.journey,
                        "person_id": e.person_id,
                        "node": e.node,
                        "status": e.status,
                        "wake_at": e.wake_at,
                        "wait_event": e.wait_event,
                        "arm": e.arm,
                        "updated_at": now,
                        "finished_at": e.finished_at,
                        "exit_reason": e.exit_reason,
                        "lease_owner": None,
                        "lease_until": None,
                        "context": orjson.dumps(e.context).decode(),
                    }
                    for e in batch.entries
                ],
                ["entry_id"],
                {
                    c: "{s}." + c
                    for c in (
                        "node",
                        "status",
                        "wake_at",
                        "wait_event",
                        "arm",
                        "updated_at",
                        "finished_at",
                        "exit_reason",
                        "lease_owner",
                        "lease_until",
                        "context",
                    )
                },
            )
        summary.steps = len(steps)
        summary.finished = sum(e.status in ("done", "exited", "failed") for e in batch.entries)
        return summary


def _next_local(now: datetime, at: dtime, tz: ZoneInfo) -> datetime:
    local = now.astimezone(tz)
    candidate = datetime.combine(local.date(), at, tzinfo=tz)
    return candidate if candidate > local else candidate + timedelta(days=1)


def run_due(
    store: WorkspaceStore,
    *,
    worker: str = "embedded",
    limit: int = 1000,
    clock: Clock = SYSTEM_CLOCK,
    webhook: Webhook = post_webhook,
    consents: policy.ConsentSource | None = None,
) -> RunSummary:
    """Claim and advance up to `limit` due entries of the published journeys."""
    journeys = published(store)
    entries = claim(store, worker, clock.now(), limit, list(journeys))
    if not entries:
        return RunSummary()
    return Runner(store, journeys, clock=clock, webhook=webhook, consents=consents).run(entries)


# ---- events ---------------------------------------------------------------------------------------------
def on_events(
    store: WorkspaceStore, events: Sequence[tuple[str, str, datetime]], *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, int]:
    """(person, event name, time) arrivals: goals end entries, waits for the event wake, and journeys
    triggered by the event take the persons in. Returns counts."""
    journeys = published(store)
    if not events or not journeys:
        return {"goals": 0, "woken": 0, "entered": 0}
    now = clock.now()
    names = sorted({n for _, n, _ in events})
    persons = sorted({p for p, _, _ in events})
    goals = woken = entered = 0
    goal_journeys = {n: j for n, j in journeys.items() if j.journey.goal_event in names}
    running = store.tuples(
        "SELECT entry_id, journey, person_id, status, wait_event, node, entered_at, context FROM journey_entry "
        "WHERE person_id = ANY(:p) AND (status IN ('active', 'waiting') OR exit_reason = 'holdout')",
        {"p": persons},
    )
    seen = {(p, n) for p, n, _ in events}
    ended: list[tuple[str, str, str]] = []
    held: list[tuple[str, str, str]] = []
    wake: list[tuple[str, str]] = []
    for eid, jname, pid, status, wait_event, node, entered_at, ctx in running:
        pub = goal_journeys.get(jname)
        if pub and (pid, pub.journey.goal_event) in seen:
            within = pub.journey.goal_within_seconds
            if within is None or now - entered_at <= timedelta(seconds=within):
                # the held-out convert too (that is what uplift is measured against): recorded, not run
                (held if status == "exited" else ended).append((eid, jname, node))
                continue
        if status == "exited":
            continue
        if status == "waiting" and wait_event and (pid, wait_event) in seen:
            context = orjson.loads(ctx) if isinstance(ctx, str | bytes) else dict(ctx or {})
            context["event_arrived"] = node
            wake.append((eid, orjson.dumps(context).decode()))
    with store.backend.transaction():
        if ended:
            store.execute(
                "UPDATE journey_entry SET status = 'done', exit_reason = 'goal', finished_at = :now, wake_at = NULL, "
                "updated_at = :now WHERE entry_id = ANY(:ids)",
                {"now": now, "ids": [e for e, _, _ in ended]},
            )
            store.insert("journey_step", [_step(e, j, n, "goal", "converted", now) for e, j, n in ended])
        if held:
            store.execute(
                "UPDATE journey_entry SET exit_reason = 'goal', updated_at = :now WHERE entry_id = ANY(:ids)",
                {"now": now, "ids": [e for e, _, _ in held]},
            )
            store.insert(
                "journey_step", [_step(e, j, n, "goal", "converted_holdout", now) for e, j, n in held]
            )
        for eid, ctx in wake:
            store.execute(
                "UPDATE journey_entry SET wake_at = :now, context = :ctx, updated_at = :now WHERE entry_id = :e",
                {"now": now, "ctx": ctx, "e": eid},
            )
    goals, woken = len(ended), len(wake)
    for pub in journeys.values():
        trigger = pub.journey.trigger
        if trigger.type != "event" or trigger.event not in names:
            continue
        first: dict[str, datetime] = {}
        for p, n, at in events:
            if n == trigger.event and (p not in first or at < first[p]):
                first[p] = at
        by_key: dict[str, list[str]] = {}
        for (
            p,
            at,
        ) in first.items():  # the event's time keys the entry: a redelivered event enters nobody twice
            by_key.setdefault(f"event:{trigger.event}:{at.isoformat()}", []).append(p)
        for key, who in by_key.items():
            entered += enter(store, pub, who, key, clock=clock)["entered"]
    return {"goals": goals, "woken": woken, "entered": entered}
