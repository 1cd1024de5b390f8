"""Chinese free text: feedback whose sentiment matches its score, chief complaints of online follow-ups,
message templates and the vocabulary of behavioural events.

Feedback is composed from clauses about one aspect each (doctor, nurses, waiting, environment,
pharmacy, cost, online service). A score of 5 gets two positive clauses and often praise, 4 positive
with at most a mild complaint, 3 a mixed or neutral pair, 2 negative clauses, 1 strongly negative ones
and an escalation ("要投诉"). So text sentiment and score agree, up to the noise of real comments.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from careloop.synth.arrays import BoolArray, Column, IntArray, join, null_where, numbered, pick

POSITIVE = (
    "医生很耐心，讲得很清楚", "医生态度很好，问得很仔细", "医生专业，解答了我的疑问", "护士很热情，服务周到",
    "护士打针技术好，一点不疼", "挂号很方便，小程序直接预约", "候诊时间不长，很准时", "医院环境干净整洁",
    "取药很快，药师交代得很清楚", "线上复诊很方便，不用跑医院", "续方很及时，药直接送到家", "检查报告出得快，手机上就能看",
    "导诊指引很清楚", "费用透明，医保结算方便", "随访电话很贴心",
)  # fmt: skip
MILD = (
    "就是排队时间有点长", "停车有点难", "叫号系统偶尔不准", "药房人比较多", "检查要等好几天",
    "小程序有时候有点卡", "自费部分稍微贵了点",
)  # fmt: skip
NEUTRAL = ("总体还行", "一般吧", "和以前差不多", "还可以", "没什么特别的")
NEGATIVE = (
    "等了两个多小时才看上", "医生看病太快，没说几句话就开药了", "护士态度冷淡", "预约了还要排很久的队",
    "收费不透明，自费太多", "药房排队太久", "线上问诊回复太慢", "药送得太慢，差点断药", "检查结果等了一个星期",
    "挂号太难，号源一放就没了", "环境嘈杂，厕所不干净", "医生没有解释清楚用药注意事项", "电话一直打不通",
)  # fmt: skip
STRONG = ("非常失望", "体验很差", "再也不来了", "要投诉", "太让人生气了")
PRAISE = ("非常满意！", "点赞！", "感谢医生！", "推荐！", "辛苦了，谢谢！")

_POS = pa.array(POSITIVE)
_MILD = pa.array(MILD)
_NEU = pa.array(NEUTRAL)
_NEG = pa.array(NEGATIVE)
_STRONG = pa.array(STRONG)
_PRAISE = pa.array(PRAISE)


def _any(rng: np.random.Generator, vocab: pa.Array, n: int) -> Column:
    return pick(vocab, rng.integers(0, len(vocab), n))


def feedback_text(rng: np.random.Generator, score: IntArray, has_text: BoolArray) -> Column:
    """A comment per row whose sentiment follows the 1-5 score; null where `has_text` is false."""
    n = len(score)
    pos1, pos2 = _any(rng, _POS, n), _any(rng, _POS, n)
    neg1, neg2 = _any(rng, _NEG, n), _any(rng, _NEG, n)
    mild, neu = _any(rng, _MILD, n), _any(rng, _NEU, n)
    praise, strong = _any(rng, _PRAISE, n), _any(rng, _STRONG, n)
    five = join(pos1, "，", pos2, "。", praise)
    four = join(pos1, "，", mild, "。")
    four_plain = join(pos1, "，", pos2, "。")
    three = join(pos1, "，但是", neg1, "，", neu, "。")
    three_b = join(neu, "，", mild, "。")
    two = join(neg1, "，", neg2, "。")
    one = join(neg1, "，", neg2, "，", strong, "！")
    u = rng.random(n)
    out = pa.array(np.full(n, None), type=pa.string())
    choices = [
        (score == 5, five),
        ((score == 4) & (u < 0.6), four),
        ((score == 4) & (u >= 0.6), four_plain),
        ((score == 3) & (u < 0.55), three),
        ((score == 3) & (u >= 0.55), three_b),
        (score == 2, two),
        (score <= 1, one),
    ]
    for cond, text in choices:
        out = pc.if_else(pa.array(cond), text, out)
    return null_where(out, ~has_text)


#: chief complaints of online follow-ups, per condition (numbers are filled in)
COMPLAINT_LEADS = ("高血压复诊", "糖尿病复诊", "慢性乙肝复诊", "慢阻肺复诊", "高血脂复诊")
COMPLAINT_TAILS = (
    "，近期血压控制尚可，申请续方", "，空腹血糖偶有偏高，咨询是否调整用药", "，复查肝功能正常，申请续开抗病毒药",
    "，近期活动后气短，吸入剂快用完了", "，血脂复查结果想请医生看一下",
)  # fmt: skip


def complaints(rng: np.random.Generator, condition: IntArray) -> Column:
    c = np.clip(condition, 0, len(COMPLAINT_LEADS) - 1)
    general = rng.random(len(condition)) < 0.25
    lead = pick(COMPLAINT_LEADS, c)
    tail = pick(COMPLAINT_TAILS, c)
    generic = pick(("，药快吃完了，申请续方", "，想咨询一下最近的检查结果", "，最近有点不舒服，想问问要不要调药"),
                   rng.integers(0, 3, len(condition)))  # fmt: skip
    return join(lead, pc.if_else(pa.array(general), generic, tail))


# ---- events -------------------------------------------------------------------------------------

ARTICLE_TOPICS = ("高血压", "糖尿病", "乙肝", "慢阻肺", "高血脂", "儿童健康", "流感", "睡眠", "饮食", "运动")
APP_SCREENS = ("首页", "用药提醒", "我的报告", "预约挂号", "健康档案", "在线问诊", "积分商城", "家庭成员")
WEB_PAGES = (
    "/", "/departments", "/doctors", "/articles/hypertension-diet", "/articles/diabetes-exercise",
    "/guide/appointment", "/guide/insurance", "/internet-hospital",
)  # fmt: skip
OA_MENUS = ("预约挂号", "报告查询", "智能导诊", "互联网医院", "停车缴费", "就诊指南")
CALL_REASONS = ("预约挂号", "报告查询", "用药咨询", "医保咨询", "投诉建议", "改约退号")
REFERRERS = ("baidu", "wechat", "direct", "sogou", "toutiao")


def article_ids(rng: np.random.Generator, topic: IntArray) -> Column:
    return numbered("ART", topic * 1000 + rng.integers(0, 120, len(topic)), 5)


# ---- messages -----------------------------------------------------------------------------------

SMS_SIGNATURE = "【之江一院】"
OPT_OUT = "回T退订"


def template_text(templates: tuple[str, ...], index: IntArray, valid: BoolArray | None = None) -> Column:
    return pick(templates, index, valid)
