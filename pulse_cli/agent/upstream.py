"""How this device reaches its sync server: the one place its clients are built.

The push client (`sync.client.SyncClient`), the shape stream (`sync.shape_client.ShapeStream`) and the
sign-in check of `pulse agent --serve` all come from an `Upstream`, which `pulse_cli.bootstrap` makes
once per process and the device carries. Its transport is the network's; a test gives it an
`httpx.MockTransport` and the whole engine (push, refill, conflicts, pull, live pull) talks to a server in
process. Nothing here imports httpx until a client is built: `pulse log` never builds one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from pulse_cli.agent.account import Account
    from sync.client import SyncClient
    from sync.retry import RetryPolicy
    from sync.shape_client import ShapeCursor, ShapeStream

SIGN_IN_TIMEOUT_S = 5.0  # a browser is waiting on `pulse agent --serve`'s sign-in


@dataclass(frozen=True)
class Upstream:
    transport: httpx.BaseTransport | None = None  # None: the network
    sleep: Callable[[float], None] = field(default=time.sleep)  # between retries

    def client(self, server: str, token: str | None = None, retry: RetryPolicy | None = None) -> SyncClient:
        """Auth and push (and the other small requests of a round), with retries."""
        from sync.client import PUSH_RETRY, SyncClient

        return SyncClient(server, token, retry=retry or PUSH_RETRY, transport=self.transport, sleep=self.sleep)

    def shape(self, account: Account, cursor: ShapeCursor, retry: RetryPolicy | None = None) -> ShapeStream:
        """The user's `entries` shape, from where `cursor` stands."""
        from sync.shape_client import ShapeStream

        return ShapeStream(account.server, account.token, cursor=cursor, retry=retry, transport=self.transport,
                           sleep=self.sleep)

    def metered(self, wrap: Callable[[httpx.BaseTransport | None], httpx.BaseTransport]) -> Upstream:
        """The same upstream, its requests going through `wrap(transport)` (`pulse verify` counts them)."""
        return Upstream(wrap(self.transport), self.sleep)

    def check_password(self, account: Account, username: str, password: str) -> bool | None:
        """Ask the sync server: True (and the account given its fresh token), False (wrong), None (no answer).
        One attempt: a person is waiting, and a device that cannot ask checks what it remembers."""
        import httpx

        try:
            with httpx.Client(transport=self.transport, timeout=SIGN_IN_TIMEOUT_S) as http:
                response = http.post(f"{account.server.rstrip('/')}/v1/auth/token",
                                     json={"username": username, "password": password})
        except httpx.HTTPError:
            return None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:  # a portal's or a proxy's page: no answer from the sync server
                return None
            if not isinstance(body, dict) or not body.get("access_token"):
                return None
            account.token = str(body["access_token"])
            account.expires_at = str(body.get("expires_at", account.expires_at))
            return True
        if response.status_code == 401:
            return False
        if response.status_code == 429:
            from pulse_server.errors import ApiError

            raise ApiError(429, "rate_limited", "too many sign-in attempts; try again later",
                           headers={"Retry-After": response.headers.get("retry-after", "60")})
        return None
