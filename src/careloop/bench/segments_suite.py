"""The benchmark's 20 segments: careloop definitions and, for each, the SQL an analyst would write by hand.

Definitions use every kind of condition (trait comparisons, keyed traits, defaults, relative dates, event
counts in windows, absence of events, nested all / any / not, membership of other segments). The
hand-written DuckDB SQL of each selects the same persons from the bare tables (`person`, `trait_value`,
`event`) with set operations and GROUP BY — no workspace filter, no parameters. The benchmark checks that
both give the same members before timing them.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def definitions() -> dict[str, Any]:
    """name -> definition, referenced segments first."""
    return {
        "老年": {"trait": "age", "op": ">=", "value": 65},
        "退订": {"event": "unsubscribe", "op": ">=", "count": 1},
        "慢病中年": {
            "all": [
                {"trait": "age", "op": "between", "value": [45, 65]},
                {"trait": "decision_type", "op": "=", "value": "中度"},
            ]
        },
        "依从性差": {"trait": "pdc", "key": "*", "op": "<", "value": 0.8},
        "高血压依从性差": {"trait": "pdc", "key": ["CCB", "ARB"], "op": "<", "value": 0.8},
        "近90天未复诊": {"trait": "last_visit_at", "op": "<", "value": "-90d"},
        "偏好微信": {"trait": "preferred_channel", "op": "=", "value": "wechat"},
        "高价值": {"trait": "spend_365d", "op": ">=", "value": 2000},
        "爽约": {"trait": "no_shows_365d", "op": ">=", "value": 1},
        "App活跃": {"trait": "app_events_30d", "op": ">=", "value": 5},
        "提醒点击2次": {"event": "refill_reminder_clicked", "op": ">=", "count": 2, "within": "30d"},
        "近7天预约": {"event": "appointment_booked", "op": ">=", "count": 1, "within": "7d"},
        "沉默90天": {"event": "app_open", "op": "=", "count": 0, "within": "90d"},
        "5A询问": {"trait": "stage_5a", "op": "in", "value": ["Ask", "Appeal"]},
        "流失风险": {
            "all": [
                {"trait": "visits_365d", "op": ">=", "value": 2},
                {"trait": "visits_90d", "op": "=", "value": 0, "default": 0},
                {"not": {"event": "appointment_booked", "op": ">=", "count": 1, "within": "90d"}},
            ]
        },
        "微信可达": {"trait": "events_90d_by_channel", "key": "wechat", "op": ">=", "value": 1},
        "重度或高消费": {
            "any": [
                {"trait": "decision_type", "op": "=", "value": "重度"},
                {"trait": "spend_365d", "op": ">", "value": 4000},
            ]
        },
        "老年依从性差": {"all": [{"segment": "老年"}, {"trait": "pdc", "key": "*", "op": "<", "value": 0.8}]},
        "青年阅读": {
            "all": [
                {"trait": "age_band", "op": "=", "value": "25-34"},
                {"event": "article_read", "op": ">=", "count": 3, "within": "180d"},
            ]
        },
        "主动咨询": {
            "all": [
                {
                    "any": [
                        {"event": "question_asked", "op": ">=", "count": 1, "within": "30d"},
                        {"event": "report_viewed", "op": ">=", "count": 2, "within": "60d"},
                    ]
                },
                {"not": {"segment": "退订"}},
                {"trait": "age", "op": "between", "value": [18, 80]},
            ]
        },
    }


def handwritten(as_of: date, tz: str) -> dict[str, str]:
    """name -> hand-written DuckDB SQL selecting the same persons (person_id)."""
    zone = ZoneInfo(tz)
    until = f"'{datetime.combine(as_of, time.max, tzinfo=zone).isoformat()}'::TIMESTAMPTZ"

    def since(days: int) -> str:
        start = datetime.combine(as_of - timedelta(days=days - 1), time.min, tzinfo=zone)
        return f"'{start.isoformat()}'::TIMESTAMPTZ"

    def trait(name: str, test: str, key: str = "''") -> str:
        return f"SELECT person_id FROM trait_value WHERE trait = '{name}' AND key = {key} AND {test}"

    def events(name: str, having: str, days: int | None = None) -> str:
        window = f" AND occurred_at >= {since(days)}" if days else ""
        return (
            f"SELECT person_id FROM event WHERE name = '{name}' AND occurred_at <= {until}{window} "
            f"GROUP BY person_id HAVING {having}"
        )

    ninety = datetime.combine(as_of - timedelta(days=90), time.min, tzinfo=zone).isoformat()
    old = trait("age", "value_num >= 65")
    unsub = events("unsubscribe", "count(*) >= 1")
    mid, heavy, young = "value_text = '中度'", "value_text = '重度'", "value_text = '25-34'"
    poor = "SELECT DISTINCT person_id FROM trait_value WHERE trait = 'pdc' AND value_num < 0.8"
    return {
        "老年": old,
        "退订": unsub,
        "慢病中年": f"{trait('age', 'value_num BETWEEN 45 AND 65')} INTERSECT {trait('decision_type', mid)}",
        "依从性差": poor,
        "高血压依从性差": "SELECT DISTINCT person_id FROM trait_value WHERE trait = 'pdc' "
        "AND key IN ('CCB', 'ARB') AND value_num < 0.8",
        "近90天未复诊": trait("last_visit_at", f"value_time < '{ninety}'::TIMESTAMPTZ"),
        "偏好微信": trait("preferred_channel", "value_text = 'wechat'"),
        "高价值": trait("spend_365d", "value_num >= 2000"),
        "爽约": trait("no_shows_365d", "value_num >= 1"),
        "App活跃": trait("app_events_30d", "value_num >= 5"),
        "提醒点击2次": events("refill_reminder_clicked", "count(*) >= 2", 30),
        "近7天预约": events("appointment_booked", "count(*) >= 1", 7),
        "沉默90天": f"SELECT person_id FROM person EXCEPT {events('app_open', 'count(*) >= 1', 90)}",
        "5A询问": trait("stage_5a", "value_text IN ('Ask', 'Appeal')"),
        "流失风险": f"({trait('visits_365d', 'value_num >= 2')} EXCEPT "
        f"{trait('visits_90d', 'value_num <> 0')}) EXCEPT {events('appointment_booked', 'count(*) >= 1', 90)}",
        "微信可达": trait("events_90d_by_channel", "value_num >= 1", "'wechat'"),
        "重度或高消费": f"{trait('decision_type', heavy)} UNION {trait('spend_365d', 'value_num > 4000')}",
        "老年依从性差": f"{old} INTERSECT {poor}",
        "青年阅读": f"{trait('age_band', young)} INTERSECT {events('article_read', 'count(*) >= 3', 180)}",
        "主动咨询": f"(({events('question_asked', 'count(*) >= 1', 30)} UNION "
        f"{events('report_viewed', 'count(*) >= 2', 60)}) EXCEPT {unsub}) INTERSECT "
        f"{trait('age', 'value_num BETWEEN 18 AND 80')}",
    }
