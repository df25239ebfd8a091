"""Ports: the repository and unit of work every store implements (in memory, SQLite, Postgres)."""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pulse_core.entry import Entry
from pulse_core.rules import MANUAL


@dataclass(frozen=True)
class EntryChange:
    """One local edit, recorded in the same transaction as the change it describes.

    A store turns it into an outbox mutation (docs/push-protocol.md): `fields` holds only what this edit
    set, `base` the stamp each of those fields had before it, `stamp` the edit's HLC.
    """

    user: str
    date: dt.date
    op: str  # "set" | "delete"
    fields: dict[str, Any]
    base: dict[str, str | None]
    stamp: str
    source: str = MANUAL


class EntryRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, user: str, day: dt.date) -> Entry | None:
        """The entry of that day, tombstones included."""

    @abc.abstractmethod
    def list(self, user: str, start: dt.date | None = None, end: dt.date | None = None) -> list[Entry]:
        """Entries from `start` to `end` inclusive, oldest first, tombstones excluded."""

    @abc.abstractmethod
    def previous_with(self, user: str, day: dt.date, field: str) -> Entry | None:
        """The latest live entry before `day` that has a value for `field`."""

    @abc.abstractmethod
    def save(self, entry: Entry) -> None:
        """Insert or replace the entry (keyed by user and date)."""


class UnitOfWork(abc.ABC):
    """A transaction: entries changed and their outbox records commit together or not at all."""

    entries: EntryRepository

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()  # a no-op after commit

    @abc.abstractmethod
    def record(self, change: EntryChange) -> None:
        """Append the change to the outbox, inside this transaction."""

    @abc.abstractmethod
    def next_stamp(self) -> str:
        """A fresh HLC stamp, later than every stamp this store has issued or seen."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...
