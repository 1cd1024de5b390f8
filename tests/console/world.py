"""A small demo store for the console tests, built the way `careloop demo` builds one (synthetic network
-> ingest -> identity -> a past 5A snapshot and the traits, tags, seed-persona segments, example journeys),
plus what a running system adds: a journey with a holdout that sent messages (some blocked by the send-time
policy), receipts for some of them, conversions, staff tasks (some done), a quarantined row, a capability
assessment and one console user per role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from careloop.channels.base import Receipt
from careloop.cli.demo import HISTORY_DAYS_BACK
from careloop.clock import FixedClock
from careloop.console import assessment
from careloop.identity.resolve import resolve
from careloop.ingest.pipeline import Ingestor
from careloop.journeys.engine import enter, get_journey, on_events, run_due, save_journey, set_status
from careloop.journeys.examples import install_examples
from careloop.journeys.tasks import complete_task, list_tasks
from careloop.messaging.content import move, save_content
from careloop.messaging.dispatch import Dispatcher
from careloop.messaging.inbound import record_receipts
from careloop.patients.indexes import ensure_lookup_indexes
from careloop.privacy.auth import add_user
from careloop.privacy.roles import ROLES
from careloop.profiles.personas import seed_personas
from careloop.profiles.tags import apply_tags
from careloop.profiles.traits import compute_traits
from careloop.storage import Backend, WorkspaceStore, connect
from careloop.synth import generate_network

AS_OF = date(2026, 10, 31)
#: Monday 2 November 2026, 10:00 in Shanghai: outside quiet hours
START = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
PASSWORD = "console test password"
JOURNEY = "console_winback"


def user(role: str) -> str:
    return f"c-{role.replace('_', '-')}"


@dataclass
class World:
    backend: Backend
    store: WorkspaceStore
    clock: FixedClock
    root: Path
    person: str  # a person with many records (the 360 the tests open)


def _approve(store: WorkspaceStore, cid: str, kind: str, clock: FixedClock) -> None:
    item = save_content(
        store,
        cid,
        kind=kind,
        body={"zh": "您好，近期可预约复诊。", "en": "Hello"},
        purpose="marketing",
        clock=clock,
    )
    move(store, cid, item.version, "submit", by="console-test", clock=clock)
    move(
        store,
        cid,
        item.version,
        "approve",
        by="console-test",
        expires_at=clock.now() + timedelta(days=365),
        clock=clock,
    )


def build_world(root: Path, patients: int = 1200) -> World:
    clock = FixedClock(START)
    net = root / "net"
    generate_network(net, patients=patients, seed=7, as_of=AS_OF, chunk_size=500, quiet=True)
    backend = connect(f"duckdb:///{root / 'store.duckdb'}", clock=clock)
    Ingestor(backend, "default").ingest(net, "parquet")
    store = backend.workspace("default")
    resolve(store, clock=clock)
    ensure_lookup_indexes(backend)
    # as the demo: a 5A snapshot HISTORY_DAYS_BACK days back (history only), then the current traits
    compute_traits(store, as_of=AS_OF - timedelta(days=HISTORY_DAYS_BACK), clock=clock, current=False)
    compute_traits(store, as_of=AS_OF, clock=clock)
    apply_tags(store, as_of=AS_OF, clock=clock)
    seed_personas(store, refresh=True, as_of=AS_OF, clock=clock)
    install_examples(store, publish=True, clock=clock)

    # a journey that ran: sends (some blocked by the policy), a holdout, receipts, conversions and tasks
    _approve(store, "console_sms", "sms", clock)
    spec = {
        "name": JOURNEY,
        "description": "控制台测试：召回短信，随访电话",
        "trigger": {"type": "api"},
        "holdout": {"percent": 25},
        "goal": {"event": "appointment_booked", "within": "30d"},
        "start": "sms",
        "nodes": {
            "sms": {
                "type": "send",
                "channel": "sms",
                "content": "console_sms",
                "purpose": "marketing",
                "next": "wait",
            },
            "wait": {"type": "wait", "duration": "1d", "next": "call"},
            "call": {
                "type": "task",
                "task": "follow_up_call",
                "title": "随访电话",
                "assignee": "nurses",
                "due": "1d",
            },
        },
    }
    save_journey(store, spec, clock=clock)
    set_status(store, JOURNEY, "published", clock=clock)
    persons = [r[0] for r in store.tuples("SELECT person_id FROM person ORDER BY person_id LIMIT 400")]
    enter(store, get_journey(store, JOURNEY), persons, "console-test", clock=clock)
    run_due(store, clock=clock)
    Dispatcher.from_settings(clock=clock)(store)
    sent = store.tuples(
        "SELECT provider_message_id, person_id FROM message_send WHERE journey = :j AND status = 'sent' "
        "ORDER BY person_id",
        {"j": JOURNEY},
    )
    at = clock.now() + timedelta(minutes=5)
    receipts = [
        Receipt("message_delivered", pmid, at, channel="sms")
        for pmid, _ in sent[: max(1, len(sent) * 4 // 5)]
    ]
    receipts += [
        Receipt("message_clicked", pmid, at, channel="sms") for pmid, _ in sent[: max(1, len(sent) // 4)]
    ]
    record_receipts(store, "sms", receipts, clock=clock)
    on_events(
        store, [(pid, "appointment_booked", at) for _, pid in sent[: max(1, len(sent) // 3)]], clock=clock
    )
    clock.advance(timedelta(days=1, hours=1))
    run_due(store, clock=clock)
    for i, task in enumerate(list_tasks(store, limit=1000)):
        if i % 2 == 0:
            complete_task(store, task["task_id"], "已联系", by="nurse", clock=clock)

    # a file with a bad row: the quarantine has something to show
    bad = root / "patient.csv"
    bad.write_text("key,name,sex,phone\nq1,王小明,robot,13912345678\n", encoding="utf-8")
    Ingestor(backend, "default").ingest(bad, "csv", source="bad_source")

    answers = {q: 1 + (i % 5) for i, q in enumerate(assessment.QUESTIONS)}
    assessment.save(store, "之江医院 2026", answers, by=user("admin"), clock=clock)
    for role in ROLES:
        add_user(store, user(role), PASSWORD, role, clock=clock)
    person = str(
        store.scalar(
            "SELECT person_id FROM identity_link GROUP BY person_id ORDER BY count(*) DESC, person_id LIMIT 1"
        )
    )
    return World(backend, store, clock, root, person)


#: A constructed 5A history: (person, snapshot day, stage). With the period 2026-08-03 .. 2026-10-31 (90
#: days to AS_OF) each person's latest snapshot on or before 08-03 is compared with the latest on or
#: before 10-31: A Aware -> Act (up), B Act -> Appeal (down), C Ask -> Ask, G Appeal -> Advocate (up,
#: from 07-15); D has no snapshot by 08-03 (new, not counted); E and F nothing later by 10-31.
SNAPSHOTS = (
    ("A", date(2026, 7, 1), "O"),
    ("A", date(2026, 8, 1), "Aware"),
    ("A", date(2026, 10, 1), "Act"),
    ("B", date(2026, 8, 1), "Act"),
    ("B", date(2026, 10, 30), "Appeal"),
    ("C", date(2026, 8, 1), "Ask"),
    ("C", date(2026, 10, 1), "Ask"),
    ("D", date(2026, 9, 1), "Act"),
    ("E", date(2026, 7, 1), "Aware"),
    ("F", date(2026, 8, 1), "Aware"),
    ("F", date(2026, 11, 5), "Act"),
    ("G", date(2026, 7, 15), "Appeal"),
    ("G", date(2026, 10, 1), "Advocate"),
)
SNAPSHOT_FLOWS = {("Aware", "Act"): 1, ("Act", "Appeal"): 1, ("Ask", "Ask"): 1, ("Appeal", "Advocate"): 1}


def insert_snapshots(store: WorkspaceStore) -> None:
    """`SNAPSHOTS` as stage_5a history, plus rows the flows must ignore (another trait, a keyed row)."""
    rows = [
        {"person_id": p, "trait": "stage_5a", "key": "", "as_of": d, "value_text": s} for p, d, s in SNAPSHOTS
    ]
    rows += [
        {"person_id": "A", "trait": "other", "key": "", "as_of": date(2026, 8, 1), "value_text": "Act"},
        {"person_id": "B", "trait": "stage_5a", "key": "x", "as_of": date(2026, 8, 1), "value_text": "O"},
    ]
    store.insert("trait_history", rows)
