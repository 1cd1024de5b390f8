"""Clinical catalogue: chronic conditions (ICD-10), the drugs Chinese hospitals use for them (ATC codes,
names as printed on the box, volume-based-procurement era prices), acute reasons for visits, lab and
home-device observation codes (LOINC) and specialties.

Prices are rough retail yuan per pack after 集采 (national volume-based procurement); they only need
to be plausible relative to each other, because monthly out-of-pocket cost is one planted churn driver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: specialties; every department carries one, and visits are routed by it
SPECIALTIES = (
    "cardiology",  # 0 心内科
    "endocrinology",  # 1 内分泌科
    "hepatology",  # 2 感染科 / 肝病科
    "respiratory",  # 3 呼吸科
    "general_practice",  # 4 全科
    "pediatrics",  # 5 儿科
    "gastroenterology",  # 6 消化内科
    "neurology",  # 7 神经内科
    "general_surgery",  # 8 普外科
    "orthopedics",  # 9 骨科
    "obstetrics_gynecology",  # 10 妇产科
    "emergency",  # 11 急诊科
    "health_check",  # 12 体检中心
    "tcm",  # 13 中医科
    "preventive_care",  # 14 预防保健科
)
SPEC = {name: i for i, name in enumerate(SPECIALTIES)}


@dataclass(frozen=True)
class Condition:
    code: str
    name: str
    short: str  # used in free text
    specialty: str


CONDITIONS: tuple[Condition, ...] = (
    Condition("I10", "原发性高血压", "高血压", "cardiology"),
    Condition("E11.9", "2型糖尿病，不伴有并发症", "糖尿病", "endocrinology"),
    Condition("B18.1", "慢性乙型病毒性肝炎", "乙肝", "hepatology"),
    Condition("J44.9", "慢性阻塞性肺疾病", "慢阻肺", "respiratory"),
    Condition("E78.5", "高脂血症", "高血脂", "cardiology"),
)
HTN, T2D, HBV, COPD, HLD = range(5)
CONDITION_SPECIALTY = np.array([SPEC[c.specialty] for c in CONDITIONS], dtype=np.int64)


@dataclass(frozen=True)
class Drug:
    atc: str
    name: str  # as on the pack
    generic: str  # short name for texts and event properties
    drug_class: str
    condition: int
    pack_price: float  # yuan for `pack_days` days
    pack_days: int
    units_per_day: float  # tablets (or inhalations, as fraction of a device) per day
    specialty_drug: bool  # typically dispensed by DTP pharmacies when not by the hospital


DRUGS: tuple[Drug, ...] = (
    Drug("C08CA01", "苯磺酸氨氯地平片 5mg", "氨氯地平", "CCB", HTN, 4.2, 28, 1, False),
    Drug("C08CA05", "硝苯地平控释片 30mg", "硝苯地平", "CCB", HTN, 22.0, 28, 1, False),
    Drug("C09CA03", "缬沙坦胶囊 80mg", "缬沙坦", "ARB", HTN, 9.8, 28, 1, False),
    Drug("C09CA04", "厄贝沙坦片 150mg", "厄贝沙坦", "ARB", HTN, 8.4, 28, 1, False),
    Drug("C09CA01", "氯沙坦钾片 50mg", "氯沙坦", "ARB", HTN, 11.2, 28, 1, False),
    Drug("C09AA04", "培哚普利叔丁胺片 4mg", "培哚普利", "ACEI", HTN, 26.0, 30, 1, False),
    Drug("C07AB02", "酒石酸美托洛尔片 25mg", "美托洛尔", "beta_blocker", HTN, 6.5, 30, 2, False),
    Drug("A10BA02", "盐酸二甲双胍片 0.5g", "二甲双胍", "biguanide", T2D, 9.6, 30, 3, False),
    Drug("A10BF01", "阿卡波糖片 50mg", "阿卡波糖", "alpha_glucosidase_inhibitor", T2D, 18.0, 30, 3, False),
    Drug("A10BH01", "磷酸西格列汀片 100mg", "西格列汀", "DPP4_inhibitor", T2D, 36.0, 28, 1, False),
    Drug("A10BK01", "达格列净片 10mg", "达格列净", "SGLT2_inhibitor", T2D, 58.0, 28, 1, True),
    Drug("A10BB09", "格列齐特缓释片 30mg", "格列齐特", "sulfonylurea", T2D, 12.0, 30, 2, False),
    Drug("J05AF10", "恩替卡韦分散片 0.5mg", "恩替卡韦", "HBV_nucleoside_analogue", HBV, 8.5, 28, 1, False),
    Drug("J05AF07", "富马酸替诺福韦二吡呋酯片 300mg", "替诺福韦", "HBV_nucleoside_analogue", HBV, 14.0, 30, 1, False),
    Drug("J05AF13", "富马酸丙酚替诺福韦片 25mg", "丙酚替诺福韦", "HBV_nucleoside_analogue", HBV, 198.0, 30, 1, True),
    Drug("R03BB04", "噻托溴铵粉吸入剂 18μg", "噻托溴铵", "LAMA", COPD, 215.0, 30, 1, True),
    Drug("R03AK06", "沙美特罗替卡松吸入粉雾剂 50/250μg", "沙美特罗替卡松", "ICS_LABA", COPD, 288.0, 30, 2, True),
    Drug("R03AK07", "布地奈德福莫特罗吸入粉雾剂 160/4.5μg", "布地奈德福莫特罗", "ICS_LABA", COPD, 265.0, 30, 2, True),
    Drug("C10AA05", "阿托伐他汀钙片 20mg", "阿托伐他汀", "statin", HLD, 6.8, 28, 1, False),
    Drug("C10AA07", "瑞舒伐他汀钙片 10mg", "瑞舒伐他汀", "statin", HLD, 7.5, 28, 1, False),
)  # fmt: skip
DRUG_CLASSES = tuple(dict.fromkeys(d.drug_class for d in DRUGS))
DRUG_CLASS_INDEX = np.array([DRUG_CLASSES.index(d.drug_class) for d in DRUGS], dtype=np.int64)
DRUG_CONDITION = np.array([d.condition for d in DRUGS], dtype=np.int64)
DRUG_DAILY_COST = np.array([d.pack_price / d.pack_days for d in DRUGS], dtype=np.float64)
DRUG_UNITS_PER_DAY = np.array([d.units_per_day for d in DRUGS], dtype=np.float64)
DRUG_SPECIALTY = np.array([d.specialty_drug for d in DRUGS], dtype=np.bool_)
DRUG_IS_INHALER = np.array([d.condition == COPD for d in DRUGS], dtype=np.bool_)

#: first-line drug choice per condition: (drug indices, weights)
FIRST_LINE: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    HTN: ((0, 1, 2, 3, 4, 5, 6), (0.34, 0.12, 0.14, 0.12, 0.10, 0.06, 0.12)),
    T2D: ((7, 8, 9, 10, 11), (0.50, 0.16, 0.12, 0.10, 0.12)),
    HBV: ((12, 13, 14), (0.62, 0.18, 0.20)),
    COPD: ((15, 16, 17), (0.45, 0.30, 0.25)),
    HLD: ((18, 19), (0.55, 0.45)),
}
#: add-on drug of a second class (combination therapy): (drug indices, weights), share of patients
ADD_ON: dict[int, tuple[tuple[int, ...], tuple[float, ...], float]] = {
    HTN: ((2, 3, 4, 0), (0.3, 0.3, 0.2, 0.2), 0.28),
    T2D: ((9, 10, 8), (0.4, 0.35, 0.25), 0.25),
    COPD: ((16, 17), (0.5, 0.5), 0.20),
}


@dataclass(frozen=True)
class AcuteReason:
    code: str
    name: str
    specialty: str
    ages: tuple[int, int]
    weight: float


ACUTE_REASONS: tuple[AcuteReason, ...] = (
    AcuteReason("J06.9", "急性上呼吸道感染", "general_practice", (0, 120), 30),
    AcuteReason("J20.9", "急性支气管炎", "respiratory", (0, 120), 8),
    AcuteReason("J18.9", "肺炎", "respiratory", (0, 120), 4),
    AcuteReason("K29.7", "胃炎", "gastroenterology", (14, 120), 10),
    AcuteReason("A09.9", "感染性腹泻", "gastroenterology", (0, 120), 5),
    AcuteReason("M54.5", "腰痛", "orthopedics", (25, 120), 7),
    AcuteReason("R51", "头痛", "neurology", (14, 120), 4),
    AcuteReason("K80.2", "胆囊结石", "general_surgery", (30, 120), 3),
    AcuteReason("S93.4", "踝关节扭伤", "orthopedics", (10, 70), 3),
    AcuteReason("N76.0", "急性阴道炎", "obstetrics_gynecology", (18, 60), 3),
    AcuteReason("J03.9", "急性扁桃体炎", "pediatrics", (0, 14), 10),
    AcuteReason("H10.9", "结膜炎", "general_practice", (0, 120), 3),
    AcuteReason("I63.9", "脑梗死", "neurology", (55, 120), 2),
    AcuteReason("I50.9", "心力衰竭", "cardiology", (60, 120), 1.5),
    AcuteReason("Z00.0", "健康体检", "health_check", (18, 120), 12),
)  # fmt: skip
ACUTE_SPECIALTY = np.array([SPEC[r.specialty] for r in ACUTE_REASONS], dtype=np.int64)
ACUTE_MIN_AGE = np.array([r.ages[0] for r in ACUTE_REASONS])
ACUTE_MAX_AGE = np.array([r.ages[1] for r in ACUTE_REASONS])
ACUTE_WEIGHT = np.array([r.weight for r in ACUTE_REASONS], dtype=np.float64)
ACUTE_INPATIENT_SHARE = np.array(
    [0.0, 0.02, 0.35, 0.0, 0.03, 0.0, 0.0, 0.45, 0.0, 0.0, 0.02, 0.0, 0.9, 0.7, 0.0]
)
WELLNESS = len(ACUTE_REASONS) - 1

#: short prescriptions written at acute visits: (ATC, name, drug_class, days, pack price)
ACUTE_DRUGS: tuple[tuple[str, str, str, int, float], ...] = (
    ("J01CA04", "阿莫西林胶囊 0.25g", "antibiotic", 5, 9.5),
    ("J01DC04", "头孢克洛缓释片 0.375g", "antibiotic", 5, 21.0),
    ("M01AE01", "布洛芬缓释胶囊 0.3g", "NSAID", 3, 12.0),
    ("A02BC01", "奥美拉唑肠溶胶囊 20mg", "PPI", 14, 16.0),
    ("A07BC05", "蒙脱石散 3g", "antidiarrheal", 3, 15.0),
    ("R05CB01", "乙酰半胱氨酸颗粒 0.1g", "mucolytic", 5, 18.0),
)  # fmt: skip


@dataclass(frozen=True)
class ObservationCode:
    loinc: str
    name: str
    unit: str


OBS_SYSTOLIC = ObservationCode("8480-6", "收缩压", "mmHg")
OBS_DIASTOLIC = ObservationCode("8462-4", "舒张压", "mmHg")
OBS_GLUCOSE_BLOOD = ObservationCode("15074-8", "血糖", "mmol/L")  # glucose [moles/volume] in blood
OBS_GLUCOSE_FASTING = ObservationCode("14771-0", "空腹血糖", "mmol/L")
OBS_HBA1C = ObservationCode("4548-4", "糖化血红蛋白", "%")
OBS_ALT = ObservationCode("1742-6", "丙氨酸氨基转移酶", "U/L")
OBS_HBV_DNA = ObservationCode("29615-2", "乙肝病毒DNA定量", "IU/mL")
OBS_LDL = ObservationCode("22748-8", "低密度脂蛋白胆固醇", "mmol/L")
OBS_FEV1_PRED = ObservationCode("20150-9", "第一秒用力呼气容积", "L")
OBSERVATIONS = (
    OBS_SYSTOLIC, OBS_DIASTOLIC, OBS_GLUCOSE_BLOOD, OBS_GLUCOSE_FASTING, OBS_HBA1C, OBS_ALT,
    OBS_HBV_DNA, OBS_LDL, OBS_FEV1_PRED,
)  # fmt: skip

#: home devices: (code, description)
DEVICES = (
    ("BP_CUFF", "上臂式电子血压计"),
    ("GLUCOMETER", "家用血糖仪"),
    ("CGM", "持续葡萄糖监测系统（CGM，14天传感器）"),
)
