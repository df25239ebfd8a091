"""What the device app needs from the store it serves: one port, implemented by the local agent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sync.wire import MutationResult

# A shape row: column -> value in Postgres text format (or None), as the cloud server sends it.
Row = dict[str, str | None]


@dataclass(frozen=True)
class Signed:
    token: str
    expires_at: str


@dataclass(frozen=True)
class Pushed:
    results: list[MutationResult]
    server_time_ms: int
    position: int  # the shape log's head after the batch
    high_water: int | None = None  # the highest seq held for the client before the batch


@dataclass(frozen=True)
class LogChange:
    position: int
    operation: str  # "insert" | "update" | "delete"
    row: Row  # the key columns only for a delete


class DeviceBackend(Protocol):
    username: str
    role: str

    def now_ms(self) -> int:
        """The device's clock as its sync server's (corrected by the offset it learned)."""

    def account_id(self) -> str | None:
        """The sync server's id of the device's account (as its `/v1/me` gives it), None if not known."""

    def sign_in(self, username: str, password: str) -> Signed | None:
        """A token for the device's own user, or None for a wrong username or password. Raises
        pulse_server.errors.ApiError when the password cannot be checked now (503)."""

    def authenticate(self, token: str) -> bool:
        """The token is one this device issued, unexpired."""

    def push(self, client_id: str, mutations: Sequence[Mapping[str, Any]]) -> Pushed:
        """Apply a browser's mutations exactly once by (client_id, seq); one result per mutation."""

    def refused(self, client_id: str, limit: int) -> list[dict[str, Any]]:
        """A browser's changes this device took (answered as applied) that the sync server refused since, not
        yet handed back: each as its refusal under the browser's seq, with the change, oldest first."""

    def hand_back(self, client_id: str, seqs: Sequence[int]) -> None:
        """The browser holds these refused changes now: they leave this device's own refusals."""

    def conflicts(self, limit: int, after_version: int | None) -> list[dict[str, Any]]:
        """The conflict audit of the user's entries with their states (the cloud's form): oldest first,
        or those changed after a version, by version."""

    def dismiss_conflicts(self, ids: Sequence[int]) -> None:
        """Put these conflicts aside (on the sync server too, at the next sync)."""

    def erasures(self, after: int, limit: int) -> list[dict[str, Any]]:
        """The erasures of the user's entries the device applied, with an id after `after`, oldest first,
        in the form of the cloud's `GET /v1/erasures` (docs/erasure.md)."""

    def log_id(self) -> str:
        """Names this shape log: a new one (a store rebuilt from scratch) means a new handle."""

    def head(self) -> int:
        """The newest position of the shape log (0 when empty)."""

    def snapshot(self) -> tuple[list[Row], int]:
        """Every row of the user's entries and the log position they are consistent with."""

    def changes_after(self, position: int, limit: int) -> tuple[list[LogChange], int]:
        """At most `limit` changes after `position`, and the position they reach."""
