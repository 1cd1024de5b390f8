"""`kill -9` of a journey worker in the middle of its work, then a restart: every due message is in the
outbox exactly once, every entry finished (PostgreSQL: a second process can watch while the worker runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from careloop.clock import SystemClock
from careloop.journeys.engine import enter, save_journey, set_status
from careloop.messaging.content import move, save_content
from careloop.storage import connect
from tests.conftest import _reset_postgres

N = 300
ROOT = Path(__file__).resolve().parents[2]


def _seed(url: str) -> None:
    backend = connect(url)
    try:
        store = backend.workspace("default")
        persons = [f"P{i:04d}" for i in range(N)]
        store.insert("person", [{"person_id": p} for p in persons])
        store.insert(
            "identity_link",
            [{"source": "his", "patient_key": p, "person_id": p, "rule": "alone"} for p in persons],
        )
        store.insert(
            "consent",
            [
                {
                    "source": "his",
                    "key": p,
                    "patient_key": p,
                    "purpose": "care_follow_up",
                    "status": "granted",
                    "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
                }
                for p in persons
            ],
        )
        save_content(store, "note", kind="outbox", body={"zh": "随访通知"}, purpose="care_follow_up")
        move(store, "note", 1, "approve", by="reviewer")
        spec = {
            "name": "followup",
            "trigger": {"type": "api"},
            "holdout": False,
            "start": "s1",
            "nodes": {
                "s1": {
                    "type": "send",
                    "channel": "outbox",
                    "content": "note",
                    "purpose": "care_follow_up",
                    "next": "t",
                },
                "t": {"type": "task", "task": "call", "title": "回访", "next": "s2"},
                "s2": {"type": "send", "channel": "outbox", "content": "note", "purpose": "care_follow_up"},
            },
        }
        save_journey(store, spec)
        pub = set_status(store, "followup", "published")
        enter(store, pub, persons, "api:crash", clock=SystemClock())
    finally:
        backend.close()


def _count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url) as con:
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]


def _worker(url: str, offset: int, mode: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CARELOOP_QUIET_HOURS": "", "CARELOOP_CAP_PER_DAY": "100", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.journeys.crash_worker", url, str(offset), mode], cwd=ROOT, env=env
    )


def test_kill_9_mid_run_then_restart_sends_each_message_exactly_once(postgres_server_url: str) -> None:
    url = postgres_server_url
    _reset_postgres(url)
    _seed(url)
    proc = _worker(url, 0, "loop")
    try:
        deadline = time.monotonic() + 120
        while _count(url, "SELECT count(*) FROM outbox_message") < N // 3:
            assert proc.poll() is None, "the worker died on its own"
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: batches claimed, sends reserved, some delivered
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = _count(url, "SELECT count(*) FROM outbox_message")
    assert 0 < written < 2 * N, "the kill should land mid-run"
    # restart ten minutes later (the dead worker's leases have expired) and let it finish
    restart = _worker(url, 10, "drain")
    assert restart.wait(timeout=300) == 0
    assert _count(url, "SELECT count(*) FROM outbox_message") == 2 * N
    assert _count(url, "SELECT count(DISTINCT idempotency_key) FROM outbox_message") == 2 * N
    assert _count(url, "SELECT count(*) FROM message_send WHERE status = 'sent'") == 2 * N
    assert _count(url, "SELECT count(*) FROM staff_task") == N
    assert _count(url, "SELECT count(*) FROM journey_entry WHERE status = 'done'") == N


def test_caps_hold_with_concurrent_workers(postgres_server_url: str) -> None:
    url = postgres_server_url
    _reset_postgres(url)
    backend = connect(url)
    try:
        store = backend.workspace("default")
        persons = [f"Q{i:03d}" for i in range(12)]
        store.insert("person", [{"person_id": p} for p in persons])
        store.insert(
            "identity_link",
            [{"source": "his", "patient_key": p, "person_id": p, "rule": "alone"} for p in persons],
        )
        store.insert(
            "consent",
            [
                {
                    "source": "his",
                    "key": p,
                    "patient_key": p,
                    "purpose": "marketing",
                    "status": "granted",
                    "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
                }
                for p in persons
            ],
        )
        save_content(store, "promo", kind="outbox", body={"zh": "活动通知"}, purpose="marketing")
        move(store, "promo", 1, "approve", by="reviewer")
        for n in range(10):  # ten journeys each send once to everyone; at most 2 a day may go
            spec = {
                "name": f"j{n}",
                "trigger": {"type": "api"},
                "holdout": False,
                "start": "s",
                "nodes": {
                    "s": {"type": "send", "channel": "outbox", "content": "promo", "purpose": "marketing"}
                },
            }
            save_journey(store, spec)
            enter(store, set_status(store, f"j{n}", "published"), persons, "api", clock=SystemClock())
    finally:
        backend.close()
    env = {**os.environ, "CARELOOP_QUIET_HOURS": "", "CARELOOP_CAP_PER_DAY": "2", "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.journeys.crash_worker", url, "0", "drain"], cwd=ROOT, env=env
        )
        for _ in range(3)
    ]
    assert all(w.wait(timeout=300) == 0 for w in workers)
    assert (
        _count(
            url,
            "SELECT max(n) FROM (SELECT count(*) AS n FROM message_send WHERE status IN ('pending', 'sent') GROUP BY person_id) q",
        )
        == 2
    )
    assert _count(url, "SELECT count(*) FROM message_send WHERE reason = 'cap_day'") == 12 * 8
    assert _count(url, "SELECT count(*) FROM outbox_message") == 12 * 2
