"""``events``: the collection API over real HTTP, against a bare FastAPI endpoint in the same run.

Both servers run the same way (``uvicorn``, one process, on this machine) and get the same load from
the same client: pre-built ``/v1/batch`` bodies of 100 track calls, each a distinct messageId, whose
userIds are app user ids of seeded patients (so every event is attributed through identity).

- **latency at 2,000 events/s** (first, on a fresh server): 20 batches per second for 10 s on a fixed
  schedule (open loop: a late answer does not delay the next send, and latency counts from the
  scheduled time), p50 and p99.
- **throughput**: then 8 connections post `THROUGHPUT_BATCHES` batches as fast as the server answers;
  sustained events/s = events acknowledged / seconds. careloop's 200 means committed to its DuckDB file.
- **event to profile / segment**: careloop's histograms ``careloop_event_to_profile_seconds`` (commit ->
  live activity updated) and ``careloop_event_to_segment_seconds`` (commit -> the person's membership of
  a stream-maintained segment, "clicked the refill reminder twice in 30 days", re-evaluated) during the
  2,000 events/s phase; p95 is read off the histogram buckets, so it is an upper bound.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from careloop.bench.report import BenchResult
from careloop.config import Settings
from careloop.patients.indexes import ensure_lookup_indexes
from careloop.profiles.segments import save_segment
from careloop.storage import connect

BATCH = 100
THROUGHPUT_BATCHES = 2_000
CONNECTIONS = 8
RATE_EVENTS = 2_000
RATE_SECONDS = 10.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_store(db: Path, patients: int, key_file: Path) -> None:
    """`patients` patients of source app_db, each with an app user id linked to a person; look-up indexes on."""
    from careloop.ingest.pipeline import Ingestor

    folder = db.parent / "seed"
    folder.mkdir(exist_ok=True)
    (folder / "patient_identifier.csv").write_text(
        "key,patient_key,kind,system,value\n"
        + "".join(f"i{i},p{i},app_user_id,careapp,u-{i}\n" for i in range(patients)),
        encoding="utf-8",
    )
    backend = connect(f"duckdb:///{db}")
    try:
        Ingestor(backend, "default").ingest(folder / "patient_identifier.csv", "csv", source="app_db")
        store = backend.workspace("default")
        for start in range(0, patients, 100_000):
            ids = range(start, min(start + 100_000, patients))
            store.insert(
                "identity_link",
                [
                    {"source": "app_db", "patient_key": f"p{i}", "person_id": f"P{i}", "rule": "alone"}
                    for i in ids
                ],
            )
            store.insert("person", [{"person_id": f"P{i}"} for i in ids])
        ensure_lookup_indexes(backend)  # as `make demo` and `careloop patient index` leave the store
        # a segment the stream keeps current: each event batch re-evaluates it for its persons
        save_segment(store, "提醒点击两次", {"event": "refill_reminder_clicked", "count": 2, "within": "30d"})
    finally:
        backend.close()


def bodies(n_batches: int, patients: int, prefix: str) -> list[bytes]:
    rng = np.random.default_rng(7)
    users = rng.integers(0, patients, size=n_batches * BATCH)
    out = []
    for b in range(n_batches):
        out.append(
            orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "event": "refill_reminder_clicked",
                            "userId": f"u-{users[b * BATCH + i]}",
                            "messageId": f"{prefix}-{b}-{i}",
                            "timestamp": "2026-11-20T08:00:00+08:00",
                            "properties": {
                                "drug_class": "statin",
                                "days_left": i % 30,
                                "campaign": "refill-q4",
                            },
                            "context": {"library": {"name": "bench", "version": "1"}},
                        }
                        for i in range(BATCH)
                    ],
                    "sentAt": "2026-11-20T08:00:01+08:00",
                }
            )
        )
    return out


def start_server(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server {' '.join(cmd)} exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def throughput(url: str, auth: tuple[str, str] | None, payloads: list[bytes]) -> tuple[int, float]:
    """Events acknowledged and seconds, `CONNECTIONS` clients posting back to back."""
    nxt = iter(range(len(payloads)))
    lock = threading.Lock()
    acked = [0]

    def worker() -> None:
        with httpx.Client(auth=auth, timeout=30) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                r = c.post(url, content=payloads[i], headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    with lock:
                        acked[0] += BATCH

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked[0], time.perf_counter() - started


def paced(url: str, auth: tuple[str, str] | None, payloads: list[bytes]) -> list[float]:
    """Latencies (s) of batches sent on a fixed schedule of RATE_EVENTS events/s, from the scheduled time."""
    interval = BATCH / RATE_EVENTS
    n = min(len(payloads), int(RATE_SECONDS / interval))
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    slots = iter(range(n))

    def worker() -> None:
        with httpx.Client(auth=auth, timeout=30) as c:
            while True:
                with lock:
                    i = next(slots, None)
                if i is None:
                    return
                due = start + i * interval
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                r = c.post(url, content=payloads[i], headers={"Content-Type": "application/json"})
                took = time.perf_counter() - due
                if r.status_code == 200:
                    with lock:
                        latencies.append(took)

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def histogram_quantile(metrics: str, name: str, q: float) -> float | None:
    """Upper bound of the q-quantile of a Prometheus histogram (bucket bound where it is reached)."""
    buckets = [
        (float("inf") if le == "+Inf" else float(le), float(v))
        for le, v in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', metrics, re.M)
    ]
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return None


def _measure(
    start: Callable[[], subprocess.Popen[bytes]],
    port: int,
    auth: tuple[str, str] | None,
    payloads: list[bytes],
) -> dict[str, Any]:
    proc = start()
    url = f"http://127.0.0.1:{port}/v1/batch"
    n_paced = int(RATE_SECONDS * RATE_EVENTS / BATCH)
    try:
        lat = paced(url, auth, payloads[:n_paced])
        time.sleep(1.0)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text if auth else ""
        events, seconds = throughput(url, auth, payloads[n_paced:])
    finally:
        stop_server(proc)
    out: dict[str, Any] = {
        "events_per_s": events / seconds,
        "acked": events,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if lat else None,
        "p99_ms": float(np.percentile(lat, 99) * 1000) if lat else None,
        "paced_batches": len(lat),
    }
    if metrics:
        for key, name in (
            ("profile", "careloop_event_to_profile_seconds"),
            ("segment", "careloop_event_to_segment_seconds"),
        ):
            out[f"event_to_{key}_p95_s_at_most"] = histogram_quantile(metrics, name, 0.95)
    return out


def bench_events(patients: int, seed: int, cache: Path, settings: Settings, repeat: int) -> list[BenchResult]:
    seeded = min(patients, 200_000)
    n_batches = THROUGHPUT_BATCHES + int(RATE_SECONDS * RATE_EVENTS / BATCH)
    best: dict[str, Any] = {}
    bare: dict[str, Any] = {}
    for r in range(repeat):
        with tempfile.TemporaryDirectory(prefix="careloop-bench-events-", dir=cache) as tmp:
            db, keys = Path(tmp) / "events.duckdb", Path(tmp) / "keys.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
            env.update(
                CARELOOP_DATABASE_URL=f"duckdb:///{db}",
                CARELOOP_KEY_FILE=str(keys),
                CARELOOP_ENVIRONMENT="dev",
            )
            saved = os.environ.get("CARELOOP_KEY_FILE")
            os.environ["CARELOOP_KEY_FILE"] = str(keys)  # the seeding below runs in this process
            from careloop.config import get_settings

            get_settings.cache_clear()
            try:
                seed_store(db, seeded, keys)
                backend = connect(f"duckdb:///{db}")
                try:
                    from careloop.events.sources import create_source

                    _, key = create_source(
                        backend.workspace("default"),
                        "careapp",
                        user_id_kind="app_user_id",
                        user_id_system="careapp",
                    )
                finally:
                    backend.close()
            finally:
                if saved is None:
                    os.environ.pop("CARELOOP_KEY_FILE", None)
                else:
                    os.environ["CARELOOP_KEY_FILE"] = saved
                get_settings.cache_clear()
            payloads = bodies(n_batches, seeded, f"r{r}")
            port = _free_port()
            serve = [sys.executable, "-m", "careloop.cli", "serve", "--port", str(port)]
            ours = _measure(partial(start_server, serve, env, port), port, (key, ""), payloads)
            backend = connect(f"duckdb:///{db}")
            try:
                store = backend.workspace("default")
                ours["stored"] = int(store.scalar("SELECT count(*) FROM event"))
                ours["attributed"] = int(store.scalar("SELECT count(person_id) FROM event"))
            finally:
                backend.close()
            port = _free_port()
            bare_cmd = [sys.executable, "-m", "uvicorn", "careloop.bench.bare_app:app", "--port", str(port)]
            bare_cmd += ["--log-level", "warning", "--no-access-log"]
            base = _measure(partial(start_server, bare_cmd, env, port), port, None, payloads)
        if not best or ours["events_per_s"] > best["events_per_s"]:
            best = ours
        if not bare or base["events_per_s"] > bare["events_per_s"]:
            bare = base
    command = f"careloop bench events --patients {patients}" + (f" --repeat {repeat}" if repeat > 1 else "")
    throughput_row = BenchResult(
        scenario="events",
        size=f"batches of {BATCH}, {seeded:,} patients",
        figure=best["events_per_s"],
        baseline=bare["events_per_s"],
        unit="events/s",
        baseline_name="bare FastAPI parsing the same JSON",
        command=command,
        details={"careloop": best, "bare_fastapi": bare, "latency_at_events_per_s": RATE_EVENTS},
    )
    p95 = best.get("event_to_profile_p95_s_at_most")
    seg95 = best.get("event_to_segment_p95_s_at_most")
    latency_row = BenchResult(
        scenario="events-ack-p99",
        size=f"{RATE_EVENTS:,} events/s in batches of {BATCH}, {seeded:,} patients",
        figure=best["p99_ms"],
        baseline=bare["p99_ms"],
        unit="ms",
        baseline_name="bare FastAPI parsing the same JSON",
        command=command,
        details={"careloop": best, "bare_fastapi": bare},
        note=f"p50 {best['p50_ms']:.1f} ms; event to live activity p95 <= "
        + (f"{p95} s" if p95 is not None else "n/a")
        + "; event to segment membership p95 <= "
        + (f"{seg95} s" if seg95 is not None else "n/a"),
        baseline_note=f"p50 {bare['p50_ms']:.1f} ms",
    )
    return [throughput_row, latency_row]
