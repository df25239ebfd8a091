"""The server copy on the device, and the local view rebuilt from it plus pending mutations.

`server_entries` holds the rows as the shape stream last delivered them. The local view (`entries`)
is that copy with every mutation the server may not show yet re-applied on top, by the same merge
rules the server uses, so what the user sees is what the server will hold once it has their edits.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from pulse_cli.agent.outbox import ACKED, OutboxRow, to_reapply
from pulse_cli.store import meta
from pulse_cli.store.clock import observe
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.store.entries import COLUMNS, OWNER, STAMPED, SqliteEntryRepository, entry_to_row, row_to_entry
from pulse_core.entry import Entry
from sync import stamps_column
from sync.merge import merge_delete, merge_set
from sync.wire import Mutation, parse_mutation

Key = tuple[str, str]  # (local user, ISO date): a row of the view
_ANY_DAY = dt.date(9000, 1, 1)  # "today" for re-reading queued mutations: no date is too far ahead


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def entry_from_shape(value: Mapping[str, Any], user: str) -> Entry:
    """A shape row (typed values) as an Entry of the local user key `user`."""
    date = value["date"]
    steps = value.get("steps")
    score = value.get("score")
    version = value.get("score_version")
    return Entry(
        user=user,
        date=date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date)),
        sleep_hours=_decimal(value.get("sleep_hours")),
        hrv_ms=_decimal(value.get("hrv_ms")),
        hrv_method=value.get("hrv_method"),
        steps=None if steps is None else int(steps),
        weight_kg=_decimal(value.get("weight_kg")),
        note=value.get("note"),
        score=None if score is None else int(score),
        score_version=None if version is None else int(version),
        deleted=value.get("deleted") in (True, "t", "true"),
        stamps={f: value[f"{f}_hlc"] for f in STAMPED if value.get(f"{f}_hlc")},
        sources={f: value[f"{f}_src"] for f in STAMPED if value.get(f"{f}_src")},
    )


def local_user(value: Mapping[str, Any], role: str) -> str:
    """An athlete's own rows are the owner's (''); a coach's are keyed by the athlete's username."""
    return OWNER if role == "athlete" else str(value.get("username") or value["user_id"])


def apply_changes(
    conn: sqlite3.Connection, changes: Iterable[tuple[str, Mapping[str, Any]]], role: str
) -> set[Key]:
    """Apply shape change messages to the server copy (inside the caller's transaction); returns the
    rows of the view they touch."""
    server = SqliteEntryRepository(conn, "server_entries")
    erased = _erased_days(conn)
    touched: set[Key] = set()
    known: dict[str, str] = {}  # the athletes' server ids already written to meta by this call
    owner_id = None
    seen: list[str | None] = []
    for operation, shape_value in changes:
        value = stamps_column.expand(shape_value)
        seen.extend(value.get(f"{f}_hlc") for f in STAMPED)
        if role == "athlete" and value.get("user_id") is not None:
            owner_id = str(value["user_id"])
        if operation == "delete":
            date = value["date"]
            day = date.isoformat() if isinstance(date, dt.date) else str(date)
            gone = OWNER if role == "athlete" else read_meta(conn, meta.shape_user(value['user_id']))
            if gone is not None:
                conn.execute("DELETE FROM server_entries WHERE user_id = ? AND date = ?", (gone, day))
                touched.add((gone, day))
            continue
        user = local_user(value, role)
        server_id = str(value.get("user_id"))
        if role != "athlete" and known.get(server_id) != user:  # deletes carry only the key: remember whose id
            write_meta(conn, meta.shape_user(server_id), user)
            known[server_id] = user
        incoming = entry_from_shape(value, user)
        previous = server.get(user, incoming.date)
        if previous is not None:  # an update may carry only some columns
            merged = {**_as_shape(previous), **{k: v for k, v in value.items()}}
            incoming = entry_from_shape(merged, user)
        if _from_before_an_erasure(incoming, erased.get(user, ())):
            continue
        server.save(incoming)
        touched.add((user, incoming.date.isoformat()))
    observe(conn, seen)  # an edit made after seeing these values outranks them
    if owner_id is not None and read_meta(conn, meta.OWNER_USER_ID) != owner_id:
        write_meta(conn, meta.OWNER_USER_ID, owner_id)  # the server's id of this device's user (for its shape)
    return touched


def _erased_days(conn: sqlite3.Connection) -> dict[str, list[tuple[str | None, str | None, int]]]:
    """The erasures applied here, by local user: (first day, last day, erased_ms)."""
    found: dict[str, list[tuple[str | None, str | None, int]]] = {}
    for user, first, last, erased_ms in conn.execute("SELECT user_id, date_from, date_to, erased_ms FROM erasures"):
        found.setdefault(user, []).append((first, last, int(erased_ms)))
    return found


def _from_before_an_erasure(entry: Entry, erased: Iterable[tuple[str | None, str | None, int]]) -> bool:
    """A row of an erased day whose every value was stamped before the erasure: a change the server logged
    before it, read by a pull that ran before the reader removed it (docs/erasure.md). Not kept: the
    erasure's delete follows."""
    day = entry.date.isoformat()
    stamps = [s for s in entry.stamps.values() if s]
    return any((first is None or first <= day) and (last is None or day <= last)
               and all(int(s[:16]) < erased_ms for s in stamps) for first, last, erased_ms in erased)


def _as_shape(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": entry.date, "sleep_hours": entry.sleep_hours, "hrv_ms": entry.hrv_ms, "hrv_method": entry.hrv_method,
        "steps": entry.steps, "weight_kg": entry.weight_kg, "note": entry.note, "score": entry.score,
        "score_version": entry.score_version, "deleted": entry.deleted,
    }
    for f in STAMPED:
        out[f"{f}_hlc"] = entry.stamps.get(f)
        out[f"{f}_src"] = entry.sources.get(f)
    return out


def clear_server_copy(conn: sqlite3.Connection) -> None:
    """After a must-refetch: the server copy starts again from a snapshot. The outbox is untouched."""
    conn.execute("DELETE FROM server_entries")


def rebuild_local_view(conn: sqlite3.Connection) -> int:
    """The whole local view made again (inside the caller's transaction): the server copy with every
    mutation it does not show yet. After a snapshot (a first sync, a refetch) and a repair."""
    return rebuild_view(conn, to_reapply(conn))


def local_row(
    base: Entry | None, mutations: Iterable[OutboxRow], user: str, day: str
) -> tuple[Entry | None, list[int]]:
    """One row of the local view: the server copy's row `base` with the mutations it does not show yet
    merged on top, in order (None: no such row), and the acknowledged mutations found reflected in it."""
    entry, reflected = base, []
    for m in mutations:
        if m.status in ACKED and _reflected(m, base):
            reflected.append(m.seq)  # applying it to the server copy would change nothing: never again
            continue
        if entry is None:
            entry = Entry(user=user, date=dt.date.fromisoformat(day))
        elif entry is base:
            entry = copy.deepcopy(base)
        _merge(entry, *_mutation(m))
    return entry, reflected


def rebuild_view(conn: sqlite3.Connection, reapply: list[OutboxRow]) -> int:
    """entries := server copy + the given mutations re-applied in order (inside the caller's transaction);
    returns the number of rows in the view.

    The whole view at once, after a snapshot (a first sync, a refetch) and a repair (`refresh_view`
    does the same for the rows a round touched). It streams the server copy in key order, so its memory
    does not grow with the view (a coach's 146,000 rows), and writes only the rows that differ: the
    shape log of `pulse agent --serve` records each write."""
    pending: dict[Key, list[OutboxRow]] = {}
    for m in reapply:
        pending.setdefault((m.user_id, m.date), []).append(m)
    reflected: list[int] = []
    rows = 0
    server = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM server_entries ORDER BY user_id, date")
    while part := server.fetchmany(_PART):
        for row in part:
            base = row_to_entry(row)
            key = (base.user, base.date.isoformat())
            entry, seen = local_row(base, pending.pop(key, []), *key)
            reflected += seen
            assert entry is not None
            _write_row(conn, entry)
            rows += 1
    for (user, day), mutations in pending.items():  # rows the server copy does not have
        entry, _ = local_row(None, mutations, user, day)
        assert entry is not None
        _write_row(conn, entry)
        rows += 1
    mark_reflected(conn, reflected)
    keep = {(m.user_id, m.date) for m in reapply}
    gone = [(u, d) for u, d in conn.execute(
        "SELECT user_id, date FROM entries e WHERE NOT EXISTS"
        " (SELECT 1 FROM server_entries s WHERE s.user_id = e.user_id AND s.date = e.date)") if (u, d) not in keep]
    conn.executemany("DELETE FROM entries WHERE user_id = ? AND date = ?", gone)
    return rows


_PART = 2_000  # server copy rows read at a time by a rebuild


def _write_row(conn: sqlite3.Connection, entry: Entry) -> None:
    """Write a view row only if it differs from what is there."""
    current = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE user_id = ? AND date = ?",
                           (entry.user, entry.date.isoformat())).fetchone()
    if current != entry_to_row(entry):
        SqliteEntryRepository(conn, "entries").save(entry)


def computed_view(conn: sqlite3.Connection, reapply: list[OutboxRow]) -> dict[tuple[str, dt.date], Entry]:
    """What the whole view should be, read-only: the server copy with `reapply` merged on top in order
    (the reference the incremental view is checked against in the tests)."""
    view: dict[tuple[str, dt.date], Entry] = {}
    for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM server_entries"):
        base = row_to_entry(row)
        view[(base.user, base.date)] = base
    for m in reapply:  # one at a time, whatever it is: a reflected mutation changes nothing
        day = _mutation(m)[0].date
        merged, _ = local_row(view.get((m.user_id, day)), [dataclasses.replace(m, status="pending")], m.user_id,
                              day.isoformat())
        assert merged is not None
        view[(m.user_id, day)] = merged
    return view


def refresh_view(conn: sqlite3.Connection, keys: Iterable[Key]) -> int:
    """The view's rows for `keys` made again from the server copy and the mutations it may not show
    yet (inside the caller's transaction); returns how many rows changed. A sync round touches only the
    rows it pulled or pushed, so its cost follows what changed, not what is stored.

    An acknowledged mutation that would change nothing if applied to the server copy is reflected in
    it for good (a field's rank there only grows), so it is marked and never re-applied again: the
    view is exactly the server copy plus what it does not show yet, with no time window."""
    local = SqliteEntryRepository(conn, "entries")
    changed = 0
    reflected: list[int] = []
    for user, day in sorted(set(keys)):
        entry, seen = local_row(server_row(conn, user, day), unreflected(conn, user, day), user, day)
        reflected += seen
        current = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE user_id = ? AND date = ?",
                               (user, day)).fetchone()
        if entry is None:
            if current is not None:
                conn.execute("DELETE FROM entries WHERE user_id = ? AND date = ?", (user, day))
                changed += 1
        elif current != entry_to_row(entry):
            local.save(entry)
            changed += 1
    mark_reflected(conn, reflected)
    return changed


def server_row(conn: sqlite3.Connection, user: str, day: str | dt.date) -> Entry | None:
    text = day.isoformat() if isinstance(day, dt.date) else day
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM server_entries WHERE user_id = ? AND date = ?",
                       (user, text)).fetchone()
    return None if row is None else row_to_entry(row)


def unreflected(conn: sqlite3.Connection, user: str, day: str) -> list[OutboxRow]:
    """The mutations of one row the server copy may not show yet, in order."""
    return to_reapply(conn, user, day)


def mark_reflected(conn: sqlite3.Connection, seqs: list[int]) -> None:
    conn.executemany("UPDATE outbox SET reflected = 1 WHERE seq = ?", [(s,) for s in seqs])


def _mutation(m: OutboxRow) -> tuple[Mutation, str]:
    """A queued mutation as the merge takes it, with the stamp to merge it at: the one the server stored
    once it answered (clamped if it was too far ahead), else its own."""
    stamp = m.hlc
    if m.status in ACKED and m.result and m.result.get("hlc"):
        stamp = m.result["hlc"]
    wire = {**m.wire(), "hlc": m.hlc}
    # Checked when it was queued; the view takes any date it holds (a held one may be days ahead).
    return parse_mutation(wire, m.hlc.rsplit(":", 1)[1], _ANY_DAY), stamp


def _merge(entry: Entry, mutation: Mutation, stamp: str) -> None:
    if mutation.op == "delete":
        merge_delete(entry, mutation.base, stamp, mutation.source)
    else:
        merge_set(entry, mutation.fields, mutation.base, stamp, mutation.source)


def _reflected(m: OutboxRow, server: Entry | None) -> bool:
    """Applying the mutation to the server copy would change nothing."""
    if server is None:
        return False
    mutation, stamp = _mutation(m)
    trial = copy.deepcopy(server)
    _merge(trial, mutation, stamp)
    return entry_to_row(trial) == entry_to_row(server)


def compact_shape_log(conn: sqlite3.Connection) -> int:
    """The device app's shape log keeps only each day's newest change (inside the caller's transaction).

    It is served folded already (a read after a position sends each day's current row once), so a
    client at any position reads the same after this as before: what it skips was superseded by a later
    change of the same day, which it still reads. The log is then bounded by the days, not the writes."""
    kept = "SELECT max(seq) FROM shape_log GROUP BY date"
    return conn.execute(f"DELETE FROM shape_log WHERE seq NOT IN ({kept})").rowcount
