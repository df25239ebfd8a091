"""The Shape API's one request error: Electric's per-parameter reasons, answered as a 400."""

from __future__ import annotations


class ShapeRequestError(ValueError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid request")
        self.errors = errors
