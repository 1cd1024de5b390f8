"""One chunk of the network, simulated in causal order.

people -> conditions, places, digital services -> therapies -> refills -> visits, bookings (no-show
model), prescriptions, dispenses, consultations -> consents, campaign messages -> activity, responses
and feedback before the cut-off -> churn drivers and outcome -> the churned patients' chronic activity
after the cut-off is removed, the rest of the window is simulated -> measurements and devices.

Every step draws from the chunk's own generator (seeded by the network seed and the chunk number),
in a fixed order, so a chunk is reproducible on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth import appointments as appt
from careloop.synth import behaviour, catalog, churn, cohorts, medication, observations, outreach, registry
from careloop.synth.arrays import BoolArray, FloatArray, IntArray, lookup, rng_for, run_starts, stable_uniform
from careloop.synth.behaviour import CH_APP, CH_MP, CH_OA, E, Events, Feedback, make_events
from careloop.synth.care import CHRONIC_KINDS, INPATIENT, ONLINE_VISIT, Care, build_care
from careloop.synth.cohorts import CarePlaces, Cohorts, Memberships, Therapies
from careloop.synth.medication import Fills
from careloop.synth.population import People, generate_people
from careloop.synth.timeline import DRIVER_WINDOW_DAYS, FUTURE_DAYS, Timeline


@dataclass
class Network:
    """What every chunk shares."""

    seed: int
    patients: int
    timeline: Timeline
    registry: registry.Registry
    campaigns: list[outreach.CampaignDef]


@dataclass
class ChunkData:
    chunk: int
    rng: np.random.Generator
    people: People
    cohorts: Cohorts
    places: CarePlaces
    members: Memberships
    therapies: Therapies
    fills: Fills
    fill_keep: BoolArray
    care: Care
    visit_keep: BoolArray
    rx_keep: BoolArray
    dispense_keep: BoolArray
    consult_keep: BoolArray
    appointments: appt.Appointments
    consents: outreach.Consents
    messages: outreach.Messages
    touches: outreach.Touches
    events: Events
    feedback: Feedback
    clinic_obs: observations.Observations
    devices: observations.Devices
    home_obs: observations.Observations
    churn: churn.Churn
    pdc: FloatArray
    n_fills: IntArray
    index_day: IntArray
    joined: dict[int, IntArray]  # event source -> day each person started using it


def simulate(net: Network, chunk: int, first_person: int, n: int) -> ChunkData:
    rng = rng_for(net.seed, 1, chunk)
    tl, reg = net.timeline, net.registry
    c = tl.cutoff_day
    people = generate_people(rng, chunk, first_person, n, tl.as_of_day)
    coh = cohorts.assign_conditions(rng, people, tl)
    places = cohorts.assign_places(rng, people, coh)
    members = cohorts.assign_memberships(rng, people, coh)
    th = cohorts.assign_therapies(rng, people, coh, members, tl)
    fills, next_day = medication.simulate_fills(rng, th, people, tl)
    care = build_care(rng, people, coh, places, members, th, fills, tl, reg)

    # bookings beyond the visits: the next chronic visit already booked, planted cancellations
    active = churn.active_at_cutoff(th, n, tl)
    prior = np.bincount(care.appointments.person[care.appointments.outcome == appt.NO_SHOW], minlength=n)
    future = _future_bookings(rng, people, members, places, th, fills, next_day, prior, tl, reg)
    n_cancel = churn.planted_cancellations(rng, people, active)
    who = np.flatnonzero(n_cancel > 0)
    cond = coh.primary_condition[who]
    org = places.primary[who]
    dept = reg.dept_of[org, catalog.CONDITION_SPECIALTY[cond]]
    doctor = reg.doctors(dept, stable_uniform(people.person_id[who], dept))
    planted = appt.driver_cancellations(
        rng, people, members, who, n_cancel[who], org, dept, doctor, cond, c - DRIVER_WINDOW_DAYS, c - 1, tl
    )
    appts = appt.Appointments.concat([care.appointments, future, planted])

    # consents, messages and the first responses
    consents, state = outreach.consents(rng, people, coh, members, tl)
    defs = net.campaigns
    msgs = outreach.schedule_messages(rng, people, coh, members, th, state, defs, tl)
    follow_up = np.array([d.objective == "follow_up" for d in defs])[msgs.campaign]
    z = people.disengagement[msgs.person]
    shift = np.where(follow_up, 0.6 - 1.1 * z, -0.3 * z)
    pre = msgs.day < c
    touches_pre = outreach.touches(rng, msgs, pre, defs, shift)

    # organic activity and feedback before the cut-off
    chronic = coh.chronic
    member = {
        behaviour.APP_SRC: members.app,
        behaviour.OA_SRC: members.wechat_oa,
        behaviour.MP_SRC: members.wechat_mp,
    }
    joined = {s: behaviour.join_days(rng, n, tl) for s in member}
    ev_pre = [
        behaviour.organic_events(rng, people, s, member[s], joined[s], chronic, tl, post=False)
        for s in member
    ]
    v = care.visits
    his_of_visit = registry.ORG_HIS[v.org]
    top = registry.ORG_TIER[v.org] == 0
    online = v.kind == ONLINE_VISIT
    fb_pre = behaviour.visit_feedback(
        rng,
        people,
        members.wechat_mp,
        members.app,
        chronic,
        v.person,
        his_of_visit,
        np.arange(v.n),
        v.org,
        v.end,
        online,
        top,
        tl,
        None,
    )
    fb_pre = fb_pre.subset((fb_pre.at + 8 * 3600) // 86_400 < c)

    # churn: drivers measured before the cut-off, then the outcome
    cancelled = churn.window_counts(
        appts.person[appts.status == appt.CANCELLED],
        appts.day[appts.status == appt.CANCELLED],
        c - DRIVER_WINDOW_DAYS,
        c,
        n,
    )
    engaged = np.zeros(msgs.n, dtype=np.bool_)
    reply = np.isin(touches_pre.kind, (outreach.T_OPENED, outreach.T_CLICKED, outreach.T_REPLIED))
    engaged[touches_pre.message[reply]] = True
    ignored_msg = follow_up & (msgs.status == outreach.DELIVERED) & ~msgs.holdout & ~engaged
    ignored = churn.window_counts(
        msgs.person[ignored_msg], msgs.day[ignored_msg], c - DRIVER_WINDOW_DAYS, c, n
    )
    organic = Events.concat(ev_pre)
    o_day = (organic.at + 8 * 3600) // 86_400
    recent = churn.window_counts(organic.person, o_day, c - 90, c, n)
    earlier = churn.window_counts(organic.person, o_day, c - 180, c - 90, n)
    digital = members.app | members.wechat_oa | members.wechat_mp
    fb_day = (fb_pre.at + 8 * 3600) // 86_400
    ch = churn.decide(
        rng,
        people,
        places,
        th,
        active,
        cancelled,
        ignored,
        recent,
        earlier,
        digital,
        fb_pre.person,
        fb_day,
        fb_pre.score,
        tl,
    )
    churned = ch.churned

    # the churned stop chronic care after the cut-off
    visit_keep = ~(churned[v.person] & np.isin(v.kind, CHRONIC_KINDS) & (v.day >= c))
    fill_keep = ~(churned[th.person[fills.therapy]] & (fills.day >= c))
    rx = care.rx
    rx_keep = visit_keep[rx.visit] & lookup(fill_keep, rx.fill, True)
    d = care.dispenses
    dispense_keep = lookup(fill_keep, d.fill, True) & lookup(visit_keep, d.visit, True)
    consult_keep = visit_keep[care.consultations.visit]
    appt_keep = lookup(visit_keep, appts.visit, True)
    appt_keep &= ~(
        churned[appts.person]
        & (appts.condition >= 0)
        & (appts.day >= c)
        & (appts.origin != appt.CHURN_DRIVER)
    )
    appts = appts.subset(appt_keep)

    # the rest of the window
    shift_post = shift - np.where(churned[msgs.person], 1.0, 0.0)
    touches_post = outreach.touches(rng, msgs, ~pre, defs, shift_post)
    tch = outreach.Touches.concat([touches_pre, touches_post])
    as_of_end = (tl.as_of_day + 1) * 86_400 - 8 * 3600 - 1
    keep_msg, keep_touch, withdrawals = outreach.apply_opt_outs(msgs, tch, defs, rng, as_of_end)
    consents = _concat_consents([consents, withdrawals])
    ev_post = [
        behaviour.organic_events(rng, people, s, member[s], joined[s], chronic, tl, True, churned)
        for s in member
    ]
    fb_post = behaviour.visit_feedback(
        rng,
        people,
        members.wechat_mp,
        members.app,
        chronic,
        v.person,
        his_of_visit,
        np.arange(v.n),
        v.org,
        v.end,
        online,
        top,
        tl,
        churned,
    )
    fb_post = fb_post.subset(((fb_post.at + 8 * 3600) // 86_400 >= c) & visit_keep[fb_post.visit])
    inpatient = np.flatnonzero((v.enc_class == INPATIENT) & visit_keep)
    calls, fb_calls = behaviour.discharge_calls(
        rng, people, v.person[inpatient], v.org[inpatient], v.end[inpatient], tl, churned
    )
    derived = _derived_events(rng, people, members, appts, care, consult_keep)
    inquiries = behaviour.inquiry_calls(rng, people, chronic, tl)
    events = Events.concat([*ev_pre, *ev_post, derived, calls, inquiries])
    feedback = Feedback.concat([fb_pre, fb_post, fb_calls])

    q, lapse = observations.control(people, coh, th)
    clinic = observations.clinic(rng, people, v, visit_keep, q, lapse)
    dev = observations.devices(rng, people, coh, members.app, churned, tl)
    home = observations.home_readings(rng, people, dev, q, lapse)

    kept = fills.subset(fill_keep)
    pdc, n_fills, index_day = medication.pdc(kept, th.n, tl.as_of_day)
    return ChunkData(
        chunk=chunk,
        rng=rng,
        people=people,
        cohorts=coh,
        places=places,
        members=members,
        therapies=th,
        fills=fills,
        fill_keep=fill_keep,
        care=care,
        visit_keep=visit_keep,
        rx_keep=rx_keep,
        dispense_keep=dispense_keep,
        consult_keep=consult_keep,
        appointments=appts,
        consents=consents,
        messages=msgs.subset(keep_msg),
        touches=_remap_touches(tch.subset(keep_touch), keep_msg),
        events=events,
        feedback=feedback,
        clinic_obs=clinic,
        devices=dev,
        home_obs=home,
        churn=ch,
        pdc=pdc,
        n_fills=n_fills,
        index_day=index_day,
        joined=joined,
    )


def _remap_touches(t: outreach.Touches, keep_msg: BoolArray) -> outreach.Touches:
    """Message indices after dropping messages."""
    new_index = np.cumsum(keep_msg) - 1
    t.message = new_index[t.message]
    return t


def _concat_consents(parts: list[outreach.Consents]) -> outreach.Consents:
    fields = outreach.Consents.__dataclass_fields__
    return outreach.Consents(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def _future_bookings(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    places: CarePlaces,
    th: Therapies,
    fills: Fills,
    next_day: IntArray,
    prior: IntArray,
    tl: Timeline,
    reg: registry.Registry,
) -> appt.Appointments:
    """The next hospital visit of ongoing therapies, when it falls within FUTURE_DAYS of the as-of date."""
    last_channel = np.full(th.n, -1, dtype=np.int64)
    last_channel[fills.therapy] = fills.channel  # fills are sorted by therapy and day: the last one wins
    due = (
        (next_day > tl.as_of_day)
        & (next_day <= tl.as_of_day + FUTURE_DAYS)
        & (last_channel == cohorts.HOSPITAL)
    )
    idx = np.flatnonzero(due)
    idx = idx[np.lexsort((next_day[idx], th.person[idx]))]
    first = run_starts(th.person[idx])
    idx = idx[first]
    person = th.person[idx]
    cond = th.condition[idx]
    org = places.primary[person]
    dept = reg.dept_of[org, catalog.CONDITION_SPECIALTY[cond]]
    doctor = reg.doctors(dept, stable_uniform(people.person_id[person], dept))
    return appt.future_bookings(
        rng, people, members, person, org, dept, doctor, next_day[idx], cond, prior, tl
    )


def _derived_events(
    rng: np.random.Generator,
    people: People,
    members: Memberships,
    appts: appt.Appointments,
    care: Care,
    consult_keep: BoolArray,
) -> Events:
    """Events that mirror bookings and online consultations in the app, WeChat and the call centre."""
    parts: list[Events] = []
    head = people.head
    for channel in (appt.WECHAT, appt.APP, appt.PHONE):
        sel = np.flatnonzero(appts.channel == channel)
        p = appts.person[sel]
        lead = np.clip(appts.lead_days[sel], 0, 365)
        at = appts.booked[sel]
        if channel == appt.WECHAT:
            in_mp = members.wechat_mp[p] | ~members.wechat_oa[p]
            actor = np.where(members.wechat_mp[p] | members.wechat_oa[p], p, head[p])
            in_mp = np.where(actor == p, in_mp, members.wechat_mp[actor] | ~members.wechat_oa[actor])
            src = np.where(in_mp, behaviour.MP_SRC, behaviour.OA_SRC)
            ch = np.where(in_mp, CH_MP, CH_OA)
            parts.append(
                make_events(
                    actor, src, ch, behaviour.TRACK, E["appointment_booked"], at, appts.org[sel], lead, False
                )
            )
        elif channel == appt.APP:
            parts.append(
                make_events(
                    p,
                    behaviour.APP_SRC,
                    CH_APP,
                    behaviour.TRACK,
                    E["appointment_booked"],
                    at,
                    appts.org[sel],
                    lead,
                    False,
                )
            )
        else:
            parts.append(
                make_events(
                    p,
                    behaviour.CALL_SRC,
                    behaviour.CH_CALL,
                    behaviour.TRACK,
                    E["call_inbound"],
                    at,
                    np.zeros(len(sel), np.int64),
                    60 + rng.exponential(120, len(sel)).astype(np.int64),
                    False,
                )
            )
    cs = care.consultations
    sel = np.flatnonzero(consult_keep)
    p = cs.person[sel]
    via_app = members.app[p] & (~members.wechat_mp[p] | (rng.random(len(sel)) < 0.5))
    start = cs.start[sel] - rng.integers(60, 900, len(sel))
    parts.append(
        make_events(
            p,
            np.where(via_app, behaviour.APP_SRC, behaviour.MP_SRC),
            np.where(via_app, CH_APP, CH_MP),
            behaviour.TRACK,
            E["consultation_started"],
            start,
            cs.mode[sel],
            cs.condition[sel],
            False,
        )
    )
    return Events.concat(parts)


__all__ = ["ChunkData", "Network", "simulate"]
