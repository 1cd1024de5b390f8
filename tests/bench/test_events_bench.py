"""Pieces of `careloop bench events` that can be checked without running servers."""

from __future__ import annotations

import orjson

from careloop.bench.events_bench import BATCH, bodies, histogram_quantile
from careloop.events.spec import parse


def test_histogram_quantile_reads_the_bucket_where_the_quantile_falls() -> None:
    text = "\n".join(
        [
            'x_bucket{le="0.05"} 10.0',
            'x_bucket{le="0.1"} 94.0',
            'x_bucket{le="0.25"} 99.0',
            'x_bucket{le="+Inf"} 100.0',
        ]
    )
    assert histogram_quantile(text, "x", 0.5) == 0.1
    assert histogram_quantile(text, "x", 0.95) == 0.25
    assert histogram_quantile("", "x", 0.95) is None


def test_bench_bodies_are_valid_batches_with_distinct_message_ids() -> None:
    from datetime import UTC, datetime

    payloads = bodies(3, 50, "t")
    ids = set()
    for p in payloads:
        parsed = parse(orjson.loads(p), datetime(2026, 11, 20, tzinfo=UTC))
        assert len(parsed.accepted) == BATCH and not parsed.rejected
        ids |= {a.message_id for a in parsed.accepted}
    assert len(ids) == 3 * BATCH
