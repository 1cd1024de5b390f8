"""Booking evidence: which patient record a channel account booked an appointment for.

A WeChat follower, an app user or a call-centre caller who books an appointment leaves two traces: a
booking event in the channel (``appointment_booked`` from the official account, a ``call_inbound`` in
the call centre) and the appointment in the hospital's HIS, booked through that channel at the same
moment. Matching the two — same booking channel, booking times within a few seconds, the same
hospital when the event names one (``org_key`` property), and exactly one candidate on both sides —
says that the account's record booked for that patient record. Whether the account *is* that patient
(or a parent booking for a child) is decided later, in `careloop.identity.evidence.attach_edges`.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from careloop.identity.rules import Rule
from careloop.storage.workspace import WorkspaceStore

BOOKINGS_TABLE = "record_bookings"


def _events(store: WorkspaceStore, rule: Rule) -> pa.Table:
    names = {f"e{i}": n for i, n in enumerate(rule.events)}
    sources = {f"s{i}": s for i, s in enumerate(rule.channels)}
    return store.sql(
        "SELECT source, patient_key, occurred_at, CAST(properties AS TEXT) AS properties FROM event "  # noqa: S608 - placeholders only
        f"WHERE name IN ({', '.join(':' + k for k in names)}) "
        f"AND source IN ({', '.join(':' + k for k in sources)}) AND patient_key IS NOT NULL",
        {**names, **sources},
    )


def _appointments(store: WorkspaceStore, rule: Rule) -> pa.Table:
    channels = {f"c{i}": c for i, c in enumerate(sorted(set(rule.channels.values())))}
    return store.sql(
        "SELECT source, patient_key, org_key, channel, booked_at FROM appointment "  # noqa: S608
        f"WHERE booked_at IS NOT NULL AND channel IN ({', '.join(':' + k for k in channels)})",
        channels,
    )


def load_bookings(con: duckdb.DuckDBPyConnection, store: WorkspaceStore, rules: list[Rule]) -> int:
    """Create `record_bookings(rule, booker, patient)` (unique ids of `record_meta`) on `con`.

    One row per booking event that matches exactly one appointment, where that appointment matches
    no other event; returns the number of rows."""
    con.execute(f"CREATE OR REPLACE TABLE {BOOKINGS_TABLE} (rule VARCHAR, booker BIGINT, patient BIGINT)")
    for rule in rules:
        events, appts = _events(store, rule), _appointments(store, rule)
        if not events.num_rows or not appts.num_rows:
            continue
        channels = pa.table(
            {"source": list(rule.channels), "channel": [rule.channels[s] for s in rule.channels]}
        )
        con.register("_ev", events)
        con.register("_ap", appts)
        con.register("_ch", channels)
        w = int(rule.within_seconds)
        try:
            con.execute(
                f"""
                INSERT INTO {BOOKINGS_TABLE}
                WITH ev AS (
                    SELECT row_number() OVER () AS eid, e.source, e.patient_key, ch.channel,
                           CAST(epoch(e.occurred_at) AS BIGINT) AS sec,
                           CASE WHEN json_valid(CAST(e.properties AS VARCHAR))
                                THEN json_extract_string(CAST(e.properties AS VARCHAR), '$.org_key') END AS org
                    FROM _ev e JOIN _ch ch ON ch.source = e.source
                ),
                ap AS (
                    SELECT row_number() OVER () AS aid, source, patient_key, org_key, channel,
                           CAST(epoch(booked_at) AS BIGINT) AS sec
                    FROM _ap
                ),
                shifted AS (
                    SELECT ev.*, ev.sec + d.d AS s2 FROM ev, range(-{w}, {w} + 1) AS d(d)
                ),
                pairs AS (
                    SELECT DISTINCT s.eid, s.source AS bsrc, s.patient_key AS bkey, a.aid,
                           a.source AS psrc, a.patient_key AS pkey
                    FROM shifted s JOIN ap a ON a.channel = s.channel AND a.sec = s.s2
                     AND (s.org IS NULL OR a.org_key = s.org)
                ),
                unique_pairs AS (
                    SELECT * FROM pairs
                    QUALIFY count(*) OVER (PARTITION BY eid) = 1 AND count(*) OVER (PARTITION BY aid) = 1
                )
                SELECT DISTINCT ?, b.unique_id, p.unique_id FROM unique_pairs u
                JOIN record_meta b ON b.source = u.bsrc AND b.patient_key = u.bkey
                JOIN record_meta p ON p.source = u.psrc AND p.patient_key = u.pkey
                WHERE b.unique_id <> p.unique_id
                """,  # noqa: S608 - fixed table name and an integer
                [rule.name],
            ).fetchall()
        finally:
            for name in ("_ev", "_ap", "_ch"):
                con.unregister(name)
    return int(con.execute(f"SELECT count(*) FROM {BOOKINGS_TABLE}").fetchall()[0][0])  # noqa: S608
