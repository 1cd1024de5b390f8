"""Synthetic trait and event tables for the segment benchmark, generated inside DuckDB.

`build_segment_store` fills a careloop DuckDB store (workspace ``bench``) with N persons, their traits
(age, age band, visits, spend, no-shows, app activity, last visit, 5A stage, decision type, preferred
channel, PDC per drug class, events per channel) and E live events (15 event names with a skewed mix,
four channels, spread over the 365 days before the as-of date). Values come from a hash of the row
number, so the same N, E and seed give the same data. The tables have exactly the shape the trait
computer and the event writer produce; only the values are invented.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from careloop.storage.base import Backend

WORKSPACE = "bench"
EVENT_NAMES = (
    "app_open",
    "page_view",
    "article_read",
    "refill_reminder_sent",
    "refill_reminder_clicked",
    "appointment_booked",
    "appointment_attended",
    "question_asked",
    "report_viewed",
    "wechat_menu_click",
    "coupon_claimed",
    "survey_completed",
    "video_watched",
    "call_inbound",
    "unsubscribe",
)
CHANNELS = ("app", "wechat", "sms", "web")
DRUG_CLASSES = ("CCB", "ARB", "biguanide", "statin", "insulin", "LAMA")


def _u(expr: str, salt: int) -> str:
    """A uniform number in [0, 1) from a hash of `expr` and `salt` (deterministic)."""
    return f"((hash({expr} * 7919 + {salt}) % 1000000)::DOUBLE / 1000000.0)"


def build_segment_store(backend: Backend, persons: int, events: int, seed: int, as_of: date, tz: str) -> None:
    """Fill the (migrated, empty) store with the benchmark's persons, traits and events."""
    zone = ZoneInfo(tz)
    end = datetime.combine(as_of, time.max, tzinfo=zone)
    start = end - timedelta(days=365)
    computed = datetime.combine(as_of, time(2, 0), tzinfo=zone)
    s = seed * 1000
    ws = f"'{WORKSPACE}'"
    backend.execute(f"INSERT INTO workspace (id, name, created_at) VALUES ({ws}, {ws}, now())")
    backend.execute(
        f"INSERT INTO person (workspace_id, person_id, sex) SELECT {ws}, 'P' || lpad(i::VARCHAR, 8, '0'), "
        f"CASE WHEN {_u('i', s + 1)} < 0.52 THEN 'female' ELSE 'male' END FROM range({persons}) t(i)"
    )
    pid = "'P' || lpad(i::VARCHAR, 8, '0')"
    at = f"'{computed.isoformat()}'::TIMESTAMPTZ"
    num = f"INSERT INTO trait_value (workspace_id, person_id, trait, key, value_num, computed_at) SELECT {ws}, {pid}, "
    text = f"INSERT INTO trait_value (workspace_id, person_id, trait, key, value_text, computed_at) SELECT {ws}, {pid}, "
    age = f"floor(18 + 72 * {_u('i', s + 2)})"
    backend.execute(f"{num}'age', '', {age}, {at} FROM range({persons}) t(i)")
    backend.execute(
        f"{text}'age_band', '', CASE WHEN a < 25 THEN '14-24' WHEN a < 35 THEN '25-34' WHEN a < 45 THEN '35-44' "
        f"WHEN a < 55 THEN '45-54' WHEN a < 65 THEN '55-64' WHEN a < 75 THEN '65-74' ELSE '75+' END, {at} "
        f"FROM (SELECT i, {age} AS a FROM range({persons}) t(i))"
    )
    for n, (trait, expr, share) in enumerate(
        (
            ("visits_90d", f"floor(4 * {_u('i', s + 3)} ^ 2)", 0.6),
            ("visits_365d", f"floor(12 * {_u('i', s + 4)} ^ 2)", 0.8),
            ("spend_365d", f"round(5000 * {_u('i', s + 5)} ^ 3, 2)", 0.7),
            ("no_shows_365d", f"floor(3 * {_u('i', s + 6)} ^ 3)", 0.5),
            ("app_events_30d", f"floor(40 * {_u('i', s + 7)} ^ 4)", 0.5),
        )
    ):
        backend.execute(
            f"{num}'{trait}', '', {expr}, {at} FROM range({persons}) t(i) WHERE {_u('i', s + 20 + n)} < {share}"
        )
    backend.execute(
        f"INSERT INTO trait_value (workspace_id, person_id, trait, key, value_time, computed_at) "
        f"SELECT {ws}, {pid}, 'last_visit_at', '', '{end.isoformat()}'::TIMESTAMPTZ - "
        f"to_days((720 * {_u('i', s + 8)})::INTEGER), {at} FROM range({persons}) t(i) WHERE {_u('i', s + 9)} < 0.85"
    )
    for trait, values, salt in (
        ("stage_5a", ("Act", "Ask", "Appeal", "Aware", "O", "Advocate"), 10),
        ("decision_type", ("中度", "轻度", "重度"), 11),
        ("preferred_channel", CHANNELS, 12),
    ):
        arr = "[" + ", ".join(f"'{v}'" for v in values) + "]"
        pick = f"{arr}[1 + floor({len(values)} * {_u('i', s + salt)} ^ 1.5)::INTEGER]"
        backend.execute(f"{text}'{trait}', '', {pick}, {at} FROM range({persons}) t(i)")
    classes = "[" + ", ".join(f"'{c}'" for c in DRUG_CLASSES) + "]"
    backend.execute(
        f"{num}'pdc', {classes}[1 + ((i + j) % {len(DRUG_CLASSES)})::INTEGER], "
        f"round({_u('i * 3 + j', s + 13)}, 4), {at} "
        f"FROM range({persons}) t(i), range(3) u(j) WHERE {_u('i', s + 14)} < 0.4 * (3 - j) / 3"
    )
    backend.execute(
        f"{num}'events_90d_by_channel', {[*CHANNELS]}[1 + j::INTEGER], floor(20 * {_u('i * 4 + j', s + 15)} ^ 3), "
        f"{at} FROM range({persons}) t(i), range({len(CHANNELS)}) u(j) WHERE {_u('i * 4 + j', s + 16)} < 0.45"
    )
    names = "[" + ", ".join(f"'{n}'" for n in EVENT_NAMES) + "]"
    backend.execute(
        "INSERT INTO event (workspace_id, source, key, event_type, name, occurred_at, channel, person_id, "
        f"received_at) SELECT {ws}, 'bench', i::VARCHAR, 'track', "
        f"{names}[1 + floor({len(EVENT_NAMES)} * {_u('i', s + 17)} ^ 2)::INTEGER], "
        f"'{start.isoformat()}'::TIMESTAMPTZ + to_seconds((365 * 86400 * {_u('i', s + 18)})::BIGINT), "
        f"{[*CHANNELS]}[1 + floor(4 * {_u('i', s + 19)} ^ 2)::INTEGER], "
        f"'P' || lpad((floor({persons} * {_u('i', s + 21)} ^ 1.3))::BIGINT::VARCHAR, 8, '0'), "
        f"'{start.isoformat()}'::TIMESTAMPTZ FROM range({events}) t(i)"
    )
    backend.execute("CHECKPOINT")
