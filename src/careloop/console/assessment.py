"""The capability self-assessment of seed 002 (能力评估工具): five dimensions — 患者体验, 数字化触点,
数据应用, 营销技术, 团队能力 — four statements each, answered on a five-level scale (1 未开始 … 5 领先).
The statements paraphrase what seed 002 describes for each dimension. A dimension's score is the mean of
its answers; the radar chart compares the latest assessment with the one before it.

Answers are organisational (levels 1-5 and a title the user types), never about patients; each submission
is one `capability_assessment` row.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from careloop.clock import Clock
from careloop.errors import ConfigError
from careloop.storage import WorkspaceStore

QUESTIONNAIRE = "seed002-v1"
LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Question:
    id: str
    zh: str
    en: str


@dataclass(frozen=True)
class Dimension:
    id: str
    zh: str
    en: str
    questions: tuple[Question, ...]


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(
        "patient_experience",
        "患者体验",
        "Patient experience",
        (
            Question(
                "px1",
                "就医前、就医中、就医后的接触点已梳理，痛点有改进计划",
                "Touchpoints before, during and after care are mapped, and pain points have improvement plans",
            ),
            Question(
                "px2",
                "系统收集满意度 / NPS，并据此闭环改进",
                "Satisfaction / NPS is collected systematically and acted on",
            ),
            Question(
                "px3",
                "提供个性化随访计划与慢病管理服务",
                "Personalised follow-up plans and chronic-disease management are offered",
            ),
            Question(
                "px4",
                "预约、候诊、支付等环节的等待与不便被持续度量并下降",
                "Waiting and friction in booking, waiting rooms and payment are measured and falling",
            ),
        ),
    ),
    Dimension(
        "digital_touchpoints",
        "数字化触点",
        "Digital touchpoints",
        (
            Question(
                "dt1",
                "官网、公众号、小程序、APP 等入口共享统一身份与预约",
                "Website, WeChat account / mini-program and app share one identity and one booking system",
            ),
            Question(
                "dt2",
                "在线问诊、复诊续方与药品配送可用",
                "Online consultation, repeat prescriptions and medicine delivery are available",
            ),
            Question(
                "dt3",
                "线上线下触点的数据实时回流到统一平台",
                "Online and offline touchpoints feed one platform in near real time",
            ),
            Question(
                "dt4",
                "短信、微信、APP 推送按患者偏好协同触达",
                "SMS, WeChat and app push are coordinated by each patient's preference",
            ),
        ),
    ),
    Dimension(
        "data_use",
        "数据应用",
        "Data use",
        (
            Question(
                "du1",
                "HIS、EMR、药房、APP 等多源数据已打通并统一患者标识",
                "HIS, EMR, pharmacy and app data are joined under one patient identity",
            ),
            Question(
                "du2",
                "患者画像、分群与标签体系已建立并用于决策",
                "Patient profiles, segments and tags exist and are used in decisions",
            ),
            Question(
                "du3",
                "预测模型（流失预警、依从性、复购）指导干预",
                "Predictive models (churn, adherence, refill) guide interventions",
            ),
            Question(
                "du4",
                "数据安全与隐私合规（授权同意、脱敏、审计）已制度化",
                "Data security and privacy compliance (consent, masking, audit) are institutionalised",
            ),
        ),
    ),
    Dimension(
        "martech",
        "营销技术",
        "Marketing technology",
        (
            Question(
                "mt1",
                "营销自动化：触发式旅程、随访与提醒自动执行",
                "Marketing automation: triggered journeys, follow-ups and reminders run by themselves",
            ),
            Question(
                "mt2",
                "每次活动都设对照组（holdout / A/B）衡量真实效果",
                "Every campaign has a control group (holdout / A/B) that measures its real effect",
            ),
            Question(
                "mt3",
                "统一指标体系衡量各渠道获客、转化与 ROI",
                "One KPI system measures acquisition, conversion and ROI per channel",
            ),
            Question(
                "mt4",
                "内容经过医学专业审核与广告法合规检查",
                "Content passes medical review and Advertising-Law checks before it is sent",
            ),
        ),
    ),
    Dimension(
        "team",
        "团队能力",
        "Team capability",
        (
            Question(
                "tc1",
                "策略、内容、数字营销、数据分析等职能分工明确",
                "Strategy, content, digital marketing and analytics have clear owners",
            ),
            Question(
                "tc2",
                "医疗专业团队与营销团队协作顺畅",
                "Medical and marketing teams work together smoothly",
            ),
            Question(
                "tc3",
                "团队具备数据分析与数字工具能力，并持续培训",
                "The team can analyse data and use digital tools, and keeps training",
            ),
            Question(
                "tc4",
                "有阶段目标、里程碑与定期复盘机制",
                "Phased goals, milestones and regular reviews are in place",
            ),
        ),
    ),
)
QUESTIONS = {q.id: q for d in DIMENSIONS for q in d.questions}


def score(answers: Mapping[str, int]) -> dict[str, float]:
    """Mean level per dimension (every question must be answered)."""
    missing = [q for q in QUESTIONS if q not in answers]
    if missing:
        raise ConfigError(f"answer every statement; missing: {', '.join(missing)}")
    bad = {q: a for q, a in answers.items() if q not in QUESTIONS or a not in LEVELS}
    if bad:
        raise ConfigError(f"answers are levels 1-5 of the listed statements; not {sorted(bad)}")
    return {d.id: sum(answers[q.id] for q in d.questions) / len(d.questions) for d in DIMENSIONS}


def save(
    store: WorkspaceStore, title: str, answers: Mapping[str, int], *, by: str, clock: Clock
) -> dict[str, Any]:
    title = " ".join(title.split())[:120]
    if not title:
        raise ConfigError("give the assessment a title (the hospital or department assessed)")
    scores = score(answers)
    row = {
        "assessment_id": "A" + secrets.token_hex(8),
        "title": title,
        "created_at": clock.now(),
        "created_by": by,
        "questionnaire": QUESTIONNAIRE,
        "answers": orjson.dumps(dict(answers)).decode(),
        "scores": orjson.dumps(scores).decode(),
    }
    store.insert("capability_assessment", [row])
    return {**row, "answers": dict(answers), "scores": scores}


def _json(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, str | bytes) else v


def history(store: WorkspaceStore, limit: int = 50) -> list[dict[str, Any]]:
    """Submitted assessments, newest first."""
    query = (
        "SELECT assessment_id, title, created_at, created_by, questionnaire, answers, scores "
        "FROM capability_assessment ORDER BY created_at DESC, assessment_id LIMIT " + str(int(limit))
    )
    rows = store.rows(query)
    for r in rows:
        r["answers"] = _json(r["answers"]) or {}
        r["scores"] = _json(r["scores"]) or {}
    return rows
