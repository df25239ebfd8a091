"""`POST /v1/sync/push`: the exactly-once push endpoint (docs/push-protocol.md).

The hot path of the server, so it is written closer to the metal than the other routes: the body is
parsed once with `json` and checked for its form here (each mutation's meaning is checked by
`sync.wire.parse_mutation`, and rejected alone), and the caller's token is looked up on the push's own
connection, in its transaction, so one worker-thread hop and one pooled connection serve the request.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from pulse_server.accounts import Principal
from pulse_server.api.content_type import require_json
from pulse_server.api.deps import (
    CurrentUser,
    DbDep,
    admitted,
    authenticate_on,
    bearer_token,
    identify,
    must_write,
)
from pulse_server.api.schemas import HighWaterOut, PushRequest, PushResponse, inline_schema
from pulse_server.db.database import Database
from pulse_server.errors import ApiError
from pulse_server.logs import user_id
from pulse_server.metrics import Metrics
from pulse_server.push import API_CLIENT, BatchOutcome, Reconciler
from pulse_server.ratelimit import ConcurrencyGate
from pulse_server.settings import Settings
from sync.wire import PROTOCOL

router = APIRouter(prefix="/v1/sync", tags=["sync"])

CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_SEQ = 2**63 - 1  # stored as a Postgres bigint
PUSH_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(PushRequest)}}}}
PUSH_ANSWERS: dict[int | str, dict[str, Any]] = {415: {
    "description": "The body is not declared JSON (unsupported_media_type)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}


@dataclass(frozen=True)
class PushBody:
    protocol: int
    client_id: str
    mutations: list[dict[str, Any]]
    utc_offset_min: int | None = None


MAX_OFFSET_MIN = 14 * 60  # zones run from UTC-12:00 to UTC+14:00

def _malformed(where: str, message: str, value: Any = None) -> ApiError:
    shown = value if isinstance(value, (str, int, float, bool)) else None
    return ApiError(400, "bad_request", f"{where}: {message}", field=where, value=shown)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_push_body(raw: bytes) -> PushBody:
    """The body's form, as `PushRequest` documents it; 400 naming the first thing wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and the json module reads (an integer past 64 bits, NaN) is judged below
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise _malformed("body", "JSON decode error") from None
    if not isinstance(body, dict):
        raise _malformed("body", "Input should be a valid dictionary")
    for name in ("protocol", "client_id", "mutations"):
        if name not in body:
            raise _malformed(name, "Field required")
    protocol, client_id, mutations = body["protocol"], body["client_id"], body["mutations"]
    if not _integer(protocol):
        raise _malformed("protocol", "Input should be a valid integer", protocol)
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise _malformed("client_id", "String should match pattern '^[A-Za-z0-9_-]{1,64}$'", client_id)
    if client_id == API_CLIENT:  # the server's own id for REST writes: a device using it would share its seqs
        raise ApiError(400, "bad_request", f"client_id: {client_id!r} is reserved for the server's own writes"
                       " (allowed any other id)", field="client_id", value=client_id, allowed="any id but 'api'")
    if not isinstance(mutations, list):
        raise _malformed("mutations", "Input should be a valid list")
    for i, item in enumerate(mutations):
        if not isinstance(item, dict):
            raise _malformed(f"mutations.{i}", "Input should be a valid dictionary")
        if "seq" not in item:
            raise _malformed(f"mutations.{i}.seq", "Field required")
        seq = item["seq"]
        if not _integer(seq) or not 0 <= seq <= MAX_SEQ:
            raise _malformed(f"mutations.{i}.seq", f"Input should be an integer from 0 to {MAX_SEQ}", seq)
    offset = body.get("utc_offset_min")
    if offset is not None and (not _integer(offset) or not -MAX_OFFSET_MIN <= offset <= MAX_OFFSET_MIN):
        raise _malformed("utc_offset_min", f"Input should be an integer from {-MAX_OFFSET_MIN} to {MAX_OFFSET_MIN}",
                         offset)
    return PushBody(protocol, client_id, mutations, offset)


def _check_batch(body: PushBody, max_batch: int) -> None:
    if body.protocol != PROTOCOL:
        raise ApiError(426, "unsupported_protocol", f"protocol: {body.protocol} is not supported (allowed {PROTOCOL})",
                       field="protocol", value=body.protocol, allowed=str(PROTOCOL))
    if len(body.mutations) > max_batch:
        raise ApiError(413, "batch_too_large",
                       f"mutations: {len(body.mutations)} in one batch (allowed at most {max_batch})",
                       field="mutations", value=len(body.mutations), allowed=f"at most {max_batch}")


def _batch_error(body: PushBody, max_batch: int) -> bool:
    return body.protocol != PROTOCOL or len(body.mutations) > max_batch


def _without_nulls(result: dict[str, Any]) -> dict[str, Any]:
    """A result as `MutationResult` serialises with exclude_none (also inside its error and conflicts)."""
    if "error" not in result and "conflicts" not in result and None not in result.values():
        return result  # an applied result, as most are: nothing to drop
    out = {k: v for k, v in result.items() if v is not None}
    if isinstance(error := out.get("error"), dict):
        out["error"] = {k: v for k, v in error.items() if v is not None}
    if isinstance(conflicts := out.get("conflicts"), list):
        out["conflicts"] = [{k: v for k, v in c.items() if v is not None} for c in conflicts]
    return out


@router.post("/push", response_model=PushResponse, response_model_exclude_none=True, openapi_extra=PUSH_BODY,
             responses=PUSH_ANSWERS)
async def push(request: Request) -> JSONResponse:
    """Apply a batch of mutations in one transaction; one result per mutation, in order."""
    token = bearer_token(request)
    user, answer = await answer_push(request.app.state, token, await request.body(),
                                     request.headers.get("content-type"))
    identify(request, user)
    return JSONResponse(answer)


async def answer_push(
    state: Any, token: str, raw: bytes, content_type: str | None
) -> tuple[Principal, dict[str, Any]]:
    """The push's answer for a caller's token, request body and its Content-Type (the route above, and the
    app's fast path for plain pushes, `pulse_server.api.app.PushFastPath`); errors raised as ApiError."""
    try:
        require_json(content_type)
        body: PushBody | ApiError = parse_push_body(raw)
    except ApiError as exc:
        body = exc  # answered once the token is known good: a bad token is a 401 whatever the body
    settings: Settings = state.settings
    db: Database = state.db
    gate: ConcurrencyGate = state.push_gate
    offset = None if isinstance(body, ApiError) else body.utc_offset_min
    reconciler = Reconciler(state.clock, settings.clock_skew_limit_ms, offset)

    def work(conn: psycopg.Connection[Any]) -> tuple[Principal, BatchOutcome]:
        if isinstance(body, ApiError) or _batch_error(body, settings.max_batch):
            must_write(authenticate_on(conn, token))  # 401 and 403 come before what is wrong with the body
            if isinstance(body, ApiError):
                raise body
            _check_batch(body, settings.max_batch)
        assert not isinstance(body, ApiError)
        return reconciler.apply_batch_unlocked(conn, token, body.client_id, body.mutations,
                                               lambda principal: must_write(admitted(principal)))

    user, outcome = await gate.run(lambda: db.run(work, autocommit=True))
    user_id.set(user.id)
    metrics: Metrics = state.metrics
    for status, count in Counter(r["status"] for r in outcome.results).items():
        metrics.mutations.labels(status).inc(count)
    return user, {"server_time_ms": state.clock(), "txid": outcome.txid, "lsn": outcome.lsn,
                  "max_batch": settings.max_batch, "high_water": outcome.high_water,
                  "results": [_without_nulls(r) for r in outcome.results]}


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
        if not CLIENT_ID.fullmatch(value):
            raise _malformed("client_id", "String should match pattern '^[A-Za-z0-9_-]{1,64}$'", value)
    rows = db.run(lambda conn: conn.execute(_HIGH_WATER, {"user": user.id, "ids": client_id}).fetchall())
    return {"high_water": {cid: None if seq is None else int(seq) for cid, seq in rows}}
