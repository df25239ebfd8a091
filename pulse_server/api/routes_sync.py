"""`POST /v1/sync/push`: the exactly-once push endpoint (docs/push-protocol.md).

The hot path of the server, so it is written closer to the metal than the other routes: the body is
parsed once and checked for its form by `sync.wire.parse_push_body` (each mutation's meaning by
`sync.wire.parse_mutation`, and rejected alone), and the caller's token is looked up on the push's own
connection, in its transaction, so one worker-thread hop and one pooled connection serve the request.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pulse_server.accounts import Principal
from pulse_server.api.content_type import JsonDeclared, require_json
from pulse_server.api.deps import (
    CurrentUser,
    DbDep,
    admitted,
    authenticate_on,
    bearer_token,
    identify,
    must_write,
)
from pulse_server.api.schemas import (
    HighWaterOut,
    PushRequest,
    PushResponse,
    RefusedOut,
    RefusedTaken,
    inline_schema,
)
from pulse_server.db.database import Database
from pulse_server.errors import ApiError, from_wire
from pulse_server.logs import user_id
from pulse_server.metrics import Metrics
from pulse_server.push import BatchOutcome, Reconciler, results_json
from pulse_server.ratelimit import ConcurrencyGate
from pulse_server.settings import Settings
from sync import wire
from sync.errors import PushRefused
from sync.hlc import CLIENT_ID
from sync.wire import PushBody, batch_refused, check_batch, parse_push_body, push_response

router = APIRouter(prefix="/v1/sync", tags=["sync"])

PUSH_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(PushRequest)}}}}
PUSH_ANSWERS: dict[int | str, dict[str, Any]] = {415: {
    "description": "The body is not declared JSON (unsupported_media_type)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}


@router.post("/push", response_model=PushResponse, response_model_exclude_none=True, openapi_extra=PUSH_BODY,
             responses=PUSH_ANSWERS)
async def push(request: Request) -> Response:
    """Apply a batch of mutations in one transaction; one result per mutation, in order."""
    token = bearer_token(request)
    user, answer = await answer_push(request.app.state, token, await request.body(),
                                     request.headers.get("content-type"))
    identify(request, user)
    return Response(results_json(answer), media_type="application/json")


async def answer_push(
    state: Any, token: str, raw: bytes, content_type: str | None
) -> tuple[Principal, wire.PushResponse]:
    """The push's answer for a caller's token, request body and its Content-Type (the route above, and the
    app's fast path for plain pushes, `pulse_server.api.app.PushFastPath`); errors raised as ApiError."""
    try:
        require_json(content_type)
        body: PushBody | ApiError = parse_push_body(raw)
    except ApiError as exc:
        body = exc  # answered once the token is known good: a bad token is a 401 whatever the body
    except PushRefused as exc:
        body = from_wire(exc)
    settings: Settings = state.settings
    db: Database = state.db
    gate: ConcurrencyGate = state.push_gate
    offset = None if isinstance(body, ApiError) else body.utc_offset_min
    reconciler = Reconciler(state.clock, settings.clock_skew_limit_ms, offset)

    def work(conn: psycopg.Connection[Any]) -> tuple[Principal, BatchOutcome]:
        if isinstance(body, ApiError) or batch_refused(body, settings.max_batch):
            must_write(authenticate_on(conn, token))  # 401 and 403 come before what is wrong with the body
            if isinstance(body, ApiError):
                raise body
            try:
                check_batch(body, settings.max_batch)
            except PushRefused as exc:
                raise from_wire(exc) from None
        assert not isinstance(body, ApiError)
        return reconciler.apply_batch_unlocked(conn, token, body.client_id, body.mutations,
                                               lambda principal: must_write(admitted(principal, conn, token)))

    user, outcome = await gate.run(lambda: db.run(work, autocommit=True))
    user_id.set(user.id)
    metrics: Metrics = state.metrics
    for status, count in Counter(r["status"] for r in outcome.results).items():
        metrics.mutations.labels(status).inc(count)
    return user, push_response(state.clock(), outcome.txid, outcome.lsn, settings.max_batch, outcome.high_water,
                               outcome.results)


_HIGH_WATER = (
    "SELECT c.id, greatest((SELECT max(a.seq) FROM applied_mutations a WHERE a.user_id = %(user)s"
    "  AND a.client_id = c.id), (SELECT h.seq FROM client_high_water h WHERE h.user_id = %(user)s"
    "  AND h.client_id = c.id)) FROM unnest(%(ids)s::text[]) AS c(id)"
)


@router.get("/high-water", response_model=HighWaterOut)
def high_water(
    user: CurrentUser, db: DbDep,
    client_id: Annotated[list[str], Query(description="Client ids of this user's stores", max_length=100)],
) -> dict[str, Any]:
    """The highest seq the server holds for each of the caller's client ids (null: none). A device whose
    acknowledged seqs go past it pushes them again: the server was restored from a backup (docs/sync.md)."""
    for value in client_id:
        _check_client_id(value)
    rows = db.run(lambda conn: conn.execute(_HIGH_WATER, {"user": user.id, "ids": client_id}).fetchall())
    return {"high_water": {cid: None if seq is None else int(seq) for cid, seq in rows}}


@router.get("/refused", response_model=RefusedOut)
def refused(
    user: CurrentUser,
    client_id: Annotated[str, Query(description="The client id of the pushing store")],
) -> dict[str, Any]:
    """Changes of this client acknowledged earlier and refused since: none here, ever. This server answers
    every refusal in the push itself, and never refuses later what it took. A device serving the app
    (`pulse agent --serve`) lists there the browser's changes it took and the sync server then refused;
    the app asks both the same way (docs/pwa.md)."""
    _check_client_id(client_id)
    return {"refused": []}


@router.post("/refused/taken", status_code=204)
def refused_taken(user: CurrentUser, body: RefusedTaken, _json: JsonDeclared) -> Response:
    """The app holds these refused changes now (as it tells a device serving it, which then drops them from
    its own refusals): nothing to do here, where none is ever listed."""
    return Response(status_code=204)


def _check_client_id(value: str) -> None:
    """A client id in the query, refused as the body's is (the field named `client_id`, not its location)."""
    if not CLIENT_ID.fullmatch(value):
        raise ApiError(400, "bad_request", f"client_id: String should match pattern '^{CLIENT_ID.pattern}$'",
                       field="client_id", value=value)
