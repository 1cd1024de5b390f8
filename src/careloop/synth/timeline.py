"""The generated history: its window, the churn cut-off and the shared weather.

The history runs `years` years up to and including the as-of date. The last `CHURN_WINDOW_DAYS` days
are the churn outcome window: a churned chronic patient has no chronic-care activity (fill, chronic
visit, online follow-up) after the cut-off. Planted churn drivers are measured before the cut-off.

Weather is one regional series (a rain index per day, 0 = dry, up to about 1.5 = heavy rain) shared
by every chunk, so that no-shows cluster on rainy days across the whole network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from careloop.synth.arrays import FloatArray, IntArray, day_number, rng_for

CHURN_WINDOW_DAYS = 90
DRIVER_WINDOW_DAYS = 180
FUTURE_DAYS = 60  # appointments may be booked up to this far past the as-of date


@dataclass(frozen=True)
class Timeline:
    as_of: date
    years: int
    start_day: int  # first day of the history
    as_of_day: int  # last day of the history
    cutoff_day: int  # first day of the churn outcome window
    rain: FloatArray  # rain index per day from start_day - 30 to as_of_day + FUTURE_DAYS

    @property
    def days(self) -> int:
        return self.as_of_day - self.start_day + 1

    def rain_on(self, days: IntArray) -> FloatArray:
        idx = np.clip(days - (self.start_day - 30), 0, len(self.rain) - 1)
        out: FloatArray = self.rain[idx]
        return out


def make_timeline(seed: int, as_of: date, years: int) -> Timeline:
    as_of_day = day_number(as_of)
    start_day = day_number(date(as_of.year - years, as_of.month, min(as_of.day, 28))) + 1
    n = as_of_day + FUTURE_DAYS - (start_day - 30) + 1
    rng = rng_for(seed, 98)
    # persistent weather: an AR(1) latent with a plum-rain season (梅雨, mid-June to mid-July)
    latent = np.empty(n)
    shocks = rng.normal(0, 1, n)
    latent[0] = shocks[0]
    for i in range(1, n):  # a few hundred days; runs once per network
        latent[i] = 0.6 * latent[i - 1] + 0.8 * shocks[i]
    day = np.arange(start_day - 30, start_day - 30 + n)
    doy = ((day - day_number(date(1970, 1, 1))) % 365.2425).astype(np.int64)
    plum = ((doy > 165) & (doy < 197)).astype(np.float64)
    rain = np.clip(0.45 * (latent + 1.2 * plum - 0.6), 0, 1.5)
    return Timeline(
        as_of=as_of,
        years=years,
        start_day=start_day,
        as_of_day=as_of_day,
        cutoff_day=as_of_day - CHURN_WINDOW_DAYS + 1,
        rain=rain,
    )
