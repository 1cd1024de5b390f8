"""``identity``: person matching throughput, careloop against bare Splink in the same run.

Input: the union of every source's patient file of the synthetic network (HIS with Chinese headers,
pharmacy, DTP, internet hospital, WeChat, app, call centre, CRM): about 3.75 records per patient, so
``--patients 267000`` gives about 1,000,000 records.

- careloop: `dedupe_file` — what ``careloop identity dedupe`` runs: read the Parquet file, standardise
  (names and pinyin, ID numbers, phones, dates, addresses), train, predict, constrained clustering,
  write every row with its cluster id.
- bare Splink: the same records already standardised (prepared before the clock starts), the same
  `splink_settings(columns)`, the same training calls and blocking rules, ``predict`` and Splink's own
  ``cluster_pairwise_predictions_at_threshold``, clusters written to Parquet — nothing careloop adds.

Both are scored pairwise against the planted truth, so a faster path cannot hide worse clusters.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import yaml
from splink import DuckDBAPI, Linker, block_on

from careloop.bench.report import BenchResult
from careloop.config import Settings
from careloop.identity.dedupe import dedupe_file, parse_dedupe_mapping
from careloop.identity.evaluate import PairwiseScores, pairwise_scores
from careloop.identity.matching import (
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    DETERMINISTIC_RECALL,
    DETERMINISTIC_RULES,
    MIN_ROWS_TO_TRAIN,
    TRAINING_BLOCKS,
    quiet_splink,
    splink_settings,
)
from careloop.identity.standardise import STD_TABLE, standardise
from careloop.ingest.rules import lit

#: the person fields of every patient file, as named in the union (careloop's field names)
UNION_FIELDS: tuple[str, ...] = (
    "key", "name", "sex", "birth_date", "id_number", "phone", "address", "postal_code",
)  # fmt: skip
#: the dedupe mapping of the union file
MAPPING: dict[str, str] = {
    "name": "name", "sex": "sex", "birth_date": "birth_date", "id_number": "id_number",
    "phone": "phone", "address": "address", "postcode": "postal_code",
}  # fmt: skip
#: records per patient in the union of the patient files (measured: 3.71 at 5,000, 3.75 at 1,000,000)
RECORDS_PER_PATIENT = 3.75
EM_MAX_PAIRS = 2e6


@dataclass
class IdentityInput:
    """The benchmark's input: the union file, its standardised copy and the true person per row."""

    union: Path
    standardised: Path
    columns: list[str]
    labels: npt.NDArray[Any]

    @property
    def records(self) -> int:
        return len(self.labels)


def patient_union(root: Path, out: Path) -> int:
    """Write one Parquet of all patient files of the network at `root` (source, key and the person
    fields, as text; HIS headers translated via the network's mapping); return its row count."""
    mapping = yaml.safe_load((root / "careloop-mapping.yaml").read_text(encoding="utf-8"))
    con = duckdb.connect()
    try:
        parts = []
        for entry in mapping["files"]:
            if entry["entity"] != "patient":
                continue
            path = root / entry["path"]
            have = {f.name for f in pq.read_schema(path)}
            sel = [f"{lit(entry['source'])} AS source"]
            for name in UNION_FIELDS:
                spec = entry.get("columns", {}).get(name, name)
                col = spec["column"] if isinstance(spec, dict) else spec
                value = f'CAST("{col}" AS VARCHAR)' if col in have else "CAST(NULL AS VARCHAR)"
                sel.append(f"{value} AS {name}")
            parts.append(f"SELECT {', '.join(sel)} FROM read_parquet({lit(str(path))})")
        con.execute(f"COPY ({' UNION ALL '.join(parts)}) TO {lit(str(out))} (FORMAT parquet)")
        return int(con.execute(f"SELECT count(*) FROM read_parquet({lit(str(out))})").fetchall()[0][0])
    finally:
        con.close()


def prepare(root: Path, work: Path) -> IdentityInput:
    """The union file, the same records standardised (bare Splink's input) and the truth per row."""
    union, std = work / "patients.parquet", work / "patients-standardised.parquet"
    patient_union(root, union)
    con = duckdb.connect()
    try:
        # the same numbering as dedupe_file: rowid of the freshly loaded table, i.e. file order
        con.execute(f"CREATE TABLE input_rows AS SELECT * FROM read_parquet({lit(str(union))})")
        fields = parse_dedupe_mapping(MAPPING).fields()
        columns = standardise(con, "input_rows", fields, row_id="rowid")
        con.execute(f"COPY {STD_TABLE} TO {lit(str(std))} (FORMAT parquet)")
        truth = root / "truth" / "identity.parquet"
        labels = (
            con.execute(
                "SELECT coalesce(t.person_id, 'unknown-' || i.rowid) FROM input_rows i "
                f"LEFT JOIN read_parquet({lit(str(truth))}) t ON t.source = i.source AND t.patient_key = i.key "
                "ORDER BY i.rowid"
            )
            .fetchnumpy()
            .popitem()[1]
        )
    finally:
        con.close()
    return IdentityInput(union, std, columns, np.asarray(labels))


def run_careloop(inp: IdentityInput, out: Path) -> tuple[float, npt.NDArray[Any]]:
    """Seconds of `dedupe_file` on the union, and the cluster id per row."""
    started = time.perf_counter()
    dedupe_file(inp.union, parse_dedupe_mapping(MAPPING), out, threshold=DEFAULT_THRESHOLD, seed=DEFAULT_SEED)
    seconds = time.perf_counter() - started
    return seconds, pq.read_table(out, columns=["cluster_id"]).column(0).to_numpy()


def _u_pairs(n: int) -> float:
    """Random pairs for u estimation: the rule of `careloop.identity.matching.match`."""
    return float(min(max(n * (n - 1) / 2, 1), 1e6 if n < 100_000 else 2e6))


def _available(rules: Collection[tuple[str, ...]], columns: Collection[str]) -> list[tuple[str, ...]]:
    return [r for r in rules if all(c in columns for c in r)]


def run_bare_splink(inp: IdentityInput, out: Path) -> tuple[float, npt.NDArray[Any]]:
    """Seconds of plain Splink on the standardised records, and the cluster id per row."""
    con = duckdb.connect()
    try:
        with quiet_splink():  # as careloop's match() does
            started = time.perf_counter()
            con.execute(
                f"CREATE TABLE {STD_TABLE} AS SELECT * FROM read_parquet({lit(str(inp.standardised))})"
            )
            n = inp.records
            linker = Linker(
                DuckDBAPI(connection=con).register(STD_TABLE), splink_settings(inp.columns), log_level=None
            )
            if n >= MIN_ROWS_TO_TRAIN:
                linker.training.estimate_u_using_random_sampling(max_pairs=_u_pairs(n), seed=DEFAULT_SEED)
            det = _available(DETERMINISTIC_RULES, inp.columns)
            if det:
                linker.training.estimate_probability_two_random_records_match(
                    [block_on(*r) for r in det], recall=DETERMINISTIC_RECALL
                )
            if n >= MIN_ROWS_TO_TRAIN:
                for rule in _available(TRAINING_BLOCKS, inp.columns):
                    # as match(): a block with too few pairs to train on keeps the priors
                    with contextlib.suppress(Exception):
                        linker.training.estimate_parameters_using_expectation_maximisation(
                            block_on(*rule), max_pairs=EM_MAX_PAIRS, estimate_without_term_frequencies=True
                        )
            predictions = linker.inference.predict(
                threshold_match_probability=DEFAULT_THRESHOLD, warning_mode="never"
            )
            clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
                predictions, threshold_match_probability=DEFAULT_THRESHOLD
            )
            con.execute(
                f"COPY (SELECT unique_id, cluster_id FROM {clusters.physical_name} ORDER BY unique_id) "
                f"TO {lit(str(out))} (FORMAT parquet)"
            )
            seconds = time.perf_counter() - started
    finally:
        con.close()
    return seconds, pq.read_table(out, columns=["cluster_id"]).column(0).to_numpy()


def _scores(s: PairwiseScores) -> dict[str, float]:
    return {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4)}


def bench_identity(patients: int, seed: int, cache: Path, settings: Settings, repeat: int) -> BenchResult:
    """Records/s of careloop's dedupe against bare Splink on the union of the network's patient files."""
    from careloop.bench.scenarios import network  # scenarios imports this module

    root = network(cache, patients, seed)
    best_ours = best_bare = 0.0
    seconds_ours = seconds_bare = float("inf")
    with tempfile.TemporaryDirectory(prefix="careloop-bench-identity-", dir=cache) as tmp:
        work = Path(tmp)
        inp = prepare(root, work)
        ours_clusters: npt.NDArray[Any] = np.array([])
        bare_clusters: npt.NDArray[Any] = np.array([])
        for i in range(repeat):
            # alternate which runs first, so that neither always meets the other's leftovers
            if i % 2:
                s_ours, ours_clusters = run_careloop(inp, work / "careloop-clusters.parquet")
                s_bare, bare_clusters = run_bare_splink(inp, work / "bare-clusters.parquet")
            else:
                s_bare, bare_clusters = run_bare_splink(inp, work / "bare-clusters.parquet")
                s_ours, ours_clusters = run_careloop(inp, work / "careloop-clusters.parquet")
            seconds_bare, seconds_ours = min(seconds_bare, s_bare), min(seconds_ours, s_ours)
            best_bare = max(best_bare, inp.records / s_bare)
            best_ours = max(best_ours, inp.records / s_ours)
        ours = pairwise_scores(ours_clusters, inp.labels)
        bare = pairwise_scores(bare_clusters, inp.labels)
    return BenchResult(
        scenario="identity",
        size=f"{patients:,} patients ({inp.records:,} records)",
        figure=best_ours,
        baseline=best_bare,
        unit="records/s",
        baseline_name="bare Splink, same settings, on standardised records",
        command=f"careloop bench identity --patients {patients}"
        + (f" --repeat {repeat}" if repeat > 1 else ""),
        details={
            "records": inp.records,
            "seconds": round(seconds_ours, 2),
            "seconds_baseline": round(seconds_bare, 2),
            "careloop": _scores(ours),
            "baseline_scores": _scores(bare),
            "threshold": DEFAULT_THRESHOLD,
        },
    )
