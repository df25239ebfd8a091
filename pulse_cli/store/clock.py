"""The device's hybrid logical clock, kept in `meta`: the stamps it has seen move it forward.

A stamp pulled from the server, or the stamp the server stored for a pushed change, is a value this
device has now seen: every edit made after that must sort after it, whatever the device's wall clock
says (docs/sync.md, "Clocks"). The clock's last stamp therefore takes in every stamp the device
receives, and the next local stamp is later than all of them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterable

from pulse_cli.store import meta
from pulse_cli.store.connection import ensure_client_id, read_meta, write_meta
from sync.hlc import SKEW_LIMIT_MS, Stamp, StampError


def observe(conn: sqlite3.Connection, stamps: Iterable[str | None]) -> None:
    """Move the clock past the newest of `stamps` (inside the caller's transaction)."""
    newest = max((s for s in stamps if s), default=None)
    if newest is None:
        return
    try:
        remote = Stamp.parse(newest)
    except StampError:
        return
    last = read_meta(conn, meta.HLC_LAST)
    current = Stamp.parse(last) if last else None
    if current is None or (remote.ms, remote.counter) > (current.ms, current.counter):
        write_meta(conn, meta.HLC_LAST, str(Stamp(remote.ms, remote.counter, ensure_client_id(conn))))


def observe_time(conn: sqlite3.Connection, server_ms: int) -> None:
    """The server's time is a clock reading too: nothing made here after hearing it sorts before it."""
    observe(conn, [str(Stamp(server_ms, 0, "server"))])


OFFSET_TOLERANCE_MS = 1_000  # a round trip's uncertainty: smaller offsets are taken as none
FAR_OFF_MS = 3_600_000  # a clock off by more than this is worth telling the user about


def learn_offset(conn: sqlite3.Connection, server_ms: int, sent_at_s: float, received_at_s: float) -> int:
    """The server's clock is the reference (docs/sync.md, "Clocks"): remember how far ours is off, as
    seen at the middle of a request, so stamps and "today" use the corrected time (inside the caller's
    transaction). Returns the offset kept."""
    midpoint_ms = int((sent_at_s + received_at_s) / 2 * 1000)
    offset = server_ms - midpoint_ms
    offset = offset if abs(offset) > OFFSET_TOLERANCE_MS else 0
    write_meta(conn, meta.CLOCK_OFFSET_MS, str(offset))
    # A clock that ran ahead left the last stamp in the future, and the HLC never goes back past its
    # last stamp: bring it back to server time, as the server has clamped those stamps anyway.
    last = read_meta(conn, meta.HLC_LAST)
    if last:
        stamp = Stamp.parse(last)
        if stamp.ms > server_ms + SKEW_LIMIT_MS:
            write_meta(conn, meta.HLC_LAST, str(Stamp(server_ms, 0, stamp.node)))
    observe_time(conn, server_ms)
    return offset


def offset_ms(conn: sqlite3.Connection) -> int:
    return int(read_meta(conn, meta.CLOCK_OFFSET_MS) or 0)


def describe_offset(offset: int) -> str:
    """`-172_800_000` (the server is behind us) -> "2 days ahead of"."""
    ahead = offset < 0
    seconds = abs(offset) // 1000
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'} {'ahead of' if ahead else 'behind'}"
    return "in step with"


def zone_offset_min(conn: sqlite3.Connection) -> int:
    """This device's zone now (by the corrected clock), in minutes east of UTC: pushes carry it, so the
    server judges dates by the user's own calendar."""
    now = dt.datetime.fromtimestamp(time.time() + offset_ms(conn) / 1000).astimezone()
    delta = now.utcoffset() or dt.timedelta(0)
    return round(delta.total_seconds() / 60)
