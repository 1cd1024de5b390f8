"""Patient records of every source (with identity noise), identifiers, coverage and identity truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from careloop.synth import behaviour, cohorts, registry, sources
from careloop.synth.arrays import (
    BoolArray,
    IntArray,
    const,
    dates,
    join,
    local_day,
    null_where,
    numbered,
    permute,
    pick,
)
from careloop.synth.emit.base import (
    IH,
    PAYER_KEYS,
    EmitterBase,
)
from careloop.synth.files import PATIENT_SOURCES
from careloop.synth.registry import HIS_SOURCES


class PatientRecords(EmitterBase):
    def memberships(self) -> tuple[dict[str, BoolArray], dict[str, IntArray]]:
        d, n = self.d, self.d.people.n
        v = d.care.visits
        member = {s: np.zeros(n, dtype=np.bool_) for s in PATIENT_SOURCES}
        first = {s: np.full(n, sources.NEVER, dtype=np.int64) for s in PATIENT_SOURCES}

        def seen(source: str, person: IntArray, day: IntArray) -> None:
            member[source][person] = True
            np.minimum.at(first[source], person, day)

        his = registry.ORG_HIS[v.org]
        for i, s in enumerate(HIS_SOURCES):
            sel = d.visit_keep & (his == i)
            seen(s, v.person[sel], v.day[sel])
            a = d.appointments
            sel_a = registry.ORG_HIS[a.org] == i
            seen(s, a.person[sel_a], a.day[sel_a])
        disp = d.care.dispenses
        for s, ch in (("pharmacy", cohorts.RETAIL), ("dtp", cohorts.DTP)):
            sel = d.dispense_keep & (disp.channel == ch)
            seen(s, disp.person[sel], local_day(disp.at[sel]))
        loyal = np.flatnonzero((d.people.age >= 18) & (self.rng.random(n) < 0.08))
        seen("pharmacy", loyal, np.full(len(loyal), self.net.timeline.start_day - 30))
        cs = d.care.consultations
        seen(IH, cs.person[d.consult_keep], local_day(cs.start[d.consult_keep]))
        ev = d.events
        for src, name in (
            (behaviour.APP_SRC, "app"),
            (behaviour.OA_SRC, "wechat_oa"),
            (behaviour.MP_SRC, "wechat_mp"),
        ):
            m = (d.members.app, d.members.wechat_oa, d.members.wechat_mp)[src]
            idx = np.flatnonzero(m)
            seen(name, idx, d.joined[src][idx])
            sel = ev.source == src
            seen(name, ev.person[sel], local_day(ev.at[sel]))
        sel = ev.source == behaviour.CALL_SRC
        seen("call_centre", ev.person[sel], local_day(ev.at[sel]))
        fb = d.feedback
        sel = fb.source == -2
        seen("call_centre", fb.person[sel], local_day(fb.at[sel]))
        c = d.consents
        seen("crm", c.person, local_day(c.at))
        seen("crm", d.messages.person, d.messages.day)
        return member, first

    def patients(self, member: dict[str, BoolArray], first: dict[str, IntArray]) -> None:
        rng, people = self.rng, self.d.people
        n = people.n
        # one of each phone changer's sources still holds the old number
        matrix = np.column_stack([member[s] for s in PATIENT_SOURCES]) * rng.random((n, len(PATIENT_SOURCES)))
        old_src = np.argmax(matrix, axis=1)
        for si, s in enumerate(PATIENT_SOURCES):
            idx = np.flatnonzero(member[s])
            old_here = (old_src == si) & (people.old_phone > 0)
            rec = sources.records(rng, people, self.keys, s, idx, first[s], old_here)
            cols = rec.columns
            self._identity(s, rec)
            if s == "app":
                holder_family = self._app_family(member["app"])
                is_holder = holder_family[idx]
                fam = sources.family_fields(people, self.keys, idx, np.zeros(len(idx), np.bool_))
                cols.update({k: null_where(v, ~is_holder) for k, v in fam.items()})
            self.add(s, "patient", cols)
            if s in HIS_SOURCES:
                dup_rec, has_dup = sources.duplicates(rng, people, self.keys, s, idx, first[s])
                self.dup[s] = has_dup
                self._identity(s, dup_rec)
                self.add(s, "patient", dup_rec.columns)
                self._his_identifiers(s, idx)
            if s in ("wechat_oa", "wechat_mp"):
                self._wechat_identifiers(s, idx)
            if s == "app":
                self._app_identifiers(idx)

    def _identity(self, source: str, rec: sources.Records) -> None:
        self.truth["identity"].append(
            {
                "source": const(source, rec.n),
                "patient_key": rec.truth_keys,
                "person_id": sources.person_ids(rec.truth_person),
            }
        )

    def _app_family(self, app_member: BoolArray) -> BoolArray:
        """App account holders (household heads) add family members as profiles; returns the holders."""
        rng, people = self.rng, self.d.people
        n = people.n
        head = people.head
        holder = app_member & (people.relationship == 0)
        rel = people.relationship
        p_add = np.select(
            [rel == 2, rel == 3, rel == 1], [np.where(people.age < 18, 0.7, 0.2), 0.5, 0.25], 0.0
        )
        added = holder[head] & (np.arange(n) != head) & (rng.random(n) < p_add)
        has_family = np.zeros(n, dtype=np.bool_)
        has_family[head[added]] = True
        idx = np.flatnonzero(added)
        first = np.full(n, self.net.timeline.start_day, dtype=np.int64)
        rec = sources.records(rng, people, self.keys, "app", idx, first, np.zeros(n, np.bool_), family=True)
        rec.columns.update(sources.family_fields(people, self.keys, idx, np.ones(len(idx), np.bool_)))
        self._identity("app", rec)
        self.add("app", "patient", rec.columns)
        return has_family

    def _his_identifiers(self, s: str, idx: IntArray) -> None:
        rng, people = self.rng, self.d.people
        sel = idx[rng.random(len(idx)) < 0.5]
        pk = self.keys.main[s].take(pa.array(sel))
        m = len(sel)
        self.add(
            s,
            "patient_identifier",
            {
                "key": join(pk, "-YB"),
                "patient_key": pk,
                "kind": const("insurance_number", m),
                "system": const(sources.INSURANCE_SYSTEM, m),
                "value": numbered("A", permute(people.person_id[sel], 31, 10**9), 9),
            },
        )
        pk_all = self.keys.main[s].take(pa.array(idx))
        m = len(idx)
        employee = people.employee_insurance[idx]
        start = np.maximum(people.birth_day[idx], self.net.timeline.start_day - 3000)
        self.add(
            s,
            "coverage",
            {
                "key": join(pk_all, "-1"),
                "patient_key": pk_all,
                "payer_key": pick(PAYER_KEYS, np.where(employee, 0, 1)),
                "member_id": numbered("3301", permute(people.person_id[idx], 41, 10**10), 10),
                "plan": pick(("职工医保", "居民医保"), np.where(employee, 0, 1)),
                "start_date": dates(start),
            },
        )
        com = np.flatnonzero(people.commercial_insurance[idx] & (rng.random(m) < 0.5))
        pk_c = pk_all.take(pa.array(com))
        self.add(
            s,
            "coverage",
            {
                "key": join(pk_c, "-2"),
                "patient_key": pk_c,
                "payer_key": const("PY03", len(com)),
                "plan": const("惠民保", len(com)),
                "start_date": dates(
                    np.maximum(
                        self.net.timeline.start_day + rng.integers(0, 200, len(com)),
                        people.birth_day[idx[com]],
                    )
                ),
            },
        )

    def _wechat_identifiers(self, s: str, idx: IntArray) -> None:
        openid = self.keys.openid[s].take(pa.array(idx))
        m = len(idx)
        system = {"wechat_oa": "wx3f8a1c2d4e5b6a70", "wechat_mp": "wx9b7c6d5e4f3a2b10"}[s]
        self.add(
            s,
            "patient_identifier",
            {
                "key": join(openid, ":openid"),
                "patient_key": openid,
                "kind": const("openid", m),
                "system": const(system, m),
                "value": openid,
            },
        )
        sel = np.flatnonzero(self.rng.random(m) < 0.9)
        self.add(
            s,
            "patient_identifier",
            {
                "key": join(openid.take(pa.array(sel)), ":unionid"),
                "patient_key": openid.take(pa.array(sel)),
                "kind": const("unionid", len(sel)),
                "system": const("wx-open-zhijiang", len(sel)),
                "value": self.keys.unionid.take(pa.array(idx[sel])),
            },
        )

    def _app_identifiers(self, idx: IntArray) -> None:
        pk = self.keys.main["app"].take(pa.array(idx))
        m = len(idx)
        self.add(
            "app",
            "patient_identifier",
            {
                "key": join(pk, ":uid"),
                "patient_key": pk,
                "kind": const("app_user_id", m),
                "system": const("之江健康APP", m),
                "value": pk,
            },
        )
        sel = np.flatnonzero(self.rng.random(m) < 0.5)
        self.add(
            "app",
            "patient_identifier",
            {
                "key": join(pk.take(pa.array(sel)), ":unionid"),
                "patient_key": pk.take(pa.array(sel)),
                "kind": const("unionid", len(sel)),
                "system": const("wx-open-zhijiang", len(sel)),
                "value": self.keys.unionid.take(pa.array(idx[sel])),
            },
        )
