"""Point-in-time features for the risk models (churn, refill, no-show), read once from the store.

`load_activity` reads every row the risk models use — chronic fills, visits, follow-up consultations,
appointments, behavioural events, feedback, follow-up messages and their responses — into arrays keyed
by person, with each row's **known-at day**: the patient's local day on which the fact was recorded
(a fill on its dispensing day, a visit on its start, a cancellation on its cancellation day (else the
scheduled day), a no-show or attendance on the scheduled day, a message response on the response day).

**Leakage rule**: a feature "as of day T" reads only rows whose known-at day is ≤ T, and every window
ends on T. Labels read only rows after T. This one rule, applied in one place (`_upto`), is what makes
a time-split backtest honest: the same code builds the training table at T1, the test table at T2 and
the scoring table today.

Per-person features (`person_features`) are the risk models' shared inputs; the four early-warning
signals of the seeds are explicit columns with their own definitions (docs/models.md):

- ``cancellations_180d`` — appointments cancelled in the 180 days up to T;
- ``ignored_follow_ups_180d`` — follow-up messages (campaigns whose objective is a follow-up) delivered
  in the 180 days up to T, not a hold-out, with no open, click, reply or conversion by T;
- ``app_activity_trend`` — (digital events in the last 90 days + 1) / (events in the 90 days before + 1)
  over app, WeChat and web; below 1 is falling activity (no value without any digital event by T);
- ``satisfaction_change`` — mean feedback score (on a 5-point scale) in the last 180 days minus the mean
  of the earlier scores (no value without scores on both sides).

Supply per drug class (run-out date, PDC) follows the PQA rules of `careloop.profiles.adherence`
(same-drug refills shifted, supply carried in), vectorised here; a test checks it against that module.
Distances are approximate: from the centre of the patient's district (the mean position of the
organisations located in it) to the usual place of care (the organisation of most visits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from careloop.errors import ModelError
from careloop.storage import WorkspaceStore

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

EPOCH = date(1970, 1, 1)
NO_DAY = -(10**9)  # "never": far before any real day
MAX_DELAY = 90  # refill delays are capped at this many days (longer: a restart)

#: maintenance drug classes of chronic care (the 中度 list of traits.yaml's decision_type)
CHRONIC_CLASSES = (
    "CCB",
    "ARB",
    "ACEI",
    "beta_blocker",
    "diuretic",
    "biguanide",
    "alpha_glucosidase_inhibitor",
    "DPP4_inhibitor",
    "SGLT2_inhibitor",
    "GLP1_agonist",
    "sulfonylurea",
    "insulin",
    "HBV_nucleoside_analogue",
    "LAMA",
    "ICS_LABA",
    "statin",
)
#: ICD-10 prefixes of chronic conditions: a visit for one of them is chronic care (hypertension,
#: diabetes, hyperlipidaemia, chronic hepatitis, COPD, asthma, coronary disease, heart failure, CKD)
CHRONIC_REASON_PREFIXES = (
    "I10",
    "I11",
    "I12",
    "I13",
    "I15",
    "E10",
    "E11",
    "E12",
    "E13",
    "E14",
    "E78",
    "B18",
    "J44",
    "J45",
    "I20",
    "I25",
    "I50",
    "N18",
)
DIGITAL_CHANNELS = ("app", "wechat_oa", "wechat_mp", "web")
ENGAGED_TOUCHES = ("opened", "clicked", "replied", "converted")
FOLLOW_UP_OBJECTIVES = ("follow_up",)

#: the defaults of every risk model's ``features`` config (saved with the model, so scoring reads the
#: data the way training did)
FEATURE_DEFAULTS: dict[str, Any] = {
    "chronic_classes": list(CHRONIC_CLASSES),
    "chronic_reason_prefixes": list(CHRONIC_REASON_PREFIXES),
    "digital_channels": list(DIGITAL_CHANNELS),
    "follow_up_objectives": list(FOLLOW_UP_OBJECTIVES),
}

APPT_STATUSES = ("booked", "attended", "no_show", "cancelled")
BOOKED, ATTENDED, NO_SHOW, CANCELLED = range(4)

#: person-level feature columns, in order (phrases for reason codes: careloop.models.reasons)
PERSON_FEATURES = (
    "days_since_chronic_care",
    "days_since_visit",
    "days_to_run_out",
    "pdc_min_365d",
    "chronic_classes",
    "chronic_fills_365d",
    "monthly_drug_cost",
    "retail_fill_share",
    "visits_365d",
    "chronic_visits_180d",
    "cancellations_180d",
    "no_shows_365d",
    "ignored_follow_ups_180d",
    "app_activity_trend",
    "digital_events_90d",
    "satisfaction_change",
    "feedback_avg_365d",
    "distance_km",
    "age",
)
#: the seeds' early-warning signals (流失预警信号): explicit features and traits
SIGNALS = ("cancellations_180d", "ignored_follow_ups_180d", "app_activity_trend", "satisfaction_change")


def to_day(d: date) -> int:
    return (d - EPOCH).days


def from_day(day: int) -> date:
    return EPOCH + timedelta(days=int(day))


@dataclass
class FeatureFrame:
    """A feature matrix (NaN = no value) with its row ids and column names."""

    columns: tuple[str, ...]
    values: FloatArray  # rows x columns
    categorical: tuple[str, ...] = ()  # columns holding integer category codes

    def col(self, name: str) -> FloatArray:
        out: FloatArray = self.values[:, self.columns.index(name)]
        return out

    def select(self, rows: IntArray | BoolArray) -> FeatureFrame:
        return FeatureFrame(self.columns, self.values[rows], self.categorical)

    def table(self, ids: Sequence[str], id_name: str = "id") -> pa.Table:
        """As an Arrow table (for data hashes)."""
        cols: dict[str, Any] = {id_name: pa.array(list(ids), pa.string())}
        for i, c in enumerate(self.columns):
            cols[c] = pa.array(self.values[:, i], pa.float64())
        return pa.table(cols)


@dataclass
class Activity:
    """Everything the risk models read, one array per column; persons are indices into `persons`."""

    persons: ObjArray
    birth_day: FloatArray  # NaN: unknown
    home_lat: FloatArray  # centre of the person's district (NaN: unknown)
    home_lon: FloatArray
    org_keys: ObjArray
    org_lat: FloatArray
    org_lon: FloatArray
    org_level: FloatArray  # 3 tertiary, 2 secondary, 1 primary care, NaN unknown
    # chronic fills (maintenance classes with a days supply)
    fill_person: IntArray
    fill_day: IntArray
    fill_supply: IntArray
    fill_drug: ObjArray
    fill_class: ObjArray
    fill_retail: BoolArray  # retail, DTP or online pharmacy (more out of pocket)
    fill_amount: FloatArray
    # visits (every encounter)
    visit_person: IntArray
    visit_day: IntArray
    visit_chronic: BoolArray
    visit_org: IntArray  # -1 unknown
    # chronic care: chronic fills, chronic visits, follow-up consultations
    care_person: IntArray
    care_day: IntArray
    # appointments
    appt_person: IntArray
    appt_key: ObjArray  # "source:key"
    appt_at: IntArray  # scheduled, local seconds since the epoch
    appt_day: IntArray
    appt_booked_day: FloatArray  # NaN unknown
    appt_known_day: IntArray  # when the status was known (see the module docstring)
    appt_status: IntArray
    appt_channel: ObjArray
    appt_org: IntArray
    appt_specialty: ObjArray
    # behavioural events on digital channels
    event_person: IntArray
    event_day: IntArray
    # feedback on a 5-point scale
    fb_person: IntArray
    fb_day: IntArray
    fb_score: FloatArray
    # delivered follow-up messages (not hold-outs) and the day of the first response (NO_DAY: none)
    fu_person: IntArray
    fu_day: IntArray
    fu_engaged_day: IntArray
    data_end: int  # the latest known-at day of any fill, visit or appointment outcome
    settings: dict[str, Any] = field(default_factory=dict)
    # derived: integer codes of the fills' class and drug, and supply per day computed so far
    fill_class_code: IntArray = field(init=False, repr=False)
    fill_drug_code: IntArray = field(init=False, repr=False)
    _supply: dict[tuple[int, int], ClassSupply] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.fill_class_code = np.unique(self.fill_class.astype(str), return_inverse=True)[1].astype(np.int64)
        self.fill_drug_code = np.unique(self.fill_drug.astype(str), return_inverse=True)[1].astype(np.int64)

    @property
    def n(self) -> int:
        return len(self.persons)

    def clear_cache(self) -> None:
        """Forget the supply computed so far (benchmarks time it afresh)."""
        self._supply.clear()

    def index_of(self, person_ids: Sequence[str]) -> IntArray:
        pos = np.searchsorted(self.persons, np.asarray(person_ids, dtype=object))
        return np.asarray(pos, dtype=np.int64)


def load_activity(
    store: WorkspaceStore, timezone: str, settings: Mapping[str, Any] | None = None
) -> Activity:
    """Read the store once (see the module docstring); `settings` as in FEATURE_DEFAULTS."""
    s = {**FEATURE_DEFAULTS, **(settings or {})}
    persons_t = store.sql("SELECT person_id, birth_date, district FROM person ORDER BY person_id")
    if persons_t.num_rows == 0:
        raise ModelError("no persons in the store: ingest data and run `careloop identity resolve` first")
    persons = np.asarray(persons_t.column("person_id").to_pylist(), dtype=object)
    order = np.argsort(persons)
    persons = persons[order]
    person_arrow = pa.array(persons.tolist(), pa.string())
    birth = _days(persons_t.column("birth_date"), timezone)[order]

    orgs = store.sql("SELECT key, tier, district, latitude, longitude FROM organization ORDER BY key, source")
    org_keys = np.asarray(orgs.column("key").to_pylist(), dtype=object)
    org_lat = _floats(orgs.column("latitude"))
    org_lon = _floats(orgs.column("longitude"))
    org_level = np.array([_level(t) for t in orgs.column("tier").to_pylist()], dtype=np.float64)
    org_district = np.asarray(orgs.column("district").to_pylist(), dtype=object)
    centres: dict[str, tuple[float, float]] = {}
    for d in {x for x in org_district if x}:
        sel = (org_district == d) & ~np.isnan(org_lat) & ~np.isnan(org_lon)
        if sel.any():
            centres[str(d)] = (float(org_lat[sel].mean()), float(org_lon[sel].mean()))
    district = np.asarray(persons_t.column("district").to_pylist(), dtype=object)[order]
    home = np.array([centres.get(str(d), (np.nan, np.nan)) for d in district], dtype=np.float64)
    home = home.reshape(-1, 2) if len(home) else np.empty((0, 2))
    org_arrow = pa.array(org_keys.tolist(), pa.string())

    def person_idx(col: pa.ChunkedArray | pa.Array) -> IntArray:
        return _index(col, person_arrow)

    chronic = [str(c) for c in s["chronic_classes"]]
    fills = store.sql(
        "SELECT l.person_id, e.dispensed_at, e.days_supply, e.drug_code, e.drug_class, e.channel, e.amount "
        "FROM dispense e JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key WHERE e.dispensed_at IS NOT NULL AND e.days_supply > 0 "
        "AND e.drug_class = ANY(:classes)",
        {"classes": chronic},
    )
    f_person = person_idx(fills.column("person_id"))
    f_day = _days(fills.column("dispensed_at"), timezone)
    keep = (f_person >= 0) & ~np.isnan(f_day)
    f_channel = np.asarray(fills.column("channel").to_pylist(), dtype=object)
    fill_drug = np.asarray(
        [
            d or c
            for d, c in zip(
                fills.column("drug_code").to_pylist(), fills.column("drug_class").to_pylist(), strict=True
            )
        ],
        dtype=object,
    )

    visits = store.sql(
        "SELECT l.person_id, e.start, e.reason_code, e.org_key FROM encounter e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key WHERE e.start IS NOT NULL"
    )
    v_person = person_idx(visits.column("person_id"))
    v_day = _days(visits.column("start"), timezone)
    prefixes = tuple(str(p) for p in s["chronic_reason_prefixes"])
    v_chronic = np.array(
        [bool(r) and str(r).startswith(prefixes) for r in visits.column("reason_code").to_pylist()],
        dtype=np.bool_,
    )
    v_org = _index(visits.column("org_key"), org_arrow)
    v_keep = (v_person >= 0) & ~np.isnan(v_day)

    consults = store.sql(
        "SELECT l.person_id, e.started_at FROM consultation e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key WHERE e.started_at IS NOT NULL AND e.is_follow_up"
    )
    c_person = person_idx(consults.column("person_id"))
    c_day = _days(consults.column("started_at"), timezone)
    c_keep = (c_person >= 0) & ~np.isnan(c_day)

    appts = store.sql(
        "SELECT l.person_id, e.source, e.key, e.scheduled_at, e.booked_at, e.cancelled_at, e.status, e.channel, "
        "e.org_key, d.specialty FROM appointment e JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key "
        "LEFT JOIN department d ON d.key = e.department_key WHERE e.scheduled_at IS NOT NULL"
    )
    a_person = person_idx(appts.column("person_id"))
    a_at = _local_seconds(appts.column("scheduled_at"), timezone)
    a_day = np.floor(a_at / 86_400)
    a_booked = _days(appts.column("booked_at"), timezone)
    a_cancel = _days(appts.column("cancelled_at"), timezone)
    status_names = appts.column("status").to_pylist()
    a_status = np.array(
        [APPT_STATUSES.index(x) if x in APPT_STATUSES else -1 for x in status_names], dtype=np.int64
    )
    a_known = np.where(
        a_status == CANCELLED,
        np.where(np.isnan(a_cancel), a_day, a_cancel),
        np.where(a_status == BOOKED, np.where(np.isnan(a_booked), a_day, a_booked), a_day),
    )
    a_keep = (a_person >= 0) & ~np.isnan(a_at) & (a_status >= 0)
    a_keys = np.asarray(
        [
            f"{x}:{y}"
            for x, y in zip(appts.column("source").to_pylist(), appts.column("key").to_pylist(), strict=True)
        ],
        dtype=object,
    )

    digital = [str(c) for c in s["digital_channels"]]
    events = store.sql(
        "SELECT coalesce(e.person_id, l.person_id) AS person_id, e.occurred_at FROM event e "
        "LEFT JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key "
        "WHERE e.occurred_at IS NOT NULL AND e.channel = ANY(:ch)",
        {"ch": digital},
    )
    e_person = person_idx(events.column("person_id"))
    e_day = _days(events.column("occurred_at"), timezone)
    e_keep = (e_person >= 0) & ~np.isnan(e_day)

    fb = store.sql(
        "SELECT l.person_id, e.submitted_at, e.score, e.scale_max FROM feedback e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key WHERE e.submitted_at IS NOT NULL AND e.score IS NOT NULL"
    )
    fb_person = person_idx(fb.column("person_id"))
    fb_day = _days(fb.column("submitted_at"), timezone)
    scale = _floats(fb.column("scale_max"))
    raw = _floats(fb.column("score"))
    fb_score = np.where(np.isnan(scale) | (scale <= 0), raw, raw * 5.0 / np.where(scale > 0, scale, 1.0))
    fb_keep = (fb_person >= 0) & ~np.isnan(fb_day) & ~np.isnan(fb_score)

    msgs = store.sql(
        "SELECT l.person_id, e.source, e.key, coalesce(e.sent_at, e.created_at) AS at FROM message e "
        "JOIN identity_link l ON l.source = e.source AND l.patient_key = e.patient_key JOIN campaign c ON c.key = e.campaign_key "
        "WHERE e.status = 'delivered' AND (e.is_holdout IS NULL OR NOT e.is_holdout) AND c.objective = ANY(:obj)",
        {"obj": [str(o) for o in s["follow_up_objectives"]]},
    )
    touches = store.sql(
        "SELECT source, message_key, min(occurred_at) AS at FROM touch WHERE touch_type = ANY(:kinds) "
        "AND message_key IS NOT NULL GROUP BY source, message_key",
        {"kinds": list(ENGAGED_TOUCHES)},
    )
    m_person = person_idx(msgs.column("person_id"))
    m_day = _days(msgs.column("at"), timezone)
    engaged_at = dict(
        zip(
            (
                f"{a}:{b}"
                for a, b in zip(
                    touches.column("source").to_pylist(),
                    touches.column("message_key").to_pylist(),
                    strict=True,
                )
            ),
            _days(touches.column("at"), timezone).tolist(),
            strict=True,
        )
    )
    m_keys = [
        f"{a}:{b}"
        for a, b in zip(msgs.column("source").to_pylist(), msgs.column("key").to_pylist(), strict=True)
    ]
    m_engaged = np.array([engaged_at.get(k, np.nan) for k in m_keys], dtype=np.float64)
    m_keep = (m_person >= 0) & ~np.isnan(m_day)

    f_sel = np.flatnonzero(keep)
    care_p = np.concatenate([f_person[f_sel], v_person[v_keep & v_chronic], c_person[c_keep]])
    care_d = np.concatenate([f_day[f_sel], v_day[v_keep & v_chronic], c_day[c_keep]]).astype(np.int64)
    ends = [
        f_day[f_sel].max() if len(f_sel) else NO_DAY,
        v_day[v_keep].max() if v_keep.any() else NO_DAY,
        a_day[a_keep & (a_status != BOOKED)].max() if (a_keep & (a_status != BOOKED)).any() else NO_DAY,
    ]
    data_end = int(max(ends))
    if data_end == NO_DAY:
        raise ModelError("the store holds no fills, visits or appointment outcomes to learn from")
    return Activity(
        persons=persons,
        birth_day=birth,
        home_lat=home[:, 0].copy(),
        home_lon=home[:, 1].copy(),
        org_keys=org_keys,
        org_lat=org_lat,
        org_lon=org_lon,
        org_level=org_level,
        fill_person=f_person[f_sel],
        fill_day=f_day[f_sel].astype(np.int64),
        fill_supply=np.asarray(fills.column("days_supply").to_numpy(zero_copy_only=False), dtype=np.int64)[
            f_sel
        ],
        fill_drug=fill_drug[f_sel],
        fill_class=np.asarray(fills.column("drug_class").to_pylist(), dtype=object)[f_sel],
        fill_retail=np.isin(f_channel, ["retail", "dtp", "online"])[f_sel],
        fill_amount=np.nan_to_num(_floats(fills.column("amount")))[f_sel],
        visit_person=v_person[v_keep],
        visit_day=v_day[v_keep].astype(np.int64),
        visit_chronic=v_chronic[v_keep],
        visit_org=v_org[v_keep],
        care_person=care_p,
        care_day=care_d,
        appt_person=a_person[a_keep],
        appt_key=a_keys[a_keep],
        appt_at=a_at[a_keep].astype(np.int64),
        appt_day=a_day[a_keep].astype(np.int64),
        appt_booked_day=a_booked[a_keep],
        appt_known_day=a_known[a_keep].astype(np.int64),
        appt_status=a_status[a_keep],
        appt_channel=np.asarray(appts.column("channel").to_pylist(), dtype=object)[a_keep],
        appt_org=_index(appts.column("org_key"), org_arrow)[a_keep],
        appt_specialty=np.asarray(appts.column("specialty").to_pylist(), dtype=object)[a_keep],
        event_person=e_person[e_keep],
        event_day=e_day[e_keep].astype(np.int64),
        fb_person=fb_person[fb_keep],
        fb_day=fb_day[fb_keep].astype(np.int64),
        fb_score=fb_score[fb_keep],
        fu_person=m_person[m_keep],
        fu_day=m_day[m_keep].astype(np.int64),
        fu_engaged_day=np.where(np.isnan(m_engaged), -NO_DAY, m_engaged)[m_keep].astype(np.int64),
        data_end=data_end,
        settings=s,
    )


# ---------------------------------------------------------------- supply per person and drug class


@dataclass
class ClassSupply:
    """Per (person, drug class) with a fill in the 365 days up to T: the run-out day (last covered day of
    the latest, shifted supply), the PDC over those 365 days (NaN: fewer than two fill dates) and the
    refill history: how many refills came more than `late_days` after the previous supply ran out and
    their mean delay (each capped at MAX_DELAY days)."""

    person: IntArray
    klass: ObjArray
    run_out: IntArray
    pdc: FloatArray
    fills: IntArray  # fills in the 365 days
    last_supply: IntArray  # days supply of the latest fill
    last_retail: BoolArray
    late_refills: IntArray  # refills > late_days after the run-out, in the 365 days
    mean_delay: FloatArray  # mean days from run-out to the refill (negative: early), NaN without refills


def class_supply(act: Activity, t: int, late_days: int = 7) -> ClassSupply:
    """Supply per person and class as of day `t` (fills known by `t` only); computed once per day."""
    key = (t, late_days)
    if key not in act._supply:
        act._supply[key] = _class_supply(act, t, late_days)
    return act._supply[key]


def _class_supply(act: Activity, t: int, late_days: int) -> ClassSupply:
    sel = np.flatnonzero((act.fill_day <= t) & (act.fill_day > t - 730))
    p, k = act.fill_person[sel], act.fill_class[sel]
    day, supply, retail = act.fill_day[sel], act.fill_supply[sel], act.fill_retail[sel]
    if len(sel) == 0:
        ints, floats = np.empty(0, np.int64), np.empty(0, np.float64)
        return ClassSupply(
            ints, np.empty(0, object), ints, floats, ints, ints, np.empty(0, np.bool_), ints, floats
        )
    # group (person, class) and (person, class, drug) by codes
    n_class = int(act.fill_class_code.max()) + 1 if len(act.fill_class_code) else 1
    n_drug = int(act.fill_drug_code.max()) + 1 if len(act.fill_drug_code) else 1
    class_key = p * n_class + act.fill_class_code[sel]
    _, g_class = np.unique(class_key, return_inverse=True)
    _, g_drug = np.unique(class_key * n_drug + act.fill_drug_code[sel], return_inverse=True)
    # same-drug shifting: end_j = max_{i<=j}(day_i - S_{i-1}) + S_j - 1 within each drug group, by day
    o = np.lexsort((-supply, day, g_drug))
    gd, dd, ss = g_drug[o], day[o], supply[o]
    cs = _group_cumsum(ss, gd)
    prev = cs - ss
    start_key = dd - prev
    run = _group_cummax(start_key.astype(np.float64), gd)
    end = (run + cs - 1).astype(np.int64)
    start = end - ss + 1
    gc = g_class[o]
    # per class: run-out = max end; coverage inside [index, t] of the union of supplies
    n_groups = int(g_class.max()) + 1
    run_out = np.full(n_groups, NO_DAY, dtype=np.int64)
    np.maximum.at(run_out, gc, end)
    period_start = t - 364
    inside = dd >= period_start
    index = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(index, gc[inside], dd[inside])
    n_inside = np.bincount(gc[inside], minlength=n_groups)
    # distinct fill dates inside the period
    pair = (
        np.unique(np.stack([gc[inside], dd[inside]]), axis=1) if inside.any() else np.empty((2, 0), np.int64)
    )
    n_dates = np.bincount(pair[0], minlength=n_groups) if pair.size else np.zeros(n_groups, np.int64)
    has = n_inside > 0
    lo = np.maximum(start, index[gc])
    hi = np.minimum(end, t)
    covered = _union_length(gc, lo, hi, n_groups)
    span = (t - index + 1).astype(np.float64)
    pdc = np.where((n_dates >= 2) & has, covered / np.where(has, span, 1.0), np.nan)
    # the latest fill per class (by day, then the longer supply) and the refill delays
    o2 = np.lexsort((ss, dd, gc))
    last = np.zeros(n_groups, dtype=np.int64)
    last[gc[o2]] = o2  # the last index per group wins
    last_supply = ss[last]
    last_retail = retail[o][last]
    # delay of each refill = its day - (previous run-out of the class + 1), by fill order within class
    o3 = np.lexsort((dd, gc))
    g3, d3, e3 = gc[o3], dd[o3], end[o3]
    prev_end = _group_cummax(e3.astype(np.float64), g3)
    prev_end = np.r_[np.nan, prev_end[:-1]]
    first = np.r_[True, g3[1:] != g3[:-1]]
    # a refill more than MAX_DELAY days after the run-out is a restart, not a delay: capped there
    delay = np.where(first, np.nan, np.minimum(d3 - (prev_end + 1), MAX_DELAY))
    counted = ~np.isnan(delay) & (d3 >= period_start)
    late = np.bincount(g3[counted & (delay > late_days)], minlength=n_groups)
    delay_sum = np.bincount(g3[counted], weights=delay[counted], minlength=n_groups)
    delay_n = np.bincount(g3[counted], minlength=n_groups)
    mean_delay = np.where(delay_n > 0, delay_sum / np.maximum(delay_n, 1), np.nan)
    # representatives of each class group
    rep = np.zeros(n_groups, dtype=np.int64)
    rep[g_class] = np.arange(len(g_class))
    keep = np.flatnonzero(has)
    return ClassSupply(
        person=p[rep][keep].astype(np.int64),
        klass=k[rep][keep],
        run_out=run_out[keep],
        pdc=pdc[keep],
        fills=n_inside[keep].astype(np.int64),
        last_supply=last_supply[keep].astype(np.int64),
        last_retail=last_retail[keep],
        late_refills=late[keep].astype(np.int64),
        mean_delay=mean_delay[keep],
    )


def _group_cumsum(x: IntArray, g: IntArray) -> IntArray:
    """Cumulative sum restarting at each group (rows sorted by group)."""
    cs = np.cumsum(x)
    starts = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(x)), 0))
    out: IntArray = cs - (cs - x)[first]
    return out


def _group_cummax(x: FloatArray, g: IntArray) -> FloatArray:
    """Cumulative max restarting at each group (rows sorted by group)."""
    if len(x) == 0:
        return x
    span = float(np.nanmax(np.abs(x))) * 4 + 10
    shifted = x + g.astype(np.float64) * span
    out: FloatArray = np.maximum.accumulate(shifted) - g.astype(np.float64) * span
    return out


def _union_length(g: IntArray, lo: IntArray, hi: IntArray, n_groups: int) -> FloatArray:
    """Per group, the number of days in the union of the intervals [lo, hi] (empty when lo > hi)."""
    ok = lo <= hi
    g, lo, hi = g[ok], lo[ok], hi[ok]
    if len(g) == 0:
        return np.zeros(n_groups)
    o = np.lexsort((lo, g))
    g, lo, hi = g[o], lo[o], hi[o]
    reach = _group_cummax(hi.astype(np.float64), g)
    before = np.r_[-np.inf, reach[:-1]]
    first = np.r_[True, g[1:] != g[:-1]]
    before = np.where(first, -np.inf, before)
    new = np.maximum(0.0, hi - np.maximum(lo - 1, before))
    out: FloatArray = np.bincount(g, weights=new, minlength=n_groups).astype(np.float64)
    return out


# ---------------------------------------------------------------- per-person features


def person_features(act: Activity, t: int, rows: IntArray | None = None) -> FeatureFrame:
    """The PERSON_FEATURES of every person (or of `rows`) as of day `t` (see the leakage rule)."""
    n = act.n
    out = np.full((n, len(PERSON_FEATURES)), np.nan)
    col = {c: i for i, c in enumerate(PERSON_FEATURES)}

    def put(name: str, values: FloatArray | IntArray) -> None:
        out[:, col[name]] = values

    last_care = _last(act.care_person, act.care_day, t, n)
    put("days_since_chronic_care", np.where(last_care > NO_DAY, t - last_care, np.nan))
    last_visit = _last(act.visit_person, act.visit_day, t, n)
    put("days_since_visit", np.where(last_visit > NO_DAY, t - last_visit, np.nan))

    cs = class_supply(act, t)
    current = cs.run_out + 1 >= t - 90  # classes not discontinued (ran out at most 90 days ago)
    first_due = np.full(n, np.inf)
    np.minimum.at(first_due, cs.person[current], (cs.run_out[current] + 1).astype(np.float64))
    put("days_to_run_out", np.where(np.isfinite(first_due), first_due - t, np.nan))
    pdc_min = np.full(n, np.inf)
    ok = ~np.isnan(cs.pdc)
    np.minimum.at(pdc_min, cs.person[ok], cs.pdc[ok])
    put("pdc_min_365d", np.where(np.isfinite(pdc_min), pdc_min, np.nan))
    put("chronic_classes", np.bincount(cs.person, minlength=n).astype(np.float64))

    year = _window(act.fill_day, t, 365)
    put("chronic_fills_365d", np.bincount(act.fill_person[year], minlength=n).astype(np.float64))
    amount = np.bincount(act.fill_person[year], weights=act.fill_amount[year], minlength=n)
    days = np.bincount(act.fill_person[year], weights=act.fill_supply[year], minlength=n)
    put("monthly_drug_cost", np.where(days > 0, amount / np.maximum(days, 1) * 30, np.nan))
    retail = np.bincount(act.fill_person[year], weights=act.fill_retail[year].astype(float), minlength=n)
    n_fills = np.bincount(act.fill_person[year], minlength=n)
    put("retail_fill_share", np.where(n_fills > 0, retail / np.maximum(n_fills, 1), np.nan))

    put("visits_365d", _count(act.visit_person, act.visit_day, t, 365, n))
    chronic_v = act.visit_chronic
    put("chronic_visits_180d", _count(act.visit_person[chronic_v], act.visit_day[chronic_v], t, 180, n))

    cancelled = act.appt_status == CANCELLED
    put("cancellations_180d", _count(act.appt_person[cancelled], act.appt_known_day[cancelled], t, 180, n))
    missed = act.appt_status == NO_SHOW
    put("no_shows_365d", _count(act.appt_person[missed], act.appt_known_day[missed], t, 365, n))

    sent = _window(act.fu_day, t, 180)
    ignored = sent & (act.fu_engaged_day > t)
    put("ignored_follow_ups_180d", np.bincount(act.fu_person[ignored], minlength=n).astype(np.float64))

    recent = _count(act.event_person, act.event_day, t, 90, n)
    earlier = _count(act.event_person, act.event_day, t - 90, 90, n)
    ever = _last(act.event_person, act.event_day, t, n) > NO_DAY
    put("app_activity_trend", np.where(ever, (recent + 1) / (earlier + 1), np.nan))
    put("digital_events_90d", recent)

    fb_recent = _window(act.fb_day, t, 180)
    fb_before = act.fb_day <= t - 180
    s_r = np.bincount(act.fb_person[fb_recent], weights=act.fb_score[fb_recent], minlength=n)
    c_r = np.bincount(act.fb_person[fb_recent], minlength=n)
    s_b = np.bincount(act.fb_person[fb_before], weights=act.fb_score[fb_before], minlength=n)
    c_b = np.bincount(act.fb_person[fb_before], minlength=n)
    both = (c_r > 0) & (c_b > 0)
    put("satisfaction_change", np.where(both, s_r / np.maximum(c_r, 1) - s_b / np.maximum(c_b, 1), np.nan))
    fb_year = _window(act.fb_day, t, 365)
    s_y = np.bincount(act.fb_person[fb_year], weights=act.fb_score[fb_year], minlength=n)
    c_y = np.bincount(act.fb_person[fb_year], minlength=n)
    put("feedback_avg_365d", np.where(c_y > 0, s_y / np.maximum(c_y, 1), np.nan))

    usual = usual_org(act, t)
    put(
        "distance_km",
        _distance(act.home_lat, act.home_lon, _take(act.org_lat, usual), _take(act.org_lon, usual)),
    )
    put("age", np.floor((t - act.birth_day) / 365.25))
    frame = FeatureFrame(PERSON_FEATURES, out)
    return frame if rows is None else frame.select(rows)


def usual_org(act: Activity, t: int) -> IntArray:
    """Per person, the organisation of most visits known by `t` (ties: the first by key; -1: none)."""
    sel = (act.visit_day <= t) & (act.visit_org >= 0)
    n_org = max(len(act.org_keys), 1)
    code = act.visit_person[sel] * n_org + act.visit_org[sel]
    out = np.full(act.n, -1, dtype=np.int64)
    if len(code) == 0:
        return out
    uniq, counts = np.unique(code, return_counts=True)
    person, org = uniq // n_org, uniq % n_org
    o = np.lexsort((-org, counts, person))
    out[person[o]] = org[o]  # per person the largest count, then the first org, comes last and wins
    return out


def distance_to(act: Activity, person: IntArray, org: IntArray) -> FloatArray:
    """Approximate km from each person's district centre to an organisation (NaN: unknown)."""
    return _distance(
        act.home_lat[person], act.home_lon[person], _take(act.org_lat, org), _take(act.org_lon, org)
    )


def _take(values: FloatArray, idx: IntArray) -> FloatArray:
    out: FloatArray = np.where(idx >= 0, values[np.maximum(idx, 0)] if len(values) else np.nan, np.nan)
    return out


def _distance(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Equirectangular distance in km (good to a few percent within a city region)."""
    dy = (lat1 - lat2) * 110.57
    dx = (lon1 - lon2) * 111.32 * np.cos(np.radians((lat1 + lat2) / 2))
    out: FloatArray = np.sqrt(dx * dx + dy * dy)
    return out


def _window(day: IntArray, t: int, days: int) -> BoolArray:
    out: BoolArray = (day <= t) & (day > t - days)
    return out


def _count(person: IntArray, day: IntArray, t: int, days: int, n: int) -> FloatArray:
    sel = _window(day, t, days)
    out: FloatArray = np.bincount(person[sel], minlength=n).astype(np.float64)
    return out


def _last(person: IntArray, day: IntArray, t: int, n: int) -> IntArray:
    out = np.full(n, NO_DAY, dtype=np.int64)
    sel = day <= t
    np.maximum.at(out, person[sel], day[sel])
    return out


def first_after(person: IntArray, day: IntArray, t: int, n: int) -> IntArray:
    """Per person, the first day after `t` in (person, day) rows (-NO_DAY: none)."""
    out = np.full(n, -NO_DAY, dtype=np.int64)
    sel = day > t
    np.minimum.at(out, person[sel], day[sel])
    return out


# ---------------------------------------------------------------- Arrow helpers


def _level(tier: Any) -> float:
    """3 for 三级 / 三甲 (tertiary), 2 for 二级, 1 for 一级 / 基层 (primary care), NaN unknown."""
    t = str(tier or "")
    if "三" in t or t.lower().startswith("tertiary"):
        return 3.0
    if "二" in t or t.lower().startswith("secondary"):
        return 2.0
    if "一" in t or "基层" in t or t.lower().startswith("primary"):
        return 1.0
    return float("nan")


def _floats(col: pa.ChunkedArray | pa.Array) -> FloatArray:
    arr = col.cast(pa.float64()) if not pa.types.is_floating(col.type) else col
    out: FloatArray = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def _local(col: pa.ChunkedArray | pa.Array, timezone: str) -> pa.ChunkedArray | pa.Array:
    """Local wall-clock timestamps (naive) of a timestamp column; dates pass through."""
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:  # naive: already local by convention
            return col
        return pc.local_timestamp(col.cast(pa.timestamp(col.type.unit, tz=timezone)))
    return col


def _days(col: pa.ChunkedArray | pa.Array, timezone: str) -> FloatArray:
    """The local day number (days since 1970-01-01) of a timestamp or date column; NaN for nulls."""
    if len(col) == 0:
        return np.empty(0)
    local = _local(col, timezone)
    days = (
        local.cast(pa.date32()).cast(pa.int32())
        if not pa.types.is_date32(local.type)
        else local.cast(pa.int32())
    )
    out: FloatArray = np.asarray(days.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def _local_seconds(col: pa.ChunkedArray | pa.Array, timezone: str) -> FloatArray:
    """Local wall-clock seconds since the epoch of a timestamp column; NaN for nulls."""
    if len(col) == 0:
        return np.empty(0)
    local = _local(col, timezone)
    secs = local.cast(pa.timestamp("s")).cast(pa.int64())
    out: FloatArray = np.asarray(secs.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def _index(col: pa.ChunkedArray | pa.Array, values: pa.Array) -> IntArray:
    """Position of each value in `values` (-1: absent or null)."""
    if len(col) == 0:
        return np.empty(0, dtype=np.int64)
    idx = pc.index_in(col.cast(pa.string()), value_set=values)
    out: IntArray = np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return out
