"""Clinical tables: encounters, diagnoses, prescriptions, dispenses, observations, bookings, plans."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from careloop.synth import appointments as appt
from careloop.synth import catalog, cohorts, registry, texts
from careloop.synth.arrays import (
    Column,
    IntArray,
    bools,
    const,
    dates,
    floats,
    ints,
    join,
    null_where,
    numbered,
    pick,
    row_keys,
    take_or_null,
    timestamps,
)
from careloop.synth.care import (
    ACUTE,
    CHRONIC,
    CONSULT_MODES,
    DRUG_CLASS_NAMES,
    DRUG_CODES,
    DRUG_NAMES,
    ENC_CLASSES,
    MONITOR,
    N_COND,
    ONLINE_VISIT,
    REASON_CODES,
    REASON_NAMES,
    RENEWAL,
    VACCINE,
)
from careloop.synth.emit.base import (
    ENC_CODE,
    ENC_DESC,
    ENC_PREFIX,
    IH,
    ORG_KEYS,
    PAYER_KEYS,
    EmitterBase,
)
from careloop.synth.observations import Observations
from careloop.synth.registry import HIS_SOURCES


class ClinicalRecords(EmitterBase):
    def clinical(self) -> None:
        d, rng = self.d, self.rng
        reg = self.net.registry
        v = d.care.visits
        ch = d.chunk
        enc_keys = join(pick(ENC_PREFIX, v.enc_class), row_keys("", ch, v.n))
        his = registry.ORG_HIS[v.org]
        use_dup = np.zeros(v.n, dtype=np.bool_)
        for i, s in enumerate(HIS_SOURCES):
            use_dup |= (his == i) & self.dup[s][v.person] & (v.kind == ACUTE)
        use_dup &= rng.random(v.n) < 0.5
        self.visit_dup = use_dup
        self.enc_keys = enc_keys
        payer = pick(PAYER_KEYS, v.payer)
        doctor = pick(reg.doc_key, v.doctor)
        dept = pick(reg.dept_key, v.dept)
        org = pick(ORG_KEYS, v.org)
        for i, s in enumerate((*HIS_SOURCES, IH)):
            sel = np.flatnonzero(d.visit_keep & ((his == i) if s != IH else (v.kind == ONLINE_VISIT)))
            t = pa.array(sel)
            self.add(
                s,
                "encounter",
                {
                    "key": enc_keys.take(t),
                    "patient_key": self._pk(s, v.person[sel], use_dup[sel]),
                    "encounter_class": pick(ENC_CLASSES, v.enc_class[sel]),
                    "start": timestamps(v.start[sel]),
                    "end": timestamps(v.end[sel]),
                    "org_key": org.take(t),
                    "department_key": dept.take(t),
                    "doctor_key": doctor.take(t),
                    "payer_key": payer.take(t),
                    "code": pick(ENC_CODE, v.enc_class[sel]),
                    "description": pick(ENC_DESC, v.enc_class[sel]),
                    "reason_code": pick(REASON_CODES, v.reason[sel]),
                    "reason_description": pick(REASON_NAMES, v.reason[sel]),
                    "cost": floats(v.cost[sel], decimals=2),
                    "payer_coverage": floats(v.coverage[sel], decimals=2),
                },
            )
        self._conditions(his)
        self._prescriptions(his, doctor, payer)
        self._dispenses(his)
        self._observations(his)
        self._appointments()
        self._care_plans()
        self._immunizations(his)
        self._consultations(doctor, dept)

    def _conditions(self, his: IntArray) -> None:
        d = self.d
        v = d.care.visits
        coh = d.cohorts
        ch = d.chunk
        # chronic diagnoses, linked to the first chronic visit for the condition at the usual place
        first_visit = np.full(coh.has.shape, -1, dtype=np.int64)
        cv = np.flatnonzero(d.visit_keep & np.isin(v.kind, (CHRONIC, RENEWAL, MONITOR)) & (v.condition >= 0))
        order = cv[np.argsort(v.start[cv], kind="stable")[::-1]]
        first_visit[v.person[order], v.condition[order]] = order  # earliest wins (written last)
        p, c = np.nonzero(coh.has)
        place = registry.ORG_HIS[d.places.primary[p]]
        keys = row_keys("DX", ch, len(p))
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero((place == i) & self.member[s][p])
            fv = first_visit[p[sel], c[sel]]
            fv_ok = (fv >= 0) & (his[np.maximum(fv, 0)] == i)
            self.add(
                s,
                "condition",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, p[sel]),
                    "encounter_key": null_where(self.enc_keys.take(pa.array(np.maximum(fv, 0))), ~fv_ok),
                    "code": pick([x.code for x in catalog.CONDITIONS], c[sel]),
                    "code_system": const("ICD-10", len(sel)),
                    "description": pick([x.name for x in catalog.CONDITIONS], c[sel]),
                    "onset": dates(coh.onset_day[p[sel], c[sel]]),
                },
            )
        # acute diagnoses (not check-ups)
        acute = np.flatnonzero(d.visit_keep & (v.kind == ACUTE) & (v.reason != N_COND + catalog.WELLNESS))
        keys = row_keys("DA", ch, len(acute))
        resolved = v.day[acute] + self.rng.integers(5, 30, len(acute))
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero(his[acute] == i)
            a = acute[sel]
            self.add(
                s,
                "condition",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, v.person[a], self.visit_dup[a]),
                    "encounter_key": self.enc_keys.take(pa.array(a)),
                    "code": pick(REASON_CODES, v.reason[a]),
                    "code_system": const("ICD-10", len(a)),
                    "description": pick(REASON_NAMES, v.reason[a]),
                    "onset": dates(v.day[a]),
                    "abatement": dates(resolved[sel], resolved[sel] <= self.net.timeline.as_of_day),
                },
            )

    def _prescriptions(self, his: IntArray, doctor: Column, payer: Column) -> None:
        d = self.d
        rx, v = d.care.rx, d.care.visits
        keys = row_keys("RX", d.chunk, len(rx.person))
        self.rx_keys = keys
        as_of_end = (self.net.timeline.as_of_day + 1) * 86_400
        status = np.where(
            rx.written + rx.days * (rx.refills + 1) * 86_400 < as_of_end, 1, 0
        )  # completed / active
        lapsed_last = np.zeros(len(rx.person), dtype=np.bool_)
        th = d.therapies
        th_ok = rx.therapy >= 0
        lapsed_last[th_ok] = (th.pattern[rx.therapy[th_ok]] == cohorts.LAPSED) & (status[th_ok] == 1)
        ratio = np.where(v.cost > 0, v.coverage / np.maximum(v.cost, 0.01), 0.0)[rx.visit]
        online = v.kind[rx.visit] == ONLINE_VISIT
        for i, s in enumerate((*HIS_SOURCES, IH)):
            in_s = online if s == IH else (his[rx.visit] == i) & ~online
            sel = np.flatnonzero(d.rx_keep & in_s)
            vis = rx.visit[sel]
            self.add(
                s,
                "prescription",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, rx.person[sel], self.visit_dup[vis]),
                    "drug_code": pick(DRUG_CODES, rx.drug[sel]),
                    "drug_name": pick(DRUG_NAMES, rx.drug[sel]),
                    "drug_class": pick(DRUG_CLASS_NAMES, rx.drug[sel]),
                    "code_system": const("ATC", len(sel)),
                    "written_at": timestamps(rx.written[sel]),
                    "status": pick(("active", "completed"), status[sel]),
                    "encounter_key": self.enc_keys.take(pa.array(vis)),
                    "doctor_key": doctor.take(pa.array(vis)),
                    "payer_key": payer.take(pa.array(vis)),
                    "days_supply": ints(rx.days[sel]),
                    "quantity": floats(rx.quantity[sel]),
                    "refills": ints(rx.refills[sel]),
                    "reason_code": pick(REASON_CODES, v.reason[vis]),
                    "reason_description": pick(REASON_NAMES, v.reason[vis]),
                    "cost": floats(rx.amount[sel], decimals=2),
                    "payer_coverage": floats(rx.amount[sel] * ratio[sel], decimals=2),
                },
            )

    def _dispenses(self, his: IntArray) -> None:
        d = self.d
        ds = d.care.dispenses
        keys = row_keys("DS", d.chunk, len(ds.person))
        org_his = registry.ORG_HIS[ds.org]
        vis = np.maximum(ds.visit, 0)
        targets = [(s, (ds.channel == cohorts.HOSPITAL) & (org_his == i)) for i, s in enumerate(HIS_SOURCES)]
        targets += [
            ("pharmacy", ds.channel == cohorts.RETAIL),
            ("dtp", ds.channel == cohorts.DTP),
            (IH, ds.channel == cohorts.ONLINE),
        ]
        for s, in_s in targets:
            sel = np.flatnonzero(d.dispense_keep & in_s)
            dup = self.visit_dup[vis[sel]] & (ds.visit[sel] >= 0)
            self.add(
                s,
                "dispense",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, ds.person[sel], dup),
                    "drug_code": pick(DRUG_CODES, ds.drug[sel]),
                    "dispensed_at": timestamps(ds.at[sel]),
                    "days_supply": ints(ds.days[sel]),
                    "drug_name": pick(DRUG_NAMES, ds.drug[sel]),
                    "drug_class": pick(DRUG_CLASS_NAMES, ds.drug[sel]),
                    "prescription_key": take_or_null(self.rx_keys, ds.rx[sel]),
                    "channel": pick(cohorts.CHANNELS, ds.channel[sel]),
                    "org_key": pick(ORG_KEYS, ds.org[sel]),
                    "quantity": floats(ds.quantity[sel]),
                    "amount": floats(ds.amount[sel], decimals=2),
                },
            )

    def _observations(self, his: IntArray) -> None:
        d = self.d
        codes = catalog.OBSERVATIONS
        o = d.clinic_obs
        keys = row_keys("OB", d.chunk, o.n)
        kind = np.where(np.isin(o.code, (0, 1, 8)), 0, 1)  # vitals / lung function at the clinic, else lab
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero(his[o.visit] == i)
            self.add(
                s, "observation", self._obs_cols(keys, sel, o, s, pick(("clinic", "lab"), kind[sel]), codes)
            )
        h = d.home_obs
        keys = row_keys("HO", d.chunk, h.n)
        sel = np.arange(h.n)
        cols = self._obs_cols(keys, sel, h, "app", const("device", h.n), codes)
        cols["device_id"] = numbered("SN", d.devices.serial[h.device], 12)
        cols["encounter_key"] = None  # type: ignore[assignment]
        self.add("app", "observation", {k: c for k, c in cols.items() if c is not None})
        dev = d.devices
        kinds = catalog.DEVICES
        self.add(
            "app",
            "device_use",
            {
                "key": row_keys("DV", d.chunk, dev.n),
                "patient_key": self._pk("app", dev.person),
                "code": pick([k[0] for k in kinds], dev.kind),
                "start": timestamps((dev.start_day * 86_400) + 10 * 3600 - 8 * 3600),
                "end": timestamps(
                    (dev.end_day * 86_400) + 20 * 3600 - 8 * 3600, dev.end_day < self.net.timeline.as_of_day
                ),
                "description": pick([k[1] for k in kinds], dev.kind),
                "udi": join(
                    "(01)0694",
                    numbered("", dev.kind * 10**9 + 123_456_789, 10),
                    "(21)",
                    numbered("SN", dev.serial, 12),
                ),
            },
        )

    def _obs_cols(
        self,
        keys: Column,
        sel: IntArray,
        o: Observations,
        source: str,
        kind: Column,
        codes: tuple[catalog.ObservationCode, ...],
    ) -> dict[str, Column]:
        code = o.code[sel]
        has_value = ~np.isnan(o.value[sel])
        visit = o.visit[sel]
        return {
            "key": keys.take(pa.array(sel)),
            "patient_key": self._pk(source, o.person[sel]),
            "code": pick([c.loinc for c in codes], code),
            "effective_at": timestamps(o.at[sel]),
            "name": pick([c.name for c in codes], code),
            "value_num": floats(np.nan_to_num(o.value[sel]), has_value),
            "value_text": pick(("<20",), np.maximum(o.text_value[sel], 0), o.text_value[sel] >= 0),
            "unit": pick([c.unit for c in codes], code),
            "source_kind": kind,
            "encounter_key": null_where(self.enc_keys.take(pa.array(np.maximum(visit, 0))), visit < 0),
        }

    def _appointments(self) -> None:
        d = self.d
        a = d.appointments
        reg = self.net.registry
        keys = row_keys("AP", d.chunk, a.n)
        self.appt_keys = keys
        org_his = registry.ORG_HIS[a.org]
        dup = np.where(a.visit >= 0, self.visit_dup[np.maximum(a.visit, 0)], False)
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero(org_his == i)
            vis = a.visit[sel]
            self.add(
                s,
                "appointment",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, a.person[sel], dup[sel]),
                    "scheduled_at": timestamps(a.scheduled[sel]),
                    "status": pick(appt.STATUSES, a.status[sel]),
                    "booked_at": timestamps(a.booked[sel]),
                    "channel": pick(appt.CHANNELS, a.channel[sel]),
                    "org_key": pick(ORG_KEYS, a.org[sel]),
                    "department_key": pick(reg.dept_key, a.dept[sel]),
                    "doctor_key": pick(reg.doc_key, a.doctor[sel]),
                    "cancelled_at": timestamps(a.cancelled[sel], a.cancelled[sel] >= 0),
                    "encounter_key": null_where(self.enc_keys.take(pa.array(np.maximum(vis, 0))), vis < 0),
                },
            )

    def _care_plans(self) -> None:
        d = self.d
        coh, places = d.cohorts, d.places
        tier = registry.ORG_TIER[places.primary]
        rows = []
        for c, plan, desc in (
            (catalog.HTN, "CP-HTN", "高血压患者健康管理（国家基本公共卫生服务）"),
            (catalog.T2D, "CP-T2D", "2型糖尿病患者健康管理（国家基本公共卫生服务）"),
        ):
            p = np.flatnonzero(coh.has[:, c] & (tier == 2))
            rows.append((p, c, plan, desc))
        for c in range(N_COND):
            p = np.flatnonzero(coh.treated[:, c] & (tier < 2) & (self.rng.random(d.people.n) < 0.2))
            rows.append((p, c, "CP-FU", f"{catalog.CONDITIONS[c].short}慢病随访计划（每3个月）"))
        person = np.concatenate([r[0] for r in rows])
        cond = np.concatenate([np.full(len(r[0]), r[1]) for r in rows])
        code = np.concatenate([np.full(len(r[0]), i) for i, r in enumerate(rows)])
        codes = [r[2] for r in rows]
        descs = [r[3] for r in rows]
        start = np.maximum(coh.onset_day[person, cond], self.net.timeline.start_day - 365 * 3)
        keys = row_keys("CP", d.chunk, len(person))
        place = registry.ORG_HIS[places.primary[person]]
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero((place == i) & self.member[s][person])
            self.add(
                s,
                "care_plan",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, person[sel]),
                    "code": pick(codes, code[sel]),
                    "start": dates(start[sel]),
                    "description": pick(descs, code[sel]),
                    "reason_code": pick([x.code for x in catalog.CONDITIONS], cond[sel]),
                },
            )

    def _immunizations(self, his: IntArray) -> None:
        d = self.d
        v = d.care.visits
        vac = np.flatnonzero(d.visit_keep & (v.kind == VACCINE))
        keys = row_keys("IM", d.chunk, len(vac))
        for i, s in enumerate(HIS_SOURCES):
            sel = np.flatnonzero(his[vac] == i)
            a = vac[sel]
            self.add(
                s,
                "immunization",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, v.person[a]),
                    "code": const("150", len(a)),
                    "occurred_at": timestamps(v.start[a] + 600),
                    "description": const("四价流感病毒裂解疫苗", len(a)),
                    "encounter_key": self.enc_keys.take(pa.array(a)),
                    "cost": floats(np.full(len(a), 128.0)),
                },
            )

    def _consultations(self, doctor: Column, dept: Column) -> None:
        d = self.d
        cs = d.care.consultations
        sel = np.flatnonzero(d.consult_keep)
        vis = cs.visit[sel]
        t = pa.array(vis)
        self.add(
            IH,
            "consultation",
            {
                "key": row_keys("CS", d.chunk, len(cs.person)).take(pa.array(sel)),
                "patient_key": self._pk(IH, cs.person[sel]),
                "started_at": timestamps(cs.start[sel]),
                "mode": pick(CONSULT_MODES, cs.mode[sel]),
                "is_follow_up": bools(np.ones(len(sel), np.bool_)),
                "org_key": const("IH01", len(sel)),
                "doctor_key": doctor.take(t),
                "department_key": dept.take(t),
                "ended_at": timestamps(cs.end[sel]),
                "complaint": texts.complaints(self.rng, cs.condition[sel]),
                "prescribed": bools(cs.prescribed[sel]),
                "fee": floats(cs.fee[sel], decimals=2),
            },
        )
