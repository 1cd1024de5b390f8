"""A store with known patients (app user ids linked to persons) and a real HTTP server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from careloop.api import create_app
from careloop.events.sources import create_source
from careloop.ingest.pipeline import Ingestor
from careloop.storage import Backend

N_PATIENTS = 100


def seed_patients(backend: Backend, folder: Path, n: int = N_PATIENTS) -> None:
    """n patients of source app_db: key p<i>, app user id u-<i>, phone 1380000<i:04d>, person P<i>."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patient.csv").write_text(
        "key,name,phone\n" + "".join(f"p{i},患者{i},1380000{i:04d}\n" for i in range(n)), encoding="utf-8"
    )
    (folder / "patient_identifier.csv").write_text(
        "key,patient_key,kind,system,value\n"
        + "".join(f"i{i},p{i},app_user_id,careapp,u-{i}\n" for i in range(n)),
        encoding="utf-8",
    )
    ing = Ingestor(backend, "default")
    ing.ingest(folder / "patient.csv", "csv", source="app_db")
    ing.ingest(folder / "patient_identifier.csv", "csv", source="app_db")
    store = backend.workspace("default")
    store.insert(
        "identity_link",
        [
            {"source": "app_db", "patient_key": f"p{i}", "person_id": f"P{i}", "rule": "alone"}
            for i in range(n)
        ],
    )
    store.insert("person", [{"person_id": f"P{i}"} for i in range(n)])


@dataclass
class LiveServer:
    url: str
    write_key: str
    backend: Backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(backend: Backend, tmp_path: Path) -> Iterator[LiveServer]:
    seed_patients(backend, tmp_path / "seed")
    _, key = create_source(
        backend.workspace("default"), "careapp", user_id_kind="app_user_id", user_id_system="careapp"
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(backend=backend), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{port}", key, backend)
    server.should_exit = True
    thread.join(timeout=20)
