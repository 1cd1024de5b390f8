"""Behavioural events (app, web, WeChat official account and mini-program, call centre) and feedback.

Organic activity is a Poisson process per person and service in 30-day buckets aligned on the churn
cut-off. Its rate depends on digital propensity and chronic status. Planted churn driver: in the 180
days before the cut-off, activity decays with the latent disengagement z (rate x exp(-0.9 z+ t/180));
after the cut-off it stays low, and churned patients drop to about a third of it.

Derived events mirror other data: a WeChat or app booking is an ``appointment_booked`` event at the
booking time, an online consultation starts with ``consultation_started``, a phone booking is a
``call_inbound`` to the call centre, and admissions get a ``call_outbound`` follow-up call.

Feedback follows visits and consultations. Score = round(4.15 + 0.55 satisfaction - 0.25 [三甲]
- drop + noise), clipped to 1..5, where the planted drop rises to 1.2 z+ through the 180 days before
the cut-off (falling satisfaction, a churn driver). Comment sentiment follows the score
(`careloop.synth.texts.feedback_text`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth.arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    categorical,
    local_day,
    local_seconds,
)
from careloop.synth.population import People
from careloop.synth.timeline import DRIVER_WINDOW_DAYS, Timeline

EVENT_SOURCES = ("app", "wechat_oa", "wechat_mp", "call_centre")
APP_SRC, OA_SRC, MP_SRC, CALL_SRC = range(4)
EVENT_CHANNELS = ("app", "wechat_oa", "wechat_mp", "web", "call_centre")
CH_APP, CH_OA, CH_MP, CH_WEB, CH_CALL = range(5)
EVENT_TYPES = ("track", "page", "screen")
TRACK, PAGE, SCREEN = range(3)
EVENT_NAMES = (
    "app_open",
    "screen_view",
    "article_view",
    "refill_reminder_clicked",
    "medication_checked_in",
    "report_viewed",
    "points_redeemed",
    "search",
    "page_view",
    "subscribe",
    "menu_click",
    "template_msg_clicked",
    "mp_open",
    "queue_checked",
    "payment_completed",
    "appointment_booked",
    "consultation_started",
    "call_inbound",
    "call_outbound",
)
E = {name: i for i, name in enumerate(EVENT_NAMES)}
#: organic event mix per source: (name, weight for non-chronic, weight for chronic)
_MIX: dict[int, tuple[tuple[str, float, float], ...]] = {
    APP_SRC: (
        ("app_open", 0.38, 0.30),
        ("screen_view", 0.22, 0.18),
        ("article_view", 0.12, 0.10),
        ("refill_reminder_clicked", 0.0, 0.08),
        ("medication_checked_in", 0.0, 0.14),
        ("report_viewed", 0.08, 0.08),
        ("points_redeemed", 0.02, 0.03),
        ("search", 0.06, 0.04),
        ("page_view", 0.12, 0.05),
    ),
    OA_SRC: (
        ("article_view", 0.55, 0.45),
        ("menu_click", 0.33, 0.30),
        ("template_msg_clicked", 0.12, 0.15),
        ("refill_reminder_clicked", 0.0, 0.10),
    ),
    MP_SRC: (
        ("mp_open", 0.45, 0.42),
        ("report_viewed", 0.20, 0.20),
        ("queue_checked", 0.15, 0.16),
        ("payment_completed", 0.12, 0.14),
        ("article_view", 0.08, 0.08),
    ),
}
#: hour-of-day weights of phone use (morning commute, lunch, evening)
_HOURS = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.5, 2, 5, 6, 5, 4, 4, 6, 4, 3, 3, 3, 4, 5, 7, 8, 8, 6, 3], dtype=float
)
DECAY = 0.9


@dataclass
class Events:
    person: IntArray
    source: IntArray
    channel: IntArray
    event_type: IntArray
    name: IntArray
    at: IntArray
    a: IntArray  # name-specific detail (topic, screen, page, menu, reason, org ...)
    b: IntArray  # second detail (seconds, lead days, outcome ...)
    organic: BoolArray

    @property
    def n(self) -> int:
        return len(self.person)

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        fields = Events.__dataclass_fields__
        return Events(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def subset(self, keep: BoolArray) -> Events:
        fields = Events.__dataclass_fields__
        return Events(**{f: getattr(self, f)[keep] for f in fields})


def make_events(
    person: IntArray,
    source: int | IntArray,
    channel: int | IntArray,
    event_type: int | IntArray,
    name: int | IntArray,
    at: IntArray,
    a: IntArray,
    b: IntArray,
    organic: bool,
) -> Events:
    m = len(person)

    def full(x: int | IntArray) -> IntArray:
        return np.full(m, x, dtype=np.int64) if isinstance(x, int) else np.asarray(x, dtype=np.int64)

    return Events(
        person=np.asarray(person, dtype=np.int64),
        source=full(source),
        channel=full(channel),
        event_type=full(event_type),
        name=full(name),
        at=np.asarray(at, dtype=np.int64),
        a=full(a),
        b=full(b),
        organic=np.full(m, organic),
    )


def join_days(rng: np.random.Generator, n: int, tl: Timeline) -> IntArray:
    """When each person started using a service: most before the history, the rest during it."""
    return np.where(
        rng.random(n) < 0.6,
        tl.start_day - rng.integers(1, 900, n),
        tl.start_day + (rng.random(n) * (tl.days - 14)).astype(np.int64),
    ).astype(np.int64)


def _buckets(tl: Timeline, post: bool) -> tuple[IntArray, IntArray]:
    """30-day buckets aligned on the cut-off: (first day, length) before it, or from it on."""
    if post:
        starts = np.arange(tl.cutoff_day, tl.as_of_day + 1, 30)
        ends = np.minimum(starts + 30, tl.as_of_day + 1)
    else:
        ends = np.arange(tl.cutoff_day, tl.start_day, -30)[::-1]
        starts = np.maximum(ends - 30, tl.start_day)
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def organic_events(
    rng: np.random.Generator,
    people: People,
    source: int,
    member: BoolArray,
    joined: IntArray,
    chronic: BoolArray,
    tl: Timeline,
    post: bool,
    churned: BoolArray | None = None,
) -> Events:
    """Organic activity of one service's members before (or from) the cut-off."""
    d = people.digital
    base = {
        APP_SRC: 0.04 * (0.3 + d) * (1 + 0.4 * chronic),
        OA_SRC: 0.012 * (0.4 + d),
        MP_SRC: 0.009 * (0.4 + d),
    }[source]  # events per day
    z_plus = np.maximum(people.disengagement, 0)
    starts, lengths = _buckets(tl, post)
    mid = starts + lengths / 2
    frac = np.clip((mid - (tl.cutoff_day - DRIVER_WINDOW_DAYS)) / DRIVER_WINDOW_DAYS, 0, 1)
    mult = np.exp(-DECAY * z_plus[:, None] * frac[None, :])
    if post and churned is not None:
        mult = mult * np.where(churned, 0.35, 1.0)[:, None]
    active = (joined[:, None] <= starts[None, :] + lengths[None, :]) & member[:, None]
    lam = np.where(active, base[:, None] * lengths[None, :] * mult, 0.0)
    counts = rng.poisson(lam)
    flat = counts.ravel()
    cell = np.repeat(np.arange(flat.size), flat)
    person = cell // len(starts)
    bucket = cell % len(starts)
    m = len(person)
    lo = np.maximum(starts[bucket], joined[person])
    span = np.maximum(starts[bucket] + lengths[bucket] - lo, 1)
    day = lo + (rng.random(m) * span).astype(np.int64)
    hour = categorical(rng, _HOURS, m)
    at = local_seconds(day, hour * 3600 + rng.integers(0, 3600, m))
    mix = _MIX[source]
    name = np.empty(m, dtype=np.int64)
    ch = chronic[person]
    for flag in (False, True):
        sel = np.flatnonzero(ch == flag)
        pick = categorical(rng, [w[2] if flag else w[1] for w in mix], len(sel))
        name[sel] = np.array([E[w[0]] for w in mix])[pick]
    event_type = np.where(name == E["screen_view"], SCREEN, np.where(name == E["page_view"], PAGE, TRACK))
    channel = {APP_SRC: CH_APP, OA_SRC: CH_OA, MP_SRC: CH_MP}[source]
    channel_arr = np.where(name == E["page_view"], CH_WEB, channel)
    a = rng.integers(0, 10, m)
    b = 15 + rng.exponential(60, m).astype(np.int64)
    ev = make_events(person, source, channel_arr, event_type, name, at, a, b, True)
    if source == OA_SRC and not post:  # following the official account
        new = np.flatnonzero(member & (joined >= tl.start_day))
        sub_at = local_seconds(joined[new], 8 * 3600 + rng.integers(0, 14 * 3600, len(new)))
        ev = Events.concat(
            [
                ev,
                make_events(
                    new,
                    OA_SRC,
                    CH_OA,
                    TRACK,
                    E["subscribe"],
                    sub_at,
                    rng.integers(0, 4, len(new)),
                    np.zeros(len(new), np.int64),
                    True,
                ),
            ]
        )
    return ev


@dataclass
class Feedback:
    person: IntArray
    source: IntArray  # 0..k HIS index, -1 internet hospital, -2 call centre
    visit: IntArray  # encounter in the same source, or -1
    org: IntArray
    at: IntArray
    score: IntArray
    channel: IntArray  # index into EVENT_CHANNELS + ("sms",)
    has_text: BoolArray

    @property
    def n(self) -> int:
        return len(self.person)

    @staticmethod
    def concat(parts: list[Feedback]) -> Feedback:
        fields = Feedback.__dataclass_fields__
        return Feedback(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def subset(self, keep: BoolArray) -> Feedback:
        fields = Feedback.__dataclass_fields__
        return Feedback(**{f: getattr(self, f)[keep] for f in fields})


FEEDBACK_CHANNELS = (*EVENT_CHANNELS, "sms")
CH_SMS = len(EVENT_CHANNELS)


def satisfaction_drop(
    people: People, person: IntArray, day: IntArray, tl: Timeline, churned: BoolArray | None
) -> FloatArray:
    z_plus = np.maximum(people.disengagement[person], 0)
    frac = np.clip((day - (tl.cutoff_day - DRIVER_WINDOW_DAYS)) / DRIVER_WINDOW_DAYS, 0, 1)
    drop = 1.2 * z_plus * frac
    if churned is not None:
        drop = drop + np.where((day >= tl.cutoff_day) & churned[person], 0.5, 0.0)
    out: FloatArray = drop
    return out


def scores(
    rng: np.random.Generator,
    people: People,
    person: IntArray,
    day: IntArray,
    top_tier: BoolArray,
    tl: Timeline,
    churned: BoolArray | None,
) -> IntArray:
    latent = (
        4.15
        + 0.55 * people.satisfaction[person]
        - 0.25 * top_tier
        - satisfaction_drop(people, person, day, tl, churned)
        + rng.normal(0, 0.7, len(person))
    )
    return np.clip(np.round(latent), 1, 5).astype(np.int64)


def visit_feedback(
    rng: np.random.Generator,
    people: People,
    wechat_mp: BoolArray,
    app: BoolArray,
    chronic: BoolArray,
    person: IntArray,
    org_his: IntArray,
    visit: IntArray,
    org: IntArray,
    end: IntArray,
    online: BoolArray,
    top_tier: BoolArray,
    tl: Timeline,
    churned: BoolArray | None,
) -> Feedback:
    """Satisfaction surveys after visits (HIS, sent by mini-program or SMS) and online consultations."""
    p = np.where(online, 0.25, 0.07 + 0.10 * chronic[person])
    sel = np.flatnonzero(rng.random(len(person)) < p)
    who = person[sel]
    at = end[sel] + rng.integers(3600, 48 * 3600, len(sel))
    hour = (at + 8 * 3600) % 86_400 // 3600
    at = np.where(hour < 7, at + (8 - hour) * 3600, at)  # nobody answers surveys at 3 a.m.
    day = (at + 8 * 3600) // 86_400
    channel = np.where(
        online[sel], np.where(wechat_mp[who], CH_MP, CH_APP), np.where(wechat_mp[who], CH_MP, CH_SMS)
    )
    keep = day <= tl.as_of_day
    sel, who, at, day, channel = sel[keep], who[keep], at[keep], day[keep], channel[keep]
    return Feedback(
        person=who,
        source=np.where(online[sel], -1, org_his[sel]),
        visit=visit[sel],
        org=org[sel],
        at=at,
        score=scores(rng, people, who, day, top_tier[sel], tl, churned),
        channel=channel,
        has_text=rng.random(len(sel)) < 0.6,
    )


def discharge_calls(
    rng: np.random.Generator,
    people: People,
    person: IntArray,
    org: IntArray,
    end: IntArray,
    tl: Timeline,
    churned: BoolArray | None,
) -> tuple[Events, Feedback]:
    """Call-centre follow-up calls after discharge; answered calls include a satisfaction score."""
    m = len(person)
    at = local_seconds(local_day(end) + rng.integers(3, 11, m), 9 * 3600 + rng.integers(0, 8 * 3600, m))
    keep = (at + 8 * 3600) // 86_400 <= tl.as_of_day
    person, org, at = person[keep], org[keep], at[keep]
    m = len(person)
    answered = rng.random(m) < 0.75
    ev = make_events(
        person,
        CALL_SRC,
        CH_CALL,
        TRACK,
        E["call_outbound"],
        at,
        np.zeros(m, np.int64),
        answered.astype(np.int64),
        False,
    )
    a = np.flatnonzero(answered)
    day = (at[a] + 8 * 3600) // 86_400
    fb = Feedback(
        person=person[a],
        source=np.full(len(a), -2),
        visit=np.full(len(a), -1),
        org=org[a],
        at=at[a] + rng.integers(120, 900, len(a)),
        score=scores(rng, people, person[a], day, np.zeros(len(a), np.bool_), tl, churned),
        channel=np.full(len(a), CH_CALL),
        has_text=rng.random(len(a)) < 0.5,
    )
    return ev, fb


def inquiry_calls(rng: np.random.Generator, people: People, chronic: BoolArray, tl: Timeline) -> Events:
    """Inbound calls other than bookings: report queries, medication and insurance questions."""
    lam = np.where((people.age >= 50) | chronic, 0.015, 0.003) * tl.days / 30 * (people.age >= 18)
    count = rng.poisson(lam)
    person = np.repeat(np.arange(people.n), count)
    m = len(person)
    day = tl.start_day + (rng.random(m) * tl.days).astype(np.int64)
    at = local_seconds(day, 8 * 3600 + rng.integers(0, 12 * 3600, m))
    reason = categorical(rng, [0, 0.3, 0.3, 0.2, 0.1, 0.1], m)
    return make_events(
        person,
        CALL_SRC,
        CH_CALL,
        TRACK,
        E["call_inbound"],
        at,
        reason,
        30 + rng.exponential(200, m).astype(np.int64),
        False,
    )
