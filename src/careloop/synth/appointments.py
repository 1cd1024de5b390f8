"""Appointments and the planted no-show model.

Most planned visits are booked ahead (more at 三甲 hospitals, where real-name booking is the norm).
The booking is for the planned day; its outcome is drawn from the true model below before the visit
is placed: when the patient cancels or does not show, the visit happens some days later as a walk-in.
So every attended appointment leads to its encounter, and no-shows and cancellations precede a later
visit, as in real booking data.

True no-show model (logit, per appointment; written to ``truth/no_show.parquet`` with every driver):

    -3.45 + 0.045 * min(lead_days, 30) + 0.55 * min(prior_no_shows, 3) + 0.022 * min(distance_km, 60)
    + tier (三甲 -0.35, 二级 0, 基层 +0.25) + age (<14 -0.3, 18-34 +0.45, 65-79 -0.15, >=80 +0.35)
    + weekday (Mon +0.2, Fri +0.1, Sat/Sun +0.25) + 0.5 * rain_index + channel (phone +0.15,
    onsite -0.1, referral -0.3, web +0.05, app -0.05) + visit type (acute -0.4, check-up +0.2)
    + person effect ~ N(0, 0.5)

Cancellation: logit -3.3 + 0.05 * min(lead_days, 30) + 0.25 * booked online + 0.3 * person effect.
`prior_no_shows` counts the person's earlier no-shows in the history (appointments processed in date
order). Appointments dated after the as-of date are still ``booked``; their drawn outcome is in the
truth file only. Churn-driver cancellations (see `careloop.synth.churn`) are extra cancelled bookings
with no model probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth import geography, registry
from careloop.synth.arrays import (
    UTC_OFFSET,
    BoolArray,
    FloatArray,
    IntArray,
    categorical,
    categorical_rows,
    group_rank,
    local_day,
    local_seconds,
    sigmoid,
    weekday,
)
from careloop.synth.cohorts import Memberships
from careloop.synth.population import People
from careloop.synth.timeline import Timeline

STATUSES = ("booked", "attended", "no_show", "cancelled")
BOOKED, ATTENDED, NO_SHOW, CANCELLED = range(4)
CHANNELS = ("wechat", "app", "web", "phone", "onsite", "referral")
WECHAT, APP, WEB, PHONE, ONSITE, REFERRAL = range(6)
ORIGINS = ("visit", "future", "churn_driver")
VISIT, FUTURE, CHURN_DRIVER = range(3)

_TIER_EFFECT = np.array([-0.35, 0.0, 0.25])
_WEEKDAY_EFFECT = np.array([0.2, 0.0, 0.0, 0.0, 0.1, 0.25, 0.25])
_CHANNEL_EFFECT = np.array([0.0, -0.05, 0.05, 0.15, -0.1, -0.3])


@dataclass
class Appointments:
    person: IntArray
    org: IntArray
    dept: IntArray
    doctor: IntArray
    day: IntArray  # scheduled local day
    scheduled: IntArray  # UTC seconds
    booked: IntArray
    cancelled: IntArray  # UTC seconds or -1
    status: IntArray  # as the source shows it
    outcome: IntArray  # drawn outcome (differs from status only for future bookings)
    channel: IntArray
    visit: IntArray  # attended visit or -1
    origin: IntArray
    p_no_show: FloatArray  # NaN for churn-driver rows
    p_cancel: FloatArray
    lead_days: IntArray
    prior_no_shows: IntArray
    distance_km: FloatArray
    tier: IntArray
    weekday: IntArray
    rain: FloatArray
    condition: IntArray  # chronic condition the visit is for, -1 acute

    @property
    def n(self) -> int:
        return len(self.person)

    @staticmethod
    def concat(parts: list[Appointments]) -> Appointments:
        fields = Appointments.__dataclass_fields__
        return Appointments(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def subset(self, keep: BoolArray) -> Appointments:
        fields = Appointments.__dataclass_fields__
        return Appointments(**{f: getattr(self, f)[keep] for f in fields})


def booking_channels(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    person: IntArray,
    org: IntArray,
    chronic: BoolArray,
) -> IntArray:
    """Booking channel: WeChat / app for their users, phone and at-the-desk booking for older people."""
    age = people.age[person]
    guardian_digital = members.wechat_mp[people.head[person]] | members.wechat_oa[people.head[person]]
    wechat_user = members.wechat_mp[person] | members.wechat_oa[person] | ((age < 14) & guardian_digital)
    w = np.column_stack(
        [
            np.where(wechat_user, 0.55, 0.0),
            np.where(members.app[person], 0.25, 0.0),
            np.where(age < 60, 0.04, 0.0),
            0.10 + 0.22 * (age >= 65),
            0.05 + 0.12 * (age >= 70) + 0.10 * chronic,
            np.where(chronic & (registry.ORG_TIER[org] == 0), 0.04, 0.0),
        ]
    )
    return categorical_rows(rng, w)


def lead_times(
    rng: np.random.Generator, tier: IntArray, channel: IntArray, acute: BoolArray, check_up: BoolArray
) -> IntArray:
    """Days between booking and the appointment."""
    m = len(tier)
    planned = 1 + rng.gamma(np.array([1.6, 1.3, 1.0])[tier], np.array([5.0, 3.0, 2.0])[tier])
    planned = np.where(channel == ONSITE, 21 + rng.integers(0, 70, m), planned)  # booked at the last visit
    planned = np.where(check_up, 3 + rng.integers(0, 18, m), planned)
    same_day = np.where(rng.random(m) < 0.65, 0, rng.integers(1, 3, m))
    return np.asarray(np.where(acute, same_day, planned), dtype=np.int64)


def no_show_logit(
    lead: IntArray,
    prior: IntArray,
    distance: FloatArray,
    tier: IntArray,
    age: IntArray,
    wd: IntArray,
    rain: FloatArray,
    channel: IntArray,
    acute: BoolArray,
    check_up: BoolArray,
    effect: FloatArray,
) -> FloatArray:
    age_effect = np.select(
        [age < 14, age < 18, age < 35, age < 65, age < 80], [-0.3, 0.0, 0.45, 0.0, -0.15], default=0.35
    )
    out: FloatArray = (
        -3.45
        + 0.045 * np.minimum(lead, 30)
        + 0.55 * np.minimum(prior, 3)
        + 0.022 * np.minimum(distance, 60)
        + _TIER_EFFECT[tier]
        + age_effect
        + _WEEKDAY_EFFECT[wd]
        + 0.5 * rain
        + _CHANNEL_EFFECT[channel]
        - 0.4 * acute
        + 0.2 * check_up
        + effect
    )
    return out


def cancel_logit(lead: IntArray, channel: IntArray, effect: FloatArray) -> FloatArray:
    online = (channel == WECHAT) | (channel == APP) | (channel == WEB)
    out: FloatArray = -3.3 + 0.05 * np.minimum(lead, 30) + 0.25 * online + 0.3 * effect
    return out


#: hour-of-day weights of online bookings (they open at 07:00 and peak in the evening)
_ONLINE_HOURS = np.array(
    [0.2, 0, 0, 0, 0, 0, 0.3, 3, 5, 5, 4, 3, 4, 4, 3, 3, 3, 3, 4, 6, 7, 6, 4, 1], dtype=float
)


def booking_times(
    rng: np.random.Generator, scheduled: IntArray, lead: IntArray, channel: IntArray
) -> IntArray:
    """When each booking was made: `lead` days before, at hours that fit the channel (phone lines
    08:00-19:00, desks during clinic hours, online mostly evenings); same-day bookings that morning."""
    m = len(scheduled)
    day = local_day(scheduled) - lead
    online_hour = categorical(rng, _ONLINE_HOURS, m)
    hour = np.select(
        [channel == PHONE, (channel == ONSITE) | (channel == REFERRAL)],
        [rng.integers(8, 19, m), rng.integers(8, 16, m)],
        default=online_hour,
    )
    earlier = local_seconds(day, hour * 3600 + rng.integers(0, 3600, m))
    since_dawn = (scheduled + UTC_OFFSET) % 86_400 - 6 * 3600 - 1800
    same_day = scheduled - rng.integers(1800, np.maximum(since_dawn, 1801))
    out: IntArray = np.where(lead == 0, same_day, earlier)
    return out


@dataclass
class Booked:
    """Outcomes decided from planned visit days, before visit times exist."""

    visit: IntArray
    day: IntArray
    outcome: IntArray
    channel: IntArray
    lead: IntArray
    prior: IntArray
    p_no_show: FloatArray
    p_cancel: FloatArray
    distance: FloatArray
    tier: IntArray
    rain: FloatArray


def decide(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    person: IntArray,
    org: IntArray,
    day: IntArray,
    p_book: FloatArray,
    chronic: BoolArray,
    acute: BoolArray,
    check_up: BoolArray,
    tl: Timeline,
) -> tuple[Booked, IntArray]:
    """Book some planned visits and draw outcomes; returns the bookings and the visits' new days."""
    booked = np.flatnonzero(rng.random(len(person)) < p_book)
    bp, bo, bd = person[booked], org[booked], day[booked]
    tier = registry.ORG_TIER[bo]
    channel = booking_channels(rng, people, members, bp, bo, chronic[booked])
    lead = lead_times(rng, tier, channel, acute[booked], check_up[booked])
    lead = np.minimum(lead, np.maximum(bd - people.birth_day[bp], 0))  # not booked before birth
    dist = geography.distance_km(people.lat[bp], people.lon[bp], registry.ORG_LAT[bo], registry.ORG_LON[bo])
    rain = tl.rain_on(bd)
    effect = people.no_show_effect[bp]
    base = no_show_logit(
        lead,
        np.zeros(len(bp), np.int64),
        dist,
        tier,
        people.age[bp],
        weekday(bd),
        rain,
        channel,
        acute[booked],
        check_up[booked],
        effect,
    )
    p_cancel = sigmoid(cancel_logit(lead, channel, effect))
    # outcomes in date order per person, so that earlier no-shows raise later risk
    order = np.lexsort((bd, bp))
    rank = group_rank(bp[order])
    prior_count = np.zeros(people.n, dtype=np.int64)
    prior = np.zeros(len(bp), dtype=np.int64)
    p_ns = np.zeros(len(bp))
    outcome = np.zeros(len(bp), dtype=np.int64)
    u1, u2 = rng.random(len(bp)), rng.random(len(bp))
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        idx = order[rank == r]
        pr = prior_count[bp[idx]]
        prior[idx] = pr
        p = sigmoid(base[idx] + 0.55 * np.minimum(pr, 3))
        p_ns[idx] = p
        o = np.where(u1[idx] < p_cancel[idx], CANCELLED, np.where(u2[idx] < p, NO_SHOW, ATTENDED))
        outcome[idx] = o
        prior_count[bp[idx]] += o == NO_SHOW
    delay = np.where(acute[booked], rng.integers(1, 4, len(bp)), rng.integers(1, 15, len(bp)))
    new_day = day.copy()
    failed = outcome != ATTENDED
    new_day[booked[failed]] = np.minimum(bd[failed] + delay[failed], tl.as_of_day)
    return (
        Booked(booked, bd, outcome, channel, lead, prior, p_ns, p_cancel, dist, tier, rain),
        new_day,
    )


def finalize(
    rng: np.random.Generator,
    b: Booked,
    person: IntArray,
    org: IntArray,
    dept: IntArray,
    doctor: IntArray,
    visit_start: IntArray,
    condition: IntArray,
    tl: Timeline,
) -> Appointments:
    """Timestamps: attended bookings are for the slot the visit started in; failed ones for a slot
    on the planned day. Bookings dated before the history are dropped."""
    m = len(b.visit)
    attended = b.outcome == ATTENDED
    slot_att = (visit_start[b.visit] - rng.integers(0, 900, m)) // 900 * 900
    sod = 7 * 3600 + 1800 + rng.integers(0, 36, m) * 900
    slot_fail = local_seconds(b.day, np.where(sod >= 12 * 3600, sod + 5400, sod))
    scheduled = np.where(attended, slot_att, slot_fail)
    booked = booking_times(rng, scheduled, b.lead, b.channel)
    cancelled = np.where(
        b.outcome == CANCELLED, booked + (rng.random(m) * (scheduled - booked - 600)).astype(np.int64), -1
    )
    keep = b.day >= tl.start_day
    a = Appointments(
        person=person[b.visit],
        org=org[b.visit],
        dept=dept[b.visit],
        doctor=doctor[b.visit],
        day=b.day,
        scheduled=scheduled,
        booked=booked,
        cancelled=cancelled,
        status=b.outcome,
        outcome=b.outcome,
        channel=b.channel,
        visit=np.where(attended, b.visit, -1),
        origin=np.full(m, VISIT),
        p_no_show=b.p_no_show,
        p_cancel=b.p_cancel,
        lead_days=b.lead,
        prior_no_shows=b.prior,
        distance_km=b.distance,
        tier=b.tier,
        weekday=weekday(b.day),
        rain=b.rain,
        condition=condition[b.visit],
    )
    return a.subset(keep)


def _slot_times(rng: np.random.Generator, day: IntArray) -> IntArray:
    m = len(day)
    sod = 7 * 3600 + 1800 + rng.integers(0, 36, m) * 900
    return local_seconds(day, np.where(sod >= 12 * 3600, sod + 5400, sod))


def _rows(
    person: IntArray,
    org: IntArray,
    dept: IntArray,
    doctor: IntArray,
    day: IntArray,
    scheduled: IntArray,
    booked: IntArray,
    cancelled: IntArray,
    status: IntArray,
    outcome: IntArray,
    channel: IntArray,
    origin: int,
    p_no_show: FloatArray,
    p_cancel: FloatArray,
    lead: IntArray,
    prior: IntArray,
    distance: FloatArray,
    tier: IntArray,
    rain: FloatArray,
    condition: IntArray,
) -> Appointments:
    m = len(person)
    return Appointments(
        person=person,
        org=org,
        dept=dept,
        doctor=doctor,
        day=day,
        scheduled=scheduled,
        booked=booked,
        cancelled=cancelled,
        status=status,
        outcome=outcome,
        channel=channel,
        visit=np.full(m, -1),
        origin=np.full(m, origin),
        p_no_show=p_no_show,
        p_cancel=p_cancel,
        lead_days=lead,
        prior_no_shows=prior,
        distance_km=distance,
        tier=tier,
        weekday=weekday(day),
        rain=rain,
        condition=condition,
    )


def future_bookings(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    person: IntArray,
    org: IntArray,
    dept: IntArray,
    doctor: IntArray,
    day: IntArray,
    condition: IntArray,
    prior_count: IntArray,
    tl: Timeline,
) -> Appointments:
    """Next chronic visits after the as-of date that are already booked (status ``booked``); the drawn
    outcome goes to the truth file."""
    m = len(person)
    tier = registry.ORG_TIER[org]
    channel = booking_channels(rng, people, members, person, org, np.ones(m, np.bool_))
    lead = lead_times(rng, tier, channel, np.zeros(m, np.bool_), np.zeros(m, np.bool_))
    scheduled = _slot_times(rng, day)
    booked = booking_times(rng, scheduled, lead, channel)
    dist = geography.distance_km(
        people.lat[person], people.lon[person], registry.ORG_LAT[org], registry.ORG_LON[org]
    )
    rain = tl.rain_on(day)
    effect = people.no_show_effect[person]
    prior = prior_count[person]
    no = np.zeros(m, np.bool_)
    p_ns = sigmoid(
        no_show_logit(
            lead, prior, dist, tier, people.age[person], weekday(day), rain, channel, no, no, effect
        )
    )
    p_c = sigmoid(cancel_logit(lead, channel, effect))
    u1, u2 = rng.random(m), rng.random(m)
    outcome = np.where(u1 < p_c, CANCELLED, np.where(u2 < p_ns, NO_SHOW, ATTENDED))
    a = _rows(
        person,
        org,
        dept,
        doctor,
        day,
        scheduled,
        booked,
        np.full(m, -1),
        np.full(m, BOOKED),
        outcome,
        channel,
        FUTURE,
        p_ns,
        p_c,
        lead,
        prior,
        dist,
        tier,
        rain,
        condition,
    )
    booked_day = (booked + 8 * 3600) // 86_400
    return a.subset(booked_day <= tl.as_of_day)


def driver_cancellations(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    person: IntArray,
    count: IntArray,
    org: IntArray,
    dept: IntArray,
    doctor: IntArray,
    condition: IntArray,
    first_day: int,
    last_day: int,
    tl: Timeline,
) -> Appointments:
    """Planted churn driver: extra bookings the patient cancels, in the window before the cut-off."""
    rows = np.repeat(np.arange(len(person)), count)
    p, o, d, doc, c = person[rows], org[rows], dept[rows], doctor[rows], condition[rows]
    m = len(p)
    day = first_day + (rng.random(m) * (last_day - first_day)).astype(np.int64)
    day = np.minimum(np.maximum(day, people.birth_day[p] + 1), last_day)
    tier = registry.ORG_TIER[o]
    channel = booking_channels(rng, people, members, p, o, np.ones(m, np.bool_))
    lead = 3 + rng.integers(0, 18, m)
    scheduled = _slot_times(rng, day)
    booked = booking_times(rng, scheduled, lead, channel)
    cancelled = booked + (rng.random(m) * (scheduled - booked - 600)).astype(np.int64)
    dist = geography.distance_km(people.lat[p], people.lon[p], registry.ORG_LAT[o], registry.ORG_LON[o])
    nan = np.full(m, np.nan)
    status = np.full(m, CANCELLED)
    return _rows(
        p,
        o,
        d,
        doc,
        day,
        scheduled,
        booked,
        cancelled,
        status,
        status,
        channel,
        CHURN_DRIVER,
        nan,
        nan,
        lead,
        np.zeros(m, np.int64),
        dist,
        tier,
        tl.rain_on(day),
        c,
    )
