"""Plain read queries over a repository: date ranges and a day's full picture."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pulse_core.entry import Entry
from pulse_core.errors import NotFoundError, UsageError
from pulse_core.insights import BASELINE_DAYS, Readiness, readiness
from pulse_core.ports import EntryRepository
from pulse_core.values import parse_date

DEFAULT_RANGE_DAYS = 28


def date_range(start: object | None, end: object | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """`--from`/`--to` as dates: `to` defaults to today, `from` to the 28 days ending at `to`."""
    last = parse_date(end, today, "to", reading=True) if end is not None else today
    first = (
        parse_date(start, today, "from", reading=True)
        if start is not None
        else last - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    )
    if first > last:
        raise UsageError(
            "from", first.isoformat(), f"a date on or before --to {last.isoformat()}",
            f"from: {first.isoformat()} is after to {last.isoformat()} (allowed a date on or before it)",
        )
    return first, last


@dataclass
class DayView:
    entry: Entry
    readiness: dict[str, Readiness]

    def as_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry.as_json(),
            "readiness": {k: r.as_json() for k, r in self.readiness.items()},
        }


def day_view(repo: EntryRepository, user: str, day: dt.date) -> DayView:
    """The day's entry with its readiness against the 28 days before it."""
    entry = repo.get(user, day)
    if entry is None or entry.deleted:
        raise NotFoundError(f"date: no entry for {day.isoformat()}")
    history = repo.list(user, day - dt.timedelta(days=BASELINE_DAYS), day)
    return DayView(entry, readiness(history, day))
