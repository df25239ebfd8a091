"""Whether the shape log still follows what it was built from: its slot, in this database, of this cluster.

`shape_state` records the slot the log follows and the database's system identifier and timeline
(migration 0008). When the slot is missing, invalidated (`wal_status = 'lost'`: Postgres removed WAL it
had not consumed), belongs to another database name (a dump restored elsewhere), or the system identifier
or timeline changed (a restored backup, a promoted standby), the log may be missing changes that no
stream will ever bring: the reader rebuilds it (docs/shapes.md, "Self-healing"). Every server process
reads the same status for its readiness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

# The current WAL timeline: the first 8 hex digits of the current WAL file's name. (pg_control_checkpoint's
# timeline moves only at the first checkpoint after a promotion.)
CURRENT_TIMELINE = "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"

_STATUS = f"""
SELECT current_database(), s.slot_name, s.system_identifier, s.timeline, c.system_identifier::text,
       pg_is_in_recovery(), r.slot_name IS NOT NULL, r.active, r.wal_status,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE {CURRENT_TIMELINE} END,
       CASE WHEN pg_is_in_recovery() OR r.confirmed_flush_lsn IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.confirmed_flush_lsn)::bigint END
  FROM shape_state s CROSS JOIN pg_control_system() c
  LEFT JOIN pg_replication_slots r ON r.slot_name = s.slot_name AND r.database = current_database()
 WHERE s.id = 1
"""


def slot_name(database: str) -> str:
    """Slots are cluster-wide, so the name carries the database's."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in database.lower())
    return f"pulse_shapes_{safe}"[:63]


@dataclass(frozen=True)
class SlotStatus:
    database: str
    slot: str  # the slot this database's log must follow
    rebuild_reason: str | None  # why the log cannot be trusted and must be rebuilt; None when it can
    standby: bool  # the database is read-only (in recovery): no reader can run against it
    active: bool  # a walsender streams the slot (some reader follows it)
    wal_status: str | None
    lag_bytes: int | None  # WAL written and not yet confirmed by the slot
    first_build: bool  # the log never followed a slot (a new database): building it is routine

    @property
    def not_following(self) -> str | None:
        """Why no reader follows the slot now, or None when one does."""
        if self.standby:
            return "the database is in recovery (a standby): waiting for a primary"
        if self.rebuild_reason is not None:
            return self.rebuild_reason
        if not self.active:
            return f"no reader is streaming replication slot {self.slot}"
        return None


def read_status(conn: psycopg.Connection[Any]) -> SlotStatus:
    row = conn.execute(_STATUS).fetchone()
    assert row is not None
    database, recorded, sysid, timeline, current_sysid, standby, exists, active, wal_status, now_tl, lag = row
    slot = slot_name(database)
    reason: str | None = None
    if recorded is None:
        reason = "the shape log has never followed a replication slot"
    elif recorded != slot:
        reason = f"the shape log followed slot {recorded}, not this database's {slot} (restored from a dump?)"
    elif sysid != current_sysid:
        reason = f"the database's system identifier changed ({sysid} -> {current_sysid}): restored or another cluster"
    elif not standby and timeline != now_tl:
        reason = f"the database's timeline changed ({timeline} -> {now_tl}): a standby was promoted"
    elif not exists:
        reason = f"replication slot {slot} is missing"
    elif wal_status == "lost":
        reason = f"replication slot {slot} was invalidated: Postgres removed WAL it had not consumed"
    return SlotStatus(database, slot, reason, bool(standby), bool(active), wal_status,
                      None if lag is None else int(lag), recorded is None)
