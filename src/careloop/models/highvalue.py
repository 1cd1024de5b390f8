"""High-value profile: which traits distinguish the most valuable patients, with lift — for acquisition
targeting (find more people like them) and for understanding what they do (docs/models.md).

**Value** is a stored trait: ``clv_value`` (`careloop models clv score`) when present, else
``spend_365d`` (`careloop traits compute`), or any number trait (``value_trait``). A person without a
value counts as 0. The **high-value** group is the top `top_share` (default 20 %) of persons by value
(everyone at or above that quantile, with a value above 0).

**Conditions** are read from the other stored traits: each value of a text trait (``age_band = 55-64``),
each key of a keyed trait (``conditions: I10``, ``preferred_channel``...), and for number and time
traits the quartile of the persons who have a value, or "no value". For each: its share in the
high-value group, in everyone, **lift** = the two shares' ratio, the share in the rest and a two-sided
z-test of high vs rest (p-value). Only conditions held by at least `min_support` high-value persons are
listed. Conditions on who a person is (age, sex, district, conditions, channel) are marked
``acquisition``: a prospect can be found by them; the others (``behaviour``) describe what customers do
and cannot target strangers. The value trait and model scores are left out (they would explain value by
itself).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, ModelError
from careloop.models.base import ModelCard, data_hash, merge_config
from careloop.storage import WorkspaceStore

FAMILY = "highvalue"
VERSION = "1"
DEFAULT_NAME = "highvalue"
VALUE_TRAITS = ("clv_value", "spend_365d")
#: traits about who a person is, usable to find prospects (acquisition targeting)
ACQUISITION_TRAITS = (
    "age",
    "age_band",
    "sex",
    "conditions",
    "preferred_channel",
    "district",
)
#: prefixes of model outputs, never used to explain value
SCORE_PREFIXES = ("clv_", "rfm_", "churn_", "noshow_", "refill_")
DEFAULTS: dict[str, Any] = {"value_trait": None, "top_share": 0.2, "min_support": 20, "max_conditions": 40}


@dataclass
class Condition:
    trait: str
    label: str  # e.g. "age_band = 55-64", "conditions: I10", "visits_365d: Q4 (>= 6)"
    use: str  # acquisition | behaviour
    high: int  # high-value persons holding it
    share_high: float
    share_all: float
    share_rest: float
    lift: float
    p_value: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "condition": self.label,
            "use": self.use,
            "high_value_persons": self.high,
            "share_high": round(self.share_high, 4),
            "share_all": round(self.share_all, 4),
            "share_rest": round(self.share_rest, 4),
            "lift": round(self.lift, 3),
            "p_value": None if self.p_value is None else float(f"{self.p_value:.3g}"),
        }


def profile(
    store: WorkspaceStore,
    config: dict[str, Any] | None = None,
    *,
    name: str = DEFAULT_NAME,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[ModelCard, list[Condition]]:
    """The high-value profile (see the module docstring) as a card with its report, and the conditions."""
    cfg = merge_config(DEFAULTS, config, "highvalue config")
    top_share, min_support = cfg["top_share"], cfg["min_support"]
    if not isinstance(top_share, int | float) or not 0 < top_share < 1:
        raise ConfigError("top_share is a share between 0 and 1, e.g. 0.2 for the top 20 %")
    if not isinstance(min_support, int) or min_support < 1:
        raise ConfigError("min_support is a whole number of persons >= 1")
    present = {t for (t,) in store.tuples("SELECT DISTINCT trait FROM trait_value")}
    value_trait = cfg["value_trait"] or next((t for t in VALUE_TRAITS if t in present), None)
    if value_trait is None or value_trait not in present:
        raise ModelError(
            f"no value trait stored ({value_trait or ' or '.join(VALUE_TRAITS)}): run `careloop traits compute` "
            "(spend_365d) or `careloop models clv score` (clv_value) first, or name one with --value-trait"
        )
    persons = [p for (p,) in store.tuples("SELECT person_id FROM person ORDER BY person_id")]
    index = {p: i for i, p in enumerate(persons)}
    n = len(persons)
    value = np.zeros(n)
    for pid, v in store.tuples(
        "SELECT person_id, value_num FROM trait_value WHERE trait = :t AND key = '' AND value_num IS NOT NULL",
        {"t": value_trait},
    ):
        if pid in index:
            value[index[pid]] = float(v)
    if not (value > 0).any():
        raise ModelError(f"every person's {value_trait} is 0 or missing: no high-value group to describe")
    threshold = float(np.quantile(value, 1 - float(top_share)))
    high = (value >= threshold) & (value > 0)
    as_of = store.scalar("SELECT max(as_of) FROM trait_value WHERE trait = :t", {"t": value_trait})

    rows = store.tuples(
        "SELECT person_id, trait, key, value_num, value_text, value_time, as_of FROM trait_value WHERE trait <> :t",
        {"t": value_trait},
    )
    masks = _conditions(rows, index, n)
    out: list[Condition] = []
    n_high, n_rest = int(high.sum()), int((~high).sum())
    for (trait, label), mask in masks.items():
        if trait.startswith(SCORE_PREFIXES):
            continue
        k_high = int((mask & high).sum())
        if k_high < min_support:
            continue
        share_high = k_high / n_high
        share_all = float(mask.mean())
        share_rest = float((mask & ~high).sum()) / n_rest if n_rest else 0.0
        use = "acquisition" if trait in ACQUISITION_TRAITS else "behaviour"
        out.append(
            Condition(
                trait,
                label,
                use,
                k_high,
                share_high,
                share_all,
                share_rest,
                share_high / share_all if share_all else math.inf,
                _z_test(k_high, n_high, int((mask & ~high).sum()), n_rest),
            )
        )
    out.sort(key=lambda c: (-c.lift, -c.high, c.label))
    limit = int(cfg["max_conditions"])
    acquisition = [c.as_dict() for c in out if c.use == "acquisition"][:limit]
    behaviour = [c.as_dict() for c in out if c.use == "behaviour"][:limit]
    report: dict[str, Any] = {
        "value_trait": value_trait,
        "traits_as_of": as_of.isoformat() if isinstance(as_of, datetime) else str(as_of),
        "persons": n,
        "high_value_persons": n_high,
        "top_share": float(top_share),
        "value_threshold": round(threshold, 2),
        "high_value_share_of_value": round(float(value[high].sum() / value.sum()), 4),
        "conditions_tested": len(masks),
        "min_support": min_support,
        "acquisition": acquisition,
        "behaviour": behaviour,
    }
    import pyarrow as pa

    digest = data_hash(pa.table({"person": persons, "value": value, "high": high}))
    card = ModelCard(name, FAMILY, VERSION, cfg, digest, clock.now(), report)
    return card, out


def _conditions(rows: list[tuple[Any, ...]], index: dict[str, int], n: int) -> dict[tuple[str, str], Any]:
    """(trait, label) -> boolean mask over persons."""
    text: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    keyed: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    numbers: dict[str, dict[int, float]] = defaultdict(dict)
    for pid, trait, key, num, txt, at, as_of in rows:
        i = index.get(pid)
        if i is None:
            continue
        if txt is not None:
            label = f"{trait}: {key} = {txt}" if key else f"{trait} = {txt}"
            text[trait][label].append(i)
        elif key:
            if (num is not None and num > 0) or at is not None:
                keyed[trait][f"{trait}: {key}"].append(i)
        elif at is not None:
            ref = as_of if isinstance(as_of, datetime) else at
            numbers[f"{trait} (days since)"][i] = (ref - at).total_seconds() / 86_400
        elif num is not None:
            numbers[trait][i] = float(num)
    out: dict[tuple[str, str], Any] = {}
    for group in (text, keyed):
        for trait, labels in group.items():
            for label, members in labels.items():
                mask = np.zeros(n, dtype=np.bool_)
                mask[members] = True
                out[(trait, label)] = mask
    for trait, values in numbers.items():
        idx = np.fromiter(values.keys(), dtype=np.int64)
        vals = np.fromiter(values.values(), dtype=np.float64)
        base = trait.removesuffix(" (days since)")
        none = np.ones(n, dtype=np.bool_)
        none[idx] = False
        out[(base, f"{trait}: no value")] = none
        if len(np.unique(vals)) < 2:
            continue
        edges = np.unique(np.quantile(vals, [0.25, 0.5, 0.75]))
        bins = np.searchsorted(edges, vals, side="right")
        bounds = [-math.inf, *edges.tolist(), math.inf]
        for b in range(len(edges) + 1):
            mask = np.zeros(n, dtype=np.bool_)
            mask[idx[bins == b]] = True
            lo, hi = bounds[b], bounds[b + 1]
            rng = (
                f">= {lo:g}" if hi == math.inf else f"< {hi:g}" if lo == -math.inf else f"{lo:g} to < {hi:g}"
            )
            out[(base, f"{trait}: Q{b + 1} of {len(edges) + 1} ({rng})")] = mask
    return out


def _z_test(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided p-value of the difference of two proportions (pooled normal approximation)."""
    if not n1 or not n2:
        return None
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))
