"""Master data of the regional network, the ``registry`` source: organisations, departments, doctors and
payers. Other sources reference these keys (org_key, department_key, doctor_key, payer_key) although
they are not in the same source: master data is shared across the network, as a regional health
information platform would hold it.

The network: two 三甲 hospitals and two 二级 hospitals (each with its own HIS), one community health
centre (基层) per district (all on the district-level 基层 platform ``his_jc``), the internet hospital
of the first hospital, a retail pharmacy chain, DTP pharmacies, two pharma companies and the payers.
Names are invented; resemblance to real institutions is coincidental.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from careloop.synth import catalog, geography, names
from careloop.synth.arrays import categorical, rng_for
from careloop.synth.identifiers import e164, mobile_numbers

TIER_3A, TIER_2, TIER_PRIMARY = "三甲", "二级", "基层"


@dataclass(frozen=True)
class Org:
    key: str
    name: str
    org_type: str
    tier: str | None
    district: int
    lat: float
    lon: float
    address: str
    phone: str
    his: str | None  # source system holding its patients (HIS), if any


_CHC_STREETS = (
    "湖滨街道", "米市巷街道", "文新街道", "西兴街道", "城厢街道", "五常街道", "临平街道", "下沙街道",
    "富春街道", "锦城街道", "城南街道", "千岛湖镇", "新安江街道",
)  # fmt: skip


def _orgs() -> list[Org]:
    d = geography.DISTRICTS
    orgs = [
        Org(
            "H001",
            "之江大学医学院附属第一医院",
            "hospital",
            TIER_3A,
            0,
            30.2553,
            120.1770,
            "浙江省杭州市上城区庆春路79号",
            "0571-87236114",
            "his_h001",
        ),
        Org(
            "H002",
            "杭州市城北中心医院",
            "hospital",
            TIER_3A,
            1,
            30.3185,
            120.1432,
            "浙江省杭州市拱墅区大关路261号",
            "0571-88393000",
            "his_h002",
        ),
        Org(
            "H003",
            "杭州市萧山区第三人民医院",
            "hospital",
            TIER_2,
            4,
            30.1720,
            120.2690,
            "浙江省杭州市萧山区市心中路1128号",
            "0571-82651200",
            "his_h003",
        ),
        Org(
            "H004",
            "杭州市富春人民医院",
            "hospital",
            TIER_2,
            8,
            30.0490,
            119.9580,
            "浙江省杭州市富阳区金桥北路88号",
            "0571-63312500",
            "his_h004",
        ),
    ]
    for i, (dist, street) in enumerate(zip(d, _CHC_STREETS, strict=True)):
        orgs.append(
            Org(
                f"CHC{i + 1:02d}",
                f"杭州市{dist.name}{street}社区卫生服务中心",
                "community_clinic",
                TIER_PRIMARY,
                i,
                round(dist.lat + 0.004, 4),
                round(dist.lon - 0.003, 4),
                f"浙江省杭州市{dist.name}{dist.streets[0]}{20 + 7 * i}号",
                f"0571-8{6100000 + 1371 * i}",
                "his_jc",
            )
        )
    orgs.append(
        Org(
            "IH01",
            "之江一院互联网医院",
            "internet_hospital",
            None,
            0,
            30.2553,
            120.1770,
            "浙江省杭州市上城区庆春路79号",
            "0571-87236666",
            None,
        )
    )
    for i, di in enumerate((0, 1, 2, 3, 4, 5, 6, 7, 8, 9)):
        dist = d[di]
        street = dist.streets[1]
        orgs.append(
            Org(
                f"RX{i + 1:02d}",
                f"康宁大药房（{street}店）",
                "pharmacy",
                None,
                di,
                round(dist.lat - 0.006, 4),
                round(dist.lon + 0.005, 4),
                f"浙江省杭州市{dist.name}{street}{101 + 13 * i}号",
                f"0571-8{5200000 + 733 * i}",
                None,
            )
        )
    for i, (di, area) in enumerate(((0, "庆春"), (1, "大关"), (4, "萧山"))):
        dist = d[di]
        orgs.append(
            Org(
                f"DTP{i + 1:02d}",
                f"仁济DTP专业药房（{area}店）",
                "dtp_pharmacy",
                None,
                di,
                round(dist.lat + 0.002, 4),
                round(dist.lon + 0.002, 4),
                f"浙江省杭州市{dist.name}{dist.streets[2]}{60 + 11 * i}号",
                f"0571-8{7700000 + 911 * i}",
                None,
            )
        )
    orgs += [
        Org(
            "PH01",
            "钱江制药有限公司",
            "pharma",
            None,
            5,
            30.29,
            119.99,
            "浙江省杭州市余杭区文一西路998号",
            "0571-88880001",
            None,
        ),
        Org(
            "PH02",
            "华康医疗器械有限公司",
            "device_maker",
            None,
            3,
            30.20,
            120.21,
            "浙江省杭州市滨江区江南大道3688号",
            "0571-88880002",
            None,
        ),
    ]
    return orgs


ORGS: tuple[Org, ...] = tuple(_orgs())
ORG_INDEX = {o.key: i for i, o in enumerate(ORGS)}
HOSPITALS = np.array([i for i, o in enumerate(ORGS) if o.org_type == "hospital"], dtype=np.int64)
CLINICS = np.array([i for i, o in enumerate(ORGS) if o.org_type == "community_clinic"], dtype=np.int64)
RETAIL = np.array([i for i, o in enumerate(ORGS) if o.org_type == "pharmacy"], dtype=np.int64)
DTP = np.array([i for i, o in enumerate(ORGS) if o.org_type == "dtp_pharmacy"], dtype=np.int64)
INTERNET_HOSPITAL = ORG_INDEX["IH01"]
ORG_LAT = np.array([o.lat for o in ORGS])
ORG_LON = np.array([o.lon for o in ORGS])
ORG_TIER = np.array([{TIER_3A: 0, TIER_2: 1, TIER_PRIMARY: 2}.get(o.tier or "", -1) for o in ORGS])
ORG_DISTRICT = np.array([o.district for o in ORGS])
TIER_NAMES = (TIER_3A, TIER_2, TIER_PRIMARY)

#: HIS source systems (one per hospital, one shared by the community clinics)
HIS_SOURCES: tuple[str, ...] = tuple(dict.fromkeys(o.his for o in ORGS if o.his))
ORG_HIS = np.array([HIS_SOURCES.index(o.his) if o.his else -1 for o in ORGS], dtype=np.int64)

_DEPTS_3A = (
    ("心血管内科", "cardiology", 12), ("内分泌科", "endocrinology", 10), ("感染病科（肝病中心）", "hepatology", 8),
    ("呼吸与危重症医学科", "respiratory", 10), ("全科医学科", "general_practice", 6), ("儿科", "pediatrics", 10),
    ("消化内科", "gastroenterology", 8), ("神经内科", "neurology", 8), ("普外科", "general_surgery", 8),
    ("骨科", "orthopedics", 8), ("妇产科", "obstetrics_gynecology", 8), ("急诊科", "emergency", 8),
    ("健康管理中心", "health_check", 5), ("中医科", "tcm", 4),
)  # fmt: skip
_DEPTS_2 = (
    ("心内科", "cardiology", 6), ("内分泌科", "endocrinology", 4), ("感染科", "hepatology", 3),
    ("呼吸内科", "respiratory", 5), ("全科", "general_practice", 5), ("儿科", "pediatrics", 5),
    ("消化内科", "gastroenterology", 4), ("神经内科", "neurology", 4), ("外科", "general_surgery", 5),
    ("骨科", "orthopedics", 4), ("妇产科", "obstetrics_gynecology", 4), ("急诊科", "emergency", 5),
    ("体检中心", "health_check", 3),
)  # fmt: skip
_DEPTS_PRIMARY = (
    ("全科", "general_practice", 5), ("中医科", "tcm", 2), ("儿童保健科", "pediatrics", 2),
    ("预防保健科", "preventive_care", 2),
)  # fmt: skip
_DEPTS_ONLINE = (
    ("心血管内科（线上复诊）", "cardiology", 0), ("内分泌科（线上复诊）", "endocrinology", 0),
    ("肝病门诊（线上复诊）", "hepatology", 0), ("呼吸科（线上复诊）", "respiratory", 0),
    ("全科（线上复诊）", "general_practice", 0),
)  # fmt: skip
_TITLE_WEIGHTS = {0: (0.18, 0.25, 0.35, 0.22), 1: (0.08, 0.22, 0.42, 0.28), 2: (0.02, 0.12, 0.46, 0.40)}
TITLES = ("主任医师", "副主任医师", "主治医师", "住院医师")

PAYERS = (
    ("PY01", "杭州市城镇职工基本医疗保险", "government"),
    ("PY02", "杭州市城乡居民基本医疗保险", "government"),
    ("PY03", "西湖惠民保（普惠型商业补充医疗保险）", "commercial"),
    ("PY04", "钱江人寿健康保险", "commercial"),
)


@dataclass
class Registry:
    """Departments and doctors with lookup tables: (org, specialty) -> department / doctor range."""

    dept_org: list[int] = field(default_factory=list)
    dept_name: list[str] = field(default_factory=list)
    dept_spec: list[int] = field(default_factory=list)
    dept_key: list[str] = field(default_factory=list)
    doc_key: list[str] = field(default_factory=list)
    doc_dept: list[int] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    #: (n_orgs, n_specialties) -> department index (routed to a fallback when the org lacks it)
    dept_of: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    #: department -> first doctor index and doctor count (online departments use H001's doctors)
    doc_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    doc_count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def doctors(self, dept: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A doctor of each department, chosen by uniform numbers `u` in [0, 1)."""
        out: np.ndarray = self.doc_start[dept] + (u * self.doc_count[dept]).astype(np.int64)
        return out


def build_registry(seed: int) -> Registry:
    """Departments, doctors and the registry tables (the same for a seed whatever the network size)."""
    rng = rng_for(seed, 99)
    reg = Registry()
    n_spec = len(catalog.SPECIALTIES)
    dept_of = np.full((len(ORGS), n_spec), -1, dtype=np.int64)
    doc_title: list[int] = []
    doc_female: list[bool] = []
    online_depts: list[tuple[int, int]] = []
    per_org: dict[int, int] = {}
    for oi, org in enumerate(ORGS):
        depts: tuple[tuple[str, str, int], ...]
        if org.org_type == "internet_hospital":
            depts = _DEPTS_ONLINE
        elif org.tier == TIER_3A:
            depts = _DEPTS_3A
        elif org.tier == TIER_2:
            depts = _DEPTS_2
        elif org.tier == TIER_PRIMARY:
            depts = _DEPTS_PRIMARY
        else:
            continue
        for di, (name, spec, n_docs) in enumerate(depts):
            d = len(reg.dept_key)
            reg.dept_org.append(oi)
            reg.dept_name.append(name)
            reg.dept_spec.append(catalog.SPEC[spec])
            reg.dept_key.append(f"{org.key}-D{di + 1:02d}")
            dept_of[oi, catalog.SPEC[spec]] = d
            if org.org_type == "internet_hospital":
                online_depts.append((d, catalog.SPEC[spec]))
            if n_docs == 0:
                continue
            tier = int(ORG_TIER[oi])
            titles = categorical(rng, _TITLE_WEIGHTS[tier], n_docs)
            female = rng.random(n_docs) < 0.45
            for t, f in zip(titles, female, strict=True):
                per_org[oi] = per_org.get(oi, 0) + 1
                reg.doc_key.append(f"{org.key}-{per_org[oi]:04d}")
                reg.doc_dept.append(d)
                doc_title.append(int(t))
                doc_female.append(bool(f))
        # route specialties the org lacks
        fallback = dept_of[oi, catalog.SPEC["general_practice"]]
        for s in range(n_spec):
            if dept_of[oi, s] < 0:
                dept_of[oi, s] = fallback
    reg.dept_of = dept_of
    n_dept = len(reg.dept_key)
    doc_dept = np.array(reg.doc_dept, dtype=np.int64)
    reg.doc_start = np.array([np.searchsorted(doc_dept, d) for d in range(n_dept)], dtype=np.int64)
    reg.doc_count = np.bincount(doc_dept, minlength=n_dept).astype(np.int64)
    h001 = ORG_INDEX["H001"]
    for online, spec_i in online_depts:  # online clinics are staffed by H001 doctors (multi-site practice)
        src = dept_of[h001, spec_i]
        reg.doc_start[online], reg.doc_count[online] = reg.doc_start[src], reg.doc_count[src]

    n_doc = len(reg.doc_key)
    title = np.array(doc_title)
    female = np.array(doc_female)
    birth_year = 1992 - np.array([22, 15, 8, 2])[title] - rng.integers(0, 10, n_doc)
    g1, g2 = names.given_names(rng, female, birth_year)
    doc_name = names.name_text(names.surnames(rng, n_doc), g1, g2)
    dept_arr = np.array(reg.doc_dept)
    org_of_doc = np.array(reg.dept_org)[dept_arr]
    license_no = [f"1{t + 1}0330100{100000 + 7 * i:06d}" for i, t in enumerate(title)]

    reg.tables["organization"] = pa.table(
        {
            "key": [o.key for o in ORGS],
            "name": [o.name for o in ORGS],
            "org_type": [o.org_type for o in ORGS],
            "tier": [o.tier for o in ORGS],
            "province": [geography.PROVINCE] * len(ORGS),
            "city": [geography.CITY] * len(ORGS),
            "district": [geography.DISTRICTS[o.district].name for o in ORGS],
            "address": [o.address for o in ORGS],
            "phone": [o.phone for o in ORGS],
            "latitude": [o.lat for o in ORGS],
            "longitude": [o.lon for o in ORGS],
        }
    )
    reg.tables["department"] = pa.table(
        {
            "key": reg.dept_key,
            "org_key": [ORGS[o].key for o in reg.dept_org],
            "name": reg.dept_name,
            "specialty": [catalog.SPECIALTIES[s] for s in reg.dept_spec],
        }
    )
    reg.tables["doctor"] = pa.table(
        {
            "key": reg.doc_key,
            "name": doc_name,
            "org_key": [ORGS[o].key for o in org_of_doc],
            "department_key": [reg.dept_key[d] for d in dept_arr],
            "title": [TITLES[t] for t in title],
            "specialty": [catalog.SPECIALTIES[reg.dept_spec[d]] for d in dept_arr],
            "sex": ["female" if f else "male" for f in female],
            "license_number": license_no,
            "phone": e164(mobile_numbers(rng, n_doc)),
        }
    )
    reg.tables["payer"] = pa.table(
        {
            "key": [p[0] for p in PAYERS],
            "name": [p[1] for p in PAYERS],
            "ownership": [p[2] for p in PAYERS],
            "province": [geography.PROVINCE] * len(PAYERS),
            "city": [geography.CITY] * len(PAYERS),
        }
    )
    return reg
