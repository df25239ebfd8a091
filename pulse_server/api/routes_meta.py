"""Rules, health, readiness and metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST

from pulse_core.rules import rules_document
from pulse_server.api.deps import DbDep, MetricsDep
from pulse_server.breaker import STATE_VALUES
from pulse_server.db.database import DatabaseUnavailable
from pulse_server.errors import ApiError
from pulse_server.metrics import READER_STATES
from pulse_server.replication.health import ReplicationHealth

router = APIRouter(tags=["meta"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """A browser pointed at the server's address gets the web app (temporary: `/` may serve more one day)."""
    return RedirectResponse("/app/", status_code=307)


@router.get("/v1/rules")
def rules() -> dict[str, Any]:
    """Limits, warning thresholds, score coefficients and message templates, from pulse_core."""
    return rules_document()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DbDep, request: Request) -> dict[str, str]:
    """Postgres answers, and a replication reader follows the shape log's slot (503 with the reason
    otherwise: docs/shapes.md, "Self-healing")."""
    db.run(lambda conn: conn.execute("SELECT 1").fetchone(), retries=0)
    health: ReplicationHealth | None = getattr(request.app.state, "health", None)
    reason = None if health is None else health.not_ready()
    if reason is not None:
        raise ApiError(503, "unavailable", f"replication: {reason}", headers={"Retry-After": "1"})
    return {"status": "ready"}


def _replication_lag(conn: Any) -> int:
    """WAL written but not yet acknowledged by this database's shape slot (0 without a slot)."""
    row = conn.execute(
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::bigint"
        " FROM pg_replication_slots WHERE database = current_database() AND slot_name LIKE 'pulse_shapes_%'"
    ).fetchone()
    return int(row[0]) if row else 0


@router.get("/metrics", include_in_schema=False)
def metrics(db: DbDep, m: MetricsDep, request: Request) -> Response:
    m.breaker_state.set(STATE_VALUES[db.breaker.state])
    m.pool_in_use.set(db.pool_in_use())
    m.pool_size.set(db.settings.pool_size)
    with contextlib.suppress(DatabaseUnavailable):  # metrics must answer most when Postgres does not
        m.replication_lag.set(db.run(_replication_lag, retries=0))
    health: ReplicationHealth | None = getattr(request.app.state, "health", None)
    reader = None if health is None else health.reader
    state = "off" if reader is None else reader.state
    for name in READER_STATES:
        m.replication_state.labels(name).set(1 if name == state else 0)
    m.replication_ready.set(1 if health is None or health.not_ready() is None else 0)
    if reader is not None:  # a process without a reader says nothing of the lag (the reader process does)
        m.replication_lag_seconds.set(reader.lag_s if reader.is_leader else 0)
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
