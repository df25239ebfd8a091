"""Dependencies shared by the routes: the database, the caller, the clock.

The trivial ones are `async`, so they run on the event loop instead of costing a worker-thread hop each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from pulse_server.accounts import Principal, hash_token, principal_on
from pulse_server.db.database import Database
from pulse_server.erasure import ACCOUNT_ERASED, account_erasure
from pulse_server.errors import ApiError
from pulse_server.logs import user_id
from pulse_server.metrics import Metrics
from pulse_server.settings import Settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Callable[[], int]:
    clock: Callable[[], int] = request.app.state.clock
    return clock


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Callable[[], int], Depends(get_clock)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str:
    """The request's bearer token, or 401 before any database work."""
    return bearer_from(request.headers.get("authorization", ""))


def bearer_from(authorization: str) -> str:
    """The bearer token of an Authorization header's value, or 401."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "authorization: a bearer token is required", headers=UNAUTHORIZED)
    return token.strip()


def authenticate_on(conn: psycopg.Connection[Any], token: str) -> Principal:
    """The token's user, looked up on a connection the caller holds; 401 if it is invalid, expired or revoked."""
    return admitted(principal_on(conn, token), conn, token)


def admitted(principal: Principal | None, conn: psycopg.Connection[Any], token: str) -> Principal:
    """The principal a token gave, or 401 if it gave none (invalid, expired or revoked). A token revoked
    by the erasure of its whole account is answered `account_erased`, with the erasure: its devices drop
    the account's entries before they ask to sign in again (docs/erasure.md)."""
    if principal is None:
        erased = account_erasure(conn, hash_token(token))
        if erased is not None:
            raise ApiError(401, ACCOUNT_ERASED, f"account: every entry of {erased.user} was erased and its sign-ins"
                           " revoked; this device drops them; sign in again to start afresh",
                           headers=UNAUTHORIZED, extra={"erasure": erased.as_json()})
        raise ApiError(401, "unauthorized", "authorization: the token is invalid, expired or revoked; log in again",
                       headers=UNAUTHORIZED)
    return principal


def must_write(user: Principal) -> Principal:
    """Writes are the athlete's own: coaches read, never write."""
    if user.is_coach:
        raise ApiError(403, "forbidden", "coaches can read their athletes' entries but not write them")
    return user


def identify(request: Request, principal: Principal) -> None:
    """Name the caller in the access log line and in this request's log records."""
    request.state.user_id = principal.id
    user_id.set(principal.id)


async def current_user(request: Request) -> Principal:
    token = bearer_token(request)
    db: Database = request.app.state.db
    principal = await run_in_threadpool(db.run, lambda conn: authenticate_on(conn, token))
    identify(request, principal)
    return principal


async def athlete(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    return must_write(user)


CurrentUser = Annotated[Principal, Depends(current_user)]
Athlete = Annotated[Principal, Depends(athlete)]
