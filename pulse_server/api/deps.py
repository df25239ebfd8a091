"""Dependencies shared by the routes: the database, the caller, the clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from pulse_server.accounts import Principal, principal_for_token
from pulse_server.db.database import Database
from pulse_server.errors import ApiError
from pulse_server.logs import user_id
from pulse_server.metrics import Metrics
from pulse_server.settings import Settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Callable[[], int]:
    clock: Callable[[], int] = request.app.state.clock
    return clock


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Callable[[], int], Depends(get_clock)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def current_user(request: Request, db: DbDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "authorization: a bearer token is required", headers=UNAUTHORIZED)
    with db.session() as session:
        principal = principal_for_token(session, token.strip())
    if principal is None:
        raise ApiError(401, "unauthorized", "authorization: the token is invalid, expired or revoked; log in again",
                       headers=UNAUTHORIZED)
    request.state.user_id = principal.id  # for the access log (this runs in a worker thread)
    user_id.set(principal.id)
    return principal


def athlete(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    """Writes are the athlete's own: coaches read, never write."""
    if user.is_coach:
        raise ApiError(403, "forbidden", "coaches can read their athletes' entries but not write them")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
Athlete = Annotated[Principal, Depends(athlete)]
