"""The backend suite: the same tests on DuckDB and PostgreSQL (Ibis-style, one suite for every engine)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from careloop.errors import MigrationError, StorageError, WorkspaceError
from careloop.storage import Backend
from careloop.storage.migrations import LATEST_VERSION, load_migrations, snapshot
from careloop.storage.schema import all_tables, entity_table


def _orgs(*keys: str) -> list[dict[str, object]]:
    return [
        {"source": "his", "key": k, "name": f"医院{k}", "org_type": "hospital", "tier": "三甲"} for k in keys
    ]


def test_migrate_is_idempotent_and_versioned(backend: Backend) -> None:
    assert backend.schema_version() == LATEST_VERSION
    assert backend.migrate() == []


def test_schema_matches_the_domain(backend: Backend) -> None:
    """Fails when the domain changes without a migration (python -m careloop.storage.migrations new NAME)."""
    expected = {t.name: t.column_names for t in all_tables()}
    frozen = snapshot(load_migrations())
    for name, columns in expected.items():
        assert name in frozen, f"table {name} has no migration"
        assert list(frozen[name]) == columns, f"{name}: domain and migrations differ; write a migration"
        assert list(backend.existing_columns(name)) == columns


def test_newer_database_is_refused(backend: Backend) -> None:
    backend.execute(backend._neutral("INSERT INTO schema_migration VALUES (?, ?, ?)"), [999, "future", "x"])
    with pytest.raises(MigrationError, match="upgrade careloop"):
        backend.migrate()


def test_insert_and_query_roundtrip(backend: Backend) -> None:
    store = backend.workspace("default")
    assert store.insert("organization", _orgs("o1", "o2")) == 2
    rows = store.rows("SELECT key, name, tier FROM organization ORDER BY key")
    assert rows == [
        {"key": "o1", "name": "医院o1", "tier": "三甲"},
        {"key": "o2", "name": "医院o2", "tier": "三甲"},
    ]
    assert store.scalar("SELECT count(*) FROM organization WHERE name LIKE :p", {"p": "%o1"}) == 1
    assert store.scalar("SELECT 7 % 3") == 1  # modulo survives psycopg's % handling


def test_no_read_crosses_workspaces(backend: Backend) -> None:
    a, b = backend.workspace("hospital-a"), backend.workspace("hospital-b")
    a.insert("organization", _orgs("o1", "shared"))
    b.insert("organization", _orgs("o2", "shared", "o3"))
    assert a.count("organization") == 2 and b.count("organization") == 3
    # joins, sub-queries, CTEs, set operations and explicit workspace filters all stay inside
    queries = [
        "SELECT key FROM organization",
        "SELECT x.key FROM organization x JOIN organization y ON x.key = y.key",
        "SELECT key FROM organization WHERE key IN (SELECT key FROM organization)",
        "WITH t AS (SELECT * FROM organization) SELECT key FROM t",
        "SELECT key FROM organization UNION ALL SELECT key FROM organization",
        "SELECT key FROM organization WHERE workspace_id = 'hospital-b'",
        "SELECT key FROM (SELECT * FROM organization) s",
    ]
    for q in queries:
        keys = {r["key"] for r in a.rows(q)}
        assert keys <= {"o1", "shared"}, q
    assert {r["id"] for r in a.rows("SELECT id FROM workspace")} == {"hospital-a"}


def test_update_and_delete_stay_in_workspace(backend: Backend) -> None:
    a, b = backend.workspace("a"), backend.workspace("b")
    a.insert("organization", _orgs("o1"))
    b.insert("organization", _orgs("o1"))
    a.execute("UPDATE organization SET name = :n", {"n": "改名"})
    a.execute("DELETE FROM organization WHERE key = 'o1' OR 1 = 1")
    assert a.count("organization") == 0
    assert b.rows("SELECT name FROM organization") == [{"name": "医院o1"}]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO organization (key) VALUES ('x')",
        "WITH organization AS (SELECT 1 AS key) SELECT * FROM organization",
        "SELECT * FROM main.organization",
        "SELECT 1; SELECT 2",
        "DROP TABLE organization",
    ],
)
def test_unsafe_workspace_sql_is_refused(backend: Backend, sql: str) -> None:
    with pytest.raises(WorkspaceError):
        backend.workspace("a").sql(sql)


def test_insert_refuses_rows_of_another_workspace(backend: Backend) -> None:
    rows = [{**_orgs("o1")[0], "workspace_id": "other"}]
    with pytest.raises(WorkspaceError):
        backend.workspace("a").insert("organization", rows)


def test_bad_workspace_ids(backend: Backend) -> None:
    for bad in ["", "Has Space", "x" * 65, "a;drop"]:
        with pytest.raises(WorkspaceError):
            backend.workspace(bad)
    with pytest.raises(WorkspaceError, match="careloop workspace create"):
        backend.workspace("never-made", create=False)


def test_errors_carry_the_sql(backend: Backend) -> None:
    with pytest.raises(StorageError) as e:
        backend.workspace("a").rows("SELECT no_such_column FROM organization")
    assert "no_such_column" in (e.value.sql or "")


def test_transaction_rolls_back(backend: Backend) -> None:
    store = backend.workspace("a")
    with pytest.raises(RuntimeError), backend.transaction():
        store.insert("organization", _orgs("o1"))
        raise RuntimeError("boom")
    assert store.count("organization") == 0


def test_merge_staged_inserts_updates_and_counts_repeats(backend: Backend) -> None:
    table = entity_table("organization")
    con = backend.staging_connection()
    now = datetime(2026, 11, 1, tzinfo=UTC)

    def stage(rows: list[tuple[str, str, str]]) -> None:
        con.register(
            "_rows",
            pa.table(
                {
                    "source": [r[0] for r in rows],
                    "key": [r[1] for r in rows],
                    "name": [r[2] for r in rows],
                    "_row_hash": [sum(map(ord, r[2])) for r in rows],
                    "_run_id": ["run"] * len(rows),
                }
            ),
        )
        con.execute("CREATE OR REPLACE TEMP TABLE _st AS SELECT * FROM _rows").fetchall()
        con.unregister("_rows")

    stage([("his", "o1", "A"), ("his", "o2", "B")])
    r = backend.merge_staged(table, con, "_st", "ws", now)
    assert (r.inserted, r.updated, r.unchanged) == (2, 0, 0)
    stage([("his", "o1", "A"), ("his", "o2", "B2"), ("his", "o3", "C")])
    r = backend.merge_staged(table, con, "_st", "ws", now)
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    store = backend.workspace("ws")
    assert store.rows("SELECT key, name FROM organization ORDER BY key") == [
        {"key": "o1", "name": "A"},
        {"key": "o2", "name": "B2"},
        {"key": "o3", "name": "C"},
    ]
    assert backend.workspace("other").count("organization") == 0
    con.execute("DROP TABLE _st").fetchall()
    if not backend.stages_in_store:
        con.close()


def test_insert_new_skips_keys_already_stored(backend: Backend) -> None:
    from datetime import UTC, datetime

    store = backend.workspace("default")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    first = [
        {"source": "app", "key": k, "name": "x", "occurred_at": at, "channel": "app", "received_at": at}
        for k in ("m1", "m2")
    ]
    assert sorted(store.insert_new("event", first, ("source", "key"))) == [("app", "m1"), ("app", "m2")]
    again = [dict(first[1], name="y"), dict(first[0], key="m3")]
    assert store.insert_new("event", again, ("source", "key"), recent=("received_at", at)) == [("app", "m3")]
    assert store.rows("SELECT key, name FROM event ORDER BY key") == [
        {"key": "m1", "name": "x"},
        {"key": "m2", "name": "x"},
        {"key": "m3", "name": "x"},
    ]
    # another workspace holds its own copy of the same key
    assert backend.workspace("other").insert_new("event", first[:1], ("source", "key")) == [("app", "m1")]


def test_merge_inserts_new_keys_and_updates_stored_ones(backend: Backend) -> None:
    store = backend.workspace("default")
    update = {"events": "{t}.events + {s}.events", "last_event_name": "{s}.last_event_name"}
    store.merge(
        "live_activity",
        [{"person_id": "p1", "channel": "app", "events": 2, "last_event_name": "a"}],
        ("person_id", "channel"),
        update,
    )
    store.merge(
        "live_activity",
        [
            {"person_id": "p1", "channel": "app", "events": 3, "last_event_name": "b"},
            {"person_id": "p2", "channel": "app", "events": 1, "last_event_name": "c"},
        ],
        ("person_id", "channel"),
        update,
    )
    assert store.rows("SELECT person_id, events, last_event_name FROM live_activity ORDER BY person_id") == [
        {"person_id": "p1", "events": 5, "last_event_name": "b"},
        {"person_id": "p2", "events": 1, "last_event_name": "c"},
    ]
