"""`GET /v1/shape`: snapshots, catch-up, live long polls and SSE streams, scoped by the caller's token."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from pulse_server.accounts import Principal, hash_token, principal_and_expiry_on
from pulse_server.db.database import Database
from pulse_server.replication.health import ReplicationHealth
from pulse_server.shapes import answers, protocol
from pulse_server.shapes.callers import Caller
from pulse_server.shapes.errors import ShapeRequestError
from pulse_server.shapes.log import (
    Before,
    Head,
    LogChange,
    LogWatcher,
    Offset,
    SnapshotRead,
    read_changes,
    read_head,
    read_subset,
    rows_before,
)
from pulse_server.shapes.scope import Scope, resolve_scope, shape_handle
from pulse_server.shapes.subset import Subset

router = APIRouter(tags=["shapes"])
CHUNK = 10_000


@router.get("/v1/shape")
async def shape(request: Request) -> Response:
    """The Electric HTTP Shape API over the `entries` table (docs/shapes.md)."""
    try:
        req = answers.read_request(request.query_params)
    except ShapeRequestError as exc:
        return answers.bad_request(exc.errors)
    return await _serve(request, req)


@router.post("/v1/shape")
async def shape_subset(request: Request) -> Response:
    """A subset snapshot with its parameters in a JSON body (`fetchSnapshot({method: 'POST'})`): the
    shape in the query string as for a GET, `{where, params, limit, offset, order_by}` in the body."""
    try:
        req = answers.read_request(request.query_params, await answers.read_post_body(request))
    except ShapeRequestError as exc:
        return answers.bad_request(exc.errors)
    return await _serve(request, req)


async def _serve(request: Request, req: protocol.ShapeRequest) -> Response:
    db: Database = request.app.state.db
    token = answers.bearer_token(request)
    if token is None:
        return answers.unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    if req.offset != "-1" and req.subset is None and (reason := await _still_not_ready(request)) is not None:
        return answers.not_ready(reason)  # (waited first: the handle and head are read after the wait)
    watcher: LogWatcher | None = getattr(request.app.state, "watcher", None)
    # Before the caller is read: a change of grants or of the log after that read wakes a held request.
    epoch = watcher.epoch if watcher is not None else 0
    caller = await _lookup(request, db, token, cached=req.live)
    if caller is None:
        return answers.unauthorized(REFUSED)
    who, scope, head, mark = caller
    handle = current_handle(req, scope, head)
    if req.subset is not None:
        if req.handle is not None and not same_build(req.handle, handle):
            return answers.must_refetch(handle)
        return await _subset(request, req, req.subset, handle, scope, db)
    if req.offset not in ("-1", "now"):
        if not same_build(req.handle, handle):
            return answers.must_refetch(handle)
        if req.position < head.horizon:  # compaction removed changes this client has not read
            return answers.must_refetch(handle)
        handle = req.handle or handle
    if req.offset == "-1" and req.changes_only:  # no snapshot: the log from where it stands now
        return answers.respond(request, req, handle, [], head.offset, up_to_date=False)
    if req.offset == "-1":
        return await _snapshot(request, req, handle, scope, db)
    if req.offset == "now":
        now = [protocol.up_to_date(head.offset[0])]
        return answers.respond(request, req, handle, now, head.offset, up_to_date=True)
    if req.sse:
        return _sse(request, req, handle, scope, db, who, head.build, token, (epoch, mark))
    return await _changes(request, req, handle, scope, db, who, head.build, token, (epoch, mark))


def current_handle(req: protocol.ShapeRequest, scope: Scope, head: Head) -> str:
    """The handle a client gets now: the build's (definition, scope, log id, generation) and, once
    compaction has trimmed the log, its horizon, so that a client sent to refetch by the horizon gets a
    handle it has not held."""
    handle = shape_handle(req.definition(), scope, head.log_id, head.generation)
    return handle if head.horizon == (0, 0) else f"{handle}.{head.horizon[0]}_{head.horizon[1]}"


def same_build(held: str | None, current: str) -> bool:
    """A handle stays valid across compactions (the horizon part may be older): only the build counts."""
    return held is not None and held.partition(".")[0] == current.partition(".")[0]


READY_WAIT_S = 2.0  # a request that finds the reader starting or healing waits this long before a 503


def _not_ready(request: Request) -> str | None:
    health: ReplicationHealth | None = getattr(request.app.state, "health", None)
    return None if health is None else health.not_ready()


async def _still_not_ready(request: Request) -> str | None:
    """Why up-to-date cannot be said, after waiting a little for the reader to follow again."""
    health: ReplicationHealth | None = getattr(request.app.state, "health", None)
    if health is None or health.not_ready() is None:
        return None
    return await health.wait_ready(READY_WAIT_S)


REFUSED = "the token is invalid, expired or revoked"
Found = tuple[Principal, Scope, Head, int]  # who, what they may see, where the log stands, the user's mark


async def _lookup(request: Request, db: Database, token: str, cached: bool) -> Found | None:
    """Who the token is, what they may see and where the log stands. A live request (`cached`) takes them
    from the process's log watcher while its LISTEN holds (`callers.py`: forgotten on every revocation);
    any other, or on a miss, from Postgres. The mark is the user's in `callers` (-1 when not held)."""
    watcher: LogWatcher | None = getattr(request.app.state, "watcher", None)
    key = hash_token(token)
    if not cached or watcher is None:
        found = await run_in_threadpool(_caller, db, key)
        return None if found is None else (found[0].who, found[0].scope, found[1], -1)
    held = watcher.callers.lookup(key)
    if held is not None and (head := watcher.known_head()) is not None:
        return held[0].who, held[0].scope, head, held[1]
    generation = watcher.callers.generation  # before the read: a revocation during it is not missed
    found = await run_in_threadpool(_caller, db, key)
    if found is None:
        return None
    mark = watcher.callers.keep(key, found[0], generation)
    return found[0].who, found[0].scope, found[1], mark


def _caller(db: Database, token_hash: str) -> tuple[Caller, Head] | None:
    """Who the token is, what they may see and where the log stands: one transaction on a raw
    connection."""

    def read(conn: Any) -> tuple[Caller, Head] | None:
        found = principal_and_expiry_on(conn, token_hash)
        if found is None:
            return None
        who, expires_at = found
        return Caller(who, resolve_scope(conn, who), expires_at), read_head(conn)

    result: tuple[Caller, Head] | None = db.run(read)
    return result


def _scope_and_head(db: Database, who: Principal) -> tuple[Scope, Head]:
    result: tuple[Scope, Head] = db.run(lambda conn: (resolve_scope(conn, who), read_head(conn)))
    return result


def _visible(req: protocol.ShapeRequest, row: dict[str, Any], username: str | None) -> bool:
    """The client's filter sees every column of the row, whichever columns it asked to receive."""
    return req.predicate is None or req.predicate({**row, "username": username})


async def _snapshot(
    request: Request, req: protocol.ShapeRequest, handle: str, scope: Scope, db: Database
) -> Response:
    """The snapshot. One that fits in one part (an athlete's) is read and answered in one go; a larger
    one (a coach's) is streamed as it is read: its headers (the log position it reflects, the ETag)
    go out at once and its rows follow in parts, ending in snapshot-end. The read's transaction stays
    open while the body streams and ends with it, whether the client reads it all or goes away.

    Reads are bounded (`_snapshot_slots`): a streamed one holds a pooled connection between parts, and
    the parts need worker threads that requests waiting for the pool would otherwise all hold.

    With no filter, the messages come from Postgres: with the default columns (what clients ask for) the text
    the reader stored with each row, with fewer built there (`SnapshotRead`); no per-row JSON work
    here. A filtered snapshot's rows are filtered and encoded here."""
    read = SnapshotRead(db, list(scope.user_ids), columns=req.columns if req.predicate is None else None)
    slots = _snapshot_slots(request, db)
    await slots.acquire()
    try:
        head, (xmin, xmax, xip), first = await run_in_threadpool(_open_snapshot, req, scope, read)
    except BaseException:
        slots.release()
        raise
    end = protocol.encode_bytes(protocol.snapshot_end(xmin, xmax, xip)) + b"]"
    etag = answers.snapshot_etag(request, req, handle, head.offset)
    if read.exhausted or request.headers.get("if-none-match") == etag:
        try:
            if not read.exhausted:
                await run_in_threadpool(read.close)
        finally:
            slots.release()
        if request.headers.get("if-none-match") == etag:
            return answers.not_modified(req, handle, head.offset, etag)
        return answers.whole_snapshot(request, req, handle, head.offset, etag, b"[" + first + end)

    async def body() -> AsyncIterator[bytes]:
        # Each part is read while the one before it is being sent.
        reading = asyncio.ensure_future(run_in_threadpool(_snapshot_part, req, scope, read))
        try:
            yield b"[" + first
            while part := await reading:
                reading = asyncio.ensure_future(run_in_threadpool(_snapshot_part, req, scope, read))
                yield part
            yield end
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    with contextlib.suppress(Exception):
                        await reading  # its thread uses the connection: let it finish first
                    await run_in_threadpool(read.close)
                finally:
                    slots.release()

    return answers.stream_snapshot(request, req, handle, head.offset, etag, body())


async def _subset(
    request: Request, req: protocol.ShapeRequest, subset: Subset, handle: str, scope: Scope, db: Database
) -> Response:
    """A subset snapshot: the rows of the caller's scope that pass the shape's `where` and the subset's,
    ordered and cut as asked, read from Postgres with the snapshot they reflect (Electric's `metadata`,
    so its client skips the changes the subset already holds)."""
    read = await run_in_threadpool(db.run, lambda conn: read_subset(conn, list(scope.user_ids)))
    rows = [{**row, "username": scope.usernames.get(int(row["user_id"] or 0))} for row in read.rows]
    rows = subset.select([r for r in rows if req.predicate is None or req.predicate(r)])
    mark = secrets.randbelow(2**31)
    headers = {"operation": "insert", "relation": protocol.RELATION, "snapshot_mark": mark}
    data = [protocol.change_message("insert", protocol.shape_value(r, r["username"], req.columns), headers)
            for r in rows]
    metadata = {"snapshot_mark": mark, "xmin": read.xmin, "xmax": read.xmax, "xip_list": read.xip,
                "database_lsn": str(read.database_lsn)}
    # The client takes this offset as its stream's (on a cold start in changes_only mode): the one it
    # asked from when it has one, so it misses nothing; else the head this read reflects.
    position = req.position if req.offset not in ("-1", "now") else read.head
    return answers.subset_snapshot(request, req, handle, position, metadata, data)


def _snapshot_slots(request: Request, db: Database) -> anyio.Semaphore:
    """How many snapshot reads may hold a pooled connection at once: half the pool."""
    slots: anyio.Semaphore | None = getattr(request.app.state, "snapshot_slots", None)
    if slots is None:
        slots = request.app.state.snapshot_slots = anyio.Semaphore(max(1, db.settings.pool_size // 2))
    return slots


def _open_snapshot(
    req: protocol.ShapeRequest, scope: Scope, read: SnapshotRead
) -> tuple[Head, tuple[str, str, list[str]], bytes]:
    """Open the read and take its first part; a read that ends there is closed at once."""
    head, snapshot = read.open()
    try:
        first = _snapshot_part(req, scope, read) or b""
    except BaseException:
        read.close()
        raise
    if read.exhausted:
        read.close()
    return head, snapshot, first


def _snapshot_part(req: protocol.ShapeRequest, scope: Scope, read: SnapshotRead) -> bytes | None:
    """The next rows' messages, each followed by a comma (snapshot-end comes last); None at the end."""
    while rows := read.chunk():
        parts: list[bytes] = []
        for user_id, message, row in rows:
            if message is None:
                assert row is not None
                username = scope.usernames.get(user_id)
                if not _visible(req, row, username):
                    continue
                value = protocol.shape_value(row, username, req.columns)
                message = protocol.encode_bytes(protocol.change_message("insert", value))
            parts += (message, b",")
        if parts:
            return b"".join(parts)
    return None


def _log_messages(
    req: protocol.ShapeRequest, scope: Scope, changes: list[LogChange], befores: dict[Offset, Before]
) -> list[dict[str, Any]]:
    """The client's messages for these changes: each as the operation it is for this client's filter
    (a move into it an insert, out of it a delete, a change outside it nothing), `old_value` for
    `replica=full`. `last` marks the last message sent of each transaction."""
    messages: list[dict[str, Any]] = []
    lsns: list[int] = []
    for change in changes:
        message = _message_for(req, change, befores.get(change.offset), scope.usernames.get(change.user_id))
        if message is not None:
            messages.append(message)
            lsns.append(change.lsn)
    for index, message in enumerate(messages):
        message["headers"]["last"] = index == len(messages) - 1 or lsns[index + 1] != lsns[index]
    return messages


def _message_for(
    req: protocol.ShapeRequest, change: LogChange, before: Before | None, username: str | None
) -> dict[str, Any] | None:
    """Whether the client held the row before this change (`was`: None when the server cannot know,
    see docs/shapes.md "Filters") and holds it after decide the operation."""
    was: bool | None
    if change.operation == "insert":
        was = False
    elif req.predicate is None:
        was = True  # an update or delete is of a row that existed, so in an unfiltered shape
    elif before is None or not before.known:
        was = None
    else:
        was = before.row is not None and _visible(req, before.row, username)
    now = change.operation != "delete" and _visible(req, change.value, username)
    if not now and was is False:
        return None  # outside the filter before and after: nothing for this client
    headers = {"lsn": str(change.lsn), "op_position": change.op, "txids": [change.txid]}
    old = before.row if before is not None and before.known else None
    if not now:
        value = protocol.shape_value(change.value, username, req.columns)
        if req.replica == "full" and old is not None:
            value = protocol.shape_value(old, username, req.columns)  # a delete carries the row it removes
            return protocol.change_message("delete", value, headers)
        return protocol.change_message("delete", {k: value.get(k) for k in protocol.PK}, headers)
    value = protocol.shape_value(change.value, username, req.columns)
    if was is False:
        return protocol.change_message("insert", value, headers)
    message = protocol.change_message("update", value, headers)
    if req.replica == "full" and old is not None:
        previous = protocol.shape_value(old, username, req.columns)
        message["old_value"] = {k: v for k, v in previous.items() if value.get(k) != v}
    return message


async def _messages(
    req: protocol.ShapeRequest, scope: Scope, db: Database, changes: list[LogChange]
) -> list[dict[str, Any]]:
    """`_log_messages`, with the rows as they were before the changes when the request needs them."""
    befores: dict[Offset, Before] = {}
    if req.needs_previous and changes:
        tail = db.settings.shape_log_tail_changes
        befores = await run_in_threadpool(db.run, lambda conn: rows_before(conn, changes, tail))
    return _log_messages(req, scope, changes, befores)


class _Trimmed(Exception):
    """Compaction removed changes after the client's offset, or the log was rebuilt, while the client
    was reading: it must refetch."""


Build = tuple[int, str]


def _read_from_db(
    db: Database, scope: Scope, after: tuple[int, int], build: Build
) -> tuple[list[LogChange], tuple[int, int], bool]:
    """This scope's changes after `after` (at most CHUNK), the position they reach, and whether that
    position is the head of the log (only then is the response up to date). The build and the horizon
    are read in the same snapshot as the changes: a client is never given another log's changes, nor a
    gap compaction made after its offset."""

    def read(conn: Any) -> tuple[list[LogChange], tuple[int, int], bool]:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        state = read_head(conn)
        if after < state.horizon or state.build != build:
            raise _Trimmed
        head = state.offset
        changes = [c for c in read_changes(conn, sorted(scope.user_ids), after, CHUNK) if c.offset <= head]
        if len(changes) < CHUNK:
            return changes, head, True
        return changes, changes[-1].offset, False

    result: tuple[list[LogChange], tuple[int, int], bool] = db.run(read)
    return result


async def _new_handle(req: protocol.ShapeRequest, handle: str, db: Database, who: Principal) -> str | None:
    """After grants changed or the log was rebuilt: the caller's new handle if its handle no longer
    holds, else None."""
    scope, head = await run_in_threadpool(_scope_and_head, db, who)
    current = current_handle(req, scope, head)
    return None if same_build(handle, current) else current


@dataclass
class _Held:
    """What a held long poll or SSE stream knows of its caller, and the watcher's epoch and the user's mark
    (`callers.py`) when it learnt it."""

    who: Principal
    scope: Scope
    epoch: int
    mark: int


def _caller_may_have_changed(watcher: LogWatcher, held: _Held) -> bool:
    """Whether the caller must be read again: its user's mark moved (tokens revoked, a role or username
    changed, the watcher's LISTEN lost or made again), or no LISTEN holds now, so a revocation would
    reach nobody."""
    return not watcher.callers.listening or watcher.callers.mark(held.who.id) != held.mark


async def _still_allowed(
    request: Request, req: protocol.ShapeRequest, handle: str, db: Database, token: str, held: _Held,
    read_again: bool,
) -> Response | None:
    """Checked after a held request has read changes and before it sends them: None while its handle still
    names what its caller may see (`held` then has the caller as it is now), else the answer it ends with:
    401 for a refused token, 409 with the new handle for a scope changed by a grant or a role, or a rebuilt
    log (docs/shapes.md, "Live requests and tokens"). `read_again`: read the caller again, its scope
    included; otherwise a moved epoch (grants, the log) reads the scope and the head again."""
    watcher: LogWatcher | None = getattr(request.app.state, "watcher", None)
    epoch = watcher.epoch if watcher is not None else 0  # before the reads: a change during them is not missed
    if read_again:
        found = await _lookup(request, db, token, cached=True)
        if found is None:
            return answers.unauthorized(REFUSED)
        current = current_handle(req, found[1], found[2])
        if not same_build(handle, current):
            return answers.must_refetch(current)
        held.who, held.scope, held.mark = found[0], found[1], found[3]
    elif epoch != held.epoch and (new_handle := await _new_handle(req, handle, db, held.who)) is not None:
        return answers.must_refetch(new_handle)
    held.epoch = epoch
    return None


async def _read_after(
    watcher: LogWatcher | None, db: Database, scope: Scope, after: tuple[int, int], build: Build
) -> tuple[list[LogChange], tuple[int, int], bool]:
    """From the watcher's one in-memory read of the log when it covers `after` (and holds this build
    of the log), else the database."""
    if watcher is not None and watcher.build == build and watcher.covers(after):
        changes, reached = watcher.changes_after(after, scope.user_ids)
        if watcher.build == build:  # not rebuilt while we read
            return changes, reached, True
    return await run_in_threadpool(_read_from_db, db, scope, after, build)


async def _changes(
    request: Request, req: protocol.ShapeRequest, handle: str, scope: Scope, db: Database, who: Principal,
    build: Build, token: str, seen: tuple[int, int],
) -> Response:
    """Catch-up and long polls. An answer that would say up-to-date is a 503 while no reader follows
    the slot; a held request is woken, and looks again, when grants change, the log is rebuilt (409),
    the reader stops following (503), the server shuts down (503: the client comes back) or its user's
    tokens change (it reads its token again: 401 if it was revoked, 409 if its scope changed). `seen`: the
    watcher's epoch and the user's mark when the caller was read."""
    watcher: LogWatcher | None = getattr(request.app.state, "watcher", None)
    after = req.position
    deadline = time.monotonic() + protocol.LIVE_HOLD_S
    held = _Held(who, scope, *seen)
    while True:
        try:
            changes, reached, at_head = await _read_after(watcher, db, held.scope, after, build)
        except _Trimmed:
            return answers.must_refetch(await _new_handle(req, "", db, held.who) or handle)
        # Without a watcher a long poll is never held: the caller it read at first is as fresh as any.
        read_again = req.live and watcher is not None and _caller_may_have_changed(watcher, held)
        if (ended := await _still_allowed(request, req, handle, db, token, held, read_again)) is not None:
            return ended
        messages = await _messages(req, held.scope, db, changes)
        remaining = deadline - time.monotonic()
        if at_head and _not_ready(request) is not None:
            if (reason := await _still_not_ready(request)) is None:
                continue  # following again: look again (the log may have been rebuilt meanwhile)
            if not messages:
                return answers.not_ready(reason)
            at_head = False  # the changes, but not the claim that nothing else is coming
        closing = watcher is not None and watcher.closing
        if (messages or not req.live or remaining <= 0 or watcher is None or closing
                or await request.is_disconnected()):
            position = max(after, reached)
            if at_head:
                messages.append(protocol.up_to_date(position[0]))
            return answers.respond(request, req, handle, messages, position, up_to_date=at_head)
        after = max(after, reached)  # nothing for this client yet: skip what others changed
        # Woken for anything that concerns it.
        await watcher.wait(remaining, after, held.epoch, held.scope.user_ids, (held.who.id, held.mark))


def _sse(
    request: Request, req: protocol.ShapeRequest, handle: str, scope: Scope, db: Database, who: Principal,
    build: Build, token: str, seen: tuple[int, int],
) -> Response:
    """Live mode over server-sent events: one response carries every change for SSE_HOLD_S, each
    batch ending in up-to-date. Held streams wait on the same watcher as long polls, so one read of
    the log serves them all. Starlette cancels the stream when the client goes away. A stream cannot
    turn into a 409 or a 503: it ends, and the client's next request gets one (after a rebuild, a
    change of scope, while no reader follows the slot, when the server shuts down, or when its token was
    revoked: the 401)."""
    watcher: LogWatcher | None = getattr(request.app.state, "watcher", None)

    async def events() -> AsyncIterator[bytes]:
        after = req.position
        held = _Held(who, scope, *seen)
        started = quiet_since = time.monotonic()
        while True:
            if watcher is not None and watcher.closing:
                return
            try:
                changes, reached, at_head = await _read_after(watcher, db, held.scope, after, build)
            except _Trimmed:
                return
            # Without a watcher nothing says when the caller changes: it is read again at each poll.
            read_again = watcher is None or _caller_may_have_changed(watcher, held)
            if await _still_allowed(request, req, handle, db, token, held, read_again) is not None:
                return
            messages = await _messages(req, held.scope, db, changes)
            after = max(after, reached)
            if at_head and _not_ready(request) is not None:
                return  # the client asks again from its last up-to-date, and gets the 503
            if messages:
                if at_head:
                    messages.append(protocol.sse_up_to_date(after))
                yield b"".join(protocol.sse_event(m) for m in messages)
                quiet_since = time.monotonic()
            if not at_head:
                continue  # more of the log to read from the database first
            now = time.monotonic()
            if now - started >= protocol.SSE_HOLD_S:
                return
            if now - quiet_since >= protocol.SSE_KEEPALIVE_S:
                yield protocol.SSE_KEEPALIVE
                quiet_since = now
            timeout = min(started + protocol.SSE_HOLD_S, quiet_since + protocol.SSE_KEEPALIVE_S) - now
            if watcher is None:
                await asyncio.sleep(min(timeout, 1.0))
            else:
                await watcher.wait(timeout, after, held.epoch, held.scope.user_ids, (held.who.id, held.mark))

    headers = {
        "electric-handle": handle,
        "electric-offset": protocol.offset_text(req.position),
        "electric-cursor": protocol.live_cursor(),
        "cache-control": "private, no-cache",
        "vary": "Authorization",
        "x-accel-buffering": "no",  # nginx: pass each event on at once
    }
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
