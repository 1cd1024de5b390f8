"""Workspaces (tenants), scoped by construction.

A `WorkspaceStore` is the only way feature code reads or writes. Every SQL statement it runs is
parsed (sqlglot) and each reference to a workspace-scoped table is replaced by a sub-query filtered to
the store's workspace, so a query cannot see another workspace's rows even when its author forgot a
WHERE clause — joins, sub-queries and CTEs included. UPDATE and DELETE get the same condition added;
INSERT goes through `insert`, which stamps the workspace itself.

SQL is written once, in sqlglot's neutral dialect with named parameters (``:name``), and rendered
for the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from careloop.errors import StorageError, WorkspaceError
from careloop.storage.schema import scoped_table_names

if TYPE_CHECKING:
    from careloop.storage.base import Backend

WS_PARAM = "_ws"
#: unscoped tables a workspace may read, and the column naming the workspace in them
_SELF_SCOPED = {"workspace": "id"}


def scope_sql(sql: str, dialect: str) -> str:
    """Rewrite neutral SQL so that it only touches the workspace bound to parameter `:_ws`."""
    return _scope(sql, dialect)[0]


@lru_cache(maxsize=4096)
def _scope(sql: str, dialect: str) -> tuple[str, frozenset[str]]:
    """The scoped SQL and the names of the parameters it uses."""
    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except ParseError as e:
        raise StorageError(f"could not parse SQL: {e}", sql=sql) from e
    if len(statements) != 1:
        raise WorkspaceError("a workspace query must be exactly one statement", sql=sql)
    tree = statements[0]
    scoped = scoped_table_names()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    shadowing = ctes & (scoped | _SELF_SCOPED.keys())
    if shadowing:
        raise WorkspaceError(f"a CTE may not be named like a table: {', '.join(sorted(shadowing))}", sql=sql)
    if isinstance(tree, exp.Insert | exp.Merge | exp.Create | exp.Drop | exp.Alter):
        raise WorkspaceError(
            "workspace SQL may only SELECT, UPDATE or DELETE; insert rows with WorkspaceStore.insert",
            sql=sql,
        )
    target = tree.this if isinstance(tree, exp.Update | exp.Delete) else None
    for table in list(tree.find_all(exp.Table)):
        name = table.name
        column = "workspace_id" if name in scoped else _SELF_SCOPED.get(name)
        if column is None or name in ctes:
            continue
        if table.args.get("db") or table.args.get("catalog"):
            raise WorkspaceError(f"refer to {name} without a schema or catalog prefix", sql=sql)
        condition = exp.column(column, table=table.alias_or_name).eq(exp.Placeholder(this=WS_PARAM))
        if table is target:
            tree.set(
                "where",
                exp.Where(this=exp.and_(tree.args["where"].this, condition))
                if tree.args.get("where")
                else exp.Where(this=condition),
            )
            continue
        inner = (
            exp.select("*")
            .from_(exp.Table(this=exp.to_identifier(name)))
            .where(exp.column(column).eq(exp.Placeholder(this=WS_PARAM)))
        )
        table.replace(inner.subquery(table.alias_or_name))
    names = frozenset(str(p.this) for p in tree.find_all(exp.Placeholder))
    if dialect == "postgres":
        tree = tree.transform(_psycopg_safe)
    return tree.sql(dialect=dialect), names


def _psycopg_safe(node: exp.Expression) -> exp.Expression:
    """psycopg treats % as a placeholder marker: double it in literals and use MOD()."""
    if isinstance(node, exp.Literal) and node.is_string and "%" in node.this:
        return exp.Literal.string(node.this.replace("%", "%%"))
    if isinstance(node, exp.Mod):
        return exp.Anonymous(this="MOD", expressions=[node.this, node.expression])
    return node


class WorkspaceStore:
    """Reads and writes limited to one workspace."""

    def __init__(self, backend: Backend, workspace: str) -> None:
        self.backend = backend
        self.workspace = workspace

    def _prepare(self, query: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        scoped, names = _scope(query, self.backend.dialect.name)
        given = dict(params or {})
        if WS_PARAM in given:
            raise WorkspaceError(f"parameter name {WS_PARAM!r} is reserved for the workspace")
        given[WS_PARAM] = self.workspace
        missing = names - given.keys()
        if missing:
            raise StorageError(f"missing query parameter(s): {', '.join(sorted(missing))}", sql=query)
        return scoped, {k: v for k, v in given.items() if k in names}

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a neutral SELECT scoped to this workspace; returns an Arrow table."""
        return self.backend.fetch_arrow(*self._prepare(query, params))

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.sql(query, params).to_pylist()
        return rows

    def tuples(self, query: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows as plain tuples, without the Arrow round trip: the fastest path for small look-ups."""
        return self.backend.fetch_rows(*self._prepare(query, params))

    def scalar(self, query: str, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.tuples(query, params)
        return rows[0][0] if rows else None

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a neutral UPDATE or DELETE scoped to this workspace."""
        self.backend.execute(*self._prepare(statement, params))

    def insert(self, table: str, rows: pa.Table | Sequence[Mapping[str, Any]]) -> int:
        """Append rows to a scoped table, stamped with this workspace."""
        data = self._stamped(table, rows)
        if data.num_rows == 0:
            return 0
        return self.backend.insert_arrow(table, data)

    def _stamped(self, table: str, rows: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
        if table not in scoped_table_names():
            raise WorkspaceError(f"{table} is not a workspace table")
        data = rows if isinstance(rows, pa.Table) else _table(rows)
        if "workspace_id" in data.column_names:
            other = set(data.column("workspace_id").to_pylist()) - {self.workspace}
            if other:
                raise WorkspaceError("rows name another workspace; a store writes only its own")
            data = data.drop(["workspace_id"])
        return data.append_column("workspace_id", pa.array([self.workspace] * data.num_rows, pa.string()))

    def insert_new(
        self,
        table: str,
        rows: pa.Table | Sequence[Mapping[str, Any]],
        key: Sequence[str],
        *,
        recent: tuple[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Append the rows whose `key` this workspace does not hold yet; returns the keys inserted.
        Rows must not repeat a key among themselves (see `Backend.insert_absent` for `recent`)."""
        data = self._stamped(table, rows)
        if data.num_rows == 0:
            return []
        return self.backend.insert_absent(table, data, key, recent=recent)

    def merge(
        self,
        table: str,
        rows: pa.Table | Sequence[Mapping[str, Any]],
        key: Sequence[str],
        update: Mapping[str, str],
    ) -> None:
        """Upsert rows on `key` (see `Backend.merge_rows` for the `update` expressions)."""
        data = self._stamped(table, rows)
        if data.num_rows:
            self.backend.merge_rows(table, data, key, update)

    def count(self, table: str) -> int:
        if table not in scoped_table_names():
            raise WorkspaceError(f"{table} is not a workspace table")
        return int(self.scalar(f"SELECT count(*) FROM {table}"))


def _table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with every key any row has (from_pylist would keep the first row's keys only)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in columns})
