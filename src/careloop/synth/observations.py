"""Measurements: clinic vitals and labs at chronic visits, and home-device readings synced by the app.

Values depend on disease control, which follows the therapy's planted refill pattern (adherent or
channel-switching = controlled, irregular = partly, untreated or lapsed = uncontrolled): blood
pressure, HbA1c, glucose, ALT, HBV DNA (suppressed below 20 IU/mL when controlled) and LDL-C. Home
blood pressure rises by about 12 mmHg after a planted lapse, so device data show the lapse too.

Home devices (app users): a BP cuff for some hypertensives, a glucometer or a CGM (14-day sensors,
a reading every 2 hours) for some diabetics. Home glucose uses LOINC 15074-8 (glucose, moles/volume,
blood) because the values are mmol/L; LOINC 2339-0 is the mass concentration (mg/dL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from careloop.synth import catalog
from careloop.synth.arrays import BoolArray, FloatArray, IntArray, local_seconds
from careloop.synth.care import CHRONIC, MONITOR, RENEWAL, Visits
from careloop.synth.cohorts import ADHERENT, IRREGULAR, LAPSED, SWITCHED, Cohorts, Therapies
from careloop.synth.population import People
from careloop.synth.timeline import Timeline

OBS = catalog.OBSERVATIONS
SYS, DIA, GLU_BLOOD, GLU_FASTING, HBA1C, ALT, HBV_DNA, LDL, FEV1 = range(len(OBS))
DEVICE_BP, DEVICE_GLUCOMETER, DEVICE_CGM = range(3)


@dataclass
class Observations:
    person: IntArray
    code: IntArray  # index into catalog.OBSERVATIONS
    at: IntArray
    value: FloatArray  # NaN when only text
    text_value: IntArray  # -1 none, 0 = "<20"
    visit: IntArray  # -1 for home readings
    device: IntArray  # device row or -1

    @property
    def n(self) -> int:
        return len(self.person)

    @staticmethod
    def concat(parts: list[Observations]) -> Observations:
        fields = Observations.__dataclass_fields__
        return Observations(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def control(people: People, cohorts: Cohorts, th: Therapies) -> tuple[FloatArray, IntArray]:
    """Per (person, condition): control 0..1 and the day a lapse began (large if none)."""
    n, k = cohorts.has.shape
    q = np.zeros((n, k))
    quality = np.select([np.isin(th.pattern, (ADHERENT, SWITCHED)), th.pattern == IRREGULAR], [1.0, 0.5], 0.6)
    np.maximum.at(q, (th.person, th.condition), quality)
    lapse = np.full((n, k), 10**7, dtype=np.int64)
    lapsed = th.pattern == LAPSED
    np.minimum.at(lapse, (th.person[lapsed], th.condition[lapsed]), th.stop_day[lapsed] + 30)
    return q, lapse


def _obs(
    person: IntArray,
    code: int,
    at: IntArray,
    value: npt.NDArray[Any],
    visit: IntArray,
    device: IntArray | None = None,
    text: IntArray | None = None,
) -> Observations:
    m = len(person)
    return Observations(
        person=person,
        code=np.full(m, code, dtype=np.int64),
        at=at,
        value=np.asarray(value, dtype=np.float64),
        text_value=np.full(m, -1, dtype=np.int64) if text is None else text,
        visit=visit,
        device=np.full(m, -1, dtype=np.int64) if device is None else device,
    )


def clinic(
    rng: np.random.Generator, people: People, visits: Visits, keep: BoolArray, q: FloatArray, lapse: IntArray
) -> Observations:
    """Vitals and labs at chronic visits."""
    chronic = keep & np.isin(visits.kind, (CHRONIC, RENEWAL, MONITOR)) & (visits.condition >= 0)
    parts: list[Observations] = []
    person_noise = rng.normal(0, 1, people.n)

    def at_visit(sel: IntArray) -> IntArray:
        out: IntArray = visits.start[sel] + rng.integers(300, 1800, len(sel))
        return out

    def qual(sel: IntArray) -> FloatArray:
        p, c = visits.person[sel], visits.condition[sel]
        out: FloatArray = np.where(visits.day[sel] >= lapse[p, c], 0.0, q[p, c])
        return out

    v = np.flatnonzero(chronic & (visits.condition == catalog.HTN))
    s = 128 + 18 * (1 - qual(v)) + 4 * person_noise[visits.person[v]] + rng.normal(0, 9, len(v))
    t = at_visit(v)
    parts += [
        _obs(visits.person[v], SYS, t, np.round(s), v),
        _obs(visits.person[v], DIA, t, np.round(0.55 * s + 6 + rng.normal(0, 5, len(v))), v),
    ]
    v = np.flatnonzero(chronic & (visits.condition == catalog.T2D))
    a1c = v[rng.random(len(v)) < 0.35]
    parts.append(
        _obs(
            visits.person[a1c],
            HBA1C,
            at_visit(a1c),
            np.round(6.6 + 1.8 * (1 - qual(a1c)) + rng.normal(0, 0.6, len(a1c)), 1),
            a1c,
        )
    )
    fg = v[rng.random(len(v)) < 0.5]
    parts.append(
        _obs(
            visits.person[fg],
            GLU_FASTING,
            at_visit(fg),
            np.round(6.4 + 2.0 * (1 - qual(fg)) + rng.normal(0, 1.0, len(fg)), 1),
            fg,
        )
    )
    v = np.flatnonzero(chronic & (visits.condition == catalog.HBV))
    alt = v[rng.random(len(v)) < 0.4]
    parts.append(
        _obs(
            visits.person[alt],
            ALT,
            at_visit(alt),
            np.round(np.exp(rng.normal(np.log(25 + 30 * (1 - qual(alt))), 0.4))),
            alt,
        )
    )
    dna = v[rng.random(len(v)) < 0.3]
    suppressed = (qual(dna) >= 1.0) & (rng.random(len(dna)) < 0.9)
    load = np.round(10 ** (2 + 4 * (1 - qual(dna)) + rng.normal(0, 1, len(dna))))
    parts.append(
        _obs(
            visits.person[dna],
            HBV_DNA,
            at_visit(dna),
            np.where(suppressed, np.nan, load),
            dna,
            text=np.where(suppressed, 0, -1),
        )
    )
    v = np.flatnonzero(chronic & (visits.condition == catalog.HLD))
    ldl = v[rng.random(len(v)) < 0.35]
    parts.append(
        _obs(
            visits.person[ldl],
            LDL,
            at_visit(ldl),
            np.round(2.4 + 1.0 * (1 - qual(ldl)) + rng.normal(0, 0.4, len(ldl)), 2),
            ldl,
        )
    )
    v = np.flatnonzero(chronic & (visits.condition == catalog.COPD))
    fev = v[rng.random(len(v)) < 0.15]
    age = people.age[visits.person[fev]]
    parts.append(
        _obs(
            visits.person[fev],
            FEV1,
            at_visit(fev),
            np.round(np.maximum(2.3 - 0.02 * (age - 60) + rng.normal(0, 0.3, len(fev)), 0.6), 2),
            fev,
        )
    )
    return Observations.concat(parts)


@dataclass
class Devices:
    person: IntArray
    kind: IntArray  # DEVICE_BP / DEVICE_GLUCOMETER / DEVICE_CGM
    start_day: IntArray
    end_day: IntArray  # last day of use (inclusive)
    serial: IntArray

    @property
    def n(self) -> int:
        return len(self.person)


def devices(
    rng: np.random.Generator,
    people: People,
    cohorts: Cohorts,
    app: BoolArray,
    churned: BoolArray,
    tl: Timeline,
) -> Devices:
    n = people.n
    bp = app & cohorts.has[:, catalog.HTN] & (rng.random(n) < 0.4)
    glu = app & cohorts.has[:, catalog.T2D] & (rng.random(n) < 0.45)
    cgm = app & cohorts.has[:, catalog.T2D] & (rng.random(n) < 0.10)
    person = np.r_[np.flatnonzero(bp), np.flatnonzero(glu), np.flatnonzero(cgm)]
    kind = np.r_[
        np.full(bp.sum(), DEVICE_BP), np.full(glu.sum(), DEVICE_GLUCOMETER), np.full(cgm.sum(), DEVICE_CGM)
    ]
    m = len(person)
    start = tl.start_day + (rng.random(m) * (tl.days - 60)).astype(np.int64)
    end = np.minimum(start + 90 + rng.integers(0, 510, m), tl.as_of_day)
    stops = churned[person] & (rng.random(m) < 0.7)
    end = np.where(stops, np.minimum(end, tl.cutoff_day - 1 + rng.integers(0, 20, m)), end)
    end = np.maximum(end, start)
    return Devices(
        person=person,
        kind=kind,
        start_day=start,
        end_day=end,
        serial=people.person_id[person] * 7 + kind * 3 + 1_000_000,
    )


def home_readings(
    rng: np.random.Generator, people: People, dev: Devices, q: FloatArray, lapse: IntArray
) -> Observations:
    parts: list[Observations] = []
    for kind, per_week in ((DEVICE_BP, 1.2), (DEVICE_GLUCOMETER, 1.0)):
        d = np.flatnonzero(dev.kind == kind)
        weeks = (dev.end_day[d] - dev.start_day[d] + 1) / 7
        count = rng.poisson(per_week * weeks)
        row = np.repeat(d, count)
        m = len(row)
        day = dev.start_day[row] + (rng.random(m) * (dev.end_day[row] - dev.start_day[row] + 1)).astype(
            np.int64
        )
        morning = rng.random(m) < 0.6
        sod = np.where(
            morning, 6 * 3600 + 1800 + rng.integers(0, 9000, m), 19 * 3600 + rng.integers(0, 10800, m)
        )
        at = local_seconds(day, sod)
        p = dev.person[row]
        if kind == DEVICE_BP:
            c = catalog.HTN
            qq = np.where(day >= lapse[p, c], 0.0, q[p, c])
            s = 125 + 18 * (1 - qq) + 12 * (day >= lapse[p, c]) + rng.normal(0, 8, m)
            parts += [
                _obs(p, SYS, at, np.round(s), np.full(m, -1), row),
                _obs(p, DIA, at, np.round(0.55 * s + 5 + rng.normal(0, 5, m)), np.full(m, -1), row),
            ]
        else:
            c = catalog.T2D
            qq = np.where(day >= lapse[p, c], 0.0, q[p, c])
            fasting = morning & (rng.random(m) < 0.8)
            g = np.where(
                fasting,
                6.4 + 2.0 * (1 - qq) + rng.normal(0, 1.0, m),
                8.8 + 2.5 * (1 - qq) + rng.normal(0, 1.6, m),
            )
            parts.append(_obs(p, GLU_BLOOD, at, np.round(np.maximum(g, 2.8), 1), np.full(m, -1), row))
    # CGM: 1-3 sensors of 14 days, a reading every 2 hours
    d = np.flatnonzero(dev.kind == DEVICE_CGM)
    sessions = rng.integers(1, 4, len(d))
    srow = np.repeat(d, sessions)
    span = np.maximum(dev.end_day[srow] - dev.start_day[srow] - 14, 1)
    s_start = dev.start_day[srow] + (rng.random(len(srow)) * span).astype(np.int64)
    row = np.repeat(np.arange(len(srow)), 14 * 12)
    step = np.tile(np.arange(14 * 12), len(srow))
    p = dev.person[srow[row]]
    day = s_start[row] + step // 12
    hour = (step % 12) * 2
    c = catalog.T2D
    qq = np.where(day >= lapse[p, c], 0.0, q[p, c])
    meal = np.isin(hour, (8, 12, 18, 20)).astype(np.float64)
    g = 6.2 + 2.2 * (1 - qq) + meal * (2.0 + 1.5 * (1 - qq)) + rng.normal(0, 0.7, len(row))
    at = local_seconds(day, hour * 3600 + rng.integers(0, 300, len(row)))
    parts.append(_obs(p, GLU_BLOOD, at, np.round(np.maximum(g, 2.5), 1), np.full(len(row), -1), srow[row]))
    return Observations.concat(parts)
