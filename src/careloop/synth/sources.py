"""How each source system knows a person: its own key and its own, imperfect copy of their details.

Identity noise planted (all recorded in ``truth/identity.parquet`` as (source, patient_key, person_id)):
- names with homophone / look-alike typos (王 -> 汪, 静 -> 婧) and swapped given-name characters, more
  often where names are typed or heard (pharmacy counter, call centre) than where an ID card is read;
- a previous mobile number kept by one of the person's sources (12 % of people changed numbers);
- children and many elderly people registered with the household head's phone;
- ID numbers missing in many sources (rarely in HIS, always present in the internet hospital, which
  requires real-name verification);
- birth dates with transposed digits (month and day swapped, or the last two year digits) in a few
  typed records; the ID number, when present, keeps the true date;
- duplicate HIS records of the same person (a second 病历号, some acute visits filed under it);
- app family accounts: the account holder adds children and parents as family members, with the
  household link (household_key, relationship, guardian_key).

Keys are keyed permutations of the person number per source (see `careloop.synth.arrays.permute`), so
they are unique and reveal nothing across sources; WeChat sources are keyed by openid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from careloop.synth import geography, names
from careloop.synth.arrays import (
    BoolArray,
    Column,
    IntArray,
    ascii_strings,
    dates,
    digit_matrix,
    int_text,
    join,
    local_seconds,
    null_where,
    numbered,
    pick,
    timestamps,
    where,
)
from careloop.synth.files import PATIENT_SOURCES
from careloop.synth.identifiers import birth_ymd, e164, id_numbers, local_mobile, scrambled_keys, wechat_ids
from careloop.synth.population import MARITAL, RELATIONSHIPS, People
from careloop.synth.registry import HIS_SOURCES


@dataclass(frozen=True)
class Profile:
    prefix: str
    width: int  # digits of the key (0 = keyed by WeChat openid)
    salt: int
    name: float  # share of records with a name
    typo: float
    swap: float
    sex: float
    birth: float
    transpose: float
    id_number: float
    phone: float
    address: float
    local_phone: bool  # stored as 11 bare digits (HIS, pharmacy POS)
    duplicate: float  # share of members with a second record


PROFILES: dict[str, Profile] = {
    "his_h001": Profile("", 10, 11, 1.0, 0.015, 0.004, 1.0, 1.0, 0.0, 0.88, 0.96, 0.93, True, 0.02),
    "his_h002": Profile("ZB", 8, 12, 1.0, 0.015, 0.004, 1.0, 1.0, 0.0, 0.86, 0.96, 0.9, True, 0.02),
    "his_h003": Profile("", 8, 13, 1.0, 0.02, 0.005, 1.0, 1.0, 0.0, 0.82, 0.95, 0.9, True, 0.025),
    "his_h004": Profile("FC", 8, 14, 1.0, 0.02, 0.005, 1.0, 1.0, 0.0, 0.82, 0.95, 0.9, True, 0.025),
    "his_jc": Profile("JC", 10, 15, 1.0, 0.02, 0.005, 1.0, 1.0, 0.0, 0.95, 0.96, 0.95, True, 0.015),
    "pharmacy": Profile("VIP", 9, 16, 0.9, 0.045, 0.01, 0.8, 0.5, 0.03, 0.15, 1.0, 0.2, True, 0.0),
    "dtp": Profile("DTP", 8, 17, 1.0, 0.02, 0.005, 1.0, 0.9, 0.01, 0.92, 0.98, 0.6, False, 0.0),
    "internet_hospital": Profile("IH", 10, 18, 1.0, 0.005, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.3, False, 0.0),
    "wechat_oa": Profile("", 0, 19, 0.55, 0.03, 0.01, 0.6, 0.4, 0.02, 0.3, 0.55, 0.0, False, 0.0),
    "wechat_mp": Profile("", 0, 20, 0.8, 0.02, 0.005, 0.8, 0.8, 0.01, 0.6, 0.9, 0.1, False, 0.0),
    "app": Profile("U", 9, 21, 0.9, 0.02, 0.005, 0.7, 0.6, 0.02, 0.4, 1.0, 0.2, False, 0.0),
    "call_centre": Profile("CC", 9, 22, 0.85, 0.08, 0.02, 0.6, 0.3, 0.03, 0.05, 1.0, 0.3, True, 0.0),
    "crm": Profile("C", 10, 23, 0.95, 0.02, 0.005, 0.9, 0.7, 0.01, 0.2, 0.95, 0.1, False, 0.0),
}
assert tuple(PROFILES) == PATIENT_SOURCES
OPENID_LEAD = {"wechat_oa": "oA", "wechat_mp": "oM"}
INSURANCE_SYSTEM = "杭州市民卡"
NEVER = 10**7


@dataclass
class SourceKeys:
    """Patient keys of every person of the chunk in every source (members or not)."""

    main: dict[str, Column]
    dup: dict[str, Column]  # HIS: the duplicate record's key
    family: Column  # app: key of a family-member profile
    openid: dict[str, Column]
    unionid: Column

    def of(self, source: str, person: IntArray, use_dup: BoolArray | None = None) -> Column:
        idx = pa.array(np.asarray(person, dtype=np.int64))
        keys = self.main[source].take(idx)
        if use_dup is not None and source in self.dup and use_dup.any():
            keys = where(use_dup, self.dup[source].take(idx), keys)
        return keys


def make_keys(rng: np.random.Generator, people: People, total: int) -> SourceKeys:
    pid = people.person_id
    main: dict[str, Column] = {}
    dup: dict[str, Column] = {}
    openid: dict[str, Column] = {}
    for source, prof in PROFILES.items():
        if prof.width == 0:
            openid[source] = wechat_ids(rng, people.n, OPENID_LEAD[source])
            main[source] = openid[source]
            continue
        main[source] = scrambled_keys(prof.prefix, pid, prof.width, prof.salt)
        if prof.duplicate > 0:
            dup[source] = scrambled_keys(prof.prefix, pid + total, prof.width, prof.salt)
    family = scrambled_keys(
        PROFILES["app"].prefix, pid + 2 * total, PROFILES["app"].width, PROFILES["app"].salt
    )
    return SourceKeys(
        main=main, dup=dup, family=family, openid=openid, unionid=wechat_ids(rng, people.n, "oU")
    )


def person_ids(person_id: IntArray) -> Column:
    return numbered("P", person_id, 9)


def household_ids(household: IntArray) -> Column:
    return numbered("HH", household, 11)


@dataclass
class Records:
    """What a source holds for its members: the patient table columns and the identity truth."""

    columns: dict[str, Column]
    truth_keys: Column
    truth_person: IntArray
    n: int


def _addresses(people: People, idx: IntArray, full: BoolArray) -> Column:
    d = people.district[idx]
    street = pick(geography.STREETS, people.street[idx])
    district = pick([x.name for x in geography.DISTRICTS], d)
    tail = join(
        street,
        int_text(people.house_no[idx]),
        "号",
        int_text(people.building[idx]),
        "幢",
        int_text(people.unit[idx]),
        "单元",
        int_text(people.room[idx]),
        "室",
    )
    return where(full, join(geography.PROVINCE, geography.CITY, district, tail), join(district, tail))


def _transposed(birth_day: IntArray, latest_year: int) -> IntArray:
    """Birth dates with two digits swapped: month and day (if the day is a valid month) or the year's
    last two digits. Returns YYYYMMDD integers."""
    ymd = birth_ymd(birth_day)
    y, m, d = ymd // 10000, ymd // 100 % 100, ymd % 100
    swap_md = (d <= 12) & (d != m)
    y2 = y // 100 * 100 + (y % 10) * 10 + (y // 10 % 10)
    y2 = np.where(y2 > latest_year, y, y2)
    d2 = np.where((m == 2) & (d == 29), 28, d)
    out: IntArray = np.where(swap_md, y * 10000 + d * 100 + m, y2 * 10000 + m * 100 + d2)
    return out


def _ymd_days(ymd: IntArray) -> IntArray:
    y, m, d = ymd // 10000, ymd // 100 % 100, ymd % 100
    months = ((y - 1970) * 12 + (m - 1)).astype("timedelta64[M]")
    first = (np.datetime64("1970-01", "M") + months).astype("datetime64[D]")
    out: IntArray = (first - np.datetime64("1970-01-01", "D")).astype(np.int64) + d - 1
    return out


def records(
    rng: np.random.Generator,
    people: People,
    keys: SourceKeys,
    source: str,
    member: IntArray,
    first_day: IntArray,
    old_phone_here: BoolArray,
    family: bool = False,
) -> Records:
    """The patient rows of `member` (person indices) in `source`."""
    prof = PROFILES[source]
    m = len(member)
    p = member
    u = rng.random((m, 8))
    name_text, _ = names.noisy_name(
        rng,
        people.surname[p],
        people.given1[p],
        people.given2[p],
        prof.typo * (1.5 if family else 1.0),
        prof.swap,
    )
    has_name = u[:, 0] < (1.0 if family else prof.name)
    # ID numbers (true date); children's IDs are known more rarely outside HIS
    ids = id_numbers(geography.AREA_CODE_INT[people.area_code[p]], people.birth_day[p], people.id_sequence[p])
    has_id = u[:, 1] < prof.id_number * np.where(people.age[p] < 14, 0.7, 1.0)
    transpose = u[:, 2] < prof.transpose
    latest = int(birth_ymd(np.array([people.birth_day.max()]))[0] // 10000)
    birth = np.where(transpose, _ymd_days(_transposed(people.birth_day[p], latest)), people.birth_day[p])
    has_birth = u[:, 3] < prof.birth
    phone_num = np.where(
        old_phone_here[p] & (people.old_phone[p] > 0), people.old_phone[p], people.contact_phone[p]
    )
    if family:
        phone_num = np.where(people.age[p] < 14, 0, people.own_phone[p])
    has_phone = u[:, 4] < prof.phone
    phone = local_mobile(phone_num, has_phone) if prof.local_phone else e164(phone_num, has_phone)
    if prof.local_phone:  # some clerks type separators
        dashed = join(
            ascii_strings(digit_matrix(phone_num // 10**8, 3)),
            "-",
            ascii_strings(digit_matrix(phone_num // 10**4 % 10**4, 4)),
            "-",
            ascii_strings(digit_matrix(phone_num % 10**4, 4)),
        )
        phone = null_where(where(u[:, 5] < 0.03, dashed, phone), ~has_phone | (phone_num == 0))
    has_address = u[:, 6] < prof.address
    registered_day = np.where(first_day[p] < NEVER, first_day[p], people.birth_day[p] + 365 * 18)
    registered_day = np.maximum(
        np.where(u[:, 7] < 0.5, registered_day - rng.integers(0, 400, m), registered_day), people.birth_day[p]
    )
    registered_at = local_seconds(registered_day, 8 * 3600 + rng.integers(0, 10 * 3600, m))
    cols: dict[str, Column] = {
        "key": keys.family.take(pa.array(p)) if family else keys.main[source].take(pa.array(p)),
        "name": null_where(name_text, ~has_name),
        "sex": null_where(pick(("male", "female"), people.female[p].astype(np.int64)), u[:, 5] >= prof.sex),
        "birth_date": dates(birth, has_birth),
        "id_number": null_where(ids, ~has_id),
        "phone": phone,
        "address": null_where(_addresses(people, p, np.full(m, source in HIS_SOURCES)), ~has_address),
        "registered_at": timestamps(registered_at),
    }
    if source in HIS_SOURCES:
        d = people.district[p]
        cols.update(
            {
                "province": pick([geography.PROVINCE], np.zeros(m, np.int64)),
                "city": pick([geography.CITY], np.zeros(m, np.int64)),
                "district": pick([x.name for x in geography.DISTRICTS], d),
                "postal_code": pick([x.postal for x in geography.DISTRICTS], d),
                "ethnicity": pick(geography.ETHNICITIES, people.ethnicity[p]),
                "marital_status": pick(MARITAL, np.maximum(people.marital[p], 0), people.marital[p] >= 0),
            }
        )
    return Records(columns=cols, truth_keys=cols["key"], truth_person=people.person_id[p], n=m)


def duplicates(
    rng: np.random.Generator,
    people: People,
    keys: SourceKeys,
    source: str,
    member: IntArray,
    first_day: IntArray,
) -> tuple[Records, BoolArray]:
    """Second HIS records for a few members: typed again without the ID card, more typos."""
    prof = PROFILES[source]
    has_dup = np.zeros(people.n, dtype=np.bool_)
    chosen = member[rng.random(len(member)) < prof.duplicate]
    has_dup[chosen] = True
    rec = records(rng, people, keys, source, chosen, first_day, np.zeros(people.n, np.bool_))
    m = len(chosen)
    name_text, _ = names.noisy_name(
        rng, people.surname[chosen], people.given1[chosen], people.given2[chosen], 0.3, 0.05
    )
    rec.columns["key"] = keys.dup[source].take(pa.array(chosen))
    rec.columns["name"] = name_text
    rec.columns["id_number"] = null_where(rec.columns["id_number"], rng.random(m) < 0.7)
    rec.truth_keys = rec.columns["key"]
    return rec, has_dup


def family_fields(
    people: People, keys: SourceKeys, p: IntArray, is_family_profile: BoolArray
) -> dict[str, Column]:
    """household_key / relationship / guardian_key of app profiles (account holders and their family)."""
    head = people.head[p]
    hh_key = join("FAM", keys.main["app"].take(pa.array(head)))
    rel = pick(RELATIONSHIPS, people.relationship[p])
    guardian_ok = people.guardian[p] >= 0
    guardian = null_where(keys.main["app"].take(pa.array(np.maximum(people.guardian[p], 0))), ~guardian_ok)
    return {"household_key": hh_key, "relationship": rel, "guardian_key": guardian}
