"""Vectorised building blocks: numpy in, Arrow out, no per-row Python.

Times are handled as int64 seconds since the Unix epoch (UTC) and days as int days since the epoch;
"local" means Asia/Shanghai (UTC+8, no daylight saving), so a local day and second-of-day convert to
UTC by subtracting eight hours. Strings are built by Arrow compute kernels or, for fixed-width ASCII
(keys, ID numbers, phones), straight from a byte matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

TZ = "Asia/Shanghai"
TS_TYPE = pa.timestamp("us", tz=TZ)
UTC_OFFSET = 8 * 3600
DAY = 86_400
EPOCH = date(1970, 1, 1)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Column: TypeAlias = Any  # a pyarrow Array (pyarrow ships no type information)


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return (d - EPOCH).days


def weekday(days: IntArray) -> IntArray:
    """Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def local_seconds(days: IntArray, second_of_day: IntArray) -> IntArray:
    """UTC epoch seconds of a local (Asia/Shanghai) day and second of day."""
    return days * DAY + second_of_day - UTC_OFFSET


def local_day(seconds: IntArray) -> IntArray:
    """Local calendar day of UTC epoch seconds."""
    return (seconds + UTC_OFFSET) // DAY


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent, reproducible generator for (seed, stream...)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


# ---- arrow conversion --------------------------------------------------------------------------


def timestamps(seconds: IntArray, valid: BoolArray | None = None) -> Column:
    """Timezone-aware Arrow timestamps from UTC epoch seconds (null where not `valid`)."""
    micros = pa.array(np.asarray(seconds, dtype=np.int64) * 1_000_000, mask=_mask(valid))
    return micros.cast(TS_TYPE)


def dates(days: IntArray, valid: BoolArray | None = None) -> Column:
    return pa.array(np.asarray(days, dtype=np.int32), mask=_mask(valid)).cast(pa.date32())


def ints(values: npt.NDArray[np.integer], valid: BoolArray | None = None) -> Column:
    return pa.array(np.asarray(values, dtype=np.int32), type=pa.int32(), mask=_mask(valid))


def floats(values: FloatArray, valid: BoolArray | None = None, decimals: int | None = None) -> Column:
    v = np.asarray(values, dtype=np.float64)
    if decimals is not None:
        v = np.round(v, decimals)
    return pa.array(v, type=pa.float64(), mask=_mask(valid))


def bools(values: BoolArray, valid: BoolArray | None = None) -> Column:
    return pa.array(np.asarray(values, dtype=np.bool_), type=pa.bool_(), mask=_mask(valid))


def _mask(valid: BoolArray | None) -> BoolArray | None:
    return None if valid is None else ~np.asarray(valid, dtype=np.bool_)


def pick(
    vocab: Sequence[str] | Column, index: npt.NDArray[np.integer], valid: BoolArray | None = None
) -> Column:
    """vocab[index] as an Arrow string column; null where not `valid`."""
    dictionary = vocab if isinstance(vocab, pa.Array) else pa.array(list(vocab), type=pa.string())
    idx = pa.array(np.asarray(index, dtype=np.int32), mask=_mask(valid))
    return dictionary.take(idx)


def const(value: str | None, n: int) -> Column:
    return pa.array([value] * n, type=pa.string()) if n < 64 else pa.repeat(pa.scalar(value, pa.string()), n)


def nulls(n: int, type_: pa.DataType | None = None) -> Column:
    return pa.nulls(n, type=type_ or pa.string())


def join(*parts: Column | str, sep: str = "") -> Column:
    """Element-wise concatenation of string columns and literals (a null part makes the row null)."""
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, sep)


def join_skip_nulls(*parts: Column | str, sep: str = "") -> Column:
    """Like `join`, but null parts are left out."""
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, sep, null_handling="skip")


def int_text(values: npt.NDArray[np.integer]) -> Column:
    """Decimal text of integers, no padding."""
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())


def where(cond: BoolArray, a: Column, b: Column) -> Column:
    return pc.if_else(pa.array(np.asarray(cond, dtype=np.bool_)), a, b)


def null_where(values: Column, cond: BoolArray) -> Column:
    """`values` with nulls where `cond` holds."""
    return pc.if_else(pa.array(np.asarray(cond, dtype=np.bool_)), pa.scalar(None, values.type), values)


# ---- fixed-width ASCII --------------------------------------------------------------------------


def digit_matrix(values: npt.NDArray[np.integer], width: int) -> npt.NDArray[np.uint8]:
    """(n, width) ASCII digits of non-negative integers, zero-padded (higher digits cut)."""
    v = np.asarray(values, dtype=np.int64).copy()
    out = np.empty((len(v), width), dtype=np.uint8)
    for i in range(width - 1, -1, -1):
        out[:, i] = 48 + v % 10
        v //= 10
    return out


def ascii_strings(matrix: npt.NDArray[np.uint8]) -> Column:
    """One Arrow string per row of a (n, width) ASCII byte matrix."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(matrix).tobytes()
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def prefixed(prefix: str, matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Put an ASCII prefix in front of every row of a byte matrix."""
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    return np.hstack([np.broadcast_to(head, (matrix.shape[0], len(head))), matrix])


def numbered(prefix: str, values: npt.NDArray[np.integer], width: int) -> Column:
    """``prefix`` + zero-padded number, e.g. numbered("E", [12], 6) -> "E000012"."""
    return ascii_strings(prefixed(prefix, digit_matrix(values, width)))


def row_keys(prefix: str, chunk: int, n: int, width: int = 9) -> Column:
    """Keys unique across chunks: prefix + 4-digit chunk + `width`-digit running number."""
    return numbered(prefix, chunk * 10**width + np.arange(n, dtype=np.int64), width + 4)


# ---- sampling ----------------------------------------------------------------------------------


def categorical(rng: np.random.Generator, weights: Sequence[float] | FloatArray, n: int) -> IntArray:
    """n draws of category indices with the given (unnormalised) weights."""
    p = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(p / p.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(p) - 1).astype(np.int64)


def categorical_rows(rng: np.random.Generator, weights: FloatArray) -> IntArray:
    """One draw per row of an (n, k) weight matrix (rows need not be normalised; all-zero -> 0)."""
    total = weights.sum(axis=1, keepdims=True)
    cdf = np.cumsum(weights / np.where(total > 0, total, 1.0), axis=1)
    u = rng.random((weights.shape[0], 1))
    out: IntArray = np.minimum((cdf <= u).sum(axis=1), weights.shape[1] - 1).astype(np.int64)
    return out


def sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def lookup(values: npt.NDArray[Any], index: IntArray, default: Any) -> npt.NDArray[Any]:
    """values[index] where index >= 0, else `default` (also when `values` is empty)."""
    if len(values) == 0:
        return np.full(len(index), default)
    return np.where(index >= 0, values[np.maximum(index, 0)], default)


def take_or_null(column: Column, index: IntArray) -> Column:
    """column[index] where index >= 0, else null (also when `column` is empty)."""
    if len(column) == 0:
        return pa.nulls(len(index), type=column.type)
    return null_where(column.take(pa.array(np.maximum(index, 0))), index < 0)


def run_starts(key: IntArray, day: IntArray | None = None, gap: int = 0) -> BoolArray:
    """Flags the first row of each run of a sorted `key` (and, with `day`, of each run whose days are
    at most `gap` apart)."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.bool_)
    new = key[1:] != key[:-1]
    if day is not None:
        new = new | (day[1:] - day[:-1] > gap)
    out: BoolArray = np.r_[True, new]
    return out


def group_rank(groups: IntArray) -> IntArray:
    """0, 1, 2 ... within runs of equal values of a sorted `groups` array."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n, dtype=np.int64) - run_start


def expand(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For per-owner counts: (owner index per row, rank within owner)."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return owner, group_rank(owner)


_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def stable_uniform(a: IntArray, b: IntArray) -> FloatArray:
    """A fixed pseudo-uniform number in [0, 1) per (a, b) pair, e.g. a person's usual doctor."""
    with np.errstate(over="ignore"):
        x = (np.asarray(a).astype(np.uint64) * _MIX) ^ (np.asarray(b).astype(np.uint64) * _MIX2)
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
    out: FloatArray = (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    return out


# ---- bijective scrambling (source keys that do not reveal the person order) --------------------


def permute(values: IntArray, key: int, domain: int) -> IntArray:
    """A keyed bijection of [0, domain): a 4-round Feistel network with cycle walking."""
    bits = max(2, int(domain - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    round_keys = [np.uint64((key * 0x632BE59BD9B4E019 + i * 0x94D049BB133111EB) % 2**64) for i in range(4)]

    def encrypt(v: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        left, right = v >> half, v & mask
        for rk in round_keys:
            f = (right ^ rk) * _MIX
            f = (f ^ (f >> np.uint64(29))) * _MIX2
            f = (f >> np.uint64(32)) & mask
            left, right = right, left ^ f
        out: npt.NDArray[np.uint64] = (left << half) | right
        return out

    with np.errstate(over="ignore"):
        y = encrypt(np.asarray(values, dtype=np.uint64))
        bad = y >= np.uint64(domain)
        while bad.any():
            y[bad] = encrypt(y[bad])
            bad = y >= np.uint64(domain)
    return y.astype(np.int64)
