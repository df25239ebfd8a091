"""`POST /v1/sync/push`: the exactly-once push endpoint (sync-protocol.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pulse_server.api.deps import Athlete, ClockDep, DbDep, MetricsDep, SettingsDep
from pulse_server.api.schemas import PushRequest, PushResponse
from pulse_server.errors import ApiError
from pulse_server.push import Reconciler
from sync.wire import PROTOCOL

router = APIRouter(prefix="/v1/sync", tags=["sync"])


@router.post("/push", response_model=PushResponse, response_model_exclude_none=True)
def push(
    body: PushRequest, user: Athlete, db: DbDep, settings: SettingsDep, clock: ClockDep, metrics: MetricsDep
) -> dict[str, Any]:
    """Apply a batch of mutations in one transaction; one result per mutation, in order."""
    if body.protocol != PROTOCOL:
        raise ApiError(426, "unsupported_protocol", f"protocol: {body.protocol} is not supported (allowed {PROTOCOL})",
                       field="protocol", value=body.protocol, allowed=str(PROTOCOL))
    if len(body.mutations) > settings.max_batch:
        raise ApiError(413, "batch_too_large",
                       f"mutations: {len(body.mutations)} in one batch (allowed at most {settings.max_batch})",
                       field="mutations", value=len(body.mutations), allowed=f"at most {settings.max_batch}")
    raw = [m.model_dump() for m in body.mutations]
    reconciler = Reconciler(clock, settings.clock_skew_limit_ms)
    outcome = db.run(lambda conn: reconciler.apply_batch(conn, user.id, body.client_id, raw))
    for result in outcome.results:
        metrics.mutations.labels(result["status"]).inc()
    return {"server_time_ms": clock(), "txid": outcome.txid, "lsn": outcome.lsn, "max_batch": settings.max_batch,
            "results": outcome.results}
