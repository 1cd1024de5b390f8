"""RFM: recency, frequency and monetary value per patient (or customer), scored into quantile bins, and the
standard eight RFM segments with Chinese and English names.

**Inputs.** From the store, three traits per person (configurable under ``inputs``): recency from
``last_fill_at`` (days from the last fill to the as-of day), frequency ``fills_365d`` and monetary
``spend_365d``; persons without a recency value (never filled) are not scored, a missing frequency or
monetary value (no fill in the window) counts as 0. From any transaction file (customer, date, value
columns; `careloop.models.transactions`): recency is the days from a customer's last purchase day to the
as-of day, frequency the number of distinct purchase days and monetary the total value — over all history
up to the as-of day, or over the last ``window_days`` when set (recency always uses all history).

**Scores.** Each measure is cut into ``bins`` quantile bins (default 5, quintiles) scored 1 (worst) to
``bins`` (best); ``direction`` says which end is best (recency: lower, frequency and monetary: higher).
Ties are handled by *mid-rank*: a value's score is ``floor(bins * (mid_rank - 0.5) / n) + 1`` where
``mid_rank`` is the average of the ranks its tied values occupy. Equal values therefore always get the
same score, and the result does not depend on the order of the rows; bins are equal in size when values are
distinct and uneven when many persons share a value (e.g. one fill a year).

**Segments.** The eight-cell model of Chinese CRM practice: each of R, F, M is *high* when the person's
score is above the mean score of everyone scored (``split: mean``; or above a fixed number, e.g. ``3``),
else *low*; the pattern (R, F, M as H / L) names the segment:

======  ==============  ==========================  =================================================
R F M   名称             name                        what to do
======  ==============  ==========================  =================================================
H H H   重要价值          important value              keep them close; the core of the value
H L H   重要发展          important to develop         recent and valuable, not yet frequent: build habit
L H H   重要保持          important to retain          valuable and frequent but not recent: re-engage
L L H   重要挽留          important to win back        valuable, lapsing and infrequent: win back first
H H L   一般价值          general value                recent and frequent, low spend
H L L   一般发展          general to develop           new or occasional
L H L   一般保持          general to retain            lapsing regulars with low spend
L L L   一般挽留          general to win back          lapsed, low value
======  ==============  ==========================  =================================================

The mapping is configuration (``segments``: pattern -> code / zh / en): give several patterns one name to
use a coarser scheme, e.g. 核心价值 / 潜力 / 流失风险 (docs/models.md). Scores are written as the traits
``rfm_r``, ``rfm_f``, ``rfm_m`` and ``rfm_segment`` (the ``label`` of the segment: zh by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import get_settings
from careloop.errors import ConfigError, ModelError
from careloop.models.base import ModelCard, data_hash, merge_config, registry
from careloop.models.scores import write_score_traits
from careloop.models.transactions import Transactions, from_day, purchase_days, to_day
from careloop.storage import WorkspaceStore

FAMILY = "rfm"
VERSION = "1"
TRAITS = {"r": "rfm_r", "f": "rfm_f", "m": "rfm_m", "segment": "rfm_segment"}
MEASURES = ("recency", "frequency", "monetary")
DEFAULTS: dict[str, Any] = {
    "bins": 5,
    "direction": {"recency": "lower", "frequency": "higher", "monetary": "higher"},
    "split": "mean",
    "label": "zh",
    "inputs": {"recency": "last_fill_at", "frequency": "fills_365d", "monetary": "spend_365d"},
    "window_days": None,
    "segments": {
        "HHH": {"code": "important_value", "zh": "重要价值", "en": "important value"},
        "HLH": {"code": "important_develop", "zh": "重要发展", "en": "important to develop"},
        "LHH": {"code": "important_retain", "zh": "重要保持", "en": "important to retain"},
        "LLH": {"code": "important_win_back", "zh": "重要挽留", "en": "important to win back"},
        "HHL": {"code": "general_value", "zh": "一般价值", "en": "general value"},
        "HLL": {"code": "general_develop", "zh": "一般发展", "en": "general to develop"},
        "LHL": {"code": "general_retain", "zh": "一般保持", "en": "general to retain"},
        "LLL": {"code": "general_win_back", "zh": "一般挽留", "en": "general to win back"},
    },
}


def config_for(user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS with `user` merged over them, checked."""
    cfg = merge_config(DEFAULTS, user, "rfm config")
    bins = cfg["bins"]
    if not isinstance(bins, int) or isinstance(bins, bool) or not 2 <= bins <= 10:
        raise ConfigError(f"rfm config: bins must be a whole number from 2 to 10, not {bins!r}")
    for measure, way in cfg["direction"].items():
        if way not in ("lower", "higher"):
            raise ConfigError(
                f"rfm config: direction.{measure} is 'lower' or 'higher' (which values score best)"
            )
    split = cfg["split"]
    if split != "mean" and (isinstance(split, bool) or not isinstance(split, int | float)):
        raise ConfigError("rfm config: split is 'mean' or a score (high means above it)")
    if cfg["label"] not in ("zh", "en", "code"):
        raise ConfigError("rfm config: label (what rfm_segment holds) is zh, en or code")
    window = cfg["window_days"]
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ConfigError("rfm config: window_days is a whole number of days >= 1, or null for all history")
    for pattern, seg in cfg["segments"].items():
        if not isinstance(seg, Mapping) or not all(isinstance(seg.get(k), str) for k in ("code", "zh", "en")):
            raise ConfigError(f"rfm config: segments.{pattern} needs code, zh and en (texts)")
    return cfg


def quantile_scores(values: np.ndarray, bins: int, higher_is_better: bool) -> np.ndarray:
    """Scores 1..bins by mid-rank quantile: tied values share a score; row order does not matter."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    ranks = pd.Series(v if higher_is_better else -v).rank(method="average").to_numpy()
    scores = np.floor(bins * (ranks - 0.5) / n).astype(np.int64) + 1
    return np.asarray(np.clip(scores, 1, bins), dtype=np.int64)


@dataclass
class RfmResult:
    """RFM values, scores and segments of everyone scored, with the config and as-of day used."""

    ids: np.ndarray
    recency_days: np.ndarray
    frequency: np.ndarray
    monetary: np.ndarray
    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    pattern: np.ndarray
    config: dict[str, Any]
    as_of: date
    source: str
    not_scored: int = 0

    @property
    def size(self) -> int:
        return len(self.ids)

    def split_points(self) -> dict[str, float]:
        split = self.config["split"]
        if split != "mean":
            return {k: float(split) for k in ("r", "f", "m")}
        return {k: float(getattr(self, k).mean()) for k in ("r", "f", "m")}

    def labels(self, label: str | None = None) -> np.ndarray:
        """Each person's segment (zh / en / code; default the configured label)."""
        which = label or self.config["label"]
        names = {p: s[which] for p, s in self.config["segments"].items()}
        return np.array([names[p] for p in self.pattern], dtype=object)

    def frame(self) -> pd.DataFrame:
        """One row per person: id, the three values, the three scores, the pattern and segment names."""
        segs = self.config["segments"]
        return pd.DataFrame(
            {
                "customer": self.ids,
                "recency_days": self.recency_days,
                "frequency": self.frequency,
                "monetary": self.monetary,
                "r": self.r,
                "f": self.f,
                "m": self.m,
                "pattern": self.pattern,
                "segment_code": [segs[p]["code"] for p in self.pattern],
                "segment_zh": [segs[p]["zh"] for p in self.pattern],
                "segment_en": [segs[p]["en"] for p in self.pattern],
            }
        )

    def segments(self) -> list[dict[str, Any]]:
        """Size and average values of each segment (patterns sharing a code are one segment), in the
        configured order, empty ones included."""
        groups: dict[str, list[str]] = {}
        for pattern, seg in self.config["segments"].items():
            groups.setdefault(seg["code"], []).append(pattern)
        out = []
        n = max(self.size, 1)
        for code, patterns in groups.items():
            seg = self.config["segments"][patterns[0]]
            mask = np.isin(self.pattern, patterns)
            count = int(mask.sum())
            out.append(
                {
                    "pattern": " ".join(patterns),
                    "code": code,
                    "zh": seg["zh"],
                    "en": seg["en"],
                    "count": count,
                    "share": round(count / n, 4),
                    "recency_days": _mean(self.recency_days[mask]),
                    "frequency": _mean(self.frequency[mask]),
                    "monetary": _mean(self.monetary[mask]),
                }
            )
        return out

    def score_ranges(self) -> dict[str, list[dict[str, Any]]]:
        """For each measure and score: how many persons and the range of values it covers."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key, measure, values in (
            ("r", "recency_days", self.recency_days),
            ("f", "frequency", self.frequency),
            ("m", "monetary", self.monetary),
        ):
            scores = getattr(self, key)
            rows = []
            for s in range(1, self.config["bins"] + 1):
                mask = scores == s
                rows.append(
                    {
                        "score": s,
                        "count": int(mask.sum()),
                        f"{measure}_min": float(values[mask].min()) if mask.any() else None,
                        f"{measure}_max": float(values[mask].max()) if mask.any() else None,
                    }
                )
            out[key] = rows
        return out

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "as_of": self.as_of.isoformat(),
            "scored": self.size,
            "not_scored": self.not_scored,
            "bins": self.config["bins"],
            "split": self.config["split"],
            "split_points": {k: round(v, 4) for k, v in self.split_points().items()},
            "segments": self.segments(),
            "scores": self.score_ranges(),
        }


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def score_rfm(
    ids: np.ndarray,
    recency_days: np.ndarray,
    frequency: np.ndarray,
    monetary: np.ndarray,
    config: Mapping[str, Any] | None = None,
    *,
    as_of: date,
    source: str,
    not_scored: int = 0,
) -> RfmResult:
    """Scores and segments for these values (`config` merged over DEFAULTS)."""
    cfg = config_for(config)
    bins = cfg["bins"]
    if len(ids) == 0:
        raise ModelError(f"{source}: nobody to score (no purchases on or before {as_of})")
    way = cfg["direction"]
    r = quantile_scores(recency_days, bins, way["recency"] == "higher")
    f = quantile_scores(frequency, bins, way["frequency"] == "higher")
    m = quantile_scores(monetary, bins, way["monetary"] == "higher")
    result = RfmResult(
        ids=np.asarray(ids, dtype=object),
        recency_days=np.asarray(recency_days, dtype=np.float64),
        frequency=np.asarray(frequency, dtype=np.float64),
        monetary=np.asarray(monetary, dtype=np.float64),
        r=r,
        f=f,
        m=m,
        pattern=np.zeros(0, dtype=object),
        config=cfg,
        as_of=as_of,
        source=source,
        not_scored=not_scored,
    )
    cut = result.split_points()
    hi = {k: np.where(getattr(result, k) > cut[k], "H", "L") for k in ("r", "f", "m")}
    result.pattern = np.char.add(np.char.add(hi["r"], hi["f"]), hi["m"]).astype(object)
    return result


def rfm_from_transactions(
    tx: Transactions, config: Mapping[str, Any] | None = None, *, as_of: date | None = None
) -> RfmResult:
    """RFM of every customer of a transaction log, as of `as_of` (default: the log's last day)."""
    cfg = config_for(config)
    if not tx.rows:
        raise ModelError(f"{tx.source} has no transactions")
    if tx.values is None:
        raise ConfigError("RFM needs a value column for monetary value (--value-col)")
    days = purchase_days(tx, None if as_of is None else to_day(as_of))
    hist = days.histories()
    recency = (days.end - hist.last).astype(np.float64)
    if cfg["window_days"] is None:
        frequency = hist.days.astype(np.float64)
        monetary = hist.total
    else:
        inside = days.day > days.end - cfg["window_days"]
        frequency = np.bincount(days.customer[inside], minlength=days.customers).astype(np.float64)
        monetary = np.bincount(days.customer[inside], weights=days.value[inside], minlength=days.customers)
    return score_rfm(days.ids, recency, frequency, monetary, cfg, as_of=from_day(days.end), source=tx.source)


def rfm_from_store(
    store: WorkspaceStore,
    config: Mapping[str, Any] | None = None,
    *,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> RfmResult:
    """RFM of every person from their stored traits (`careloop traits compute` first)."""
    cfg = config_for(config)
    names = cfg["inputs"]
    tz = ZoneInfo(get_settings().timezone)
    rows = store.tuples(
        "SELECT person_id, trait, value_num, value_time, as_of FROM trait_value "
        "WHERE trait = ANY(:t) AND key = ''",
        {"t": sorted(set(names.values()))},
    )
    last: dict[str, datetime] = {}
    numbers: dict[str, dict[str, float]] = {"frequency": {}, "monetary": {}}
    stamps: list[datetime] = []
    for pid, trait, num, at, stamp in rows:
        if trait == names["recency"] and at is not None:
            last[pid] = at
            if stamp is not None:
                stamps.append(stamp)
        for measure in ("frequency", "monetary"):
            if trait == names[measure] and num is not None:
                numbers[measure][pid] = float(num)
    if not last:
        raise ModelError(
            f"no person has the trait {names['recency']!r}; run `careloop traits compute` first "
            "(or name other traits under rfm config `inputs`)"
        )
    day = as_of or (_local(max(stamps), tz) if stamps else clock.now().astimezone(tz).date())
    persons = sorted(last)
    recency = np.array([(day - _local(last[p], tz)).days for p in persons], dtype=np.float64)
    if (recency < 0).any():
        raise ModelError(
            f"{int((recency < 0).sum()):,} person(s) have a {names['recency']} after the as-of day {day}; "
            "give a later --as-of or compute the traits as of that day"
        )
    frequency = np.array([numbers["frequency"].get(p, 0.0) for p in persons])
    monetary = np.array([numbers["monetary"].get(p, 0.0) for p in persons])
    total = int(store.scalar("SELECT count(*) FROM person") or 0)
    return score_rfm(
        np.array(persons, dtype=object),
        recency,
        frequency,
        monetary,
        cfg,
        as_of=day,
        source="the store's traits",
        not_scored=max(total - len(persons), 0),
    )


def _local(at: datetime | date, tz: ZoneInfo) -> date:
    if isinstance(at, datetime):
        return (at.astimezone(tz) if at.tzinfo else at).date()
    return at


def write_rfm_traits(
    store: WorkspaceStore, result: RfmResult, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, Any]:
    """Write rfm_r, rfm_f, rfm_m and rfm_segment (replacing earlier values) and refresh the segments using them."""
    ids = [str(i) for i in result.ids]
    out: dict[str, Any] = {}
    for key in ("r", "f", "m"):
        scores = getattr(result, key)
        out[TRAITS[key]] = write_score_traits(
            store,
            TRAITS[key],
            ((pid, "", float(s)) for pid, s in zip(ids, scores, strict=True)),
            as_of=result.as_of,
            clock=clock,
        )
    labels = result.labels()
    out[TRAITS["segment"]] = write_score_traits(
        store,
        TRAITS["segment"],
        ((pid, "", str(lab)) for pid, lab in zip(ids, labels, strict=True)),
        as_of=result.as_of,
        clock=clock,
    )
    return out


def save_rfm(result: RfmResult, name: str, workspace: str, *, clock: Clock = SYSTEM_CLOCK) -> ModelCard:
    """Keep the run (config, data fingerprint, report with the score ranges) as model `name`."""
    values = pd.DataFrame(
        {"recency_days": result.recency_days, "frequency": result.frequency, "monetary": result.monetary}
    )
    card = ModelCard(
        name=name,
        family=FAMILY,
        family_version=VERSION,
        config=result.config,
        data_hash=data_hash(values),
        trained_at=clock.now(),
        report=result.report(),
    )
    registry(workspace).save(card, {"scores": result.score_ranges(), "split_points": result.split_points()})
    return card
