"""`GET /v1/shape` over a device's shape log: the same Electric protocol as the cloud server."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from pulse_server.device.ports import DeviceBackend, LogChange, Row
from pulse_server.device.watch import HeadWatcher
from pulse_server.shapes import answers, protocol
from pulse_server.shapes.errors import ShapeRequestError

router = APIRouter(tags=["shapes"])
CHUNK = 10_000


@router.get("/v1/shape")
async def shape(request: Request) -> Response:
    """The Electric HTTP Shape API over this device's entries (docs/shapes.md)."""
    try:
        req = answers.read_request(request.query_params)
    except ShapeRequestError as exc:
        return answers.bad_request(exc.errors)
    if req.sse:
        return answers.bad_request({"live_sse": ["not served by a device: use long polling"]})
    if req.subset is not None:
        return answers.bad_request({"subset": ["subset snapshots are not served by a device: ask the cloud server"]})
    backend: DeviceBackend = request.app.state.backend
    token = answers.bearer_token(request)
    if token is None or not await run_in_threadpool(backend.authenticate, token):
        return answers.unauthorized("a valid bearer token is required")
    handle = _handle(req, await run_in_threadpool(backend.log_id))
    if req.offset not in ("-1", "now") and req.handle != handle:
        return answers.must_refetch(handle)
    if req.offset == "-1" and req.changes_only:  # no snapshot: the log from where it stands now
        head = await run_in_threadpool(backend.head)
        return answers.respond(request, req, handle, [], (head, 0), up_to_date=False)
    if req.offset == "-1":
        rows, head = await run_in_threadpool(backend.snapshot)
        messages = [protocol.change_message("insert", _columns(req, row)) for row in rows if _visible(req, row)]
        messages.append(protocol.snapshot_end(str(head), str(head), []))
        return answers.respond(request, req, handle, messages, (head, 0), up_to_date=False)
    head = await run_in_threadpool(backend.head)
    if req.offset == "now":
        return answers.respond(request, req, handle, [protocol.up_to_date(head)], (head, 0), up_to_date=True)
    after = req.position[0]
    if after > head:  # an offset this log never reached: the store was replaced
        return answers.must_refetch(handle)
    return await _changes(request, req, handle, after)


def _handle(req: protocol.ShapeRequest, log_id: str) -> str:
    definition = json.dumps(req.definition(), sort_keys=True)
    return "device-" + hashlib.sha256(f"{log_id}:{definition}".encode()).hexdigest()[:24]


def _visible(req: protocol.ShapeRequest, row: Row) -> bool:
    return req.predicate is None or req.predicate(dict(row))


def _columns(req: protocol.ShapeRequest, row: Row) -> Row:
    """The asked columns the row has, `stamps` folded as the server folds it (docs/shapes.md, "Stamps")."""
    value = protocol.shape_value(row, row.get("username"), req.columns)
    if "username" not in row:
        value.pop("username", None)
    return value


async def _changes(request: Request, req: protocol.ShapeRequest, handle: str, after: int) -> Response:
    backend: DeviceBackend = request.app.state.backend
    watcher: HeadWatcher = request.app.state.watcher
    deadline = time.monotonic() + protocol.LIVE_HOLD_S
    while True:
        changes, reached = await run_in_threadpool(backend.changes_after, after, CHUNK)
        messages = _messages(req, changes)
        at_head = len(changes) < CHUNK
        remaining = deadline - time.monotonic()
        if messages or not req.live or remaining <= 0 or await request.is_disconnected():
            position = max(after, reached)
            if at_head:
                messages.append(protocol.up_to_date(position))
            return answers.respond(request, req, handle, messages, (position, 0), up_to_date=at_head)
        after = max(after, reached)
        await watcher.wait_past(after, min(remaining, 5.0))


def _messages(req: protocol.ShapeRequest, changes: list[LogChange]) -> list[dict[str, Any]]:
    """Each change as what it is for the client's filter. An insert outside it is not sent; for an update
    the device's log does not say whether the row was inside before, so one inside now is an `update`
    (the full row: a client that lacked it takes it whole) and one outside a `delete` (a client that
    held it drops it), as the server does when it cannot know (docs/shapes.md, "Filters")."""
    messages = []
    for change in changes:
        operation, row = change.operation, change.row
        visible = operation != "delete" and _visible(req, row)
        if operation == "insert" and not visible:
            continue
        if operation != "delete" and not visible:
            operation = "delete"  # outside the client's filter now: it drops the row if it held it
        value = {k: row.get(k) for k in protocol.PK} if operation == "delete" else _columns(req, row)
        messages.append(protocol.change_message(operation, value, {
            "lsn": str(change.position), "op_position": 0, "txids": [change.position], "last": True,
        }))
    return messages
