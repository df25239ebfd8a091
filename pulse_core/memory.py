"""In-memory repository and unit of work: the fakes unit tests run the use cases against."""

from __future__ import annotations

import copy
import datetime as dt

from pulse_core.entry import Entry
from pulse_core.ports import EntryChange, EntryRepository, UnitOfWork


class InMemoryEntryRepository(EntryRepository):
    def __init__(self, entries: dict[tuple[str, dt.date], Entry] | None = None) -> None:
        self.rows: dict[tuple[str, dt.date], Entry] = entries if entries is not None else {}

    def get(self, user: str, day: dt.date) -> Entry | None:
        found = self.rows.get((user, day))
        return copy.deepcopy(found)

    def list(self, user: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Entry]:
        return [
            copy.deepcopy(e)
            for (u, d), e in sorted(self.rows.items(), key=lambda kv: kv[0][1])
            if u == user and not e.deleted and (start is None or d >= start) and (end is None or d <= end)
        ]

    def previous_with(self, user: str, day: dt.date, field: str) -> Entry | None:
        earlier = [e for e in self.list(user, end=day - dt.timedelta(days=1)) if e.value(field) is not None]
        return earlier[-1] if earlier else None

    def save(self, entry: Entry) -> None:
        self.rows[(entry.user, entry.date)] = copy.deepcopy(entry)


class InMemoryUnitOfWork(UnitOfWork):
    """Changes are staged on a copy and published on commit, so a rollback really loses them."""

    def __init__(self) -> None:
        self.committed_rows: dict[tuple[str, dt.date], Entry] = {}
        self.outbox: list[EntryChange] = []
        self.commits = 0
        self._counter = 0
        self._begin()

    def _begin(self) -> None:
        self.entries = InMemoryEntryRepository(copy.deepcopy(self.committed_rows))
        self._pending: list[EntryChange] = []

    def record(self, change: EntryChange) -> None:
        self._pending.append(change)

    def next_stamp(self) -> str:
        self._counter += 1
        return f"{self._counter:016d}:00000:memory"

    def commit(self) -> None:
        assert isinstance(self.entries, InMemoryEntryRepository)
        self.committed_rows = copy.deepcopy(self.entries.rows)
        self.outbox.extend(self._pending)
        self.commits += 1
        self._begin()

    def rollback(self) -> None:
        self._begin()
