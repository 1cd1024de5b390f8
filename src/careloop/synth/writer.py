"""Streaming output: one Parquet (or CSV) writer per file, fed chunk by chunk from a background thread so
that generation and compression overlap; Arrow's writers release the GIL.

Tables are conformed to the file's fixed schema first (missing columns become nulls, value maps such
as male -> 男 applied), so every chunk has the same schema and equal inputs give byte-identical files.
CSV files are UTF-8 with ISO 8601 timestamps carrying +08:00.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from careloop.synth.arrays import UTC_OFFSET
from careloop.synth.files import FileSpec

Columns = dict[str, pa.Array]


def conform(spec: FileSpec, columns: Columns, n: int) -> pa.Table:
    """A table in the file's schema from canonical columns (missing ones are null)."""
    arrays = []
    schema = spec.schema
    for (name, _), target in zip(spec.columns, schema.types, strict=True):
        arr = columns.get(name)
        if arr is None:
            arrays.append(pa.nulls(n, type=target))
            continue
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if len(arr) != n:
            raise ValueError(f"{spec.source}/{spec.entity}.{name}: {len(arr)} values for {n} rows")
        if name in spec.value_maps:
            mapping = spec.value_maps[name]
            keys = pa.array(list(mapping), type=pa.string())
            values = pa.array(list(mapping.values()), type=pa.string())
            arr = pc.if_else(pc.is_null(arr), arr, pc.take(values, pc.index_in(arr, keys)))
        if arr.type != target:
            arr = arr.cast(target)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def _csv_ready(table: pa.Table) -> pa.Table:
    """Timestamps as local ISO 8601 text with +08:00 (Arrow would write UTC)."""
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            micros = pc.add(col.cast(pa.timestamp("us")).cast(pa.int64()), UTC_OFFSET * 1_000_000)
            local = micros.cast(pa.timestamp("us")).cast(pa.timestamp("s"))
            text = pc.strftime(local, format="%Y-%m-%dT%H:%M:%S")
            text = pc.binary_join_element_wise(text, pa.scalar("+08:00"), "")
            cols.append(text)
        else:
            cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


class OutputWriter:
    """Writes tables to ``<out>/<relative path>``; `write` queues, a thread writes, `close` waits."""

    def __init__(self, out_dir: Path, fmt: str, max_pending: int = 3) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.rows: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter | pacsv.CSVWriter] = {}
        self._queue: queue.Queue[list[tuple[str, pa.Table]] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="careloop-synth-writer", daemon=True)
        self._thread.start()

    def write_batch(self, items: list[tuple[str, pa.Table]]) -> None:
        """Queue tables (relative path, table) written in this order."""
        self._raise()
        for path, table in items:
            self.rows[path] = self.rows.get(path, 0) + table.num_rows
        self._queue.put(items)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            items = self._queue.get()
            if items is None:
                return
            if self._error is not None:
                continue
            try:
                for path, table in items:
                    self._write(path, table)
            except BaseException as e:  # re-raised in the generating thread
                self._error = e

    def _write(self, path: str, table: pa.Table) -> None:
        writer = self._writers.get(path)
        if self.fmt == "csv":
            table = _csv_ready(table)
        if writer is None:
            target = self.out_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.fmt == "csv":
                writer = pacsv.CSVWriter(str(target), table.schema)
            else:
                writer = pq.ParquetWriter(str(target), table.schema, compression="zstd")
            self._writers[path] = writer
        if table.num_rows:
            writer.write_table(table)
