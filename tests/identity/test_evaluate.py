from __future__ import annotations

import pytest

from careloop.identity.evaluate import pairwise_scores


def test_perfect_clustering() -> None:
    s = pairwise_scores([1, 1, 2, 3, 3, 3], ["a", "a", "b", "c", "c", "c"])
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert s.true_positive_pairs == s.predicted_pairs == s.true_pairs == 4


def test_over_and_under_merging() -> None:
    # clusters {0,1,2} {3,4} {5}; truth {0,1} {2,3,4} {5}
    s = pairwise_scores([1, 1, 1, 2, 2, 3], ["a", "a", "b", "b", "b", "c"])
    assert (s.true_positive_pairs, s.predicted_pairs, s.true_pairs) == (2, 4, 4)
    assert s.precision == s.recall == s.f1 == 0.5


def test_all_merged() -> None:
    # one cluster of 4 over two people of 2: 2 of 6 predicted pairs are right, all true pairs found
    s = pairwise_scores(["x"] * 4, [1, 1, 2, 2])
    assert s.precision == pytest.approx(2 / 6) and s.recall == 1.0
    assert s.f1 == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))


def test_all_singletons() -> None:
    s = pairwise_scores([1, 2, 3, 4], ["a", "a", "b", "c"])
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)
    assert s.as_dict()["true_pairs"] == 1


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        pairwise_scores([1, 2], ["a"])
    with pytest.raises(ValueError, match="missing"):
        pairwise_scores([1, None], ["a", "b"])
