"""The model registry: config merged over defaults, data fingerprints, cards that refuse a mismatch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from careloop.errors import ConfigError, ModelMismatchError, NotFoundError
from careloop.models.base import ModelCard, ModelRegistry, data_hash, merge_config


def test_user_config_merges_over_defaults_and_typos_are_refused() -> None:
    defaults = {"horizon_days": 365, "priors": {"r": None, "alpha": None}, "method": "map"}
    got = merge_config(defaults, {"priors": {"r": 1.0}, "method": "mcmc"})
    assert got == {"horizon_days": 365, "priors": {"r": 1.0, "alpha": None}, "method": "mcmc"}
    assert defaults["priors"] == {"r": None, "alpha": None}  # defaults untouched
    with pytest.raises(ConfigError, match="unknown setting 'horizon'"):
        merge_config(defaults, {"horizon": 30})
    with pytest.raises(ConfigError, match=r"config.priors: unknown setting 'beta'"):
        merge_config(defaults, {"priors": {"beta": 2}})


def test_data_hash_changes_with_any_value_and_not_otherwise() -> None:
    t = pa.table({"c": ["a", "b"], "v": [1.0, 2.0]})
    assert data_hash(t) == data_hash(pa.table({"c": ["a", "b"], "v": [1.0, 2.0]}))
    assert data_hash(t) != data_hash(pa.table({"c": ["a", "b"], "v": [1.0, 2.5]}))
    assert data_hash(t) != data_hash(pa.table({"c": ["a", "b"], "w": [1.0, 2.0]}))


def test_registry_saves_and_refuses_a_mismatch(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, "default")
    card = ModelCard("clv", "bgnbd", "1", {"a": 1}, "h1", datetime(2026, 11, 1, tzinfo=UTC), {"auc": 0.8})
    reg.save(card, {"params": [1, 2]})
    got, artefact = reg.load("clv", family="bgnbd", family_version="1", config={"a": 1}, data="h1")
    assert artefact == {"params": [1, 2]} and got.report == {"auc": 0.8}
    reg.save(ModelCard("clv", "bgnbd", "1", {"a": 2}, "h2", card.trained_at), {"params": [3]})  # replaces
    assert reg.load("clv", family="bgnbd", family_version="1")[1] == {"params": [3]}
    with pytest.raises(ModelMismatchError, match="version 1, this careloop has 2"):
        reg.load("clv", family="bgnbd", family_version="2")
    with pytest.raises(ModelMismatchError, match="another configuration"):
        reg.load("clv", family="bgnbd", family_version="1", config={"a": 1})
    with pytest.raises(ModelMismatchError, match="other data"):
        reg.load("clv", family="bgnbd", family_version="1", data="h1")
    with pytest.raises(ModelMismatchError, match="not paretonbd"):
        reg.load("clv", family="paretonbd", family_version="1")
    with pytest.raises(NotFoundError, match="careloop models list"):
        reg.card("nope")
    assert [c.name for c in reg.cards()] == ["clv"]
