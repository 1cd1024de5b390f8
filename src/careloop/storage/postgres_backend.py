"""PostgreSQL operational store (psycopg 3). Ingestion still validates in an in-memory DuckDB and
bulk-loads the result with COPY (see docs/decisions/0002-duckdb-ingest-engine.md)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, StorageError
from careloop.storage.base import Backend, MergeResult, Params
from careloop.storage.dialects import POSTGRES
from careloop.storage.schema import Table

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the [postgres] extra
    psycopg = None  # type: ignore[assignment]


def postgres_dsn(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


class PostgresBackend(Backend):
    dialect = POSTGRES

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, timezone: str = "Asia/Shanghai") -> None:
        super().__init__(url, clock=clock)
        if psycopg is None:
            raise ConfigError("PostgreSQL support needs the extra: pip install 'careloop[postgres]'")
        self.timezone = timezone
        try:
            self._con = psycopg.connect(postgres_dsn(url), autocommit=True)
        except psycopg.Error as e:
            host = url.split("@")[-1]
            raise StorageError(
                f"cannot connect to PostgreSQL at {host}: {str(e).strip()}. "
                "Check CARELOOP_DATABASE_URL and that the server is running."
            ) from e
        self._con.execute(f"SET TIME ZONE '{timezone}'")
        self._tx_depth = 0

    def _execute(self, sql: str, params: Params) -> None:
        self._con.execute(sql, params)  # type: ignore[arg-type]

    def _fetch_rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        cur = self._con.execute(sql, params)  # type: ignore[arg-type]
        return list(cur.fetchall())

    def _fetch_arrow(self, sql: str, params: Params) -> pa.Table:
        cur = self._con.execute(sql, params)  # type: ignore[arg-type]
        names = [d.name for d in cur.description or []]
        rows = cur.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return pa.table({n: pa.array(list(col)) for n, col in zip(names, columns, strict=True)})

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._con.transaction():
            yield

    def staging_connection(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute(f"SET TimeZone = '{self.timezone}'").fetchall()
        return con

    def merge_staged(
        self,
        table: Table,
        staging: duckdb.DuckDBPyConnection,
        staged: str,
        workspace: str,
        now: datetime,
        *,
        source: str | None = None,
    ) -> MergeResult:
        q = self.dialect.quote
        staged_cols = [r[0] for r in staging.execute(f"DESCRIBE {q(staged)}").fetchall()]
        cols = [c for c in table.column_names if c in staged_cols]
        tmp = f"_stage_{table.name}"
        col_defs = ", ".join(f"{q(c)} {self.dialect.column_type(table.column(c))}" for c in cols)
        as_text = ", ".join(
            f"CAST({q(c)} AS VARCHAR) AS {q(c)}"
            if table.column(c).type.value not in ("boolean",)
            else f"CASE WHEN {q(c)} THEN 'true' WHEN NOT {q(c)} THEN 'false' END AS {q(c)}"
            for c in cols
        )
        reader = staging.sql(f"SELECT {as_text} FROM {q(staged)}").to_arrow_reader(100_000)
        col_list = ", ".join(q(c) for c in cols)
        updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in cols if c not in ("source", "key"))
        t = q(table.name)
        with self._lock, self._con.transaction():
            self._con.execute(f"CREATE TEMP TABLE {q(tmp)} ({col_defs}) ON COMMIT DROP")
            with self._con.cursor().copy(f"COPY {q(tmp)} ({col_list}) FROM STDIN WITH (FORMAT csv)") as copy:
                for batch in reader:
                    buf = io.BytesIO()
                    pacsv.write_csv(
                        pa.Table.from_batches([batch]),
                        buf,
                        pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
                    )
                    copy.write(buf.getvalue())
            row = self._con.execute(
                f"WITH r AS (INSERT INTO {t} (workspace_id, {col_list}, _ingested_at, _updated_at) "
                f"SELECT %(ws)s, {col_list}, %(now)s, %(now)s FROM {q(tmp)} "
                f"ON CONFLICT (workspace_id, source, key) DO UPDATE SET {updates}, "
                f"_updated_at = EXCLUDED._updated_at "
                f"WHERE {t}._row_hash IS DISTINCT FROM EXCLUDED._row_hash "
                "RETURNING (xmax = 0) AS ins) "
                "SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins), "
                f"(SELECT count(*) FROM {q(tmp)}) FROM r",
                {"ws": workspace, "now": now},
            ).fetchall()[0]
        assert row is not None
        inserted, updated, total = int(row[0]), int(row[1]), int(row[2])
        return MergeResult(inserted=inserted, updated=updated, unchanged=total - inserted - updated)

    def insert_arrow(self, table: str, data: pa.Table) -> int:
        q = self.dialect.quote
        cols = ", ".join(q(c) for c in data.column_names)
        placeholders = ", ".join(["%s"] * data.num_columns)
        rows = list(zip(*(data.column(i).to_pylist() for i in range(data.num_columns)), strict=True))
        with self._lock, self._con.cursor() as cur:
            cur.executemany(f"INSERT INTO {q(table)} ({cols}) VALUES ({placeholders})", rows)
        return int(data.num_rows)

    def insert_absent(
        self, table: str, data: pa.Table, key: Sequence[str], *, recent: tuple[str, datetime] | None = None
    ) -> list[tuple[Any, ...]]:
        # the unique index on (workspace_id, *key) decides, exactly, across processes
        q = self.dialect.quote
        conflict = ", ".join(q(k) for k in ("workspace_id", *key))
        inserted: list[tuple[Any, ...]] = []
        for insert, params in _multi_row_inserts(q, table, data):
            sql = f"{insert} ON CONFLICT ({conflict}) DO NOTHING RETURNING {', '.join(q(k) for k in key)}"
            try:
                with self._lock:
                    inserted.extend(tuple(r) for r in self._con.execute(sql, params).fetchall())
            except psycopg.Error as e:
                raise StorageError(f"postgres refused an insert: {e}", sql=sql) from e
        return inserted

    def merge_rows(self, table: str, data: pa.Table, key: Sequence[str], update: Mapping[str, str]) -> None:
        q = self.dialect.quote
        conflict = ", ".join(q(k) for k in ("workspace_id", *key))
        sets = ", ".join(f"{q(c)} = {e.format(t=q(table), s='EXCLUDED')}" for c, e in update.items())
        with self.transaction():
            for insert, params in _multi_row_inserts(q, table, data):
                sql = f"{insert} ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
                try:
                    self._con.execute(sql, params)
                except psycopg.Error as e:
                    raise StorageError(f"postgres refused an upsert: {e}", sql=sql) from e

    def existing_columns(self, table: str) -> dict[str, str]:
        rows = self.fetch_rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = current_schema() ORDER BY ordinal_position",
            [table],
        )
        return {r[0]: r[1] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _multi_row_inserts(
    q: Callable[[str], str], table: str, data: pa.Table, max_params: int = 60_000
) -> Iterator[tuple[str, list[Any]]]:
    """`INSERT INTO t (cols) VALUES (...), (...)` statements with their parameters, under PostgreSQL's
    65,535-parameter limit."""
    cols = ", ".join(q(c) for c in data.column_names)
    width = data.num_columns
    rows = list(zip(*(data.column(i).to_pylist() for i in range(width)), strict=True))
    per_stmt = max(1, max_params // width)
    for start in range(0, len(rows), per_stmt):
        chunk = rows[start : start + per_stmt]
        values = ", ".join("(" + ", ".join(["%s"] * width) + ")" for _ in chunk)
        yield f"INSERT INTO {q(table)} ({cols}) VALUES {values}", [v for row in chunk for v in row]
