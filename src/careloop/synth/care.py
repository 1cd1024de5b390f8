"""Visits, prescriptions, dispenses and online consultations derived from the refill simulation.

- A hospital fill is a visit: the patient sees a doctor of the condition's specialty at their usual
  place (the same doctor most of the time), who writes the prescription; the hospital pharmacy
  dispenses it. Fills within three days at the same place share one visit.
- Retail and DTP fills need a prescription from time to time: every fourth such fill is preceded by a
  renewal visit at the usual place (prescription with repeats, dispensed elsewhere).
- Online fills are internet-hospital follow-up consultations (复诊 only, as the regulation requires)
  with an online prescription delivered by the internet hospital's pharmacy.
- Everyone also has acute visits (age-dependent: respiratory infections, gastritis, back pain, check-ups
  ...), some emergencies and admissions, and untreated chronic patients come for monitoring visits.
  Older people and children get flu vaccinations at their community clinic.

Every row keeps the index of the visit (or fill) it belongs to, so that later filtering (the churned
patients' activity after the cut-off) keeps references intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from careloop.synth import appointments, catalog, registry
from careloop.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    categorical,
    categorical_rows,
    day_number,
    group_rank,
    local_seconds,
    run_starts,
    stable_uniform,
)
from careloop.synth.cohorts import DTP, HOSPITAL, ONLINE, RETAIL, CarePlaces, Cohorts, Memberships, Therapies
from careloop.synth.medication import Fills
from careloop.synth.population import People
from careloop.synth.timeline import Timeline

ENC_CLASSES = ("outpatient", "inpatient", "emergency", "online", "follow_up", "wellness")
OUTPATIENT, INPATIENT, EMERGENCY, ONLINE_ENC, FOLLOW_UP, WELLNESS_ENC = range(6)
CHRONIC, RENEWAL, MONITOR, ACUTE, VACCINE, ONLINE_VISIT = range(6)
CHRONIC_KINDS = (CHRONIC, RENEWAL, MONITOR, ONLINE_VISIT)

N_COND = len(catalog.CONDITIONS)
REASON_CODES = (
    tuple(c.code for c in catalog.CONDITIONS) + tuple(r.code for r in catalog.ACUTE_REASONS) + ("Z23",)
)
REASON_NAMES = (
    tuple(c.name for c in catalog.CONDITIONS)
    + tuple(r.name for r in catalog.ACUTE_REASONS)
    + ("需要接种流感疫苗",)
)
VACCINE_REASON = len(REASON_CODES) - 1
#: drug table of prescriptions: chronic drugs then short acute courses
N_CHRONIC_DRUGS = len(catalog.DRUGS)
DRUG_CODES = tuple(d.atc for d in catalog.DRUGS) + tuple(d[0] for d in catalog.ACUTE_DRUGS)
DRUG_NAMES = tuple(d.name for d in catalog.DRUGS) + tuple(d[1] for d in catalog.ACUTE_DRUGS)
DRUG_CLASS_NAMES = tuple(d.drug_class for d in catalog.DRUGS) + tuple(d[2] for d in catalog.ACUTE_DRUGS)
CONSULT_MODES = ("text", "video", "phone")
_REG_FEE = np.array([30.0, 16.0, 10.0])  # 三甲, 二级, 基层
_CHANNEL_MARKUP = np.array([1.0, 1.12, 1.05, 1.08])  # hospital (zero mark-up), retail, DTP, online


@dataclass
class Visits:
    person: IntArray
    org: IntArray
    day: IntArray
    start: IntArray  # UTC seconds
    end: IntArray
    enc_class: IntArray
    spec: IntArray
    dept: IntArray
    doctor: IntArray
    kind: IntArray
    reason: IntArray  # index into REASON_CODES
    condition: IntArray  # chronic condition or -1
    cost: FloatArray
    coverage: FloatArray
    payer: IntArray  # 0 = PY01 employee insurance, 1 = PY02 resident insurance

    @property
    def n(self) -> int:
        return len(self.person)


@dataclass
class Prescriptions:
    person: IntArray
    visit: IntArray  # hospital or online visit
    consultation: IntArray  # -1 unless online
    drug: IntArray  # index into DRUG_CODES
    days: IntArray
    quantity: FloatArray
    refills: IntArray
    amount: FloatArray
    written: IntArray
    fill: IntArray  # fill index or -1
    therapy: IntArray  # therapy index or -1


@dataclass
class Dispenses:
    person: IntArray
    channel: IntArray  # HOSPITAL, RETAIL, DTP, ONLINE
    org: IntArray
    drug: IntArray
    at: IntArray
    days: IntArray
    quantity: FloatArray
    amount: FloatArray
    rx: IntArray  # prescription index or -1
    visit: IntArray  # visit of the prescription (hospital / online) or -1
    fill: IntArray  # fill index or -1


@dataclass
class Consultations:
    person: IntArray
    visit: IntArray  # the online encounter
    start: IntArray
    end: IntArray
    mode: IntArray
    condition: IntArray
    prescribed: BoolArray
    fee: FloatArray


@dataclass
class Care:
    visits: Visits
    rx: Prescriptions
    dispenses: Dispenses
    consultations: Consultations
    appointments: appointments.Appointments
    fill_visit: IntArray  # per fill: its visit (hospital or online) or -1


def _office_seconds(rng: np.random.Generator, n: int) -> IntArray:
    """Clinic hours: mornings 07:45-11:30 (most visits), afternoons 13:30-16:45."""
    morning = rng.random(n) < 0.66
    return np.where(
        morning, 7 * 3600 + 2700 + rng.integers(0, 13500, n), 13 * 3600 + 1800 + rng.integers(0, 11700, n)
    ).astype(np.int64)


def build_care(
    rng: np.random.Generator,
    people: People,
    cohorts: Cohorts,
    places: CarePlaces,
    members: Memberships,
    th: Therapies,
    fills: Fills,
    tl: Timeline,
    reg: registry.Registry,
) -> Care:
    with np.errstate(over="ignore"):
        return _build(rng, people, cohorts, places, members, th, fills, tl, reg)


def _build(
    rng: np.random.Generator,
    people: People,
    cohorts: Cohorts,
    places: CarePlaces,
    members: Memberships,
    th: Therapies,
    fills: Fills,
    tl: Timeline,
    reg: registry.Registry,
) -> Care:
    n = people.n
    f_person = th.person[fills.therapy]
    f_cond = th.condition[fills.therapy]
    parts: list[dict[str, IntArray]] = []  # visit parts: person, org, day, kind, reason, condition, enc_class
    fill_visit = np.full(fills.n, -1, dtype=np.int64)
    offset = 0

    # A) hospital fills -> visits (fills within 3 days at the same place share a visit)
    hf = np.flatnonzero(fills.channel == HOSPITAL)
    order = hf[np.lexsort((fills.day[hf], f_person[hf]))]
    p_sorted, d_sorted = f_person[order], fills.day[order]
    new = run_starts(p_sorted, d_sorted, gap=3)
    group = np.cumsum(new) - 1
    first = order[new]
    fills.day[order] = fills.day[first][group]  # the fill happens at the visit
    fill_visit[order] = offset + group
    org = places.primary[f_person[first]]
    parts.append(
        _part(
            f_person[first], org, fills.day[first], CHRONIC, f_cond[first], f_cond[first], _chronic_class(org)
        )
    )
    offset += len(first)

    # B) renewal visits before every fourth retail / DTP fill (one visit for a drug combination)
    elsewhere = np.flatnonzero((fills.channel == RETAIL) | (fills.channel == DTP))
    renew_rank = group_rank(fills.therapy[elsewhere])
    renew = elsewhere[renew_rank % 4 == 0]
    leads = th.leader[fills.therapy[renew]]
    is_leader = leads == fills.therapy[renew]
    head = renew[is_leader]
    r_day = np.maximum(fills.day[head] - rng.integers(1, 11, len(head)), tl.start_day)
    r_person = f_person[head]
    r_org = places.primary[r_person]
    parts.append(_part(r_person, r_org, r_day, RENEWAL, f_cond[head], f_cond[head], _chronic_class(r_org)))
    head_key = leads[is_leader] * 2**21 + fills.day[head]
    sorter = np.argsort(head_key)
    pos = sorter[np.searchsorted(head_key, leads * 2**21 + fills.day[renew], sorter=sorter)]
    renew_visit = offset + pos
    offset += len(head)

    # C) monitoring visits of untreated chronic patients
    untreated = cohorts.has & ~cohorts.treated
    up, uc = np.nonzero(untreated)
    count = rng.poisson(0.8 * tl.years, len(up))
    mp, mc = np.repeat(up, count), np.repeat(uc, count)
    m_day = np.maximum(cohorts.onset_day[mp, mc], tl.start_day) + (
        rng.random(len(mp)) * (tl.as_of_day - np.maximum(cohorts.onset_day[mp, mc], tl.start_day))
    ).astype(np.int64)
    m_org = places.primary[mp]
    parts.append(_part(mp, m_org, m_day, MONITOR, mc, mc, _chronic_class(m_org)))
    offset += len(mp)

    # D) online follow-ups: online fills grouped per person within 3 days, plus advice-only consultations
    of = np.flatnonzero(fills.channel == ONLINE)
    o_order = of[np.lexsort((fills.day[of], f_person[of]))]
    op, od = f_person[o_order], fills.day[o_order]
    o_new = run_starts(op, od, gap=3)
    o_group = np.cumsum(o_new) - 1
    o_first = o_order[o_new]
    fills.day[o_order] = fills.day[o_first][o_group]
    online_ok = members.online_capable & cohorts.chronic
    extra_n = np.where(online_ok, rng.poisson(0.25 * tl.years, n), 0)
    xp = np.repeat(np.arange(n), extra_n)
    x_day = tl.start_day + (rng.random(len(xp)) * tl.days).astype(np.int64)
    c_person = np.r_[f_person[o_first], xp]
    c_cond = np.r_[f_cond[o_first], cohorts.primary_condition[xp]]
    c_day = np.r_[fills.day[o_first], x_day]
    c_presc = np.r_[np.ones(len(o_first), bool), np.zeros(len(xp), bool)]
    online_start = offset
    parts.append(
        _part(
            c_person,
            np.full(len(c_person), registry.INTERNET_HOSPITAL),
            c_day,
            ONLINE_VISIT,
            c_cond,
            c_cond,
            np.full(len(c_person), ONLINE_ENC),
        )
    )
    fill_visit[o_order] = online_start + o_group
    offset += len(c_person)

    # E) acute visits, check-ups, emergencies, admissions
    lam = np.where(people.age < 14, 2.6, np.where(people.age < 60, 0.95, 1.7)) * tl.years / 2
    a_count = rng.poisson(lam)
    ap = np.repeat(np.arange(n), a_count)
    age = people.age[ap]
    allowed = (age[:, None] >= catalog.ACUTE_MIN_AGE[None, :]) & (
        age[:, None] <= catalog.ACUTE_MAX_AGE[None, :]
    )
    reason = categorical_rows(rng, allowed * catalog.ACUTE_WEIGHT[None, :])
    a_day = _days_alive(rng, people.birth_day[ap], tl)
    inpatient = rng.random(len(ap)) < catalog.ACUTE_INPATIENT_SHARE[reason] * np.where(age >= 65, 1.3, 0.8)
    emergency = ~inpatient & (reason != catalog.WELLNESS) & (rng.random(len(ap)) < 0.08)
    hospital_needed = inpatient | emergency | (reason == catalog.WELLNESS)
    primary_is_hosp = registry.ORG_TIER[places.primary[ap]] < 2
    use_secondary = rng.random(len(ap)) < 0.25
    a_org = np.where(use_secondary, places.secondary[ap], places.primary[ap])
    a_org = np.where(
        hospital_needed, np.where(primary_is_hosp, places.primary[ap], places.secondary[ap]), a_org
    )
    a_class = np.where(inpatient, INPATIENT, np.where(emergency, EMERGENCY, OUTPATIENT))
    a_class = np.where(reason == catalog.WELLNESS, WELLNESS_ENC, a_class)
    parts.append(_part(ap, a_org, a_day, ACUTE, N_COND + reason, np.full(len(ap), -1), a_class))
    offset += len(ap)

    # F) flu vaccination at the community clinic, every autumn of the history
    clinic_person = np.flatnonzero(
        (registry.ORG_TIER[places.primary] == 2) | (registry.ORG_TIER[places.secondary] == 2)
    )
    clinic_org = np.where(
        registry.ORG_TIER[places.primary[clinic_person]] == 2,
        places.primary[clinic_person],
        places.secondary[clinic_person],
    )
    v_person: list[IntArray] = []
    v_org: list[IntArray] = []
    v_day: list[IntArray] = []
    for year in range(tl.as_of.year - tl.years, tl.as_of.year + 1):
        season_start = day_number(date(year, 9, 15))  # the flu vaccination season opens mid-September
        if season_start < tl.start_day or season_start > tl.as_of_day:
            continue
        age_c = people.age[clinic_person] - (tl.as_of.year - year)
        p = np.where(age_c >= 60, 0.24, np.where(age_c < 14, 0.22, 0.0))
        p = np.where(people.birth_day[clinic_person] < season_start, p, 0.0)
        got = rng.random(len(clinic_person)) < p
        v_person.append(clinic_person[got])
        v_org.append(clinic_org[got])
        v_day.append(np.minimum(season_start + rng.integers(0, 70, int(got.sum())), tl.as_of_day))
    vp = np.concatenate(v_person) if v_person else np.zeros(0, np.int64)
    parts.append(
        _part(
            vp,
            np.concatenate(v_org) if v_org else vp,
            np.concatenate(v_day) if v_day else vp,
            VACCINE,
            np.full(len(vp), VACCINE_REASON),
            np.full(len(vp), -1),
            np.full(len(vp), OUTPATIENT),
        )
    )
    offset += len(vp)

    # everyone has been seen at least once
    seen = np.zeros(n, dtype=np.bool_)
    for part in parts:
        seen[part["person"]] = True
    lonely = np.flatnonzero(~seen)
    l_day = _days_alive(rng, people.birth_day[lonely], tl)
    parts.append(
        _part(
            lonely,
            places.primary[lonely],
            l_day,
            ACUTE,
            np.full(len(lonely), N_COND),
            np.full(len(lonely), -1),
            np.full(len(lonely), OUTPATIENT),
        )
    )

    v = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # bookings: outcomes first; a cancelled or missed booking moves the visit some days later
    tier = registry.ORG_TIER[v["org"]]
    kind, cls = v["kind"], v["enc_class"]
    bookable = (tier >= 0) & ((cls == OUTPATIENT) | (cls == FOLLOW_UP) | (cls == WELLNESS_ENC))
    p_book = np.select(
        [np.isin(kind, CHRONIC_KINDS), cls == WELLNESS_ENC, kind == VACCINE],
        [np.array([0.85, 0.6, 0.35])[tier], np.full(len(kind), 0.9), np.full(len(kind), 0.5)],
        default=np.array([0.6, 0.35, 0.15])[tier],
    )
    booked, v["day"] = appointments.decide(
        rng,
        people,
        members,
        v["person"],
        v["org"],
        v["day"],
        np.where(bookable, p_book, 0.0),
        np.isin(kind, CHRONIC_KINDS),
        (kind == ACUTE) & (cls != WELLNESS_ENC),
        cls == WELLNESS_ENC,
        tl,
    )
    moved = np.flatnonzero(fill_visit >= 0)
    fills.day[moved] = v["day"][fill_visit[moved]]
    visits = _complete_visits(rng, v, people, tl, reg)
    appts = appointments.finalize(
        rng, booked, visits.person, visits.org, visits.dept, visits.doctor, visits.start, visits.condition, tl
    )

    # consultations (online visits)
    n_online = len(c_person)
    c_visit = online_start + np.arange(n_online)
    consult = Consultations(
        person=c_person,
        visit=c_visit,
        start=visits.start[c_visit],
        end=visits.end[c_visit],
        mode=categorical(rng, [0.72, 0.18, 0.10], n_online),
        condition=c_cond,
        prescribed=c_presc,
        fee=np.where(
            rng.random(n_online) < 0.4, 0.0, np.array([9.9, 19.9, 29.9])[rng.integers(0, 3, n_online)]
        ),
    )

    rx, disp = _prescriptions(
        rng, people, places, th, fills, visits, fill_visit, renew, renew_visit, c_visit, tl
    )
    # visit cost: registration fee + drugs + tests; admissions and emergencies cost more
    drug_cost = np.bincount(rx.visit[rx.visit >= 0], weights=rx.amount[rx.visit >= 0], minlength=visits.n)
    tier = np.maximum(registry.ORG_TIER[visits.org], 0)
    fee = np.where(visits.enc_class == ONLINE_ENC, 0.0, _REG_FEE[tier])
    tests = np.where(visits.kind == ACUTE, rng.gamma(1.6, 70.0, visits.n), rng.gamma(1.2, 35.0, visits.n))
    cost = fee + drug_cost + tests
    cost = np.where(visits.enc_class == INPATIENT, rng.gamma(3.0, 3800.0, visits.n), cost)
    cost = np.where(visits.enc_class == EMERGENCY, cost + rng.gamma(2.0, 220.0, visits.n), cost)
    cost = np.where(visits.kind == VACCINE, 128.0, cost)
    cost = np.where(visits.kind == ONLINE_VISIT, consult_fee(consult, visits.n) + drug_cost, cost)
    employee = people.employee_insurance[visits.person]
    rate = np.where(employee, np.array([0.72, 0.80, 0.88])[tier], np.array([0.52, 0.62, 0.72])[tier])
    rate = np.where(visits.enc_class == INPATIENT, rate + 0.08, rate)
    rate = np.where(visits.kind == VACCINE, 0.0, rate)
    visits.cost = np.round(cost, 2)
    visits.coverage = np.round(cost * rate, 2)
    visits.payer = np.where(employee, 0, 1)
    return Care(
        visits=visits, rx=rx, dispenses=disp, consultations=consult, appointments=appts, fill_visit=fill_visit
    )


def _days_alive(rng: np.random.Generator, birth_day: IntArray, tl: Timeline) -> IntArray:
    """A uniform day of the history on which the person was already born."""
    lo = np.maximum(tl.start_day, birth_day + 1)
    out: IntArray = lo + (rng.random(len(lo)) * (tl.as_of_day - lo + 1)).astype(np.int64)
    return out


def consult_fee(consult: Consultations, n_visits: int) -> FloatArray:
    out = np.zeros(n_visits)
    out[consult.visit] = consult.fee
    return out


def _chronic_class(org: IntArray) -> IntArray:
    """Chronic care at a community clinic is a scheduled follow-up (随访); elsewhere an outpatient visit."""
    return np.where(registry.ORG_TIER[org] == 2, FOLLOW_UP, OUTPATIENT).astype(np.int64)


def _part(
    person: IntArray,
    org: IntArray,
    day: IntArray,
    kind: int,
    reason: IntArray,
    condition: IntArray,
    enc_class: IntArray,
) -> dict[str, IntArray]:
    m = len(person)
    return {
        "person": np.asarray(person, dtype=np.int64),
        "org": np.asarray(org, dtype=np.int64),
        "day": np.asarray(day, dtype=np.int64),
        "kind": np.full(m, kind, dtype=np.int64),
        "reason": np.asarray(reason, dtype=np.int64),
        "condition": np.asarray(condition, dtype=np.int64),
        "enc_class": np.asarray(enc_class, dtype=np.int64),
    }


def _complete_visits(
    rng: np.random.Generator, v: dict[str, IntArray], people: People, tl: Timeline, reg: registry.Registry
) -> Visits:
    m = len(v["person"])
    cls = v["enc_class"]
    reason = v["reason"]
    spec = np.where(
        reason < N_COND,
        catalog.CONDITION_SPECIALTY[np.minimum(reason, N_COND - 1)],
        catalog.ACUTE_SPECIALTY[np.clip(reason - N_COND, 0, len(catalog.ACUTE_REASONS) - 1)],
    )
    spec = np.where(reason == VACCINE_REASON, catalog.SPEC["preventive_care"], spec)
    spec = np.where(cls == EMERGENCY, catalog.SPEC["emergency"], spec)
    children = people.age[v["person"]] < 14
    spec = np.where(
        children & (cls == OUTPATIENT) & (reason >= N_COND) & (reason != VACCINE_REASON),
        catalog.SPEC["pediatrics"],
        spec,
    )
    dept = reg.dept_of[v["org"], spec]
    usual = stable_uniform(people.person_id[v["person"]], dept)
    u = np.where(rng.random(m) < 0.75, usual, rng.random(m))
    doctor = reg.doctors(dept, u)

    sod = _office_seconds(rng, m)
    sod = np.where(cls == EMERGENCY, rng.integers(0, 86_400, m), sod)
    sod = np.where(cls == ONLINE_ENC, 7 * 3600 + rng.integers(0, 16 * 3600, m), sod)
    sod = np.where(cls == INPATIENT, 8 * 3600 + rng.integers(0, 9 * 3600, m), sod)
    start = local_seconds(v["day"], sod)
    duration = rng.integers(8 * 60, 45 * 60, m)
    los = np.where(cls == INPATIENT, 2 + rng.poisson(5.0, m), 0)
    duration = np.where(cls == INPATIENT, los * 86_400 + rng.integers(-4 * 3600, 4 * 3600, m), duration)
    duration = np.where(cls == EMERGENCY, rng.integers(3600, 7 * 3600, m), duration)
    duration = np.where(cls == ONLINE_ENC, rng.integers(5 * 60, 30 * 60, m), duration)
    end = start + duration
    return Visits(
        person=v["person"],
        org=v["org"],
        day=v["day"],
        start=start,
        end=end,
        enc_class=cls,
        spec=spec,
        dept=dept,
        doctor=doctor,
        kind=v["kind"],
        reason=reason,
        condition=v["condition"],
        cost=np.zeros(m),
        coverage=np.zeros(m),
        payer=np.zeros(m, dtype=np.int64),
    )


def _prescriptions(
    rng: np.random.Generator,
    people: People,
    places: CarePlaces,
    th: Therapies,
    fills: Fills,
    visits: Visits,
    fill_visit: IntArray,
    renew: IntArray,
    renew_visit: IntArray,
    consult_visit: IntArray,
    tl: Timeline,
) -> tuple[Prescriptions, Dispenses]:
    f_drug = th.drug[fills.therapy]
    f_person = th.person[fills.therapy]
    units = catalog.DRUG_UNITS_PER_DAY[f_drug]
    f_qty = np.where(catalog.DRUG_IS_INHALER[f_drug], np.maximum(fills.supply // 30, 1), units * fills.supply)
    f_amount = np.round(catalog.DRUG_DAILY_COST[f_drug] * fills.supply * _CHANNEL_MARKUP[fills.channel], 2)

    # chronic prescriptions: hospital and online fills (one per fill), renewals (with repeats)
    written_fill = np.flatnonzero(fill_visit >= 0)
    w_visit = fill_visit[written_fill]
    w_at = visits.start[w_visit] + rng.integers(5 * 60, 25 * 60, len(written_fill))
    r_at = visits.start[renew_visit] + rng.integers(5 * 60, 25 * 60, len(renew))

    # acute prescriptions at 45 % of acute (non check-up) visits
    acute = np.flatnonzero((visits.kind == ACUTE) & (visits.reason != N_COND + catalog.WELLNESS))
    acute = acute[rng.random(len(acute)) < 0.45]
    reason = visits.reason[acute] - N_COND
    respiratory = np.isin(reason, (0, 1, 2, 10))
    gi = np.isin(reason, (3, 4))
    a_drug = np.where(
        respiratory,
        np.array([0, 1, 5])[rng.integers(0, 3, len(acute))],
        np.where(gi, np.array([3, 4])[rng.integers(0, 2, len(acute))], 2),
    )
    a_days = np.array([d[3] for d in catalog.ACUTE_DRUGS])[a_drug]
    a_amount = np.array([d[4] for d in catalog.ACUTE_DRUGS])[a_drug]
    a_at = visits.start[acute] + rng.integers(5 * 60, 30 * 60, len(acute))

    consult_of_visit = np.full(visits.n, -1, dtype=np.int64)
    consult_of_visit[consult_visit] = np.arange(len(consult_visit))
    rx_visit = np.r_[w_visit, renew_visit, acute]
    rx = Prescriptions(
        person=np.r_[f_person[written_fill], f_person[renew], visits.person[acute]],
        visit=rx_visit,
        consultation=consult_of_visit[rx_visit],
        drug=np.r_[f_drug[written_fill], f_drug[renew], N_CHRONIC_DRUGS + a_drug],
        days=np.r_[fills.supply[written_fill], fills.supply[renew], a_days],
        quantity=np.r_[f_qty[written_fill], f_qty[renew], a_days.astype(np.float64)],
        refills=np.r_[
            np.zeros(len(written_fill), np.int64), np.full(len(renew), 3), np.zeros(len(acute), np.int64)
        ],
        amount=np.r_[f_amount[written_fill], f_amount[renew], a_amount],
        written=np.r_[w_at, r_at, a_at],
        fill=np.r_[written_fill, np.full(len(renew) + len(acute), -1)],
        therapy=np.r_[fills.therapy[written_fill], fills.therapy[renew], np.full(len(acute), -1)],
    )
    n_written = len(written_fill)

    # dispenses: every fill, plus most acute prescriptions at the hospital pharmacy
    ch = fills.channel
    rx_of_fill = np.full(fills.n, -1, dtype=np.int64)
    rx_of_fill[written_fill] = np.arange(n_written)
    m = fills.n
    at = np.empty(m, dtype=np.int64)
    at[written_fill] = w_at + np.where(
        ch[written_fill] == ONLINE,
        rng.integers(30 * 60, 4 * 3600, n_written),
        rng.integers(8 * 60, 50 * 60, n_written),
    )
    at = np.minimum(at, local_seconds(fills.day, np.full(m, 86_399)))  # dispensed the day of the fill
    shop = np.flatnonzero(fill_visit < 0)
    at[shop] = local_seconds(fills.day[shop], 8 * 3600 + 1800 + rng.integers(0, 12 * 3600, len(shop)))
    org = np.where(ch == RETAIL, places.retail[f_person], places.dtp[f_person])
    org = np.where(fill_visit >= 0, visits.org[np.maximum(fill_visit, 0)], org)
    ad = acute[rng.random(len(acute)) < 0.9]
    ad_rx = n_written + len(renew) + np.flatnonzero(np.isin(acute, ad))
    disp = Dispenses(
        person=np.r_[f_person, visits.person[ad]],
        channel=np.r_[ch, np.full(len(ad), HOSPITAL)],
        org=np.r_[org, visits.org[ad]],
        drug=np.r_[f_drug, rx.drug[ad_rx]],
        at=np.r_[at, rx.written[ad_rx] + rng.integers(8 * 60, 40 * 60, len(ad))],
        days=np.r_[fills.supply, rx.days[ad_rx]],
        quantity=np.r_[f_qty, rx.quantity[ad_rx]],
        amount=np.r_[f_amount, rx.amount[ad_rx]],
        rx=np.r_[rx_of_fill, ad_rx],
        visit=np.r_[fill_visit, ad],
        fill=np.r_[np.arange(m), np.full(len(ad), -1)],
    )
    return rx, disp
