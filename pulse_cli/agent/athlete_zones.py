"""Where a coach's athletes are: each sync round a coach's device asks the server for its athletes
(`GET /v1/grants`, one request) with the zone each one's devices last pushed from, and keeps the list
in `athlete_zones`. The coach commands work offline from it: every athlete's "today", windows and flags
are counted in the athlete's own calendar (docs/reports.md)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync.client import SyncClient

MAX_OFFSET_MIN = 840  # UTC+14 (Kiritimati); the server keeps zones from -840 to 840


def refresh(conn: sqlite3.Connection, client: SyncClient, role: str) -> int | None:
    """A coach's round: replace the stored list with the server's; returns how many athletes it holds.
    An athlete's device has no athletes to place and asks nothing (None)."""
    if role != "coach":
        return None
    from sync.client import holds

    # The list is replaced whole: another service's JSON must not empty it
    body = client.request("GET", "/v1/grants", answers=holds("grants", list))
    zones = parse(body)
    fetched_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM athlete_zones")  # the list is whole: an athlete who revoked drops out
        conn.executemany("INSERT INTO athlete_zones (username, utc_offset_min, fetched_at) VALUES (?, ?, ?)",
                         [(name, offset, fetched_at) for name, offset in zones.items()])
    return len(zones)


def parse(body: Any) -> dict[str, int | None]:
    """`{"grants": [{"athlete": NAME, "utc_offset_min": MINUTES | null, ...}]}` -> NAME: MINUTES. A zone
    missing or out of range (a server from before zones were kept) counts as unknown."""
    grants = body.get("grants") if isinstance(body, dict) else None
    zones: dict[str, int | None] = {}
    for grant in grants if isinstance(grants, list) else []:
        name = grant.get("athlete") if isinstance(grant, dict) else None
        if not isinstance(name, str):
            continue
        offset = grant.get("utc_offset_min")
        valid = isinstance(offset, int) and not isinstance(offset, bool) and abs(offset) <= MAX_OFFSET_MIN
        zones[name] = offset if valid else None
    return zones
