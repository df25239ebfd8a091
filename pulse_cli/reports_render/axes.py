"""Chart axes a person can read: round values up the side, dates of weeks along the bottom.

`value_ticks` is the "nice numbers" method (Heckbert, Graphics Gems, 1990): a step of 1, 2, 2.5 or 5
times a power of ten, the axis running from the tick at or below the lowest value to the tick at or
above the highest, so every tick is a round number (4 / 6 / 8 / 10 h, not 4.42 / 7.67 / 10.92) and
every value lies on the axis. `date_ticks` puts a tick on each Monday (the ISO weeks of the weekly
table) and labels every first, second, fourth ... of them, as many as fit side by side.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

STEP_MULTIPLES = (1.0, 2.0, 2.5, 5.0, 10.0)
WEEKS_BETWEEN_LABELS = (1, 2, 4, 8, 13, 26, 52)  # 13 weeks: a quarter, 26: half a year
DAILY_UP_TO = 20  # a range this short has a tick per day (it holds two Mondays at most, maybe none)
DAYS_BETWEEN_LABELS = (1, 2, 3, 4, 5, 7)


def nice_step(span: float, intervals: int, whole: bool = False) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that cuts `span` into at most `intervals` steps.

    `whole`: amounts counted in units (steps, the score) never get a step under 1."""
    raw = max(span, 1e-12) / max(intervals, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    steps = [m * power for m in STEP_MULTIPLES]
    if whole:  # no 2.5 between whole numbers
        steps = [max(1.0, s) for s in steps if s >= 1 and s == int(s)] or [1.0]
    return next((s for s in steps if s >= raw * (1 - 1e-9)), steps[-1])


def value_ticks(low: float, high: float, intervals: int = 4, whole: bool = False) -> list[float]:
    """Round ticks from at or below `low` to at or above `high`, at most `intervals` + 1 of them
    (one more when the bounds straddle a step badly). A flat series gets a step around its value."""
    if high - low < 1e-9:
        half = max(abs(high) * 0.05, 1.0 if whole else 0.5)
        low, high = max(0.0, low - half) if low >= 0 else low - half, high + half
    step = nice_step(high - low, intervals, whole)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    count = round((last - first) / step)
    digits = max(0, 1 - math.floor(math.log10(step)))  # 2.5 -> 2 digits: no 7.500000001 labels
    return [round(first + i * step, digits) for i in range(count + 1)]


@dataclass(frozen=True)
class DateTick:
    index: int  # the day's position in the series
    label: str | None  # None: a tick mark without a label


def date_ticks(days: Sequence[dt.date], labels_fit: int) -> list[DateTick]:
    """A tick on each Monday, labelled every 1, 2, 4, 8, 13, 26 or 52 weeks, whichever first leaves at
    most `labels_fit` labels; for a range of DAILY_UP_TO days or fewer, a tick on each day, labelled
    every 1, 2, 3, 4, 5 or 7 days.

    Labels are ISO dates: the first in full (2016-04-18), the next ones month and day (04-25) unless
    the year changes, as in the rest of the report."""
    if not days:
        return []
    if len(days) <= DAILY_UP_TO:
        marks = list(range(len(days)))
        every = next((k for k in DAYS_BETWEEN_LABELS if math.ceil(len(marks) / k) <= labels_fit), 7)
    else:
        marks = [i for i, d in enumerate(days) if d.weekday() == 0]
        every = next((k for k in WEEKS_BETWEEN_LABELS if math.ceil(len(marks) / k) <= max(labels_fit, 1)),
                     WEEKS_BETWEEN_LABELS[-1])
    ticks, year = [], None
    for n, i in enumerate(marks):
        if n % every:
            ticks.append(DateTick(i, None))
            continue
        day = days[i]
        ticks.append(DateTick(i, day.isoformat() if day.year != year else day.isoformat()[5:]))
        year = day.year
    return ticks
