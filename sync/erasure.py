"""An erasure: a user's entries of a range of days removed from the server and from every replica.

The one rule every replica applies (docs/erasure.md): a write to a day in an erased range made before
the erasure is refused; one made after it is taken as any write. "Before" is by the write's HLC stamp:
its milliseconds are earlier than the erasure's (`erased_ms`, the server's clock when it erased). A
device that has heard of an erasure observes its stamp (`stamp`), so every edit it makes afterwards is
stamped at or after the erasure's millisecond and is kept.

Pure: the server, the device, the device app and (in JavaScript) the PWA follow it alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulse_core.errors import ValidationError
from pulse_core.values import parse_date
from sync.hlc import Stamp, StampError
from sync.wire import MutationResult

ERASED = "erased"  # the error code of a refused write (and of the whole-account 401: `account_erased`)
ACCOUNT_ERASED = "account_erased"
STAMP_NODE = "erasure"


@dataclass(frozen=True)
class Erasure:
    id: int
    user: str  # the username whose entries were erased
    first: dt.date | None  # the first day erased; None: from the first there is
    last: dt.date | None  # the last day erased; None: to the last there is
    erased_ms: int  # the server's clock at the erasure, ms since the epoch
    whole_account: bool = False  # every entry, and the account's tokens and grants revoked

    def covers(self, day: dt.date | str) -> bool:
        date = day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
        return (self.first is None or self.first <= date) and (self.last is None or date <= self.last)

    def refuses(self, day: dt.date | str, hlc: str) -> bool:
        """A write of `day` stamped `hlc` was made before this erasure, for a day it erased."""
        if not self.covers(day):
            return False
        try:
            return Stamp.parse(hlc).ms < self.erased_ms
        except StampError:
            return False

    @property
    def stamp(self) -> str:
        """The clock reading a replica observes: its next edits sort after the erasure."""
        return str(Stamp(self.erased_ms, 0, STAMP_NODE))

    def describe(self) -> str:
        """'2026-01-01 to 2026-01-31', 'every day up to 2026-01-31', 'every day'."""
        if self.first is None and self.last is None:
            return "every day"
        if self.first is None:
            return f"every day up to {self.last}"
        if self.last is None:
            return f"every day from {self.first}"
        return str(self.first) if self.first == self.last else f"{self.first} to {self.last}"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "from": _iso(self.first), "to": _iso(self.last),
                "erased_at_ms": self.erased_ms, "whole_account": self.whole_account}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Erasure:
        return cls(int(raw["id"]), str(raw["user"]), _date(raw.get("from")), _date(raw.get("to")),
                   int(raw["erased_at_ms"]), bool(raw.get("whole_account")))


def parse_range(start: str | None, end: str | None, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The days of an erasure: `from` and `to` as YYYY-MM-DD (or today, yesterday), either left out for an
    open end; `invalid_range` when `from` is after `to`."""
    first = None if start is None else parse_date(start, today, "from", reading=True)
    last = None if end is None else parse_date(end, today, "to", reading=True)
    if first is not None and last is not None and first > last:
        allowed = f"a day up to {last.isoformat()}"
        raise ValidationError("from", first.isoformat(), allowed,
                              f"from: {first.isoformat()} is after to {last.isoformat()} (allowed {allowed})",
                              code="invalid_range")
    return first, last


def refusing(erasures: Iterable[Erasure], day: dt.date | str, hlc: str) -> Erasure | None:
    """The erasure that refuses this write, if any."""
    return next((e for e in erasures if e.refuses(day, hlc)), None)


def refusal(seq: Any, day: dt.date | str, erasure: Erasure) -> MutationResult:
    """A push result for a write the erasure refuses: rejected for good, holding no value of it."""
    when = dt.datetime.fromtimestamp(erasure.erased_ms / 1000, dt.UTC).isoformat(timespec="seconds")
    return {"seq": seq, "status": "rejected", "error": {
        "code": ERASED, "field": "date", "value": str(day), "allowed": f"a day outside {erasure.describe()},"
        " or a change made after the erasure",
        "message": f"date: the entries of {erasure.describe()} were erased at {when}; this change was made"
                   " before that and is not applied"}}


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _date(value: Any) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(str(value))
