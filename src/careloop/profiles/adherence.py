"""Medication adherence: PDC and MPR per patient and drug class (PQA definitions, see docs/adherence.md).

- **Index date**: the patient's first fill of the class inside the measurement period.
- **Eligible**: at least two fills of the class on different dates inside the period.
- **Same drug, early refill**: the refill's supply starts the day after the previous supply of that drug
  ends (shifted); **different drugs of the class**: no shift — a day is covered if any is on hand.
- **Carried-in supply**: a fill before the period whose (shifted) supply reaches past the index date
  covers those days.
- **PDC** = days covered from the index date to the period end (supply past the end is cut off) ÷ days
  in that span. Adherent when PDC ≥ the threshold: 0.80, 0.90 for antiretrovirals.
- **MPR** = days supplied by the fills from the index date on ÷ days in the span, uncapped and capped at 1.
- **Run-out date**: the last day of the latest (shifted) supply of the class.

Pure functions over plain values; `careloop adherence pdc` applies them to any fills file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

DEFAULT_THRESHOLD = 0.80
ANTIRETROVIRAL_THRESHOLD = 0.90
_ANTIRETROVIRAL_WORDS = ("antiretroviral", "hiv", "抗逆转录", "抗病毒(hiv)", "艾滋")


@dataclass(frozen=True)
class Fill:
    patient: str
    drug: str
    drug_class: str
    filled_on: date
    days_supply: int


@dataclass(frozen=True)
class Adherence:
    """One patient × drug class over a measurement period."""

    patient: str
    drug_class: str
    fills: int  # fills of the class inside the period
    eligible: bool  # >= 2 fills on different dates inside the period
    index_date: date | None
    period_end: date
    days_in_period: int  # index date .. period end, inclusive
    days_covered: int
    pdc: float | None  # None when not eligible
    mpr: float | None
    mpr_capped: float | None
    threshold: float
    adherent: bool | None
    run_out_date: date | None  # last day of the latest shifted supply (may be after the period end)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def threshold_for(drug_class: str) -> float:
    """0.90 for antiretroviral classes, else 0.80 (PQA)."""
    low = drug_class.lower()
    return ANTIRETROVIRAL_THRESHOLD if any(w in low for w in _ANTIRETROVIRAL_WORDS) else DEFAULT_THRESHOLD


def shifted_supplies(fills: Iterable[Fill]) -> list[tuple[date, date, Fill]]:
    """(first day, last day, fill) of each fill's supply, refills of the same drug shifted to start the day
    after that drug's previous supply ends."""
    by_drug: dict[str, list[Fill]] = defaultdict(list)
    for f in fills:
        if f.days_supply > 0:
            by_drug[f.drug].append(f)
    out: list[tuple[date, date, Fill]] = []
    for drug_fills in by_drug.values():
        drug_fills.sort(key=lambda f: (f.filled_on, -f.days_supply))
        last_end: date | None = None
        for f in drug_fills:
            start = (
                f.filled_on if last_end is None or f.filled_on > last_end else last_end + timedelta(days=1)
            )
            end = start + timedelta(days=f.days_supply - 1)
            out.append((start, end, f))
            last_end = end
    return sorted(out, key=lambda s: (s[0], s[1]))


def class_adherence(
    patient: str,
    drug_class: str,
    fills: Sequence[Fill],
    period_start: date,
    period_end: date,
    *,
    threshold: float | None = None,
) -> Adherence:
    """PDC / MPR of one patient's fills of one class (fills from before the period may carry supply in)."""
    if period_end < period_start:
        raise ValueError("the period ends before it starts")
    limit = threshold if threshold is not None else threshold_for(drug_class)
    usable = [f for f in fills if f.filled_on <= period_end]
    inside = [f for f in usable if f.filled_on >= period_start]
    supplies = shifted_supplies(usable)
    run_out = max((end for _, end, _ in supplies), default=None)
    if not inside:
        return Adherence(
            patient, drug_class, 0, False, None, period_end, 0, 0, None, None, None, limit, None, run_out
        )
    index = min(f.filled_on for f in inside)
    eligible = len({f.filled_on for f in inside}) >= 2
    span = (period_end - index).days + 1
    covered: set[int] = set()
    for start, end, _ in supplies:
        lo, hi = max(start, index), min(end, period_end)
        if lo <= hi:
            covered.update(range((lo - index).days, (hi - index).days + 1))
    supplied = sum(f.days_supply for f in inside)
    pdc = len(covered) / span if eligible else None
    mpr = supplied / span if eligible else None
    return Adherence(
        patient=patient,
        drug_class=drug_class,
        fills=len(inside),
        eligible=eligible,
        index_date=index,
        period_end=period_end,
        days_in_period=span,
        days_covered=len(covered),
        pdc=pdc,
        mpr=mpr,
        mpr_capped=min(mpr, 1.0) if mpr is not None else None,
        threshold=limit,
        adherent=(pdc >= limit) if pdc is not None else None,
        run_out_date=run_out,
    )


def adherence(
    fills: Iterable[Fill], period_start: date, period_end: date, *, threshold: float | None = None
) -> list[Adherence]:
    """Every patient × class that has a fill inside the period, sorted by patient and class."""
    groups: dict[tuple[str, str], list[Fill]] = defaultdict(list)
    for f in fills:
        groups[(f.patient, f.drug_class)].append(f)
    out = []
    for (patient, cls), group in sorted(groups.items()):
        a = class_adherence(patient, cls, group, period_start, period_end, threshold=threshold)
        if a.fills:
            out.append(a)
    return out
