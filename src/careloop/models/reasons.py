"""Per-patient reason codes: the drivers that raise a patient's risk most, in plain Chinese and English.

Method (decision 0015): LightGBM's exact TreeSHAP contributions (``pred_contrib``) split each patient's
raw score (log-odds) into one additive part per feature plus the average. The reasons are the features
with the largest **positive** parts (they push this patient's risk above the average patient's), at
least `min_contribution` log-odds each, at most `top` of them, each rendered from the patient's own value:
"近180天取消预约2次 / 2 cancelled appointments in 180 days". A missing value that raises the risk has
its own phrase ("无近期满意度评价 / no recent satisfaction score").

`drivers` ranks the features over a whole table (mean absolute contribution and the direction in which
higher values push the risk): what the model learned, for the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Phrase = Callable[[float], tuple[str, str]]

WEEKDAYS = (
    ("周一", "Monday"),
    ("周二", "Tuesday"),
    ("周三", "Wednesday"),
    ("周四", "Thursday"),
    ("周五", "Friday"),
    ("周六", "Saturday"),
    ("周日", "Sunday"),
)
CHANNELS = {
    "wechat": ("微信预约", "booked via WeChat"),
    "app": ("App预约", "booked in the app"),
    "web": ("网站预约", "booked on the web"),
    "phone": ("电话预约", "booked by phone"),
    "onsite": ("现场预约", "booked at the desk"),
    "referral": ("转诊预约", "booked by referral"),
    "other": ("其他渠道预约", "booked through another channel"),
}
VISIT_TYPES = {
    "check_up": ("体检预约", "a check-up booking"),
    "chronic": ("慢病专科复诊", "a chronic-care specialty visit"),
    "emergency": ("急诊", "an emergency booking"),
    "other": ("普通门诊", "a general outpatient visit"),
}
LEVELS = {
    3.0: ("三级医院", "a tertiary hospital"),
    2.0: ("二级医院", "a secondary hospital"),
    1.0: ("基层医疗机构", "a primary-care clinic"),
}


def _pl(v: float, one: str, many: str | None = None) -> str:
    """'1 no-show', '2 no-shows' (English plurals of counts)."""
    n = round(v)
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _run_out(v: float) -> tuple[str, str]:
    if v < 0:
        return f"药品已用完{-v:.0f}天", f"medication ran out {-v:.0f} days ago"
    if v == 0:
        return "药品今天用完", "medication runs out today"
    return f"药品{v:.0f}天后用完", f"medication runs out in {v:.0f} days"


def _trend(v: float) -> tuple[str, str]:
    if v < 1:
        pct = (1 - v) * 100
        return (
            f"App/微信活跃度下降{pct:.0f}%（近90天对比前90天）",
            f"app / WeChat activity down {pct:.0f}% (last 90 days vs the 90 before)",
        )
    if v > 1:
        pct = (v - 1) * 100
        return f"App/微信活跃度上升{pct:.0f}%", f"app / WeChat activity up {pct:.0f}%"
    return "App/微信活跃度持平", "app / WeChat activity flat"


def _sat(v: float) -> tuple[str, str]:
    if v < 0:
        return (
            f"满意度评分下降{-v:.1f}分（近180天对比此前）",
            f"satisfaction down {-v:.1f} points (last 180 days vs before)",
        )
    return f"满意度评分上升{v:.1f}分", f"satisfaction up {v:.1f} points"


def _level(v: float) -> tuple[str, str]:
    zh, en = LEVELS.get(v, ("医疗机构", "a care provider"))
    return f"预约{zh}", f"booked at {en}"


#: feature -> phrase of its value (Chinese, English)
PHRASES: dict[str, Phrase] = {
    # person features (careloop.models.risk_features.PERSON_FEATURES)
    "days_since_chronic_care": lambda v: (
        f"距上次取药/复诊{v:.0f}天",
        f"{_pl(v, 'day')} since the last refill or follow-up",
    ),
    "days_since_visit": lambda v: (f"距上次就诊{v:.0f}天", f"{_pl(v, 'day')} since the last visit"),
    "days_to_run_out": _run_out,
    "pdc_min_365d": lambda v: (
        f"近一年服药依从性PDC {v:.0%}",
        f"medication adherence (PDC) {v:.0%} over the year",
    ),
    "chronic_classes": lambda v: (
        f"在用慢病药物{v:.0f}类",
        _pl(v, "chronic drug class", "chronic drug classes"),
    ),
    "chronic_fills_365d": lambda v: (f"近一年慢病取药{v:.0f}次", f"{_pl(v, 'chronic refill')} in the year"),
    "monthly_drug_cost": lambda v: (f"月药费约{v:.0f}元", f"drugs cost about {v:.0f} yuan a month"),
    "retail_fill_share": lambda v: (f"{v:.0%}的取药在院外药房", f"{v:.0%} of refills at outside pharmacies"),
    "visits_365d": lambda v: (f"近一年就诊{v:.0f}次", f"{_pl(v, 'visit')} in the year"),
    "chronic_visits_180d": lambda v: (
        f"近180天慢病复诊{v:.0f}次",
        f"{_pl(v, 'chronic-care visit')} in 180 days",
    ),
    "cancellations_180d": lambda v: (
        f"近180天取消预约{v:.0f}次",
        f"{_pl(v, 'cancelled appointment')} in 180 days",
    ),
    "no_shows_365d": lambda v: (f"近一年爽约{v:.0f}次", f"{_pl(v, 'no-show')} in the year"),
    "ignored_follow_ups_180d": lambda v: (
        f"近180天{v:.0f}条随访消息未打开/未回复",
        f"{_pl(v, 'follow-up message')} ignored in 180 days",
    ),
    "app_activity_trend": _trend,
    "digital_events_90d": lambda v: (
        f"近90天App/微信行为{v:.0f}次",
        f"{_pl(v, 'app / WeChat action')} in 90 days",
    ),
    "satisfaction_change": _sat,
    "feedback_avg_365d": lambda v: (
        f"近一年满意度平均{v:.1f}分（满分5分）",
        f"average satisfaction {v:.1f} of 5 this year",
    ),
    "distance_km": lambda v: (
        f"距常去医疗机构约{v:.0f}公里",
        f"about {v:.0f} km from the usual place of care",
    ),
    "age": lambda v: (f"{v:.0f}岁", f"aged {v:.0f}"),
    # appointment features (careloop.models.noshow)
    "lead_days": lambda v: (f"提前{v:.0f}天预约", f"booked {v:.0f} days ahead"),
    "channel": lambda v: ("预约渠道", "booking channel"),  # categorical: rendered from its level
    "weekday": lambda v: WEEKDAYS[int(v) % 7],
    "hour": lambda v: (f"{v:.0f}点的号", f"a {v:.0f}:00 slot"),
    "prior_no_shows": lambda v: (f"此前爽约{v:.0f}次", f"{_pl(v, 'earlier no-show')}"),
    "prior_appointments": lambda v: (f"此前预约{v:.0f}次", f"{_pl(v, 'earlier appointment')}"),
    "prior_no_show_rate": lambda v: (f"历史爽约率{v:.0%}", f"{v:.0%} of earlier appointments missed"),
    "prior_cancellations": lambda v: (f"此前取消预约{v:.0f}次", f"{_pl(v, 'earlier cancellation')}"),
    "org_level": _level,
    "provider_distance_km": lambda v: (f"距就诊机构约{v:.0f}公里", f"about {v:.0f} km from the provider"),
    "visit_type": lambda v: ("就诊类型", "visit type"),  # categorical
    # per drug class (careloop.models.refill)
    "class_days_to_run_out": _run_out,
    "class_pdc_365d": lambda v: (
        f"该类药近一年依从性PDC {v:.0%}",
        f"PDC {v:.0%} for this drug over the year",
    ),
    "class_fills_365d": lambda v: (
        f"该类药近一年取药{v:.0f}次",
        f"{_pl(v, 'refill')} of this drug in the year",
    ),
    "last_supply_days": lambda v: (f"上次取药{v:.0f}天量", f"last refill was a {v:.0f}-day supply"),
    "last_fill_retail": lambda v: (
        ("上次在院外药房取药", "last refill at an outside pharmacy")
        if v >= 0.5
        else ("上次在医院取药", "last refill at the hospital")
    ),
    "late_refills_365d": lambda v: (f"近一年{v:.0f}次延迟续药", f"{_pl(v, 'late refill')} in the year"),
    "mean_refill_delay": lambda v: (
        (f"平均晚{v:.0f}天续药", f"refills {v:.0f} days late on average")
        if v > 0
        else (f"平均提前{-v:.0f}天续药", f"refills {-v:.0f} days early on average")
    ),
}

#: feature -> phrase when the value is missing and that raises the risk
MISSING: dict[str, tuple[str, str]] = {
    "days_since_chronic_care": ("无慢病取药或复诊记录", "no chronic refill or follow-up on record"),
    "days_since_visit": ("无就诊记录", "no visit on record"),
    "days_to_run_out": ("无在用慢病药物", "no current chronic medication"),
    "pdc_min_365d": ("依从性无法计算（取药少于2次）", "adherence unknown (fewer than 2 refills)"),
    "monthly_drug_cost": ("无药费记录", "no drug spend on record"),
    "retail_fill_share": ("无取药记录", "no refill on record"),
    "app_activity_trend": ("未使用App/微信服务", "does not use the app or WeChat services"),
    "satisfaction_change": ("无近期满意度评价", "no recent satisfaction score"),
    "feedback_avg_365d": ("近一年无满意度评价", "no satisfaction score this year"),
    "distance_km": ("距离未知", "distance unknown"),
    "age": ("年龄未知", "age unknown"),
    "lead_days": ("预约时间未知", "booking time unknown"),
    "prior_no_show_rate": ("首次预约", "first appointment"),
    "org_level": ("机构级别未知", "provider level unknown"),
    "provider_distance_km": ("距离未知", "distance unknown"),
    "class_pdc_365d": ("该类药依从性无法计算", "adherence for this drug unknown"),
    "mean_refill_delay": ("该类药尚无续药记录", "no earlier refill of this drug"),
}

#: plain names of the features, for the drivers table
LABELS: dict[str, tuple[str, str]] = {
    "days_since_chronic_care": ("距上次取药/复诊天数", "days since the last refill or follow-up"),
    "days_since_visit": ("距上次就诊天数", "days since the last visit"),
    "days_to_run_out": ("距药品用完天数", "days until the medication runs out"),
    "pdc_min_365d": ("最低依从性PDC", "lowest adherence (PDC)"),
    "chronic_classes": ("慢病药物类别数", "chronic drug classes"),
    "chronic_fills_365d": ("近一年慢病取药次数", "chronic refills in the year"),
    "monthly_drug_cost": ("月药费", "monthly drug cost"),
    "retail_fill_share": ("院外药房取药占比", "share of refills at outside pharmacies"),
    "visits_365d": ("近一年就诊次数", "visits in the year"),
    "chronic_visits_180d": ("近180天慢病复诊次数", "chronic-care visits in 180 days"),
    "cancellations_180d": ("近180天取消预约次数", "cancelled appointments in 180 days"),
    "no_shows_365d": ("近一年爽约次数", "no-shows in the year"),
    "ignored_follow_ups_180d": ("近180天未回应随访数", "ignored follow-ups in 180 days"),
    "app_activity_trend": ("App/微信活跃度变化", "app / WeChat activity trend"),
    "digital_events_90d": ("近90天App/微信行为数", "app / WeChat actions in 90 days"),
    "satisfaction_change": ("满意度变化", "satisfaction change"),
    "feedback_avg_365d": ("近一年满意度平均分", "average satisfaction this year"),
    "distance_km": ("距常去机构距离", "distance to the usual place of care"),
    "age": ("年龄", "age"),
    "lead_days": ("提前预约天数", "booking lead time"),
    "channel": ("预约渠道", "booking channel"),
    "weekday": ("星期", "weekday"),
    "hour": ("就诊时段", "hour of the slot"),
    "prior_no_shows": ("此前爽约次数", "earlier no-shows"),
    "prior_appointments": ("此前预约次数", "earlier appointments"),
    "prior_no_show_rate": ("历史爽约率", "earlier no-show rate"),
    "prior_cancellations": ("此前取消次数", "earlier cancellations"),
    "org_level": ("机构级别", "provider level"),
    "provider_distance_km": ("距就诊机构距离", "distance to the provider"),
    "visit_type": ("就诊类型", "visit type"),
    "class_days_to_run_out": ("该类药距用完天数", "days until this drug runs out"),
    "class_pdc_365d": ("该类药依从性PDC", "adherence (PDC) for this drug"),
    "class_fills_365d": ("该类药近一年取药次数", "refills of this drug in the year"),
    "last_supply_days": ("上次取药天数", "days supplied at the last refill"),
    "last_fill_retail": ("上次是否院外取药", "last refill outside the hospital"),
    "late_refills_365d": ("近一年延迟续药次数", "late refills in the year"),
    "mean_refill_delay": ("平均续药延迟天数", "mean refill delay (days)"),
}


@dataclass(frozen=True)
class Reason:
    feature: str
    zh: str
    en: str
    contribution: float  # log-odds this feature adds for this patient

    @property
    def text(self) -> str:
        return f"{self.zh} / {self.en}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "zh": self.zh,
            "en": self.en,
            "contribution": round(self.contribution, 4),
        }


def phrase(feature: str, value: float, levels: Mapping[str, Sequence[str]] | None = None) -> tuple[str, str]:
    """A feature's value in words; categorical features name their level (`levels[feature][code]`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING.get(feature, LABELS.get(feature, (feature, feature)))
    if levels and feature in levels:
        names = levels[feature]
        code = int(value)
        level = names[code] if 0 <= code < len(names) else "other"
        table = CHANNELS if feature == "channel" else VISIT_TYPES if feature == "visit_type" else {}
        if level in table:
            return table[level]
        zh, en = LABELS.get(feature, (feature, feature))
        return f"{zh}：{level}", f"{en}: {level}"
    fn = PHRASES.get(feature)
    if fn is None:
        return f"{feature} = {value:g}", f"{feature} = {value:g}"
    return fn(float(value))


def reasons(
    contributions: FloatArray,
    values: FloatArray,
    columns: Sequence[str],
    *,
    top: int = 3,
    min_contribution: float = 0.05,
    levels: Mapping[str, Sequence[str]] | None = None,
) -> list[list[Reason]]:
    """Per row, the `top` features that raise the risk most (see the module docstring).
    `contributions` is LightGBM's pred_contrib output: rows x (features + 1), the last column the bias."""
    contrib = contributions[:, : len(columns)]
    out: list[list[Reason]] = []
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
    for i in range(contrib.shape[0]):
        row = []
        for j in order[i]:
            c = float(contrib[i, j])
            if c < min_contribution:
                break
            zh, en = phrase(columns[j], float(values[i, j]), levels)
            row.append(Reason(columns[j], zh, en, c))
        out.append(row)
    return out


def drivers(
    contributions: FloatArray, values: FloatArray, columns: Sequence[str], categorical: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Features ranked by mean |contribution| over the rows, with their share of the total and the
    direction: 'higher raises risk' when the contribution grows with the value (sign of the rank
    correlation over rows with a value), 'lower raises risk' otherwise; categories have no direction."""
    contrib = contributions[:, : len(columns)]
    mean_abs = np.abs(contrib).mean(axis=0) if len(contrib) else np.zeros(len(columns))
    total = float(mean_abs.sum()) or 1.0
    rows = []
    for j in np.argsort(-mean_abs, kind="stable"):
        v, c = values[:, j], contrib[:, j]
        ok = ~np.isnan(v)
        direction = ""
        if columns[j] in categorical:
            direction = "depends on the category"
        elif ok.sum() > 2 and np.std(v[ok]) > 0 and np.std(c[ok]) > 0:
            r = np.corrcoef(_ranks(v[ok]), _ranks(c[ok]))[0, 1]
            direction = "higher raises risk" if r > 0 else "lower raises risk"
        zh, en = LABELS.get(columns[j], (columns[j], columns[j]))
        rows.append(
            {
                "feature": columns[j],
                "zh": zh,
                "en": en,
                "mean_abs_contribution": round(float(mean_abs[j]), 4),
                "share": round(float(mean_abs[j]) / total, 4),
                "direction": direction,
            }
        )
    return rows


def _ranks(x: FloatArray) -> FloatArray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r
