"""Pulling the user's shape into the server copy, one local transaction per batch with its cursor.

Imports no other step of the agent (the engine calls `pull_shape`, the daemon runs `follow_live`), so the
agent's modules form no import cycle."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pulse_cli.agent import replica
from pulse_cli.agent.account import Account, load_account
from pulse_cli.agent.live_state import LiveState
from pulse_cli.agent.upstream import Upstream
from pulse_cli.bootstrap import Device, bootstrap
from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from sync.errors import SyncError
from sync.retry import RetryPolicy
from sync.shape_client import ShapeBatch, ShapeCursor, ShapeStream

log = logging.getLogger("pulse.agent")
SHAPE = "entries"


def load_cursor(conn: sqlite3.Connection) -> ShapeCursor:
    row = conn.execute('SELECT handle, "offset", cursor FROM shape_cursors WHERE shape = ?', (SHAPE,)).fetchone()
    if row is None:
        return ShapeCursor()
    schema = read_meta(conn, meta.SHAPE_SCHEMA)
    return ShapeCursor(row[0], row[1], row[2], json.loads(schema) if schema else None)


def apply_batch(conn: sqlite3.Connection, batch: ShapeBatch, role: str) -> int:
    """The batch's rows, the view's rows they touch and, once its response is whole, the cursor after
    it, in one local transaction.

    A snapshot (a first sync, or after a must-refetch) starts the server copy again; its parts are
    written as they arrive, and the whole view is made again once the snapshot has caught up (rows the
    server no longer has must leave it too). A response cut short leaves the cursor where it was, so it
    is asked again: a snapshot from its start, the log from the same offset (applying a change twice
    changes nothing)."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        if batch.must_refetch or batch.fresh:
            replica.clear_server_copy(conn)  # never the outbox
            write_meta(conn, meta.REFETCHING, "1")
        touched = replica.apply_changes(conn, [(c.operation, c.value) for c in batch.changes], role)
        if read_meta(conn, meta.REFETCHING) == "1":
            if batch.up_to_date:
                replica.rebuild_local_view(conn)
                write_meta(conn, meta.REFETCHING, "0")
        else:
            replica.refresh_view(conn, touched)
        if not batch.complete:
            return len(batch.changes)
        cursor = batch.cursor
        conn.execute(
            'INSERT INTO shape_cursors (shape, handle, "offset", cursor, updated_at)'
            " VALUES (?, ?, ?, ?, datetime('now')) ON CONFLICT (shape) DO UPDATE SET handle = excluded.handle,"
            ' "offset" = excluded."offset", cursor = excluded.cursor, updated_at = excluded.updated_at',
            (SHAPE, cursor.handle, cursor.offset, cursor.cursor),
        )
        if cursor.schema is not None:
            write_meta(conn, meta.SHAPE_SCHEMA, json.dumps(cursor.schema))
    return len(batch.changes)


# `pulse sync` must answer within a few seconds when the server is away; the agent can be patient.
CLI_RETRY = RetryPolicy(attempts=4, initial_s=0.25, max_s=2.0, jitter_s=0.25)




def pull_shape(device: Device, account: Account, before_refetch: Callable[[], None]) -> tuple[int, bool]:
    """Catch up with the server's shape (snapshot first on a fresh device): the rows pulled, and whether
    the server asked to refetch (`before_refetch` runs first: give the server what it lost). Its errors
    are the sync package's, as a push's are (a ShapeUnavailable is an Offline, a ShapeAuthError an
    AuthExpired)."""
    pulled, refetched = 0, False
    with device.upstream.shape(account, load_cursor(device.conn), CLI_RETRY) as stream:
        for batch in stream.follow_parts():
            if batch.must_refetch:  # the server's copy starts again: first give it what it lost
                before_refetch()
                refetched = True
            pulled += apply_batch(device.conn, batch, account.role)
    return pulled, refetched


LIVE_RETRY_MAX_S = 5.0


def _requeue_lost(device: Device, account: Account) -> None:
    """Before a refetch is applied: what the server lost goes back to the outbox. Until the server's
    high-water marks can be asked (a SyncError), the refetch waits: its batch is not applied."""
    from pulse_cli.agent.identity import requeue_lost

    with device.upstream.client(account.server, account.token) as client:
        requeue_lost(device.conn, client)


def _apply_erasures(device: Device, account: Account) -> None:
    """The erasures behind deleted rows, at once (the outbox may hold values of those days too)."""
    from pulse_cli.agent import erasures

    try:
        with device.upstream.client(account.server, account.token) as client:
            erasures.exchange(device.conn, client, account.username)
    except SyncError as exc:  # the next sync round asks again
        log.warning("live pull: the erasures could not be fetched: %s", exc)


def follow_live(
    home: Path, stop: threading.Event, streams: list[ShapeStream] | None = None, upstream: Upstream | None = None
) -> None:
    """The agent's live pull: hold a long-poll open, apply what arrives, rebuild the local view.

    The open stream is kept in `streams`, so stopping can close it and end a held request at once."""
    pause = 1.0
    live = LiveState(home)  # what `pulse status` shows of this loop (the daemon removes it as it stops)
    while not stop.is_set():
        pause = _follow_once(home, stop, streams, upstream, live, pause)


def _follow_once(
    home: Path, stop: threading.Event, streams: list[ShapeStream] | None, upstream: Upstream | None,
    live: LiveState, pause: float,
) -> float:
    """One stream of the live pull, until it fails (then a pause): the next pause."""
    device: Device | None = None
    try:
        account = load_account(home)
        if account is None:
            live.clear()
            sleep_until(stop, 5.0)
            return pause
        if live.state is None:
            live.connecting()  # started: only the server's first answer says it follows (as after a failure)
        device = bootstrap(str(home), upstream=upstream)
        with device.upstream.shape(account, load_cursor(device.conn)) as stream:
            if streams is not None:
                streams[:] = [stream]
            while not stop.is_set():
                for batch in stream.poll_parts(live=True):
                    if batch.must_refetch:  # the next round (the outbox watch) pushes what it lost
                        _requeue_lost(device, account)
                    apply_batch(device.conn, batch, account.role)
                    if any(c.operation == "delete" for c in batch.changes):
                        _apply_erasures(device, account)  # a row deleted, not tombstoned: an erasure
                    live.following()
                live.following()
                pause = 1.0
        return pause
    except Exception as exc:  # never a silent stop: said in the log and by `pulse status`, and followed again
        if stop.is_set():
            return pause  # (a RuntimeError: the stream was closed under a held request, as we stop)
        live.failed(exc)
        if isinstance(exc, SyncError):  # the shape's errors and the high-water request's alike
            log.warning("live pull: %s; retrying in %.1f s", exc, pause)
        else:  # the device's own (its database busy or refusing a write, a bug): louder
            log.error("live pull stopped by %s: %s; following again in %.1f s", type(exc).__name__, exc, pause,
                      exc_info=not isinstance(exc, sqlite3.OperationalError))
        sleep_until(stop, pause)
        # Never more than 5 s apart, so a server back from a restart is followed again within 5 s;
        # jittered, so a crowd of devices does not come back in step.
        return min(pause * 2, LIVE_RETRY_MAX_S) * random.uniform(0.5, 1.0)
    finally:
        if device is not None:
            device.close()


def sleep_until(stop: threading.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile (checked at least twice a second)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(min(0.5, deadline - time.monotonic()))
