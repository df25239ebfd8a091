"""Rules, health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pulse_core.rules import rules_document
from pulse_server.api.deps import DbDep, MetricsDep
from pulse_server.breaker import STATE_VALUES

router = APIRouter(tags=["meta"])


@router.get("/v1/rules")
def rules() -> dict[str, Any]:
    """Limits, warning thresholds, score coefficients and message templates, from pulse_core."""
    return rules_document()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DbDep) -> dict[str, str]:
    """Postgres answers (503 otherwise)."""
    db.run(lambda conn: conn.execute("SELECT 1").fetchone(), retries=0)
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
def metrics(db: DbDep, m: MetricsDep) -> Response:
    m.breaker_state.set(STATE_VALUES[db.breaker.state])
    m.pool_in_use.set(db.pool_in_use())
    m.pool_size.set(db.settings.pool_size)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
