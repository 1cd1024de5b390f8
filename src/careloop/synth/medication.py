"""Refill behaviour and the true adherence it implies.

Fills are simulated per therapy, all therapies of a chunk at once, one refill step per loop turn:
the next fill comes `days_supply + gap` days after the last, with the gap drawn from the therapy's
planted pattern (see `careloop.synth.cohorts`). The channel of each fill follows the pattern too.

PDC follows the PQA definition in docs (DOMAIN.md): the period runs from the first fill to the as-of
date; an early refill of the same drug starts the day after the previous supply ends; supply past the
period end is cut off; therapies with fewer than two fills on different dates have no PDC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    group_rank,
    run_starts,
    stable_uniform,
    weekday,
)
from careloop.synth.cohorts import HOSPITAL, IRREGULAR, LAPSED, RETAIL, SWITCHED, Therapies
from careloop.synth.population import People
from careloop.synth.timeline import Timeline


@dataclass
class Fills:
    """One row per dispensing of a therapy's drug, sorted by therapy then day."""

    therapy: IntArray
    day: IntArray
    supply: IntArray
    channel: IntArray

    @property
    def n(self) -> int:
        return len(self.therapy)

    def subset(self, keep: BoolArray) -> Fills:
        return Fills(self.therapy[keep], self.day[keep], self.supply[keep], self.channel[keep])


def simulate_fills(
    rng: np.random.Generator, th: Therapies, people: People, tl: Timeline
) -> tuple[Fills, IntArray]:
    """All fills of the history and, per therapy, the day of the next (future) fill.

    Random draws are made per therapy and read through `th.leader`, so an add-on drug shares every
    draw with its first-line drug and both are filled together.
    """
    t = th.n
    lead = th.leader
    day = th.start_day.copy()
    adherence = people.adherence[th.person]
    # lapsed therapies behave adherently or irregularly until they stop
    lapsed_irregular = (th.pattern == LAPSED) & (rng.random(t) < 0.4)[lead]
    irregular = (th.pattern == IRREGULAR) | lapsed_irregular
    stage = np.zeros(t, dtype=np.int64)
    out_t: list[IntArray] = []
    out_d: list[IntArray] = []
    active = day <= th.stop_day
    while active.any():
        idx = np.flatnonzero(active)
        out_t.append(idx)
        out_d.append(day[idx].copy())
        g = lead[idx]
        normal, uniform, expo, uniform2, normal2, expo2, expo3 = (
            rng.normal(0, 1, t)[g],
            rng.random(t)[g],
            rng.exponential(1.0, t)[g],
            rng.random(t)[g],
            rng.normal(0, 1, t)[g],
            rng.exponential(1.0, t)[g],
            rng.exponential(1.0, t)[g],
        )
        a = adherence[g]
        gap_adherent = np.round(-1.0 - 0.8 * a + 3.0 * normal).astype(np.int64)
        gap_adherent = np.where(uniform < 0.08, gap_adherent + (9 * expo).astype(np.int64), gap_adherent)
        gap_irregular = np.where(
            uniform2 < 0.5,
            np.round(4.0 + 4.0 * normal2),
            3 + (22.0 - 4.0 * np.clip(a, -1.5, 1.5)) * expo2,
        ).astype(np.int64)
        gap = np.where(irregular[idx], gap_irregular, gap_adherent)
        gap = np.clip(gap, -(th.supply[idx] // 3), 200)
        nxt = day[idx] + th.supply[idx] + gap
        # a switch of channel costs a few days
        new_stage = (th.switch_days[idx] <= nxt[:, None]).sum(axis=1)
        switching = new_stage > stage[idx]
        nxt = np.where(switching, nxt + (8.0 * expo3).astype(np.int64), nxt)
        stage[idx] = new_stage
        day[idx] = nxt
        active = np.zeros(t, dtype=np.bool_)
        active[idx] = day[idx] <= th.stop_day[idx]
    therapy = np.concatenate(out_t) if out_t else np.zeros(0, np.int64)
    fill_day = np.concatenate(out_d) if out_d else np.zeros(0, np.int64)
    order = np.lexsort((fill_day, therapy))
    therapy, fill_day = therapy[order], fill_day[order]
    salt = int(rng.integers(1, 2**31))
    u = stable_uniform(lead[therapy] * 4096 + group_rank(therapy), np.full(len(therapy), salt))
    channel = _channels(th, therapy, fill_day, u)
    # hospital pharmacies: Sunday visits mostly move to Monday, many Saturday ones too
    wd = weekday(fill_day)
    hosp = channel == HOSPITAL
    fill_day = np.where(hosp & (wd == 6) & (u < 0.75), fill_day + 1, fill_day)
    fill_day = np.where(hosp & (wd == 5) & (u < 0.5), fill_day + 2, fill_day)
    keep = fill_day <= tl.as_of_day
    fills = Fills(therapy[keep], fill_day[keep], th.supply[therapy[keep]], channel[keep])
    next_day = np.where(th.pattern == LAPSED, -1, day)
    return fills, next_day


def _channels(th: Therapies, therapy: IntArray, day: IntArray, u: FloatArray) -> IntArray:
    base = th.base_channel[therapy]
    other = np.where(base == HOSPITAL, RETAIL, HOSPITAL)
    mixed = np.where((u * 7.3) % 1.0 < 0.86, base, other)
    stage = (th.switch_days[therapy] <= day[:, None]).sum(axis=1)
    switched = th.channel_seq[therapy, np.minimum(stage, 3)]
    out: IntArray = np.where(th.pattern[therapy] == SWITCHED, switched, mixed)
    return out


def pdc(fills: Fills, n_therapies: int, period_end: int) -> tuple[FloatArray, IntArray, IntArray]:
    """Per therapy: (PDC or NaN, number of fills, index date or -1). `fills` sorted by therapy, day."""
    t, day, supply = fills.therapy, fills.day, fills.supply
    n_fills = np.bincount(t, minlength=n_therapies)
    distinct = np.bincount(t[run_starts(t, day)], minlength=n_therapies)
    rank = group_rank(t)
    index = np.full(n_therapies, -1, dtype=np.int64)
    index[t[rank == 0]] = day[rank == 0]
    covered = np.zeros(n_therapies, dtype=np.int64)
    prev_end = np.full(n_therapies, -(10**9), dtype=np.int64)
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        sel = rank == r
        tt = t[sel]
        start = np.maximum(day[sel], prev_end[tt] + 1)
        end = start + supply[sel] - 1
        covered[tt] += np.maximum(np.minimum(end, period_end) - start + 1, 0)
        prev_end[tt] = end
    period = period_end - index + 1
    value = np.where((distinct >= 2) & (index >= 0), covered / np.maximum(period, 1), np.nan)
    return value, n_fills, index
