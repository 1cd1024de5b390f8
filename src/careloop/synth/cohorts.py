"""Who has which chronic condition, who is treated with what, where they get care, and which digital
services they use.

Prevalence rises with age (and, for hypertension, diabetes and hyperlipidaemia, with a shared latent
metabolic risk, so they cluster); COPD is commoner in men. Treated patients get a first-line drug and
some an add-on of another class (e.g. amlodipine + an ARB, metformin + a DPP-4 or SGLT2 inhibitor).

Each therapy (person x drug) gets a planted refill pattern, correlated within a person through the
latent adherence trait:
- ``adherent``: refills on time (small early / late jitter), PDC usually >= 0.9;
- ``irregular``: frequent gaps of days to weeks, PDC typically 0.5-0.8;
- ``lapsed``: refills for some months, then stops for good before the churn cut-off;
- ``switched_channel``: refills on time but moves hospital -> retail -> DTP (specialty drugs) -> online,
  with a short gap at each switch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth import catalog, geography, registry
from careloop.synth.arrays import BoolArray, FloatArray, IntArray, categorical, categorical_rows, sigmoid
from careloop.synth.population import People
from careloop.synth.timeline import Timeline

ADHERENT, IRREGULAR, LAPSED, SWITCHED = range(4)
PATTERNS = ("adherent", "irregular", "lapsed", "switched_channel")
HOSPITAL, RETAIL, DTP, ONLINE = range(4)
CHANNELS = ("hospital", "retail", "dtp", "online")

_AGE_BANDS = np.array([18, 35, 45, 55, 65, 75])
#: prevalence by age band (<18, 18-34, 35-44, 45-54, 55-64, 65-74, 75+) in this care-seeking population
_PREVALENCE = {
    catalog.HTN: (0.0, 0.03, 0.11, 0.25, 0.40, 0.52, 0.62),
    catalog.T2D: (0.001, 0.012, 0.045, 0.10, 0.16, 0.20, 0.21),
    catalog.HBV: (0.004, 0.045, 0.065, 0.065, 0.055, 0.045, 0.035),
    catalog.COPD: (0.0, 0.0, 0.006, 0.02, 0.05, 0.09, 0.13),
    catalog.HLD: (0.0, 0.02, 0.08, 0.14, 0.18, 0.20, 0.18),
}
_METABOLIC = (catalog.HTN, catalog.T2D, catalog.HLD)
_TREATED_SHARE = (0.78, 0.86, 0.55, 0.68, 0.58)
_INCIDENT_SHARE = 0.14  # diagnosed during the history (the rest before it)


@dataclass
class CarePlaces:
    """Per person: where they go for care and how far it is."""

    primary: IntArray  # org index (hospital or the district's clinic); chronic care happens here
    secondary: IntArray
    retail: IntArray  # nearest retail pharmacy
    dtp: IntArray  # nearest DTP pharmacy
    distance_primary: FloatArray  # km


@dataclass
class Memberships:
    """Digital services each person uses (decided up front so that booking channels are consistent)."""

    wechat_oa: BoolArray
    wechat_mp: BoolArray
    app: BoolArray
    crm: BoolArray

    @property
    def online_capable(self) -> BoolArray:
        """Can reach the internet hospital (through the mini-program or the app)."""
        return self.wechat_mp | self.app


@dataclass
class Cohorts:
    has: BoolArray  # (n, conditions)
    treated: BoolArray  # (n, conditions)
    onset_day: IntArray  # (n, conditions), meaningful where `has`

    @property
    def chronic(self) -> BoolArray:
        out: BoolArray = np.asarray(self.has.any(axis=1), dtype=np.bool_)
        return out

    @property
    def primary_condition(self) -> IntArray:
        """First (by catalogue order) treated condition, else first condition, else -1."""
        t = np.where(self.treated.any(axis=1), np.argmax(self.treated, axis=1), np.argmax(self.has, axis=1))
        out: IntArray = np.where(self.has.any(axis=1), t, -1)
        return out


@dataclass
class Therapies:
    """One row per person x drug; arrays of equal length."""

    person: IntArray
    condition: IntArray
    drug: IntArray
    supply: IntArray  # days per fill
    start_day: IntArray  # first fill in the history
    pattern: IntArray
    stop_day: IntArray  # last possible fill day (lapse day, or the as-of date)
    base_channel: IntArray
    channel_seq: IntArray  # (t, 4) channels in switch order (switched pattern)
    switch_days: IntArray  # (t, 3) days of the switches, far future when unused
    leader: IntArray  # first-line therapy of the same condition: combinations are filled together

    @property
    def n(self) -> int:
        return len(self.person)


def assign_conditions(rng: np.random.Generator, people: People, tl: Timeline) -> Cohorts:
    n = people.n
    band = np.searchsorted(_AGE_BANDS, people.age, side="right")
    k = len(catalog.CONDITIONS)
    has = np.zeros((n, k), dtype=np.bool_)
    for c, table in _PREVALENCE.items():
        p = np.array(table)[band]
        if c in _METABOLIC:
            p = p * np.exp(0.7 * people.metabolic - 0.245)
        if c == catalog.COPD:
            p = p * np.where(people.female, 0.6, 1.7)
        has[:, c] = rng.random(n) < np.clip(p, 0, 0.95)
    treated = has & (rng.random((n, k)) < np.array(_TREATED_SHARE))
    years_before = np.minimum(np.maximum(people.age - 18, 1), 20)
    prevalent_onset = tl.start_day - 30 - (rng.random((n, k)) * years_before[:, None] * 365).astype(np.int64)
    incident_onset = tl.start_day + (rng.random((n, k)) * (tl.cutoff_day - 150 - tl.start_day)).astype(
        np.int64
    )
    incident = rng.random((n, k)) < _INCIDENT_SHARE
    onset = np.where(incident, incident_onset, prevalent_onset)
    onset = np.maximum(onset, people.birth_day[:, None] + 1)
    return Cohorts(has=has, treated=treated, onset_day=onset)


def assign_places(rng: np.random.Generator, people: People, cohorts: Cohorts) -> CarePlaces:
    """Primary and secondary care places chosen by tier attraction and distance; nearest pharmacies."""
    n = people.n
    orgs = np.r_[registry.HOSPITALS, registry.CLINICS]
    d = geography.distance_km(
        people.lat[:, None],
        people.lon[:, None],
        registry.ORG_LAT[orgs][None, :],
        registry.ORG_LON[orgs][None, :],
    )
    tier = registry.ORG_TIER[orgs]
    attraction = np.where(tier == 0, 2.2 * np.exp(-d / 22), np.where(tier == 1, 1.8 * np.exp(-d / 12), 0.0))
    own_clinic = registry.ORG_DISTRICT[orgs][None, :] == people.district[:, None]
    elderly = (people.age >= 60)[:, None]
    clinic_w = np.where(elderly, 2.6, 1.3) * np.exp(-d / 6)
    attraction = np.where((tier == 2)[None, :], np.where(own_clinic, clinic_w, 0.0), attraction)
    specialist = (cohorts.has[:, catalog.HBV] | cohorts.has[:, catalog.COPD])[:, None]
    attraction = np.where(specialist & (tier == 0)[None, :], attraction * 2.0, attraction)
    first = categorical_rows(rng, attraction)
    rest = attraction.copy()
    rest[np.arange(n), first] = 0
    second = categorical_rows(rng, rest)
    stores = registry.RETAIL
    ds = geography.distance_km(
        people.lat[:, None],
        people.lon[:, None],
        registry.ORG_LAT[stores][None, :],
        registry.ORG_LON[stores][None, :],
    )
    dt = geography.distance_km(
        people.lat[:, None],
        people.lon[:, None],
        registry.ORG_LAT[registry.DTP][None, :],
        registry.ORG_LON[registry.DTP][None, :],
    )
    return CarePlaces(
        primary=orgs[first],
        secondary=orgs[second],
        retail=stores[np.argmin(ds, axis=1)],
        dtp=registry.DTP[np.argmin(dt, axis=1)],
        distance_primary=d[np.arange(n), first],
    )


def assign_memberships(rng: np.random.Generator, people: People, cohorts: Cohorts) -> Memberships:
    n = people.n
    d = people.digital
    chronic = cohorts.chronic
    oa = rng.random(n) < 0.78 * d
    mp = rng.random(n) < 0.62 * d
    app = rng.random(n) < (0.26 + 0.18 * chronic) * d
    has_contact = (people.contact_phone > 0) | oa | mp | app
    crm_p = np.where(people.age >= 14, 0.78, 0.35)
    crm = has_contact & (rng.random(n) < crm_p)
    return Memberships(wechat_oa=oa, wechat_mp=mp, app=app, crm=crm)


def assign_therapies(
    rng: np.random.Generator, people: People, cohorts: Cohorts, members: Memberships, tl: Timeline
) -> Therapies:
    persons: list[IntArray] = []
    conds: list[IntArray] = []
    drugs: list[IntArray] = []
    for c in range(len(catalog.CONDITIONS)):
        who = np.flatnonzero(cohorts.treated[:, c])
        options, weights = catalog.FIRST_LINE[c]
        first = np.array(options)[categorical(rng, weights, len(who))]
        persons.append(who)
        conds.append(np.full(len(who), c))
        drugs.append(first)
        if c in catalog.ADD_ON:
            share = catalog.ADD_ON[c][2]
            add = rng.random(len(who)) < share
            second = _add_on(c, first, rng)
            persons.append(who[add])
            conds.append(np.full(int(add.sum()), c))
            drugs.append(second[add])
    person = np.concatenate(persons)
    order = np.argsort(person, kind="stable")
    person = person[order]
    condition = np.concatenate(conds)[order]
    drug = np.concatenate(drugs)[order]
    t = len(person)

    # patterns: mostly one per person (shared uniform), driven by latent adherence
    u_person = rng.random(people.n)[person]
    v = np.where(rng.random(t) < 0.8, u_person, rng.random(t))
    p_irregular = sigmoid(-1.15 - 1.1 * people.adherence[person])
    pattern = np.where(v < 0.10, LAPSED, np.where(v < 0.20, SWITCHED, ADHERENT))
    w = (v - 0.20) / 0.80
    pattern = np.where((v >= 0.20) & (w < p_irregular), IRREGULAR, pattern)

    # first fill
    onset = cohorts.onset_day[person, condition]
    pack = np.array([d.pack_days for d in catalog.DRUGS])[drug]
    long_rx = rng.random(t) < np.where(people.age[person] >= 60, 0.40, 0.15)
    supply = np.where(long_rx, 90, pack)
    prevalent = onset < tl.start_day
    start = np.where(
        prevalent, tl.start_day + (rng.random(t) * supply).astype(np.int64), onset + rng.integers(0, 15, t)
    )
    # a lapse needs room before the cut-off; otherwise the therapy is irregular instead
    room = tl.cutoff_day - 45 - start
    pattern = np.where((pattern == LAPSED) & (room < 120), IRREGULAR, pattern)
    lapse = start + 90 + (rng.random(t) * np.maximum(room - 90, 1)).astype(np.int64)
    stop = np.where(pattern == LAPSED, lapse, tl.as_of_day)

    # channels
    online_ok = members.online_capable[person]
    specialty = catalog.DRUG_SPECIALTY[drug]
    w_base = np.column_stack(
        [
            np.full(t, 0.64),
            np.full(t, 0.22),
            np.where(specialty, 0.30, 0.0),
            np.where(online_ok, 0.09, 0.0),
        ]
    )
    base = categorical_rows(rng, w_base)
    pattern = np.where((pattern == SWITCHED) & (room < 150), ADHERENT, pattern)
    seq = np.full((t, 4), HOSPITAL, dtype=np.int64)
    allowed = np.column_stack([np.ones(t, bool), np.ones(t, bool), specialty, online_ok])
    # compact the allowed channels to the left, in order hospital, retail, dtp, online
    rank = np.cumsum(allowed, axis=1) - 1
    for ch in range(4):
        rows = np.flatnonzero(allowed[:, ch])
        seq[rows, rank[rows, ch]] = ch
    n_allowed = allowed.sum(axis=1)
    seq = np.where(np.arange(4)[None, :] < n_allowed[:, None], seq, seq[np.arange(t), n_allowed - 1][:, None])
    n_switch = np.minimum(1 + categorical(rng, [0.5, 0.32, 0.18], t), n_allowed - 1)
    span_lo = start + 60
    span_hi = np.maximum(tl.as_of_day - 45, span_lo + 1)
    sw = np.sort(span_lo[:, None] + rng.random((t, 3)) * (span_hi - span_lo)[:, None], axis=1).astype(
        np.int64
    )
    far = tl.as_of_day + 10_000
    switch_days = np.where(np.arange(3)[None, :] < n_switch[:, None], sw, far)
    switch_days = np.where((pattern == SWITCHED)[:, None], switch_days, far)
    supply = np.where(pattern == SWITCHED, pack, supply)
    # an add-on drug follows its first-line drug: same pattern, supply, dates and channels
    group_key = person * len(catalog.CONDITIONS) + condition
    _, first_row, inverse = np.unique(group_key, return_index=True, return_inverse=True)
    leader = first_row[inverse]
    base = np.where(pattern == SWITCHED, HOSPITAL, base)
    return Therapies(
        person=person,
        condition=condition,
        drug=drug,
        supply=supply[leader].astype(np.int64),
        start_day=start[leader].astype(np.int64),
        pattern=pattern[leader].astype(np.int64),
        stop_day=stop[leader].astype(np.int64),
        base_channel=base[leader].astype(np.int64),
        channel_seq=seq[leader],
        switch_days=switch_days[leader],
        leader=leader.astype(np.int64),
    )


def _add_on(condition: int, first: IntArray, rng: np.random.Generator) -> IntArray:
    """An add-on drug of a different class than the first-line one."""
    cls = catalog.DRUG_CLASS_INDEX[first]
    name = np.array(catalog.DRUG_CLASSES)[cls]
    n = len(first)
    if condition == catalog.HTN:  # CCB + ARB, otherwise + amlodipine
        arb = np.array([2, 3, 4])[rng.integers(0, 3, n)]
        out = np.where(name == "CCB", arb, 0)
    elif condition == catalog.T2D:  # metformin + DPP-4 / SGLT2 / acarbose, otherwise + metformin
        other = np.array([9, 10, 8])[categorical(rng, [0.4, 0.35, 0.25], n)]
        out = np.where(name == "biguanide", other, 7)
    else:  # COPD: LAMA + ICS/LABA, or ICS/LABA + tiotropium (triple therapy)
        ics = np.array([16, 17])[rng.integers(0, 2, n)]
        out = np.where(name == "LAMA", ics, 15)
    return np.asarray(out, dtype=np.int64)
