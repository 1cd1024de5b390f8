"""A 200 means stored: kill -9 the server in the middle of a stream of batches, restart it, retry
everything, and find every acknowledged event stored once and nothing duplicated."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from careloop.storage import connect
from tests.conftest import PG_ENV
from tests.events.conftest import free_port

BATCHES, PER_BATCH = 80, 100


@pytest.fixture(params=["duckdb", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'kill.duckdb'}"
        return
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (CI sets it)")
    import psycopg

    name = f"careloop_kill_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    yield f"{url.rpartition('/')[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(database_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env.update(
        CARELOOP_DATABASE_URL=database_url,
        CARELOOP_KEY_FILE=str(home / "keys.json"),
        CARELOOP_ENVIRONMENT="test",
    )
    return env


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "careloop.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def _batch(b: int) -> bytes:
    return orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "event": "app_opened",
                    "userId": f"user-{(b * PER_BATCH + i) % 37}",
                    "messageId": f"b{b}-m{i}",
                    "timestamp": "2026-11-20T08:00:00+08:00",
                    "properties": {"b": b, "i": i},
                }
                for i in range(PER_BATCH)
            ]
        }
    )


def test_acknowledged_events_survive_kill_9_and_retries_are_not_duplicated(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(database_url, tmp_path)
    created = subprocess.run(
        [sys.executable, "-m", "careloop.cli", "source", "create", "app", "--json"],
        env=env,
        capture_output=True,
        check=True,
    )
    key = orjson.loads(created.stdout)["write_key"]
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/batch"
    acked: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(auth=(key, ""), timeout=10) as c:
            for b in range(BATCHES):
                if stop.is_set():
                    return
                try:
                    r = c.post(url, content=_batch(b), headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if r.status_code == 200:
                    acked.append(b)

    proc = _serve(env, port)
    sender = threading.Thread(target=send)
    sender.start()
    while len(acked) < 25 and sender.is_alive():
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed survives
    proc.wait()
    stop.set()
    sender.join()
    assert 25 <= len(acked) < BATCHES, "the kill must land while batches are still being sent"

    backend = connect(database_url)
    try:
        store = backend.workspace("default")
        keys = {r[0] for r in store.tuples("SELECT key FROM event")}
        for b in acked:
            assert {f"b{b}-m{i}" for i in range(PER_BATCH)} <= keys, f"acknowledged batch {b} was lost"
    finally:
        backend.close()

    proc = _serve(env, port)  # restart; the SDKs retry what was not acknowledged (and we resend everything)
    try:
        with httpx.Client(auth=(key, ""), timeout=10) as c:
            for b in range(BATCHES):
                r = c.post(url, content=_batch(b), headers={"Content-Type": "application/json"})
                assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stats = subprocess.run(
        [sys.executable, "-m", "careloop.cli", "events", "stats", "--json"],
        env=env,
        capture_output=True,
        check=True,
    )
    totals = orjson.loads(stats.stdout)["totals"]
    assert totals["stored"] == BATCHES * PER_BATCH and totals["duplicates"] >= len(acked) * PER_BATCH
    backend = connect(database_url)
    try:
        store = backend.workspace("default")
        assert store.scalar("SELECT count(*) FROM event") == BATCHES * PER_BATCH
        assert store.scalar("SELECT count(DISTINCT key) FROM event") == BATCHES * PER_BATCH
        assert store.scalar("SELECT count(*) FROM event_duplicate") >= len(acked) * PER_BATCH
    finally:
        backend.close()


def test_server_logs_are_json_lines_without_personal_data(tmp_path: Path) -> None:
    env = _env(f"duckdb:///{tmp_path / 'logs.duckdb'}", tmp_path)
    created = subprocess.run(
        [sys.executable, "-m", "careloop.cli", "source", "create", "app", "--json"],
        env=env,
        capture_output=True,
        check=True,
    )
    key = orjson.loads(created.stdout)["write_key"]
    port = free_port()
    proc = _serve(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(auth=(key, ""), timeout=10) as c:
            r = c.post(
                f"{base}/v1/identify",
                json={"userId": "13812345678", "traits": {"name": "王小明", "phone": "13812345678"}},
            )
            assert r.status_code == 200
            assert c.post(f"{base}/v1/track", json={"userId": "13812345678"}).status_code == 400
            c.get(f"{base}/v1/patients", params={"phone": "13812345678"})
        metrics = httpx.get(f"{base}/metrics").text
        assert 'careloop_events_quarantined_total{source="app",type="track"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    err = proc.stderr.read().decode() if proc.stderr else ""
    lines = [ln for ln in err.splitlines() if ln.startswith("{")]
    assert any(orjson.loads(ln).get("msg") == "collect" for ln in lines), err
    assert "13812345678" not in err and "王小明" not in err and "138****" not in err
