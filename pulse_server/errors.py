"""The server's errors and the one table that turns every error into an HTTP answer.

    ApiError                an answer chosen by a route (status + stable code)
    pulse_core PulseError   translated by ERROR_STATUS (ValidationError -> 422, NotFoundError -> 404, ...)
    sync PushRefused        a push request refused by the checks of `sync.wire` (from_wire: its status and code)
    DatabaseUnavailable     503 with Retry-After (Postgres down, breaker open, pool exhausted)

Body, everywhere but /v1/shape: {"error": {"code", "message", "field"?, "value"?, "allowed"?}}.
"""

from __future__ import annotations

from typing import Any

from pulse_core.errors import NotFoundError, PulseError, StoreError, UsageError, ValidationError
from sync.errors import PushRefused
from sync.wire import storable

# Every code an ApiError carries, with its status: the one table of stable codes, documented in docs/api.md
# (tests/unit/test_docs.py checks both ways: each ApiError's code is here, and each code here is documented).
CODES = {
    "bad_request": 400,
    "unauthorized": 401,
    "account_erased": 401,
    "forbidden": 403,
    "not_found": 404,
    "already_exists": 409,
    "not_a_coach": 409,
    "payload_too_large": 413,
    "batch_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_value": 422,
    "unsupported_protocol": 426,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    "busy": 503,
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        value: Any = None,
        allowed: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.value = value
        self.allowed = allowed
        self.headers = headers or {}
        self.extra = extra or {}  # more members of the error object (account_erased: the erasure)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
            error["value"] = storable(self.value)  # JSON has no inf or nan; a lone surrogate has no UTF-8
        if self.allowed is not None:
            error["allowed"] = self.allowed
        return {"error": {**error, **self.extra}}


def from_wire(exc: PushRefused) -> ApiError:
    """A push request refused by the checks of `sync.wire`, as the answer the cloud and device apps give."""
    return ApiError(exc.status, exc.code, exc.message, exc.field, exc.value, exc.allowed)


def from_domain(exc: PulseError) -> ApiError:
    if isinstance(exc, UsageError):
        return ApiError(400, "bad_request", exc.message, exc.field, exc.value, exc.allowed)
    if isinstance(exc, ValidationError):
        return ApiError(422, exc.code, exc.message, exc.field, exc.value, exc.allowed)
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", exc.message)
    if isinstance(exc, StoreError):
        return ApiError(503, "unavailable", "storage unavailable", headers={"Retry-After": "1"})
    return ApiError(500, "internal", "internal error")
