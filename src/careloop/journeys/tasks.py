"""Staff tasks created by journeys (a nurse's follow-up call, a pharmacist's refill call): listed by
assignee, completed with an outcome. Completing one records a ``task_completed`` event of the patient
(property ``outcome``), so a journey can wait for it or branch on it."""

from __future__ import annotations

from typing import Any

import orjson

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, NotFoundError
from careloop.journeys import engine
from careloop.storage import WorkspaceStore

_COLUMNS = (
    "task_id, journey, person_id, kind, title, assignee, due_at, status, outcome, created_at, completed_at"
)


def list_tasks(
    store: WorkspaceStore, *, assignee: str | None = None, status: str | None = "open", limit: int = 100
) -> list[dict[str, Any]]:
    """Tasks, oldest due first (open ones by default)."""
    where: list[str] = []
    params: dict[str, Any] = {"lim": limit}
    if assignee:
        where.append("assignee = :a")
        params["a"] = assignee
    if status:
        where.append("status = :s")
        params["s"] = status
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {_COLUMNS} FROM staff_task{clause} ORDER BY due_at, task_id LIMIT :lim"  # noqa: S608 - fixed fragments
    return store.rows(sql, params)


def complete_task(
    store: WorkspaceStore,
    task_id: str,
    outcome: str,
    *,
    by: str,
    status: str = "done",
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Record a task's outcome (done or cancelled) and the patient's ``task_completed`` event."""
    if status not in ("done", "cancelled"):
        raise ConfigError("a task is closed as done or cancelled")
    if not outcome.strip():
        raise ConfigError("say what happened (--outcome), e.g. 'reached; will refill on Friday'")
    rows = store.tuples("SELECT person_id, kind, status FROM staff_task WHERE task_id = :t", {"t": task_id})
    if not rows:
        raise NotFoundError(f"no task {task_id!r}; `careloop task list` shows the open ones")
    person, kind, current = rows[0]
    if current != "open":
        raise ConfigError(f"task {task_id} is already {current}")
    now = clock.now()
    with store.backend.transaction():
        store.execute(
            "UPDATE staff_task SET status = :s, outcome = :o, completed_at = :now WHERE task_id = :t",
            {"s": status, "o": outcome.strip(), "now": now, "t": task_id},
        )
        store.insert(
            "event",
            [
                {
                    "source": "careloop:tasks",
                    "key": task_id,
                    "event_type": "track",
                    "name": "task_completed",
                    "occurred_at": now,
                    "channel": "staff",
                    "person_id": person,
                    "received_at": now,
                    "properties": orjson.dumps(
                        {"task": kind, "status": status, "by": by, "outcome": outcome.strip()}
                    ).decode(),
                }
            ],
        )
    engine.on_events(store, [(person, "task_completed", now)], clock=clock)
    return {"task_id": task_id, "status": status, "outcome": outcome.strip(), "completed_at": now}
