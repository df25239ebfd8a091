"""The domain's one error hierarchy.

    PulseError
    ├── ValidationError      a value the rules reject (field, value, allowed)
    │   └── UsageError       a request that is malformed rather than out of range
    ├── NotFoundError        the entry (or other thing) asked for does not exist
    └── StoreError           the storage adapter failed (wraps the driver's error)

Each edge translates these once: the CLI to one red line and an exit code, the server to an HTTP
status and a stable error code.
"""

from __future__ import annotations

from typing import Any


class PulseError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(PulseError):
    """A value the rules reject; always names the field, the value and what is allowed."""

    code = "invalid_value"

    def __init__(
        self, field: str, value: Any, allowed: str, message: str, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = allowed
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "value": self.value,
            "allowed": self.allowed,
        }


class UsageError(ValidationError):
    """Malformed input: nothing to set, an unreadable file, a bad option combination."""

    code = "bad_request"


class NotFoundError(PulseError):
    code = "not_found"


class StoreError(PulseError):
    code = "store_error"
