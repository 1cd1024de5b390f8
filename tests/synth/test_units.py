"""Building blocks: identifiers, names, key scrambling, PDC."""

from __future__ import annotations

from datetime import date

import numpy as np

from careloop.domain.identifiers import id_check_char, normalize_mobile
from careloop.synth import names
from careloop.synth.arrays import day_number, permute, rng_for
from careloop.synth.identifiers import e164, id_numbers, id_sequences, mobile_numbers
from careloop.synth.medication import Fills, pdc


def test_id_numbers_match_the_standard_examples() -> None:
    ids = id_numbers(
        np.array([110105, 440524]),
        np.array([day_number(date(1949, 12, 31)), day_number(date(1880, 1, 1))]),
        np.array([2, 1]),
    )
    assert ids.to_pylist() == ["11010519491231002X", "440524188001010014"]


def test_id_check_characters_and_sex_digits() -> None:
    rng = rng_for(1, 2)
    female = rng.random(5000) < 0.5
    seq = id_sequences(rng, female)
    days = rng.integers(-20000, 20000, 5000)
    ids = id_numbers(np.full(5000, 330106), days, seq).to_pylist()
    assert all(id_check_char(v[:17]) == v[17] for v in ids)
    assert all((int(v[16]) % 2 == 0) == f for v, f in zip(ids, female, strict=True))


def test_mobile_numbers_are_valid_e164() -> None:
    nums = e164(mobile_numbers(rng_for(3), 2000)).to_pylist()
    assert all(normalize_mobile(v) == v and len(v) == 14 for v in nums)


def test_permute_is_a_bijection() -> None:
    x = permute(np.arange(10_000), 17, 10_000)
    assert sorted(x.tolist()) == list(range(10_000))
    assert not np.array_equal(x, np.arange(10_000))
    assert not np.array_equal(permute(np.arange(100), 1, 10**8), permute(np.arange(100), 2, 10**8))


def test_names_and_typos() -> None:
    rng = rng_for(4)
    n = 5000
    s = names.surnames(rng, n)
    g1, g2 = names.given_names(rng, rng.random(n) < 0.5, rng.integers(1940, 2020, n))
    full = names.name_text(s, g1, g2).to_pylist()
    assert all(2 <= len(v) <= 3 for v in full)
    assert sum(v[0] == "王" for v in full) > sum(v[0] == "萧" for v in full)
    noisy, changed = names.noisy_name(rng, s, g1, g2, typo_rate=0.5, swap_rate=0.0)
    assert 0.2 < changed.mean() < 0.5
    assert all(len(a) == len(b) for a, b in zip(noisy.to_pylist(), full, strict=True))


def test_pdc_follows_the_worked_example() -> None:
    days = np.array(
        [day_number(date(2018, 3, 25)), day_number(date(2018, 7, 5)), day_number(date(2018, 9, 25))]
    )
    fills = Fills(
        therapy=np.zeros(3, np.int64), day=days, supply=np.full(3, 90), channel=np.zeros(3, np.int64)
    )
    value, n_fills, index = pdc(fills, 1, day_number(date(2018, 12, 31)))
    assert round(float(value[0]), 4) == 0.9574 and n_fills[0] == 3 and index[0] == days[0]
    one = Fills(np.zeros(1, np.int64), days[:1], np.full(1, 90), np.zeros(1, np.int64))
    assert np.isnan(pdc(one, 1, day_number(date(2018, 12, 31)))[0][0])
