"""Signing in: `POST /v1/auth/token` (throttled) and `GET /v1/me`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from pulse_server import accounts
from pulse_server.api.deps import ClockDep, CurrentUser, DbDep, SettingsDep
from pulse_server.api.schemas import Me, TokenRequest, TokenResponse
from pulse_server.errors import ApiError
from pulse_server.ratelimit import LoginThrottle

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/token", response_model=TokenResponse)
def issue_token(body: TokenRequest, request: Request, db: DbDep, settings: SettingsDep) -> TokenResponse:
    """Exchange a username and password for a bearer token (throttled per username and address, and per
    address, with growing delays: 429 with Retry-After)."""
    # The client's address: the socket's, or behind a trusted proxy the one it passes on (uvicorn's
    # proxy headers, only from PULSE_FORWARDED_ALLOW_IPS).
    address = request.client.host if request.client else "unknown"
    throttle: LoginThrottle = request.app.state.login_throttle
    throttle.check(body.username, address)
    with db.session() as session:
        user = accounts.authenticate(session, body.username, body.password)
        if user is None:
            raise ApiError(401, "unauthorized", "username or password is wrong", headers={"WWW-Authenticate": "Bearer"})
        token, expires = accounts.issue_token(session, user, settings.token_ttl_days)
    throttle.succeeded(body.username, address)
    return TokenResponse(access_token=token, expires_at=expires.isoformat())


@router.get("/me", response_model=Me)
def me(user: CurrentUser, clock: ClockDep) -> Me:
    return Me(username=user.username, role="coach" if user.is_coach else "athlete", server_time_ms=clock(),
              account=str(user.id))
