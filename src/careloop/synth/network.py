"""`generate_network`: the whole synthetic network, streamed to disk chunk by chunk.

People are generated in chunks of `chunk_size` (whole households); each chunk is simulated and
emitted on its own (`careloop.synth.chunk`, `careloop.synth.emit`) and appended to the files as one
row group, while a background thread compresses the previous chunk. Memory stays bounded by the chunk
size whatever the network size. Output depends only on the arguments (never on the wall clock or the
machine); the chunk size is an argument too, since it sets the random streams.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from careloop.errors import ConfigError
from careloop.synth import outreach
from careloop.synth.arrays import Column, const, floats, local_seconds, timestamps
from careloop.synth.chunk import Network, simulate
from careloop.synth.emit import Emitter
from careloop.synth.files import FILES, SOURCES, mapping_document
from careloop.synth.registry import build_registry
from careloop.synth.timeline import make_timeline
from careloop.synth.writer import OutputWriter, conform

DEFAULT_AS_OF = date(2026, 10, 31)
DEFAULT_CHUNK = 50_000
MAX_PATIENTS = 10_000_000
FORMATS = ("parquet", "csv")
MAPPING_FILE = "careloop-mapping.yaml"
TRUTH_DIR = "truth"

Progress = Callable[[int, int], None]  # (people done, people total)


def _check(patients: int, seed: int, as_of: date, fmt: str, years: int, chunk_size: int) -> None:
    if not 1 <= patients <= MAX_PATIENTS:
        raise ConfigError(f"--patients must be between 1 and {MAX_PATIENTS:,} (got {patients:,})")
    if seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer (got {seed})")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if not 1 <= years <= 10:
        raise ConfigError(f"--years must be between 1 and 10 (got {years})")
    if not date(2000, 1, 1) <= as_of <= date(2100, 12, 31):
        raise ConfigError(f"--as-of must be a date between 2000-01-01 and 2100-12-31 (got {as_of})")
    if not 100 <= chunk_size <= 1_000_000:
        raise ConfigError(f"chunk size must be between 100 and 1,000,000 (got {chunk_size:,})")


def _prepare(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; pass a folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        ours = [out_dir / s for s in (*SOURCES, TRUTH_DIR)] + [out_dir / MAPPING_FILE]
        others = [p for p in out_dir.iterdir() if p not in ours and not p.name.startswith(".")]
        if not overwrite:
            raise ConfigError(
                f"--out {out_dir} is not empty; pass --force to replace a previous network there "
                "or choose an empty folder"
            )
        if others:
            raise ConfigError(
                f"--out {out_dir} holds files that careloop synth did not write ({others[0].name} ...); "
                "choose another folder"
            )
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate_network(
    out_dir: Path,
    patients: int,
    seed: int = 7,
    as_of: date = DEFAULT_AS_OF,
    fmt: str = "parquet",
    progress: Progress | None = None,
    *,
    years: int = 2,
    chunk_size: int = DEFAULT_CHUNK,
    overwrite: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Generate the network into `out_dir`; returns a summary (row counts per file, seconds).

    Raises ConfigError for bad arguments or an output folder holding other files.
    """
    _check(patients, seed, as_of, fmt, years, chunk_size)
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    if progress is None and not quiet:
        return _with_progress_bar(out_dir, patients, seed, as_of, fmt, years, chunk_size)
    started = time.perf_counter()
    timeline = make_timeline(seed, as_of, years)
    net = Network(
        seed=seed,
        patients=patients,
        timeline=timeline,
        registry=build_registry(seed),
        campaigns=outreach.campaign_defs(timeline, patients),
    )
    data = OutputWriter(out_dir, fmt)
    truth = OutputWriter(out_dir, "parquet")
    try:
        data.write_batch(
            [
                (FILES[("registry", e)].path(fmt), conform(FILES[("registry", e)], _columns(t), t.num_rows))
                for e, t in net.registry.tables.items()
            ]
        )
        campaign_cost = np.zeros(len(net.campaigns))
        n_chunks = (patients + chunk_size - 1) // chunk_size
        for chunk in range(n_chunks):
            first = chunk * chunk_size
            n = min(chunk_size, patients - first)
            em = Emitter(net, simulate(net, chunk, first, n))
            em.run()
            campaign_cost += em.campaign_cost
            items = []
            for key, spec in FILES.items():
                if key[0] == "registry" or key == ("crm", "campaign"):
                    continue
                parts = em.tables.get(key, [])
                tables = [conform(spec, cols, _rows(cols)) for cols in parts]
                if not tables and chunk == 0:
                    tables = [conform(spec, {}, 0)]
                if tables:
                    items.append((spec.path(fmt), pa.concat_tables(tables)))
            data.write_batch(items)
            truth.write_batch(
                [
                    (f"{TRUTH_DIR}/{name}.parquet", pa.concat_tables([pa.table(c) for c in cols]))
                    for name, cols in em.truth.items()
                ]
            )
            del em
            if progress:
                progress(first + n, patients)
        data.write_batch([(FILES[("crm", "campaign")].path(fmt), _campaigns(net, campaign_cost))])
        truth.write_batch([(f"{TRUTH_DIR}/campaigns.parquet", _campaign_truth(net))])
    finally:
        data.close()
        truth.close()
    mapping_path = out_dir / MAPPING_FILE
    header = (
        f"# careloop synth: {patients} patients, seed {seed}, as of {as_of.isoformat()}, {years} years, "
        f"chunk size {chunk_size}.\n# Ingest with: careloop ingest <this folder> --format {fmt}\n"
    )
    mapping_path.write_text(
        header + yaml.safe_dump(mapping_document(fmt), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    files = dict(sorted(data.rows.items()))
    total = sum(files.values())
    return {
        "out_dir": str(out_dir),
        "patients": patients,
        "seed": seed,
        "as_of": as_of.isoformat(),
        "years": years,
        "format": fmt,
        "chunk_size": chunk_size,
        "chunks": (patients + chunk_size - 1) // chunk_size,
        "mapping": str(mapping_path),
        "files": files,
        "truth": dict(sorted(truth.rows.items())),
        "total_rows": total,
        "rows_per_patient": round(total / patients, 1),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _with_progress_bar(
    out_dir: Path, patients: int, seed: int, as_of: date, fmt: str, years: int, chunk_size: int
) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("synth", total=patients)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done)

        return generate_network(
            out_dir, patients, seed, as_of, fmt, step, years=years, chunk_size=chunk_size, overwrite=True
        )


def _columns(table: pa.Table) -> dict[str, Column]:
    return {name: table.column(name).combine_chunks() for name in table.column_names}


def _rows(columns: dict[str, Column]) -> int:
    for c in columns.values():
        if c is not None:
            return len(c)
    return 0


def _campaigns(net: Network, cost: np.ndarray) -> pa.Table:
    defs = net.campaigns
    tl = net.timeline
    start = local_seconds(np.array([d.start_day for d in defs]), np.full(len(defs), 8 * 3600))
    end = local_seconds(np.array([d.end_day for d in defs]), np.full(len(defs), 18 * 3600))
    channel = ("sms", "wechat", "app_push")
    content_cost = 2000.0
    cols: dict[str, Column] = {
        "key": pa.array([d.key for d in defs]),
        "name": pa.array([d.name for d in defs]),
        "objective": pa.array([d.objective for d in defs]),
        "channel": pa.array([channel[d.channel] for d in defs]),
        "owner_org_key": pa.array([d.owner for d in defs]),
        "start": timestamps(start),
        "end": timestamps(end, np.array([d.end_day for d in defs]) <= tl.as_of_day),
        "budget": floats(np.array([d.budget for d in defs])),
        "cost": floats(cost + content_cost, decimals=2),
    }
    spec = FILES[("crm", "campaign")]
    return conform(spec, cols, len(defs))


def _campaign_truth(net: Network) -> pa.Table:
    defs = net.campaigns
    return pa.table(
        {
            "campaign_key": [d.key for d in defs],
            "objective": [d.objective for d in defs],
            "holdout_share": [outreach.HOLDOUT_SHARE] * len(defs),
            "conversion_rate_holdout": [d.base_rate for d in defs],
            "conversion_rate_treated": [d.treated_rate for d in defs],
            "value_per_conversion": [d.value for d in defs],
            "source": const("crm", len(defs)),
        }
    )
