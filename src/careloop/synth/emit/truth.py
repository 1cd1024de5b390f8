"""Ground-truth rows: households, persons, churn, no-show and adherence."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from careloop.synth import appointments as appt
from careloop.synth import catalog, cohorts, geography, names, registry, sources
from careloop.synth.arrays import (
    Column,
    bools,
    const,
    dates,
    floats,
    ints,
    join,
    null_where,
    pick,
    timestamps,
    where,
)
from careloop.synth.emit.base import EmitterBase
from careloop.synth.identifiers import e164, id_numbers
from careloop.synth.registry import HIS_SOURCES
from careloop.synth.timeline import CHURN_WINDOW_DAYS

CONDITION_CODES = [c.code for c in catalog.CONDITIONS]


class TruthRecords(EmitterBase):
    def truths(self) -> None:
        pid = sources.person_ids(self.d.people.person_id)
        self._households(pid)
        self._persons(pid)
        self._churn(pid)
        self._no_show(pid)
        self._adherence(pid)

    def _households(self, pid: Column) -> None:
        people = self.d.people
        guardian = people.guardian
        self.truth["households"].append(
            {
                "person_id": pid,
                "household_id": sources.household_ids(people.household),
                "relationship": pick(("self", "spouse", "child", "parent"), people.relationship),
                "guardian_person_id": null_where(pid.take(pa.array(np.maximum(guardian, 0))), guardian < 0),
            }
        )

    def _persons(self, pid: Column) -> None:
        d = self.d
        people = d.people
        cond_text = const("", people.n)
        for i, code in enumerate(CONDITION_CODES):
            cond_text = where(d.cohorts.has[:, i], join(cond_text, code + ";"), cond_text)
        self.truth["persons"].append(
            {
                "person_id": pid,
                "name": names.name_text(people.surname, people.given1, people.given2),
                "sex": pick(("male", "female"), people.female.astype(np.int64)),
                "birth_date": dates(people.birth_day),
                "id_number": id_numbers(
                    geography.AREA_CODE_INT[people.area_code], people.birth_day, people.id_sequence
                ),
                "phone": e164(people.own_phone),
                "contact_phone": e164(people.contact_phone),
                "old_phone": e164(people.old_phone),
                "district": pick([x.name for x in geography.DISTRICTS], people.district),
                "household_id": sources.household_ids(people.household),
                "conditions": cond_text,
                "uses_wechat_oa": bools(d.members.wechat_oa),
                "uses_wechat_mp": bools(d.members.wechat_mp),
                "uses_app": bools(d.members.app),
            }
        )

    def _churn(self, pid: Column) -> None:
        d = self.d
        people, tl = d.people, self.net.timeline
        ch = d.churn
        th = d.therapies
        has_th = np.zeros(people.n, dtype=np.bool_)
        has_th[th.person] = True
        sel = np.flatnonzero(has_th)
        t = pa.array(sel)
        active = ch.active[sel]
        self.truth["churn"].append(
            {
                "person_id": pid.take(t),
                "cohort": pick(CONDITION_CODES, d.cohorts.primary_condition[sel]),
                "active_at_cutoff": bools(active),
                "cutoff_date": dates(np.full(len(sel), tl.cutoff_day)),
                "window_days": ints(np.full(len(sel), CHURN_WINDOW_DAYS)),
                "churned": bools(ch.churned[sel], active),
                "p_true": floats(np.nan_to_num(ch.p_true[sel]), active),
                "noise": floats(ch.noise[sel], active),
                "cancelled_appointments_180d": ints(ch.cancelled[sel]),
                "ignored_follow_ups_180d": ints(ch.ignored[sel]),
                "app_activity_ratio": floats(
                    np.nan_to_num(ch.activity_ratio[sel]), ~np.isnan(ch.activity_ratio[sel])
                ),
                "satisfaction_change": floats(
                    np.nan_to_num(ch.satisfaction_change[sel]), ~np.isnan(ch.satisfaction_change[sel])
                ),
                "distance_km": floats(ch.distance_km[sel], decimals=2),
                "monthly_cost_yuan": floats(ch.monthly_cost[sel], decimals=2),
                "age_80_plus": bools(ch.age_80_plus[sel]),
                "disengagement": floats(people.disengagement[sel], decimals=4),
            }
        )

    def _no_show(self, pid: Column) -> None:
        people = self.d.people
        a = self.d.appointments
        org_his = registry.ORG_HIS[a.org]
        src = pick(HIS_SOURCES, org_his)
        self.truth["no_show"].append(
            {
                "source": src,
                "appointment_key": self.appt_keys,
                "person_id": pid.take(pa.array(a.person)),
                "scheduled_at": timestamps(a.scheduled),
                "status": pick(appt.STATUSES, a.status),
                "outcome": pick(appt.STATUSES, a.outcome),
                "origin": pick(appt.ORIGINS, a.origin),
                "p_no_show": floats(np.nan_to_num(a.p_no_show), ~np.isnan(a.p_no_show)),
                "p_cancel": floats(np.nan_to_num(a.p_cancel), ~np.isnan(a.p_cancel)),
                "lead_time_days": ints(a.lead_days),
                "prior_no_shows": ints(a.prior_no_shows),
                "distance_km": floats(a.distance_km, decimals=2),
                "org_tier": pick(registry.TIER_NAMES, a.tier),
                "age": ints(people.age[a.person]),
                "weekday": ints(a.weekday),
                "rain_index": floats(a.rain, decimals=3),
                "person_effect": floats(people.no_show_effect[a.person], decimals=4),
                "channel": pick(appt.CHANNELS, a.channel),
            }
        )

    def _adherence(self, pid: Column) -> None:
        d = self.d
        th, tl = d.therapies, self.net.timeline
        lapse = np.where(th.pattern == cohorts.LAPSED, th.stop_day, -1)
        seq = [pick(cohorts.CHANNELS, th.channel_seq[:, k]) for k in range(4)]
        n_sw = (th.switch_days < tl.as_of_day + 5000).sum(axis=1)
        path = seq[0]
        for k in range(1, 4):
            path = where(n_sw >= k, join(path, ">", seq[k]), path)
        has_pdc = ~np.isnan(d.pdc)
        self.truth["adherence"].append(
            {
                "person_id": pid.take(pa.array(th.person)),
                "drug_class": pick(catalog.DRUG_CLASSES, catalog.DRUG_CLASS_INDEX[th.drug]),
                "condition": pick(CONDITION_CODES, th.condition),
                "drug_code": pick([x.atc for x in catalog.DRUGS], th.drug),
                "pattern": pick(cohorts.PATTERNS, th.pattern),
                "n_fills": ints(d.n_fills),
                "index_date": dates(d.index_day, d.index_day >= 0),
                "period_end": dates(np.full(th.n, tl.as_of_day)),
                "pdc": floats(np.nan_to_num(d.pdc), has_pdc, decimals=4),
                "adherent": bools(d.pdc >= 0.8, has_pdc),
                "lapse_date": dates(lapse, lapse >= 0),
                "channel_path": where(
                    th.pattern == cohorts.SWITCHED, path, pick(cohorts.CHANNELS, th.base_channel)
                ),
                "churned": bools(d.churn.churned[th.person]),
            }
        )
