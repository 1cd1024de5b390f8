"""Households and the people in them, one chunk at a time.

Household types follow urban Chinese living arrangements: elderly living alone or as a couple, young
couples, nuclear families with one or two children, three generations under one roof (grandparents
living with an adult child), single adults and single parents. Members share the address; children
and many elderly people have the household head's phone as their contact number. Children take the
father's surname (a few the mother's); spouses keep their own.

Each person also carries latent traits that later modules turn into behaviour: digital propensity,
disengagement (drives churn), no-show tendency, satisfaction and adherence. They are written to the
truth files where they are planted drivers, never to the source data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth import geography, names
from careloop.synth.arrays import BoolArray, FloatArray, IntArray, categorical, sigmoid
from careloop.synth.identifiers import birth_ymd, id_sequences, mobile_numbers

SELF, SPOUSE, CHILD, PARENT = 0, 1, 2, 3
RELATIONSHIPS = ("self", "spouse", "child", "parent")
MARITAL = ("married", "single", "widowed", "divorced")

#: household types: (roles, weight, head age range, share of male heads)
_HOUSEHOLDS: tuple[tuple[tuple[int, ...], float, tuple[int, int], float], ...] = (
    ((SELF,), 0.10, (65, 93), 0.38),  # elderly living alone
    ((SELF, SPOUSE), 0.14, (60, 90), 0.62),  # elderly couple
    ((SELF, SPOUSE), 0.11, (24, 60), 0.60),  # couple without children at home
    ((SELF, SPOUSE, CHILD), 0.20, (27, 52), 0.60),  # one child
    ((SELF, SPOUSE, CHILD, CHILD), 0.08, (30, 52), 0.60),  # two children
    ((SELF, SPOUSE, CHILD, PARENT), 0.08, (32, 56), 0.60),  # three generations, one grandparent
    ((SELF, SPOUSE, CHILD, PARENT, PARENT), 0.08, (32, 56), 0.60),  # three generations
    ((SELF,), 0.15, (20, 58), 0.55),  # single adult
    ((SELF, CHILD), 0.06, (28, 50), 0.30),  # single parent
)
_MAX_SIZE = max(len(r) for r, *_ in _HOUSEHOLDS)
_ROLE_TABLE = np.full((len(_HOUSEHOLDS), _MAX_SIZE), -1, dtype=np.int64)
for _i, (_roles, *_rest) in enumerate(_HOUSEHOLDS):
    _ROLE_TABLE[_i, : len(_roles)] = _roles
_SIZES = np.array([len(r) for r, *_ in _HOUSEHOLDS], dtype=np.int64)
_MEAN_SIZE = float((_SIZES * np.array([w for _, w, *_ in _HOUSEHOLDS])).sum())


@dataclass
class People:
    """One chunk of people; every array has one entry per person (local index 0..n-1)."""

    chunk: int
    person_id: IntArray  # global person number
    household: IntArray  # global household number
    household_type: IntArray
    relationship: IntArray  # SELF / SPOUSE / CHILD / PARENT of the household head
    head: IntArray  # local index of the household head
    guardian: IntArray  # local index of the guardian (minors), else -1
    female: BoolArray
    birth_day: IntArray
    birth_year: IntArray
    age: IntArray  # whole years at the as-of date
    surname: IntArray
    given1: IntArray
    given2: IntArray
    district: IntArray
    lat: FloatArray
    lon: FloatArray
    street: IntArray
    house_no: IntArray
    building: IntArray
    unit: IntArray
    room: IntArray
    area_code: IntArray  # index into geography.AREA_CODES
    id_sequence: IntArray
    own_phone: IntArray  # 0 = none
    contact_phone: IntArray  # number registered as the person's contact (may be the head's)
    old_phone: IntArray  # a previous own number still held by one source, 0 = none
    ethnicity: IntArray
    marital: IntArray  # index into MARITAL, -1 for children
    employee_insurance: BoolArray  # 职工医保 (else 城乡居民医保)
    commercial_insurance: BoolArray  # 惠民保-type supplementary cover
    digital: FloatArray  # 0..1 propensity to use WeChat / app services
    disengagement: FloatArray  # latent z, drives planted churn
    no_show_effect: FloatArray  # person random effect of the no-show model
    satisfaction: FloatArray  # latent satisfaction
    adherence: FloatArray  # latent adherence (higher = better)
    metabolic: FloatArray  # latent metabolic risk (correlates hypertension, diabetes, lipids)

    @property
    def n(self) -> int:
        return len(self.person_id)


def estimate_households(persons: int) -> int:
    return int(persons / _MEAN_SIZE * 1.1) + 8


def generate_people(
    rng: np.random.Generator, chunk: int, first_person: int, n: int, as_of_day: int
) -> People:
    """`n` people (whole households, the last one cut if needed), numbered from `first_person`."""
    n_hh = estimate_households(n)
    hh_type = categorical(rng, [w for _, w, *_ in _HOUSEHOLDS], n_hh)
    sizes = _SIZES[hh_type]
    while sizes.sum() < n:  # pragma: no cover - the estimate leaves a margin
        more = categorical(rng, [w for _, w, *_ in _HOUSEHOLDS], n_hh)
        hh_type, sizes = np.r_[hh_type, more], np.r_[sizes, _SIZES[more]]
    hh_local = np.repeat(np.arange(len(hh_type)), sizes)[:n]
    member = np.arange(n) - np.r_[0, np.cumsum(sizes)][hh_local]
    hh_type_p = hh_type[hh_local]
    rel = _ROLE_TABLE[hh_type_p, member]
    head = np.r_[0, np.cumsum(sizes)][hh_local]

    # --- head ages and sexes, then members relative to the head
    lo = np.array([a[0] for _, _, a, _ in _HOUSEHOLDS])[hh_type]
    hi = np.array([a[1] for _, _, a, _ in _HOUSEHOLDS])[hh_type]
    head_age_hh = lo + (rng.random(len(hh_type)) * (hi - lo + 1)).astype(np.int64)
    head_male_hh = rng.random(len(hh_type)) < np.array([m for *_, m in _HOUSEHOLDS])[hh_type]
    head_age = head_age_hh[hh_local]
    head_male = head_male_hh[hh_local]
    u = rng.random(n)
    age = np.where(rel == SELF, head_age, 0)
    age = np.where(rel == SPOUSE, np.clip(head_age + np.round(rng.normal(-1.5, 3.0, n)), 20, 99), age)
    child_age = head_age - 24 - (rng.random(n) * 13).astype(np.int64)
    age = np.where(rel == CHILD, np.clip(child_age, 0, 40), age)
    age = np.where(rel == PARENT, np.clip(head_age + 24 + (rng.random(n) * 11).astype(np.int64), 55, 99), age)
    age = age.astype(np.int64)
    # parent members: the first is the head's father, the second the mother (one surviving: mostly mother)
    parent_rank = np.where(rel == PARENT, member - 3, -1)
    single_parent = (hh_type_p == 5) & (rel == PARENT)
    female = np.where(rel == SELF, ~head_male, False)
    female = np.where(rel == SPOUSE, head_male, female)
    female = np.where(rel == CHILD, u < 0.49, female)
    female = np.where(rel == PARENT, np.where(single_parent, u < 0.68, parent_rank == 1), female)
    female = female.astype(np.bool_)

    days_into_year = (rng.random(n) * 365.2425).astype(np.int64)
    birth_day = as_of_day - (age * 365.2425).astype(np.int64) - days_into_year - 1
    as_of_ymd = int(birth_ymd(np.array([as_of_day]))[0])
    ymd = birth_ymd(birth_day)
    age = (as_of_ymd - ymd) // 10000  # exact age in whole years
    birth_year = ymd // 10000

    # --- names: children follow the father's surname (8 % the mother's); a father-parent the head's
    sn = names.surnames(rng, n)
    head_sn = sn[head]
    father_in_hh = np.where(head_male, head, head + 1)  # spouse follows the head
    father_sn = sn[np.minimum(father_in_hh, n - 1)]
    mother_sn = sn[np.where(head_male, np.minimum(head + 1, n - 1), head)]
    child_sn = np.where(rng.random(n) < 0.92, father_sn, mother_sn)
    has_spouse = np.isin(hh_type_p, (1, 2, 3, 4, 5, 6))
    child_sn = np.where(has_spouse, child_sn, head_sn)
    surname = np.where(rel == CHILD, child_sn, sn)
    surname = np.where((rel == PARENT) & ~female, head_sn, surname)
    given1, given2 = names.given_names(rng, female, birth_year)
    given1 = names.distinct_in_household(hh_local, surname, given1, given2, female, birth_year)

    # --- place: one address per household
    district_hh = categorical(rng, geography.DISTRICT_WEIGHTS, len(hh_type))
    lat_hh, lon_hh = geography.home_locations(rng, district_hh)
    street_hh = geography.streets_for(rng, district_hh)
    house_hh = rng.integers(1, 600, len(hh_type))
    building_hh = rng.integers(1, 30, len(hh_type))
    unit_hh = rng.integers(1, 5, len(hh_type))
    room_hh = rng.integers(1, 28, len(hh_type)) * 100 + rng.integers(1, 5, len(hh_type))
    district = district_hh[hh_local]
    area_code = geography.id_area_codes(rng, district, birth_year)

    # --- phones: own numbers, shared contact numbers, a previous number for some
    own_p = np.where(age >= 18, np.where(age >= 80, 0.6, 0.97), np.where(age >= 12, 0.55, 0.0))
    own = np.where(rng.random(n) < own_p, mobile_numbers(rng, n), 0)
    head_phone = own[head]
    minor = age < 18
    uses_head = minor | (own == 0) | ((age >= 70) & (rel == PARENT) & (rng.random(n) < 0.45))
    contact = np.where(uses_head & (rel != SELF), head_phone, own)
    old = np.where((own > 0) & (rng.random(n) < 0.12), mobile_numbers(rng, n), 0)

    guardian = np.where(minor & (rel == CHILD), head, -1)
    marital = np.full(n, 0, dtype=np.int64)
    single_hh = np.isin(hh_type_p, (0, 7, 8)) & (rel == SELF)
    marital = np.where(
        single_hh,
        np.where(
            hh_type_p == 0,
            categorical(rng, [0.15, 0.02, 0.72, 0.11], n),
            categorical(rng, [0.1, 0.6, 0.05, 0.25], n),
        ),
        marital,
    )
    marital = np.where(
        rel == CHILD, np.where(age >= 22, categorical(rng, [0.15, 0.85, 0, 0], n), -1), marital
    )
    marital = np.where(single_parent, 2, marital)
    marital = np.where((hh_type_p == 8) & (rel == SELF), categorical(rng, [0.0, 0.1, 0.25, 0.65], n), marital)

    working = (age >= 18) & (age < 60)
    employee = np.where(working, rng.random(n) < 0.74, np.where(age >= 60, rng.random(n) < 0.55, False))
    digital = np.where(age >= 14, sigmoid(2.2 - 0.075 * (age - 30) + rng.normal(0, 1.0, n)), 0.0)
    return People(
        chunk=chunk,
        person_id=first_person + np.arange(n, dtype=np.int64),
        household=chunk * 10_000_000 + hh_local,
        household_type=hh_type_p,
        relationship=rel,
        head=head,
        guardian=guardian,
        female=female,
        birth_day=birth_day,
        birth_year=birth_year,
        age=age,
        surname=surname,
        given1=given1,
        given2=given2,
        district=district,
        lat=lat_hh[hh_local],
        lon=lon_hh[hh_local],
        street=street_hh[hh_local],
        house_no=house_hh[hh_local],
        building=building_hh[hh_local],
        unit=unit_hh[hh_local],
        room=room_hh[hh_local],
        area_code=area_code,
        id_sequence=id_sequences(rng, female),
        own_phone=own,
        contact_phone=contact,
        old_phone=old,
        ethnicity=categorical(rng, geography.ETHNICITY_WEIGHTS, n),
        marital=marital,
        employee_insurance=employee.astype(np.bool_),
        commercial_insurance=rng.random(n) < 0.35,
        digital=digital,
        disengagement=rng.normal(0, 1, n),
        no_show_effect=rng.normal(0, 0.5, n),
        satisfaction=rng.normal(0, 1, n),
        adherence=rng.normal(0, 1, n),
        metabolic=rng.normal(0, 1, n),
    )
