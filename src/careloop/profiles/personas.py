"""Personas: clusters of patients over their standardised traits, each described in Chinese and English.

`build_personas` reads the feature matrix (`careloop.profiles.features`: stored traits, imputed,
log-scaled where heavy-tailed, z-scored), chooses the number of clusters k by a stated criterion and
clusters everyone with k-means:

* **criterion** — the mean silhouette on a fixed-seed sample of persons (default 5,000) for each k in
  `k_min..k_max` (default 2..8); the smallest k whose silhouette is within `tie` (0.01) of the best wins,
  so a barely better score never buys a more complicated answer. The scores are stored with the run.
* **clustering** — k-means (scikit-learn, 4 starts, fixed `random_state`) on every person; above 200,000
  persons mini-batch k-means. Clusters are numbered by size, largest first. The same data and settings
  give the same personas.
* **descriptions** — for each cluster, the columns whose cluster mean differs most from the population's,
  in population standard deviations (numbers on their standardised scale; 0/1 columns as
  (p_cluster − p) / √(p(1 − p))): up to four with |difference| ≥ 0.3 (always at least one), one per feature.
  Each is worded from the trait's "中文 / English" label with the cluster's and the population's values.

A run is stored in `persona_run` (criterion scores, features, clusters with descriptions) and its
person -> cluster assignments in `persona_member` (the latest run's; earlier runs keep their summaries).

`seed_personas` saves the three predefined personas (慢病管理, 母婴, 老年; `seed_personas.yaml`) as
segments.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError, NotFoundError
from careloop.profiles.definitions import read_definitions
from careloop.profiles.features import (
    Feature,
    FeatureConfig,
    FeatureMatrix,
    build_features,
    format_value,
    load_feature_config,
)
from careloop.storage import WorkspaceStore

CRITERION = "silhouette"
FULL_KMEANS_LIMIT = 200_000
MIN_EFFECT = 0.3
MAX_DEFINING = 4
N_INIT = 4


@dataclass
class PersonaRun:
    run_id: str
    computed_at: Any
    as_of: Any
    k: int
    criterion: str
    scores: dict[int, float]
    persons: int
    clusters: list[dict[str, Any]]
    features: list[dict[str, Any]]
    settings: dict[str, Any]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["scores"] = {str(k): v for k, v in self.scores.items()}
        return out


# ---- choosing k and clustering ------------------------------------------------------------------------
def choose_k(x: np.ndarray, config: FeatureConfig) -> tuple[int, dict[int, float], int]:
    """(k, silhouette per k tried, sample size): the smallest k within `tie` of the best silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(config.seed)
    n = len(x)
    idx = np.sort(rng.choice(n, size=min(n, config.sample), replace=False))
    xs = x[idx]
    distinct = len(np.unique(xs, axis=0))
    top = min(config.k_max, distinct - 1)
    if top < config.k_min:
        raise ConfigError(
            f"personas need at least {config.k_min + 1} persons with different traits "
            f"(found {distinct}); compute traits for more persons or lower k_min"
        )
    scores: dict[int, float] = {}
    for k in range(config.k_min, top + 1):
        with warnings.catch_warnings():  # duplicate points can leave fewer distinct clusters: scored below
            warnings.simplefilter("ignore")
            labels = KMeans(n_clusters=k, n_init=N_INIT, random_state=config.seed).fit_predict(xs)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = round(float(silhouette_score(xs, labels)), 4)
    if not scores:
        raise ConfigError("the persons' traits do not separate into clusters (every k gave one cluster)")
    best = max(scores.values())
    k = min(k for k, s in scores.items() if s >= best - config.tie)
    return k, scores, len(idx)


def _fit(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, centres, algorithm) of k-means on every row."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(x) <= FULL_KMEANS_LIMIT:
            km: Any = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(x)
            algorithm = f"k-means (Lloyd, {N_INIT} starts, random_state {seed})"
        else:
            km = MiniBatchKMeans(
                n_clusters=k, n_init=N_INIT, random_state=seed, batch_size=8192, max_no_improvement=20
            ).fit(x)
            algorithm = f"mini-batch k-means ({N_INIT} starts, batch 8192, random_state {seed})"
    return np.asarray(km.labels_), np.asarray(km.cluster_centers_), algorithm


# ---- describing clusters ------------------------------------------------------------------------------
def _pct(p: float) -> str:
    return f"{p * 100:.0f}%"


def _profile(fm: FeatureMatrix, members: np.ndarray) -> list[dict[str, Any]]:
    """Every column's cluster and population value and their difference in population SDs."""
    out = []
    for j, col in enumerate(fm.columns):
        values = fm.x[:, j]
        cluster_value: float | None
        population_value: float | None
        if col.binary:
            p, pc = float(values.mean()), float(values[members].mean())
            effect = (pc - p) / math.sqrt(p * (1 - p)) if 0 < p < 1 else 0.0
            cluster_value, population_value = pc, p
        else:
            sd = float(values.std())
            effect = (float(values[members].mean()) - float(values.mean())) / sd if sd > 0 else 0.0
            shown = fm.display[col.name]
            cluster_value = _nanmean(shown[members])
            population_value = _nanmean(shown)
        out.append(
            {
                "column": col.name,
                "feature": col.feature,
                "kind": col.kind,
                "level": col.level,
                "effect": round(effect, 3),
                "cluster_value": None if cluster_value is None else round(cluster_value, 4),
                "population_value": None if population_value is None else round(population_value, 4),
            }
        )
    return out


def _nanmean(v: np.ndarray) -> float | None:
    seen = v[~np.isnan(v)]
    return float(seen.mean()) if len(seen) else None


def _defining(fm: FeatureMatrix, profile: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The columns that set the cluster apart: the largest |effect| per feature, strongest first."""
    best: dict[str, dict[str, Any]] = {}
    for p in profile:
        if p["kind"] == "number" and p["cluster_value"] is None:
            continue
        if p["kind"] == "number" and (p["cluster_value"] - p["population_value"]) * p["effect"] <= 0:
            # the shift is in log space (a cluster of many small spenders beats a population of zeros)
            # while the printed means go the other way: a description must not contradict its numbers
            continue
        if p["kind"] == "level" and p["effect"] <= 0:  # a category is told by what is common in it
            continue
        cur = best.get(p["feature"])
        if cur is None or abs(p["effect"]) > abs(cur["effect"]):
            best[p["feature"]] = p
    ranked = sorted(best.values(), key=lambda p: (-abs(p["effect"]), p["column"]))
    chosen = [p for p in ranked if abs(p["effect"]) >= MIN_EFFECT][:MAX_DEFINING] or ranked[:1]
    out = []
    for p in chosen:
        f = fm.features[p["feature"]]
        zh, en, short_zh, short_en = _phrase(p, f)
        out.append(
            {
                **p,
                "label_zh": f.label_zh,
                "label_en": f.label_en,
                "text_zh": zh,
                "text_en": en,
                "short_zh": short_zh,
                "short_en": short_en,
            }
        )
    return out


def _phrase(p: dict[str, Any], f: Feature) -> tuple[str, str, str, str]:
    """(text zh, text en, short zh, short en) of one defining column."""
    zh, en = f.label_zh, f.label_en
    up = p["effect"] > 0
    c, pop = p["cluster_value"], p["population_value"]
    if p["kind"] == "number":
        vs_zh = f"（均值{format_value(c, f.format, 'zh')}，总体{format_value(pop, f.format, 'zh')}）"
        vs_en = f" (mean {format_value(c, f.format, 'en')} vs {format_value(pop, f.format, 'en')} overall)"
        word_zh = "偏高" if up else "偏低"
        return (
            f"{zh}{word_zh}{vs_zh}",
            f"{en} {'above' if up else 'below'} average{vs_en}",
            f"{zh}{word_zh}",
            f"{en}: {'high' if up else 'low'}",
        )
    vs_zh, vs_en = f"（{_pct(c)}，总体{_pct(pop)}）", f" ({_pct(c)} vs {_pct(pop)} overall)"
    more_zh, more_en = ("较高", "more") if up else ("较低", "fewer")
    if p["kind"] == "has":
        return (
            f"{f.has_zh}的比例{more_zh}{vs_zh}",
            f"{more_en} with {f.has_en}{vs_en}",
            f"{f.has_zh}者{'多' if up else '少'}",
            f"{'with' if up else 'seldom with'} {f.has_en}",
        )
    if not p["level"]:  # the persons with no value of the category
        return (
            f"无{zh}的比例{more_zh}{vs_zh}",
            f"{more_en} with no {en}{vs_en}",
            f"无{zh}者{'多' if up else '少'}",
            f"{more_en} without {en}",
        )
    level_zh, level_en = f"「{f.level_label(p['level'], 'zh')}」", f.level_label(p["level"], "en")
    if up and c >= 0.5:
        return (
            f"{zh}多为{level_zh}{vs_zh}",
            f"{en} mostly {level_en}{vs_en}",
            f"{zh}多为{level_zh}",
            f"{en}: {level_en}",
        )
    return (
        f"{zh}为{level_zh}的比例{more_zh}{vs_zh}",
        f"{more_en} with {en} {level_en}{vs_en}",
        f"{zh}为{level_zh}者{'多' if up else '少'}",
        f"{more_en} {en} {level_en}",
    )


def describe_cluster(fm: FeatureMatrix, number: int, members: np.ndarray) -> dict[str, Any]:
    """Size, share, defining traits and the generated zh / en description of one cluster."""
    size, n = int(members.sum()), len(fm.persons)
    share = size / n
    profile = _profile(fm, members)
    defining = _defining(fm, profile)
    about_zh = "不到1%" if share < 0.005 else f"约{share * 100:.0f}%"
    about_en = "Under 1%" if share < 0.005 else f"About {share * 100:.0f}%"
    return {
        "cluster": number,
        "size": size,
        "share": round(share, 4),
        "name_zh": "、".join(d["short_zh"] for d in defining[:2]),
        "name_en": "; ".join(d["short_en"] for d in defining[:2]),
        "description_zh": f"{about_zh}的患者（{size:,}人）："
        + "；".join(d["text_zh"] for d in defining)
        + "。",
        "description_en": f"{about_en} of patients ({size:,}): "
        + "; ".join(d["text_en"] for d in defining)
        + ".",
        "defining": [
            {
                k: d[k]
                for k in (
                    "column",
                    "feature",
                    "kind",
                    "level",
                    "effect",
                    "cluster_value",
                    "population_value",
                    "label_zh",
                    "label_en",
                    "text_zh",
                    "text_en",
                )
            }
            for d in defining
        ],
        "profile": profile,
    }


# ---- runs ---------------------------------------------------------------------------------------------
def build_personas(
    store: WorkspaceStore,
    config: FeatureConfig | None = None,
    *,
    k: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> PersonaRun:
    """Cluster every person into personas, describe them and store the run (see the module docstring).
    `k` skips the criterion and uses that many clusters."""
    started = time.perf_counter()
    config = config or load_feature_config()
    fm = build_features(store, config, clock=clock)
    if k is not None:
        if k < 2 or k >= len(fm.persons):
            raise ConfigError(f"k must be between 2 and the number of persons - 1 (got {k})")
        scores: dict[int, float] = {}
        chosen, sample = k, 0
        criterion = "given (k set by the caller)"
    else:
        chosen, scores, sample = choose_k(fm.x, config)
        criterion = (
            f"{CRITERION}: mean silhouette on a {sample:,}-person sample (seed {config.seed}) for "
            f"k = {config.k_min}..{max(scores)}; the smallest k within {config.tie} of the best"
        )
    labels, centres, algorithm = _fit(fm.x, chosen, config.seed)
    sizes = np.bincount(labels, minlength=chosen)
    order = sorted(range(chosen), key=lambda c: (-int(sizes[c]), c))  # number clusters by size
    renumber = np.empty(chosen, dtype=np.int64)
    for new, old in enumerate(order, start=1):
        renumber[old] = new
    numbers = renumber[labels]
    distance = np.linalg.norm(fm.x - centres[labels], axis=1)
    clusters = [describe_cluster(fm, c, numbers == c) for c in range(1, chosen + 1) if (numbers == c).any()]
    now = clock.now()
    run = PersonaRun(
        run_id=f"p{now:%Y%m%d%H%M%S}{secrets.token_hex(3)}",
        computed_at=now,
        as_of=fm.as_of,
        k=chosen,
        criterion=criterion,
        scores=scores,
        persons=len(fm.persons),
        clusters=clusters,
        features=[*fm.transform, *({"skipped": s["feature"], "reason": s["reason"]} for s in fm.skipped)],
        settings={**config.settings(), "sample_used": sample, "algorithm": algorithm},
        seconds=0.0,
    )
    members = pa.table(
        {
            "run_id": pa.array([run.run_id] * len(fm.persons), pa.string()),
            "person_id": pa.array(fm.persons, pa.string()),
            "cluster": pa.array(numbers, pa.int64()),
            "distance": pa.array(np.round(distance, 4), pa.float64()),
        }
    )
    run.seconds = round(time.perf_counter() - started, 3)
    with store.backend.transaction():
        seq = int(store.scalar("SELECT max(seq) FROM persona_run") or 0) + 1
        store.execute("DELETE FROM persona_member WHERE run_id IS NOT NULL")  # the latest run's only
        store.insert("persona_member", members)
        store.insert(
            "persona_run",
            [
                {
                    "run_id": run.run_id,
                    "seq": seq,
                    "computed_at": run.computed_at,
                    "as_of": run.as_of,
                    "k": run.k,
                    "criterion": run.criterion,
                    "scores": _json({str(k): v for k, v in run.scores.items()}),
                    "persons": run.persons,
                    "features": _json(run.features),
                    "clusters": _json(run.clusters),
                    "settings": _json(run.settings),
                    "seconds": run.seconds,
                }
            ],
        )
    return run


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def _loads(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, str | bytes) else v


def get_run(store: WorkspaceStore, run_id: str | None = None) -> PersonaRun:
    """A stored persona run: the latest, or `run_id`."""
    cols = "run_id, computed_at, as_of, k, criterion, scores, persons, clusters, features, settings, seconds"
    # tuples, not Arrow: the JSON columns differ in shape from run to run
    if run_id is None:
        rows = store.tuples(f"SELECT {cols} FROM persona_run ORDER BY seq DESC LIMIT 1")  # noqa: S608 - fixed text
    else:
        rows = store.tuples(f"SELECT {cols} FROM persona_run WHERE run_id = :r", {"r": run_id})  # noqa: S608 - fixed text
    if not rows:
        raise NotFoundError(
            "no persona run yet; run `careloop persona build` first"
            if run_id is None
            else f"no persona run {run_id!r}; `careloop persona runs` lists them"
        )
    r = rows[0]
    return PersonaRun(
        run_id=r[0],
        computed_at=r[1],
        as_of=r[2],
        k=int(r[3]),
        criterion=r[4],
        scores={int(k): float(v) for k, v in (_loads(r[5]) or {}).items()},
        persons=int(r[6]),
        clusters=_loads(r[7]) or [],
        features=_loads(r[8]) or [],
        settings=_loads(r[9]) or {},
        seconds=float(r[10] or 0),
    )


def list_runs(store: WorkspaceStore) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT run_id, computed_at, as_of, k, persons, seconds FROM persona_run ORDER BY seq DESC"
    )


def assignments(store: WorkspaceStore) -> dict[str, int]:
    """person -> cluster of the latest run."""
    run = get_run(store)
    return {
        p: int(c)
        for p, c in store.tuples(
            "SELECT person_id, cluster FROM persona_member WHERE run_id = :r", {"r": run.run_id}
        )
    }


def person_persona(store: WorkspaceStore, person_id: str) -> dict[str, Any]:
    """The latest run's cluster of one person, with its names and description."""
    run = get_run(store)
    rows = store.tuples(
        "SELECT cluster, distance FROM persona_member WHERE run_id = :r AND person_id = :p",
        {"r": run.run_id, "p": person_id},
    )
    if not rows:
        raise NotFoundError(
            f"{person_id!r} is not in the latest persona run {run.run_id}; `careloop persona build` again"
        )
    cluster = next(c for c in run.clusters if c["cluster"] == int(rows[0][0]))
    return {
        "person_id": person_id,
        "run_id": run.run_id,
        "cluster": cluster["cluster"],
        "distance": rows[0][1],
        **{k: cluster[k] for k in ("name_zh", "name_en", "description_zh", "description_en")},
    }


# ---- seed personas ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedPersona:
    name: str
    en: str
    description: str
    definition: Any


def load_seed_personas(path: Path | None = None) -> list[SeedPersona]:
    """The predefined personas of `path` (default: careloop's seed_personas.yaml), definitions checked."""
    from careloop.profiles.segments import parse

    origin, data = read_definitions(path, "seed_personas.yaml", "seed personas")
    raw = data.get("personas")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{origin}: expected `personas:` mapping names to {{en, description, definition}}")
    out = []
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "definition" not in spec:
            raise ConfigError(f"{origin}: persona {name!r} needs `definition:` (the segment language)")
        parse(spec["definition"], f"{origin}: {name}")
        out.append(
            SeedPersona(
                str(name),
                str(spec.get("en", "")),
                " ".join(str(spec.get("description", "")).split()),
                spec["definition"],
            )
        )
    return out


def seed_personas(
    store: WorkspaceStore,
    path: Path | None = None,
    *,
    refresh: bool = False,
    as_of: date | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[dict[str, Any]]:
    """Save the seed personas as segments (a new version only when a definition changed); with
    `refresh`, evaluate them and store their members."""
    from careloop.profiles import segments as seg

    before = {s.name: s.version for s in seg.all_segments(store)}
    out = []
    for p in load_seed_personas(path):
        saved = seg.save_segment(store, p.name, p.definition, p.description, clock=clock)
        status = (
            "created"
            if p.name not in before
            else "updated"
            if saved.version != before[p.name]
            else "unchanged"
        )
        row: dict[str, Any] = {"name": p.name, "en": p.en, "version": saved.version, "status": status}
        if refresh:
            row.update(seg.refresh(store, p.name, as_of=as_of, clock=clock))
        out.append(row)
    return out
