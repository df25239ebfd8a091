"""The sync package's errors: one hierarchy, translated once at each edge (docs/architecture.md).

    SyncError
    ├── PushRefused            a push request refused as a whole (an HTTP status and a stable code): raised
    │                          by the request checks in `sync.wire`, answered by the cloud and device apps
    ├── Offline                the server cannot be reached, or answers 5xx/429 after the retries
    │   └── ShapeUnavailable       ... for a shape request
    ├── AuthExpired            401: the token is invalid, expired or revoked (log in again)
    │   └── ShapeAuthError         401/403 for a shape request
    ├── ServerRefused          any other 4xx for the request as a whole (426, 413, 400...)
    │   └── ShapeRequestError      a shape request's parameters refused: the server's per-parameter `errors`
    └── ShapeError             anything that stops a shape request from giving a batch: the three above, and
        └── ShapeProtocolError     a response the shape client cannot follow

The clients (`sync.client`, `sync.shape_client`) raise these; `pulse_cli.agent.runner` turns them into the
CLI's errors (exit 3 offline, 1 log in again), `pulse_server.errors.from_wire` a PushRefused into an answer.
"""

from __future__ import annotations

from typing import Any

LOG_IN_AGAIN = "the server refused the token: log in again (pulse login)"


class SyncError(Exception):
    """Anything the sync package raises."""


class PushRefused(SyncError):
    """A push request the receiver refuses as a whole: one error body, never a result per mutation."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, value: Any = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.value = value
        self.allowed = allowed


class Offline(SyncError):
    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthExpired(SyncError):
    def __init__(self, message: str = LOG_IN_AGAIN, code: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.code = code  # the error's code: `account_erased` when the account's entries were erased
        error = body.get("error") if isinstance(body, dict) else None
        self.error: dict[str, Any] = error if isinstance(error, dict) else {}

    @classmethod
    def from_body(cls, body: Any) -> AuthExpired:
        """From a 401's error body (docs/api.md)."""
        error = body.get("error") if isinstance(body, dict) else None
        return cls(LOG_IN_AGAIN, str(error.get("code", "")) if isinstance(error, dict) else "", body)


class ServerRefused(SyncError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message or f"server refused the request ({status})")
        self.status = status
        self.code = code

    @classmethod
    def from_body(cls, status: int, body: Any) -> ServerRefused:
        """From a 4xx answer's error body (docs/api.md)."""
        error = body.get("error", {}) if isinstance(body, dict) else {}
        error = error if isinstance(error, dict) else {}
        return cls(status, str(error.get("code") or ""), str(error.get("message") or ""))


class ShapeError(SyncError):
    """Anything that stops a shape request from giving a batch."""


class ShapeAuthError(ShapeError, AuthExpired):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the server refused the token ({status}: {message}): log in again (pulse login)")
        self.status = status


class ShapeRequestError(ShapeError, ServerRefused):
    def __init__(self, status: int, message: str, errors: dict[str, list[str]]) -> None:
        detail = "; ".join(f"{name}: {', '.join(why)}" for name, why in errors.items())
        super().__init__(status, "", f"shape request invalid ({status}): {detail or message}")
        self.errors = errors


class ShapeProtocolError(ShapeError):
    pass


class ShapeUnavailable(ShapeError, Offline):
    def __init__(self, attempts: int, last: str) -> None:
        super().__init__(f"shape server unavailable after {attempts} attempts (last: {last})")
        self.attempts = attempts
        self.last = last
