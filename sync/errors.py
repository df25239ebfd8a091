"""The sync package's errors: one hierarchy, translated once at each edge (docs/architecture.md).

    SyncError
    └── PushRefused      a push request refused as a whole (an HTTP status and a stable code): raised by
                         the request checks in `sync.wire`, answered by the cloud server and the device app
"""

from __future__ import annotations

from typing import Any


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
