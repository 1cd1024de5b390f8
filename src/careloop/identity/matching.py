"""Probabilistic person matching: a Splink 5 Fellegi–Sunter model on DuckDB.

`splink_settings(columns)` is the one place the model is described (comparisons with prior m and u
probabilities, blocking rules); it is dialect-free, so a Spark run can reuse it with `SparkAPI`. It
adapts to whichever standardised columns a file has (see `careloop.identity.standardise`).

`match(con, table, columns, ...)` trains it — u by random sampling (seeded), m by expectation
maximisation over near-certain blocks, the share of matches from deterministic rules — scores the
blocked pairs and clusters those at or above the threshold (`careloop.identity.cluster`: strongest
first, never joining contradicting records). Same input, seed and settings: same result.
Why the settings look the way they do: docs/decisions/0007-identity-matching.md."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink import comparison_level_library as cll
from splink import comparison_library as cl
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.comparison_creator import ComparisonCreator
from splink.internals.comparison_level_creator import ComparisonLevelCreator

from careloop.errors import ConfigError
from careloop.identity.cluster import cluster_edges

DEFAULT_THRESHOLD = 0.9
DEFAULT_SEED = 42
#: below this many rows the prior m and u probabilities are used as they are (too few pairs to train)
MIN_ROWS_TO_TRAIN = 1000

#: blocking rules for prediction, most specific first; a rule is used when all its columns exist
PREDICTION_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("id_number",),
    ("phone",),
    ("surname", "birth_date"),
    ("given_name", "birth_date"),
    ("name_pinyin", "birth_year"),
    ("name", "address"),
)
#: blocking rules for EM training. Each admits pairs that are nearly all true matches, so EM learns
#: m from matches only: a block on the phone alone would be full of family members sharing it and
#: would teach the model that a different name or birth date is common among matches.
TRAINING_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("id_number",),
    ("name_pinyin", "birth_date"),
    ("phone", "birth_date"),
    ("name_pinyin", "phone"),
)
#: near-certain rules for estimating the share of matching pairs (with DETERMINISTIC_RECALL)
DETERMINISTIC_RULES: tuple[tuple[str, ...], ...] = (
    ("id_number",),
    ("name", "birth_date"),
    ("name", "phone", "sex"),
)
DETERMINISTIC_RECALL = 0.7

log = logging.getLogger(__name__)


def _lvl(
    level: ComparisonLevelCreator, m: float, u: float, label: str | None = None
) -> ComparisonLevelCreator:
    """A level with prior m and u probabilities: small files use them as they are; on larger files
    u comes from random sampling and m from EM (levels never observed keep the prior)."""
    if label is None:
        level.configure(m_probability=m, u_probability=u)
    else:
        level.configure(m_probability=m, u_probability=u, label_for_charts=label)
    return level


def _null(*cols: str) -> ComparisonLevelCreator:
    level: ComparisonLevelCreator = (
        cll.NullLevel(cols[0]) if len(cols) == 1 else cll.And(*map(cll.NullLevel, cols))
    )
    level.configure(is_null_level=True)
    return level


def name_comparison() -> ComparisonCreator:
    """Full name: exact (term-frequency adjusted), same pinyin, reordered characters, one character off.

    No Jaro-Winkler level: on Chinese names its prefix bonus rewards the shared surname, so parents and
    children (卢辰鑫 / 卢晨涵) would score as near-matches.
    """
    return cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            _null("name"),
            _lvl(cll.ExactMatchLevel("name", term_frequency_adjustments=True), 0.85, 4e-4),
            _lvl(cll.ExactMatchLevel("name_pinyin"), 0.06, 1e-4, "same pinyin (homophone)"),
            _lvl(cll.ExactMatchLevel("name_sorted"), 0.02, 2e-5, "same characters, other order"),
            _lvl(cll.DamerauLevenshteinLevel("name", 1), 0.05, 5e-3, "one character different"),
            _lvl(cll.ElseLevel(), 0.02, 0.99),
        ],
    )


def birth_date_comparison() -> ComparisonCreator:
    """Birth date: exact, month/day swapped or one character different / transposed, else."""
    return cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            _null("birth_str"),
            _lvl(cll.ExactMatchLevel("birth_str"), 0.95, 5e-4),
            _lvl(
                cll.Or(
                    cll.ColumnsReversedLevel("birth_str", "birth_swapped"),
                    cll.DamerauLevenshteinLevel("birth_str", 1),
                ),
                0.04,
                1.2e-3,
                "month/day swapped, or one digit wrong or transposed",
            ),
            _lvl(cll.ElseLevel(), 0.01, 0.998),
        ],
    )


def _exact(
    col: str, m_exact: float, u_exact: float, *, tf: bool = False, fuzzy: bool = False
) -> ComparisonCreator:
    levels: list[ComparisonLevelCreator | dict[str, Any]] = [
        _null(col),
        _lvl(cll.ExactMatchLevel(col, term_frequency_adjustments=tf), m_exact, u_exact),
    ]
    rest = 1.0 - m_exact
    if fuzzy:
        levels.append(_lvl(cll.DamerauLevenshteinLevel(col, 1), 0.01, 1e-4, f"{col} one character different"))
        rest -= 0.01
    levels.append(_lvl(cll.ElseLevel(), rest, 1.0 - u_exact))
    return cl.CustomComparison(output_column_name=col, comparison_levels=levels)


def address_comparison(columns: Collection[str]) -> ComparisonCreator:
    """Address (exact, Jaro-Winkler >= 0.9) and postcode, as one comparison: they are not independent."""
    has_a, has_p = "address" in columns, "postcode" in columns
    levels: list[ComparisonLevelCreator | dict[str, Any]] = [
        _null(*[c for c in ("address", "postcode") if c in columns])
    ]
    if has_a:
        levels += [
            _lvl(cll.ExactMatchLevel("address"), 0.6, 1e-4),
            _lvl(cll.JaroWinklerLevel("address", 0.9), 0.15, 0.015, "address Jaro-Winkler >= 0.9"),
        ]
    if has_p:
        levels.append(_lvl(cll.ExactMatchLevel("postcode"), 0.15 if has_a else 0.9, 0.04))
    levels.append(_lvl(cll.ElseLevel(), 0.1, 0.94))
    return cl.CustomComparison(output_column_name="address", comparison_levels=levels)


def comparisons(columns: Collection[str]) -> list[ComparisonCreator]:
    """The comparisons the standardised columns allow."""
    out: list[ComparisonCreator] = []
    if "name" in columns:
        out.append(name_comparison())
    if "birth_str" in columns:
        out.append(birth_date_comparison())
    if "sex" in columns:
        out.append(_exact("sex", 0.98, 0.5))
    if "phone" in columns:
        out.append(_exact("phone", 0.7, 1e-5, tf=True, fuzzy=True))
    if "id_number" in columns:
        out.append(_exact("id_number", 0.98, 1e-6))
    if "address" in columns or "postcode" in columns:
        out.append(address_comparison(columns))
    return out


def _available(rules: Sequence[tuple[str, ...]], columns: Collection[str]) -> list[tuple[str, ...]]:
    return [r for r in rules if all(c in columns for c in r)]


def prediction_blocks(columns: Collection[str]) -> list[tuple[str, ...]]:
    """Blocking rules (column tuples) for prediction; falls back to the pinyin or birth date alone."""
    rules = _available(PREDICTION_BLOCKS, columns)
    if not rules:
        rules = _available((("name_pinyin",), ("birth_date",)), columns)[:1]
    return rules


def splink_settings(columns: Collection[str], *, prior_match: float = 1e-4) -> SettingsCreator:
    """Dialect-free Splink settings for a person file with these standardised columns."""
    comps = comparisons(columns)
    blocks = prediction_blocks(columns)
    if len(comps) < 2 or not blocks:
        raise ConfigError(
            "matching needs at least two comparable fields and one to block on: map a name plus "
            "a birth date, phone or ID number (see docs/identity.md)"
        )
    brs: list[BlockingRuleCreator | dict[str, Any]] = [block_on(*r) for r in blocks]
    comps_any: list[ComparisonCreator | dict[str, Any]] = list(comps)
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comps_any,
        blocking_rules_to_generate_predictions=brs,
        probability_two_random_records_match=prior_match,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
        em_convergence=1e-4,
        max_iterations=25,
    )


@dataclass
class MatchResult:
    """Clusters (unique_id, cluster_id, match_probability) and the trained model."""

    clusters: pa.Table
    parameters: list[dict[str, Any]]
    trained_with: list[str] = field(default_factory=list)
    pairs_above_threshold: int = 0
    seconds: float = 0.0


@contextmanager
def quiet_splink() -> Iterator[None]:
    """Silence Splink's own warnings (levels not observed in training, sample sizes) for a block: the
    trained parameters are in the results for anyone who wants to judge them."""
    splink_log = logging.getLogger("splink")
    level = splink_log.level
    splink_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        splink_log.setLevel(level)


def match(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Collection[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
    u_max_pairs: float | None = None,
    em_max_pairs: float = 2e6,
    constrained: bool = True,
) -> MatchResult:
    """Train, predict and cluster the standardised table `table` on `con`.

    `table` comes from `standardise`: `unique_id` numbers its rows 0..n-1 and `columns` lists the
    matching columns it has. Splink's intermediate tables stay on `con`.

    Splink's own warnings (levels not observed in training, sample sizes) are silenced: the trained
    parameters are in the result for anyone who wants to judge them.
    """
    with quiet_splink():
        return _match(con, table, columns, threshold, seed, u_max_pairs, em_max_pairs, constrained)


@dataclass
class ScoredPairs:
    """Pairs at or above the threshold (left < right unique ids) and the model that scored them."""

    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    prob: npt.NDArray[np.float64]
    model: dict[str, Any]
    trained_with: list[str] = field(default_factory=list)


def score_pairs(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Collection[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = DEFAULT_SEED,
    u_max_pairs: float | None = None,
    em_max_pairs: float = 2e6,
    model: dict[str, Any] | None = None,
    only_new_column: str | None = None,
) -> ScoredPairs:
    """Train (or reuse `model`, a saved Splink model) and score the blocked pairs of `table`.

    With `only_new_column` (a 0/1 column of `table`) only pairs with at least one record marked 1
    are compared: the incremental case, matching new records against everything else.
    """
    with quiet_splink():
        return _score(con, table, columns, threshold, seed, u_max_pairs, em_max_pairs, model, only_new_column)


def restrict_to_new(model: dict[str, Any], column: str) -> dict[str, Any]:
    """A copy of a saved model whose blocking rules only admit pairs with a record marked in `column`."""
    out = dict(model)
    rules = []
    for rule in model.get("blocking_rules_to_generate_predictions", []):
        r = dict(rule) if isinstance(rule, dict) else {"blocking_rule": str(rule)}
        r["blocking_rule"] = f'({r["blocking_rule"]}) AND (l."{column}" = 1 OR r."{column}" = 1)'
        rules.append(r)
    out["blocking_rules_to_generate_predictions"] = rules
    return out


def _score(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Collection[str],
    threshold: float,
    seed: int,
    u_max_pairs: float | None,
    em_max_pairs: float,
    model: dict[str, Any] | None,
    only_new_column: str | None,
) -> ScoredPairs:
    if not 0 < threshold < 1:
        raise ConfigError(f"--threshold must be a match probability between 0 and 1 (got {threshold})")
    n = int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])  # noqa: S608
    empty = np.zeros(0, dtype=np.int64)
    if model is None:
        settings: SettingsCreator | dict[str, Any] = splink_settings(columns)
    else:
        settings = restrict_to_new(model, only_new_column) if only_new_column else model
    if n < 2:
        return ScoredPairs(empty, empty.copy(), np.zeros(0), model or {})
    db_api = DuckDBAPI(connection=con)
    sdf = db_api.register(table)
    linker = Linker(sdf, settings, log_level=None)
    trained: list[str] = []
    if model is None:
        trained = _train(linker, n, columns, seed, u_max_pairs, em_max_pairs)
    predictions = linker.inference.predict(threshold_match_probability=threshold, warning_mode="never")
    pred = predictions.physical_name
    edges = con.sql(
        f"SELECT unique_id_l, unique_id_r, match_probability FROM {pred}"  # noqa: S608 - Splink's table
    ).to_arrow_table()
    return ScoredPairs(
        left=edges.column(0).to_numpy().astype(np.int64),
        right=edges.column(1).to_numpy().astype(np.int64),
        prob=edges.column(2).to_numpy().astype(np.float64),
        model=model if model is not None else linker.misc.save_model_to_json(),
        trained_with=trained,
    )


def _train(
    linker: Linker,
    n: int,
    columns: Collection[str],
    seed: int,
    u_max_pairs: float | None,
    em_max_pairs: float,
) -> list[str]:
    # random pairs: all for small files; 2e6 at 100k+ rows gave the same F1 as 1e7 in a third of the time
    pairs = (
        u_max_pairs
        if u_max_pairs is not None
        else float(min(max(n * (n - 1) / 2, 1), 1e6 if n < 100_000 else 2e6))
    )
    trained: list[str] = []
    if n >= MIN_ROWS_TO_TRAIN:
        linker.training.estimate_u_using_random_sampling(max_pairs=pairs, seed=seed)
        trained.append("u: random sampling")
    det = _available(DETERMINISTIC_RULES, columns)
    if det:
        try:
            linker.training.estimate_probability_two_random_records_match(
                [block_on(*r) for r in det], recall=DETERMINISTIC_RECALL
            )
            trained.append("share of matches: deterministic rules on " + ", ".join("+".join(r) for r in det))
        except Exception as e:  # no deterministic pair at all: keep the prior
            log.info("prior match probability not estimated: %s", e)
    if n >= MIN_ROWS_TO_TRAIN:
        for rule in _available(TRAINING_BLOCKS, columns):
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*rule), max_pairs=em_max_pairs, estimate_without_term_frequencies=True
                )
                trained.append("m: EM blocked on " + "+".join(rule))
            except Exception as e:  # a block with too few pairs to train on: keep the priors
                log.info("EM on %s skipped: %s", rule, e)
    return trained


def _match(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Collection[str],
    threshold: float,
    seed: int,
    u_max_pairs: float | None,
    em_max_pairs: float,
    constrained: bool,
) -> MatchResult:
    t0 = time.perf_counter()
    if not 0 < threshold < 1:
        raise ConfigError(f"--threshold must be a match probability between 0 and 1 (got {threshold})")
    n = int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])  # noqa: S608
    splink_settings(columns)  # a file without two comparable fields fails here, before any work
    if n < 2:
        singles = pa.table(
            {
                "unique_id": pa.array(range(n), pa.int64()),
                "cluster_id": pa.array(range(n), pa.int64()),
                "match_probability": pa.nulls(n, pa.float64()),
            }
        )
        return MatchResult(singles, [], seconds=time.perf_counter() - t0)
    scored = _score(con, table, columns, threshold, seed, u_max_pairs, em_max_pairs, None, None)
    left, right, prob = scored.left, scored.right, scored.prob
    if constrained:
        ids = _column(con, table, "id_number", columns, n)
        births = _column(con, table, "birth_str", columns, n)
        cluster, best = cluster_edges(n, left, right, prob, ids, births)
    else:
        cluster, best = cluster_edges(n, left, right, prob, [None] * n, [None] * n)
    clusters = pa.table(
        {
            "unique_id": pa.array(np.arange(n, dtype=np.int64)),
            "cluster_id": pa.array(cluster),
            "match_probability": pa.array(best, from_pandas=True),
        }
    )
    return MatchResult(
        clusters=clusters,
        parameters=model_parameters(scored.model),
        trained_with=scored.trained_with,
        pairs_above_threshold=len(prob),
        seconds=time.perf_counter() - t0,
    )


def _column(
    con: duckdb.DuckDBPyConnection, table: str, col: str, columns: Collection[str], n: int
) -> list[str | None]:
    if col not in columns:
        return [None] * n
    values: list[str | None] = (
        con.sql(f'SELECT "{col}" FROM "{table}" ORDER BY unique_id').to_arrow_table().column(0).to_pylist()  # noqa: S608
    )
    return values


def model_parameters(model: dict[str, Any]) -> list[dict[str, Any]]:
    """m, u and match weight per comparison level, from a saved Splink model."""
    out: list[dict[str, Any]] = []
    for comp in model.get("comparisons", []):
        levels = []
        for lvl in comp.get("comparison_levels", []):
            if lvl.get("is_null_level"):
                continue
            m, u = lvl.get("m_probability"), lvl.get("u_probability")
            weight = math.log2(m / u) if m and u else None
            levels.append(
                {
                    "level": lvl.get("label_for_charts") or lvl.get("sql_condition"),
                    "m": m,
                    "u": u,
                    "match_weight": None if weight is None else round(weight, 3),
                }
            )
        out.append({"comparison": comp.get("output_column_name"), "levels": levels})
    return out
