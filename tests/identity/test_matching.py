from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from careloop.errors import ConfigError
from careloop.identity.cluster import cluster_edges
from careloop.identity.dedupe import dedupe_file, parse_dedupe_mapping
from careloop.identity.matching import prediction_blocks, splink_settings

STD = ["name", "surname", "given_name", "name_pinyin", "name_sorted"]
OPTIONAL = {
    "birth": ["birth_date", "birth_str", "birth_swapped", "birth_year"],
    "sex": ["sex"],
    "phone": ["phone"],
    "id": ["id_number"],
    "address": ["address"],
    "postcode": ["postcode"],
}


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_settings_for_any_subset_of_columns_and_both_dialects(k: int) -> None:
    for combo in itertools.combinations(OPTIONAL, k):
        cols = ["unique_id", *STD, *(c for key in combo for c in OPTIONAL[key])]
        settings = splink_settings(cols)
        for dialect in ("duckdb", "spark"):
            d = settings.create_settings_dict(dialect)
            assert d["comparisons"] and d["blocking_rules_to_generate_predictions"]
            sql = str(d["comparisons"]) + str(d["blocking_rules_to_generate_predictions"])
            used = {m.group(1) for m in re.finditer(r'"?([a-z_]+?)_[lr]"?\b', sql)} | {
                m.group(1) for m in re.finditer(r'[lr]\."?([a-z_]+)"?', sql)
            }
            assert used and used <= set(cols), used - set(cols)
        names = {c["output_column_name"] for c in settings.create_settings_dict("duckdb")["comparisons"]}
        assert "name" in names
        assert ("phone" in names) == ("phone" in combo)
        assert ("address" in names) == ("address" in combo or "postcode" in combo)


def test_blocking_rules_follow_columns() -> None:
    assert prediction_blocks(["phone", "name", "name_pinyin"]) == [("phone",)]
    assert prediction_blocks(["name", "name_pinyin", "surname"]) == [("name_pinyin",)]
    with pytest.raises(ConfigError, match="two comparable fields"):
        splink_settings(["unique_id", "sex"])


def test_constrained_clustering_does_not_chain_a_family() -> None:
    # 0, 1: mother (birth 1988); 2, 3: her child (2014); 4: a record with only the family phone,
    # scored equally against both: it may join one of them but never bridges them
    left = np.array([0, 2, 4, 4], dtype=np.int64)
    right = np.array([1, 3, 0, 2], dtype=np.int64)
    prob = np.array([0.999, 0.998, 0.95, 0.95])
    ids = [None, "33010619880101123X", None, None, None]
    births = ["19881127", "19881127", "20140820", "20140820", None]
    cluster, best = cluster_edges(5, left, right, prob, ids, births)
    assert cluster.tolist() == [0, 0, 2, 2, 0]
    assert best[4] == pytest.approx(0.95) and best[0] == pytest.approx(0.999)
    # unconstrained: connected components merge everyone
    plain, _ = cluster_edges(5, left, right, prob, [None] * 5, [None] * 5)
    assert plain.tolist() == [0] * 5
    # different valid ID numbers never join
    c2, b2 = cluster_edges(2, np.array([0]), np.array([1]), np.array([0.99]), ["A", "B"], [None, None])
    assert c2.tolist() == [0, 1] and np.isnan(b2).all()


def test_dedupe_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lines = ["id,name,dob,mobile"]
    for i in range(1200):
        person = int(rng.integers(0, 500))
        name = f"{'王李张刘陈'[person % 5]}{'伟芳娜敏静丽强磊军洋'[person % 10]}{'一二三四五六七八九十'[(person // 10) % 10]}"
        lines.append(f"{i},{name},19{50 + person % 50}-0{1 + person % 9}-1{person % 10},139{person:08d}")
    inp = tmp_path / "p.csv"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = parse_dedupe_mapping({"id": "id", "name": "name", "birth_date": "dob", "phone": "mobile"})
    a = dedupe_file(inp, mapping, tmp_path / "a.csv", seed=5)
    b = dedupe_file(inp, mapping, tmp_path / "b.csv", seed=5)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a.parameters == b.parameters and a.clusters == b.clusters
    assert "u: random sampling" in a.trained_with and a.clusters <= 500
