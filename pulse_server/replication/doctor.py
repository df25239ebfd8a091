"""`pulse-server doctor`: what an operator must know before WAL piles up behind a replication slot.

A logical slot keeps every WAL segment from its restart point: one that nobody reads (a stopped
server, a database left behind) fills the disk, unless `max_slot_wal_keep_size` bounds it, in which
case Postgres invalidates the slot past that size and the reader rebuilds the shape log (every client
refetches). Both are worth knowing early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class Slot:
    name: str
    database: str
    active: bool
    wal_status: str | None
    retained_bytes: int | None  # WAL kept for it: from its restart point to the current position


@dataclass
class Findings:
    wal_level: str
    max_slot_wal_keep_size: str
    max_replication_slots: int
    slots: list[Slot] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the server cannot work like this
    warnings: list[str] = field(default_factory=list)  # it works, but WAL may pile up or a slot be lost

    def as_json(self) -> dict[str, Any]:
        return {
            "wal_level": self.wal_level, "max_slot_wal_keep_size": self.max_slot_wal_keep_size,
            "max_replication_slots": self.max_replication_slots,
            "slots": [s.__dict__ for s in self.slots], "problems": self.problems, "warnings": self.warnings,
        }


def examine(conn: psycopg.Connection[Any]) -> Findings:
    settings = dict(conn.execute(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings"
        " WHERE name IN ('wal_level', 'max_slot_wal_keep_size', 'max_replication_slots')").fetchall())
    keep = conn.execute("SELECT current_setting('max_slot_wal_keep_size')").fetchone()
    found = Findings(str(settings.get("wal_level")), str(keep[0] if keep else "?"),
                     int(str(settings.get("max_replication_slots", "0"))))
    if found.wal_level != "logical":
        found.problems.append(f"wal_level is {found.wal_level}: the shape API needs logical"
                              " (ALTER SYSTEM SET wal_level = logical, then restart Postgres)")
    if found.max_slot_wal_keep_size in ("-1", "-1MB"):
        found.warnings.append("max_slot_wal_keep_size is unlimited: a slot nobody reads keeps WAL until the"
                              " disk is full; bound it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB')")
    recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    position = "pg_last_wal_receive_lsn()" if recovery and recovery[0] else "pg_current_wal_lsn()"
    for name, database, active, status, retained in conn.execute(
            f"SELECT slot_name, database, active, wal_status,"
            f" pg_wal_lsn_diff({position}, restart_lsn)::bigint FROM pg_replication_slots"
            f" WHERE slot_name LIKE 'pulse\\_shapes\\_%%' ORDER BY slot_name").fetchall():
        slot = Slot(name, database, bool(active), status, None if retained is None else int(retained))
        found.slots.append(slot)
        if status == "lost":
            found.warnings.append(f"slot {name} (database {database}) was invalidated: the reader rebuilds the"
                                  " shape log when it next starts; drop the slot if that database is gone")
        elif not active:
            found.warnings.append(f"slot {name} (database {database}) is inactive and retains"
                                  f" {_size(slot.retained_bytes)} of WAL: start a server on it, or drop it"
                                  " if that database is no longer served")
    return found


def _size(size: int | None) -> str:
    if size is None:
        return "an unknown amount"
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def report_lines(found: Findings) -> list[str]:
    lines = [f"wal_level: {found.wal_level}", f"max_slot_wal_keep_size: {found.max_slot_wal_keep_size}",
             f"max_replication_slots: {found.max_replication_slots}"]
    for s in found.slots:
        state = "active" if s.active else "inactive"
        lines.append(f"slot {s.name} (database {s.database}): {state}, wal_status {s.wal_status},"
                     f" retains {_size(s.retained_bytes)}")
    if not found.slots:
        lines.append("no slot of this project yet (the first server creates it)")
    lines += [f"problem: {p}" for p in found.problems] + [f"warning: {w}" for w in found.warnings]
    return lines
