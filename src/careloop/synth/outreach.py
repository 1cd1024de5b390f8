"""The engagement platform (``crm`` source): consents, campaigns, messages and touches.

Consents form a ledger per person x purpose (x channel for marketing): care follow-up (most grant it at
registration), marketing per channel (SMS / WeChat / app push; some withdraw later, and an opt-out
reply to a message withdraws that channel), research, personalisation and, for hepatitis-B patients,
sharing with the pharma company's patient programme. Children's consents are given by a guardian.

Campaigns are the usual calendar of a hospital group: always-on chronic follow-up (随访, every ~90
days), quarterly refill reminders, awareness days (全国高血压日, 联合国糖尿病日, 世界肝炎日, 世界慢阻肺日),
autumn flu vaccination and check-up offers, the internet hospital launch and a pharma patient
programme. Every campaign keeps a 10 % holdout: holdout rows are messages blocked with reason
``holdout`` (``is_holdout`` true); their organic conversions are recorded too, so that uplift can be
measured. Planted conversion rates (holdout vs treated) are in ``truth/campaigns.parquet``.

Follow-up engagement falls with the latent disengagement (planted churn driver: ignored follow-ups).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from careloop.synth import catalog
from careloop.synth.arrays import (
    BoolArray,
    Column,
    FloatArray,
    IntArray,
    day_number,
    join,
    local_seconds,
    pick,
    sigmoid,
)
from careloop.synth.cohorts import Cohorts, Memberships, Therapies
from careloop.synth.population import People
from careloop.synth.timeline import Timeline

MESSAGE_CHANNELS = ("sms", "wechat", "app_push")
SMS, WECHAT, APP_PUSH = range(3)
PURPOSES = ("care_follow_up", "marketing", "research", "personalisation", "third_party_sharing")
FOLLOW_UP_P, MARKETING_P, RESEARCH_P, PERSONALISATION_P, SHARING_P = range(5)
CONSENT_STATUSES = ("granted", "withdrawn", "refused")
GRANTED, WITHDRAWN, REFUSED = range(3)
CAPTURE_SOURCES = ("paper form at hospital", "wechat_oa form", "app", "call centre", "sms reply 回T退订")
MESSAGE_STATUSES = ("queued", "sent", "delivered", "failed", "blocked")
QUEUED, SENT, DELIVERED, FAILED, BLOCKED = range(5)
BLOCK_REASONS = ("holdout", "frequency_cap")
TOUCH_TYPES = ("delivered", "opened", "clicked", "replied", "converted", "opted_out")
T_DELIVERED, T_OPENED, T_CLICKED, T_REPLIED, T_CONVERTED, T_OPTED_OUT = range(6)
HOLDOUT_SHARE = 0.10
NEVER = 10**7  # a day number far in the future
PHARMA_RECIPIENT = "钱江制药有限公司"


@dataclass(frozen=True)
class CampaignDef:
    key: str
    name: str
    objective: str
    channel: int
    owner: str
    start_day: int
    end_day: int
    purpose: int
    audience: str  # follow_up | refill | condition:<i> | flu | check_up | online | hbv_app
    target_share: float
    base_rate: float  # conversion without the message (holdout)
    treated_rate: float  # conversion with it
    value: float  # yuan per conversion
    budget: float
    prefix: str
    suffix: str


def campaign_defs(tl: Timeline, patients: int) -> list[CampaignDef]:
    """The campaign calendar of the history (the same for every chunk)."""
    out: list[tuple[int, str, str, int, str, int, int, str, float, float, float, float, str, str]] = []
    scale = max(patients, 1000) / 1000
    for year in range(tl.as_of.year - tl.years, tl.as_of.year + 1):
        y0, y1 = day_number(date(year, 1, 1)), day_number(date(year, 12, 31))
        out.append(
            (
                y0,
                f"慢病随访（{year}年）",
                "follow_up",
                WECHAT,
                "H001",
                y0,
                y1,
                "follow_up",
                1.0,
                0.30,
                0.42,
                0.0,
                "【随访提醒】",
                "随访：请在小程序填写本期随访问卷，近期如有不适请及时就诊。",
            )
        )
        for q in range(4):
            q0 = day_number(date(year, 3 * q + 1, 1))
            q1 = day_number(date(year + (q == 3), (3 * q + 3) % 12 + 1, 1)) - 1
            out.append(
                (
                    q0,
                    f"续方提醒（{year}年Q{q + 1}）",
                    "refill",
                    SMS,
                    "H001",
                    q0,
                    q1,
                    "refill",
                    0.6,
                    0.22,
                    0.31,
                    35.0,
                    "【之江一院】您好，您的",
                    "预计近期用完，可通过“之江一院”小程序在线复诊续方，或到社区卫生服务中心配药。回T退订",
                )
            )
        for md, cond, title in (
            ((10, 8), catalog.HTN, "全国高血压日｜控制血压，从减盐开始"),
            ((11, 14), catalog.T2D, "联合国糖尿病日｜管住嘴、迈开腿，定期查血糖"),
            ((7, 28), catalog.HBV, "世界肝炎日｜乙肝患者请坚持规范抗病毒治疗"),
            ((11, 20), catalog.COPD, "世界慢阻肺日｜正确使用吸入剂，呼吸更顺畅"),
        ):
            d0 = day_number(date(year, *md)) - 3
            out.append(
                (
                    d0,
                    title.split("｜")[0] + f"健康科普（{year}）",
                    "education",
                    WECHAT,
                    "H002",
                    d0,
                    d0 + 17,
                    f"condition:{cond}",
                    0.7,
                    0.04,
                    0.07,
                    0.0,
                    "",
                    title,
                )
            )
        d0 = day_number(date(year, 9, 15))
        out.append(
            (
                d0,
                f"秋季流感疫苗接种提醒（{year}）",
                "vaccination",
                SMS,
                "CHC01",
                d0,
                d0 + 60,
                "flu",
                0.7,
                0.12,
                0.18,
                128.0,
                "【之江一院】",
                "秋季流感疫苗已开始接种，60岁以上老人及儿童可预约社区卫生服务中心接种。回T退订",
            )
        )
        d0 = day_number(date(year, 10, 10))
        out.append(
            (
                d0,
                f"秋季体检套餐（{year}）",
                "check_up",
                APP_PUSH,
                "H002",
                d0,
                d0 + 45,
                "check_up",
                0.6,
                0.02,
                0.035,
                399.0,
                "",
                "秋季体检套餐开放预约，含血脂、血糖、颈动脉超声等项目，详情见健康管理中心。",
            )
        )
        d0 = day_number(date(year, 3, 1))
        out.append(
            (
                d0,
                f"乙肝全程管理关爱计划（{year}）",
                "patient_programme",
                APP_PUSH,
                "PH01",
                d0,
                d0 + 300,
                "hbv_app",
                0.8,
                0.10,
                0.16,
                0.0,
                "",
                "乙肝全程管理关爱计划：按时服药、定期复查，健康管理师为您答疑。",
            )
        )
    launch = tl.start_day + 120
    out.append(
        (
            launch,
            "互联网医院线上复诊续方上线",
            "new_service",
            WECHAT,
            "IH01",
            launch,
            launch + 30,
            "online",
            0.8,
            0.05,
            0.09,
            19.9,
            "",
            "之江一院互联网医院上线：慢病线上复诊、在线续方、送药到家。",
        )
    )
    kept = sorted((c for c in out if tl.start_day <= c[0] <= tl.as_of_day), key=lambda c: (c[0], c[1]))
    defs = []
    per_year: dict[int, int] = {}
    for c in kept:
        (start, name, objective, channel, owner, s0, s1, audience, share, base, treated, value, pre, suf) = c
        year = (np.datetime64("1970-01-01") + np.timedelta64(start, "D")).astype(object).year
        per_year[year] = per_year.get(year, 0) + 1
        purpose = FOLLOW_UP_P if objective in ("follow_up", "refill") else MARKETING_P
        defs.append(
            CampaignDef(
                key=f"CMP{year}-{per_year[year]:02d}",
                name=name,
                objective=objective,
                channel=channel,
                owner=owner,
                start_day=max(s0, tl.start_day),
                end_day=min(s1, tl.as_of_day),
                purpose=purpose,
                audience=audience,
                target_share=share,
                base_rate=base,
                treated_rate=treated,
                value=value,
                budget=round((20_000 if objective == "follow_up" else 8_000) * scale**0.5, -2),
                prefix=pre,
                suffix=suf,
            )
        )
    return defs


@dataclass
class Consents:
    person: IntArray
    purpose: IntArray
    status: IntArray
    channel: IntArray  # message channel or -1 (all)
    at: IntArray  # UTC seconds
    capture: IntArray
    by_guardian: BoolArray
    recipient: BoolArray  # the pharma programme (third-party sharing)
    expires: IntArray  # UTC seconds or -1


@dataclass
class ConsentState:
    """Per person: from which day (until which day) each permission holds."""

    follow_up_from: IntArray
    marketing_from: IntArray  # (n, 3) by message channel
    marketing_until: IntArray  # (n, 3)


def consents(
    rng: np.random.Generator, people: People, cohorts: Cohorts, members: Memberships, tl: Timeline
) -> tuple[Consents, ConsentState]:
    n = people.n
    crm = members.crm
    join_day = np.where(
        rng.random(n) < 0.55,
        tl.start_day - rng.integers(1, 700, n),
        tl.start_day + (rng.random(n) * (tl.days - 30)).astype(np.int64),
    )
    join_day = np.minimum(np.maximum(join_day, people.birth_day + 30), tl.as_of_day)
    capture = np.select(
        [members.app & (rng.random(n) < 0.5), members.wechat_oa & (rng.random(n) < 0.7), rng.random(n) < 0.1],
        [2, 1, 3],
        default=0,
    )
    rows: list[dict[str, IntArray]] = []

    def add(who: BoolArray, purpose: int, status: int, channel: int, day: IntArray, cap: IntArray) -> None:
        idx = np.flatnonzero(who)
        rows.append(
            {
                "person": idx,
                "purpose": np.full(len(idx), purpose),
                "status": np.full(len(idx), status),
                "channel": np.full(len(idx), channel),
                "day": day[idx],
                "capture": cap[idx],
            }
        )

    fu = crm & (rng.random(n) < 0.93)
    add(fu, FOLLOW_UP_P, GRANTED, -1, join_day, capture)
    follow_up_from = np.where(fu, join_day, NEVER)
    m_from = np.full((n, 3), NEVER, dtype=np.int64)
    m_until = np.full((n, 3), NEVER, dtype=np.int64)
    eligible = (people.contact_phone > 0, members.wechat_oa, members.app)
    for ch, share in zip(range(3), (0.5, 0.6, 0.55), strict=True):
        g = crm & eligible[ch] & (rng.random(n) < share)
        g_day = np.where(ch == SMS, join_day, join_day + rng.integers(0, 60, n))
        add(g, MARKETING_P, GRANTED, ch, g_day, capture)
        w = g & (rng.random(n) < 0.08)
        w_day = g_day + 30 + (rng.random(n) * np.maximum(tl.as_of_day - g_day - 30, 1)).astype(np.int64)
        w = w & (w_day <= tl.as_of_day)
        add(w, MARKETING_P, WITHDRAWN, ch, w_day, capture)
        m_from[:, ch] = np.where(g, g_day, NEVER)
        m_until[:, ch] = np.where(w, w_day, NEVER)
    u = rng.random(n)
    add(crm & (u < 0.18), RESEARCH_P, GRANTED, -1, join_day, capture)
    add(crm & (u >= 0.18) & (u < 0.25), RESEARCH_P, REFUSED, -1, join_day, capture)
    u = rng.random(n)
    add(crm & (u < 0.55), PERSONALISATION_P, GRANTED, -1, join_day, capture)
    add(crm & (u >= 0.55) & (u < 0.63), PERSONALISATION_P, REFUSED, -1, join_day, capture)
    hbv = crm & cohorts.treated[:, catalog.HBV] & (rng.random(n) < 0.35)
    add(hbv, SHARING_P, GRANTED, -1, np.maximum(join_day, tl.start_day + 60), capture)

    c = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    m = len(c["person"])
    at = local_seconds(c["day"], 8 * 3600 + rng.integers(0, 13 * 3600, m))
    research = c["purpose"] == RESEARCH_P
    ledger = Consents(
        person=c["person"],
        purpose=c["purpose"],
        status=c["status"],
        channel=c["channel"],
        at=at,
        capture=c["capture"],
        by_guardian=people.age[c["person"]] < 14,
        recipient=c["purpose"] == SHARING_P,
        expires=np.where(research & (c["status"] == GRANTED), at + 3 * 365 * 86_400, -1),
    )
    return ledger, ConsentState(follow_up_from, m_from, m_until)


@dataclass
class Messages:
    person: IntArray
    campaign: IntArray
    day: IntArray
    created: IntArray
    sent: IntArray  # -1 when not sent
    status: IntArray
    holdout: BoolArray
    block_reason: IntArray  # -1 none
    variable: IntArray  # drug (refill) or condition (follow-up) index, -1 none
    cost: FloatArray

    @property
    def n(self) -> int:
        return len(self.person)

    def subset(self, keep: BoolArray) -> Messages:
        fields = Messages.__dataclass_fields__
        return Messages(**{f: getattr(self, f)[keep] for f in fields})


def schedule_messages(
    rng: np.random.Generator,
    people: People,
    cohorts: Cohorts,
    members: Memberships,
    th: Therapies,
    state: ConsentState,
    defs: list[CampaignDef],
    tl: Timeline,
) -> Messages:
    """Every message of every campaign to this chunk's people (holdouts included)."""
    n = people.n
    crm = members.crm
    chronic = cohorts.chronic
    first_drug = np.full(n, -1, dtype=np.int64)
    first_drug[th.person[::-1]] = th.drug[::-1]  # the first therapy of each person
    parts: list[dict[str, IntArray]] = []
    # always-on follow-up: every ~90 days from a personal phase
    fu_defs = [(i, d) for i, d in enumerate(defs) if d.audience == "follow_up"]
    phase = rng.integers(0, 90, n)
    for k in range(tl.days // 90 + 1):
        day = tl.start_day + phase + 90 * k
        for ci, d in fu_defs:
            who = crm & chronic & (day >= d.start_day) & (day <= d.end_day) & (day >= state.follow_up_from)
            idx = np.flatnonzero(who)
            parts.append(_msg(idx, ci, day[idx], cohorts.primary_condition[idx]))
    for ci, d in enumerate(defs):
        if d.audience == "follow_up":
            continue
        day = d.start_day + rng.integers(0, 6, n)
        if d.audience == "refill":
            active = np.zeros(n, dtype=np.bool_)
            live = (th.start_day <= d.end_day) & (th.stop_day >= d.start_day)
            active[th.person[live]] = True
            who = chronic & active
        elif d.audience.startswith("condition:"):
            who = cohorts.has[:, int(d.audience.split(":")[1])]
        elif d.audience == "flu":
            who = (people.age >= 60) | (people.age < 14)
        elif d.audience == "check_up":
            who = people.age >= 30
        elif d.audience == "online":
            who = chronic & members.online_capable
        else:  # hbv_app
            who = cohorts.treated[:, catalog.HBV] & members.app
        if d.purpose == FOLLOW_UP_P:
            allowed = day >= state.follow_up_from
        else:
            allowed = (day >= state.marketing_from[:, d.channel]) & (
                day < state.marketing_until[:, d.channel]
            )
        who = crm & who & allowed & (rng.random(n) < d.target_share)
        idx = np.flatnonzero(who)
        var = first_drug[idx] if d.audience == "refill" else np.full(len(idx), -1)
        parts.append(_msg(idx, ci, day[idx], var))
    c = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    m = len(c["person"])
    channel = np.array([d.channel for d in defs])[c["campaign"]]
    sod = np.where(
        rng.random(m) < 0.6, 9 * 3600 + rng.integers(0, 9000, m), 14 * 3600 + rng.integers(0, 10800, m)
    )
    sent_at = local_seconds(c["day"], sod)
    holdout = rng.random(m) < HOLDOUT_SHARE
    u = rng.random(m)
    status = np.where(u < 0.03, FAILED, np.where(u < 0.04, BLOCKED, np.where(u < 0.06, SENT, DELIVERED)))
    status = np.where(holdout, BLOCKED, status)
    block = np.where(holdout, 0, np.where(status == BLOCKED, 1, -1))
    cost = np.where((channel == SMS) & (status != BLOCKED), 0.045, 0.0)
    return Messages(
        person=c["person"],
        campaign=c["campaign"],
        day=c["day"],
        created=sent_at - rng.integers(60, 7200, m),
        sent=np.where(status == BLOCKED, -1, sent_at),
        status=status,
        holdout=holdout,
        block_reason=block,
        variable=c["variable"],
        cost=cost,
    )


def _msg(idx: IntArray, campaign: int, day: IntArray, variable: IntArray) -> dict[str, IntArray]:
    return {
        "person": idx,
        "campaign": np.full(len(idx), campaign, dtype=np.int64),
        "day": np.asarray(day, dtype=np.int64),
        "variable": np.asarray(variable, dtype=np.int64),
    }


@dataclass
class Touches:
    message: IntArray
    person: IntArray
    kind: IntArray
    at: IntArray
    value: FloatArray

    @staticmethod
    def concat(parts: list[Touches]) -> Touches:
        fields = Touches.__dataclass_fields__
        return Touches(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def subset(self, keep: BoolArray) -> Touches:
        fields = Touches.__dataclass_fields__
        return Touches(**{f: getattr(self, f)[keep] for f in fields})


_OPEN = np.array([0.0, 0.42, 0.14])  # by channel: SMS opens are not tracked
_CLICK = np.array([0.05, 0.35, 0.30])  # SMS: link clicks; others: given opened
_OPT_OUT = np.array([0.006, 0.002, 0.003])


def touches(
    rng: np.random.Generator,
    msgs: Messages,
    select: BoolArray,
    defs: list[CampaignDef],
    engagement_shift: FloatArray,
) -> Touches:
    """Responses to the selected messages. `engagement_shift` (per message, logit scale) lowers the
    chance of opening, clicking and replying for disengaged patients."""
    idx = np.flatnonzero(select & ((msgs.status == DELIVERED) | msgs.holdout))
    m = len(idx)
    camp = msgs.campaign[idx]
    channel = np.array([d.channel for d in defs])[camp]
    objective = np.array([d.objective for d in defs])[camp]
    shift = engagement_shift[idx]
    treated = ~msgs.holdout[idx]
    t0 = np.where(treated, msgs.sent[idx], local_seconds(msgs.day[idx], 9 * 3600 + np.zeros(m, np.int64)))

    def logit(p: FloatArray) -> FloatArray:
        q = np.clip(p, 1e-4, 1 - 1e-4)
        out: FloatArray = np.log(q / (1 - q))
        return out

    p_open = np.where(_OPEN[channel] > 0, sigmoid(logit(_OPEN[channel]) + shift), 0.0)
    opened = treated & (rng.random(m) < p_open)
    p_click = np.where(channel == SMS, sigmoid(logit(_CLICK[channel]) + shift), _CLICK[channel])
    clicked = treated & np.where(channel == SMS, rng.random(m) < p_click, opened & (rng.random(m) < p_click))
    follow_up = objective == "follow_up"
    replied = (
        treated & follow_up & (channel == SMS) & (rng.random(m) < sigmoid(logit(np.full(m, 0.3)) + shift))
    )
    base = np.array([d.base_rate for d in defs])[camp]
    lift = np.array([d.treated_rate for d in defs])[camp]
    converted = rng.random(m) < np.where(treated, sigmoid(logit(lift) + 0.5 * shift), base)
    opted = treated & (rng.random(m) < _OPT_OUT[channel])
    value = np.array([d.value for d in defs])[camp]
    delay_open = rng.exponential(3 * 3600, m).astype(np.int64) + 30
    kinds = [
        (treated, T_DELIVERED, rng.integers(1, 90, m)),
        (opened, T_OPENED, delay_open),
        (clicked, T_CLICKED, delay_open + rng.integers(5, 300, m)),
        (replied, T_REPLIED, delay_open + rng.integers(30, 3600, m)),
        (converted, T_CONVERTED, rng.integers(3600, 10 * 86_400, m)),
        (opted, T_OPTED_OUT, delay_open + rng.integers(10, 600, m)),
    ]
    parts = []
    for mask, kind, delay in kinds:
        sel = np.flatnonzero(mask)
        parts.append(
            Touches(
                message=idx[sel],
                person=msgs.person[idx[sel]],
                kind=np.full(len(sel), kind),
                at=t0[sel] + delay[sel],
                value=np.where(kind == T_CONVERTED, value[sel], np.nan),
            )
        )
    return Touches.concat(parts)


def apply_opt_outs(
    msgs: Messages, tch: Touches, defs: list[CampaignDef], rng: np.random.Generator, as_of_end: int
) -> tuple[BoolArray, BoolArray, Consents]:
    """An opt-out stops later marketing messages on that channel and is recorded as a withdrawal.
    Returns keep masks for messages and touches and the withdrawal rows."""
    channel = np.array([d.channel for d in defs])[msgs.campaign]
    marketing = np.array([d.purpose == MARKETING_P for d in defs])[msgs.campaign]
    opt = (tch.kind == T_OPTED_OUT) & (tch.at <= as_of_end)
    key_t = tch.person[opt] * 3 + channel[tch.message[opt]]
    first: dict[int, int] = {}
    order = np.argsort(tch.at[opt], kind="stable")
    for k, at in zip(key_t[order].tolist(), tch.at[opt][order].tolist(), strict=True):
        first.setdefault(k, at)
    keys = np.array(list(first), dtype=np.int64)
    times = np.array([first[k] for k in keys], dtype=np.int64)
    sorter = np.argsort(keys)
    keys, times = keys[sorter], times[sorter]
    msg_key = msgs.person * 3 + channel
    if len(keys):
        pos = np.clip(np.searchsorted(keys, msg_key), 0, len(keys) - 1)
        after = (keys[pos] == msg_key) & (msgs.created > times[pos]) & marketing
    else:
        after = np.zeros(msgs.n, dtype=np.bool_)
    keep_msg = ~after
    keep_touch = keep_msg[tch.message] & ~(tch.at > as_of_end)
    withdrawal = Consents(
        person=keys // 3,
        purpose=np.full(len(keys), MARKETING_P),
        status=np.full(len(keys), WITHDRAWN),
        channel=keys % 3,
        at=times + rng.integers(1, 120, len(keys)),
        capture=np.full(len(keys), 4),
        by_guardian=np.zeros(len(keys), np.bool_),
        recipient=np.zeros(len(keys), np.bool_),
        expires=np.full(len(keys), -1),
    )
    return keep_msg, keep_touch, withdrawal


def message_content(msgs: Messages, defs: list[CampaignDef]) -> Column:
    prefix = pick([d.prefix for d in defs], msgs.campaign)
    suffix = pick([d.suffix for d in defs], msgs.campaign)
    is_refill = np.array([d.audience == "refill" for d in defs])[msgs.campaign] & (msgs.variable >= 0)
    is_fu = np.array([d.audience == "follow_up" for d in defs])[msgs.campaign] & (msgs.variable >= 0)
    drug = pick(
        [d.generic for d in catalog.DRUGS] + [""], np.where(is_refill, msgs.variable, len(catalog.DRUGS))
    )
    cond = pick(
        [c.short for c in catalog.CONDITIONS] + [""], np.where(is_fu, msgs.variable, len(catalog.CONDITIONS))
    )
    empty = pa.scalar("", pa.string())
    middle = pc.if_else(pa.array(is_refill), drug, pc.if_else(pa.array(is_fu), cond, empty))
    return join(prefix, middle, suffix)
