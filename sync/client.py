"""The client side of the wire: one narrow HTTP transport for auth and push, with retries.

Retries use exponential backoff with jitter (tenacity) and honour `Retry-After` as a floor. Errors are
translated once into this module's hierarchy:

    SyncError
    ├── Offline          the server cannot be reached or answers 5xx/429 after the retries
    ├── AuthExpired      401: the token is invalid, expired or revoked (log in again)
    └── ServerRefused    any other 4xx for the request as a whole (426, 413, 400...)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from sync.wire import PROTOCOL, PushResponse

USER_AGENT = "ngx-pulse-sync/1"


class SyncError(Exception):
    pass


class Offline(SyncError):
    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthExpired(SyncError):
    pass


class ServerRefused(SyncError):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(error.get("message") or f"server refused the request ({status})")
        self.status = status
        self.code = error.get("code", "")


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def why_unreachable(exc: httpx.TransportError) -> str:
    """A transport failure in a few words a person can act on."""
    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if "Connection refused" in text:
        return "connection refused (is the server running on that port?)"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return f"unknown host {exc.request.url.host}" if _has_request(exc) else "unknown host"
    if "SSL" in text or "TLS" in text:
        return "TLS handshake failed (does the server speak https? try http://)"
    return text or type(exc).__name__


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018  (httpx raises RuntimeError when the error has no request)
    except RuntimeError:
        return False
    return True


def retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


class SyncClient:
    """Auth and push over httpx. `transport` lets tests inject faults without patching."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        headers = {"user-agent": USER_AGENT}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                 transport=transport)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        """Full jitter on an exponential backoff, never below the server's Retry-After."""
        exponential = min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1))
        jittered = random.uniform(0, exponential)
        error = state.outcome.exception() if state.outcome else None
        floor = error.retry_after_s if isinstance(error, _Retryable) else 0.0
        return max(floor, jittered)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            reraise=True,
            sleep=self.sleep or time.sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, **kwargs)
        except _Retryable as exc:
            raise Offline(str(exc), exc.retry_after_s) from exc
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, reset, timed out: the request may or may not have landed
            raise _Retryable(f"cannot reach {self.http.base_url}: {why_unreachable(exc)}", 0.0) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"server answered {response.status_code}", retry_after(response))
        body = _json(response)
        if response.status_code == 401:
            raise AuthExpired("the server refused the token: log in again (pulse login)")
        if response.status_code >= 400:
            raise ServerRefused(response.status_code, body)
        return body

    def login(self, username: str, password: str) -> dict[str, Any]:
        body: dict[str, Any] = self.request("POST", "/v1/auth/token", json={"username": username, "password": password})
        return body

    def me(self) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", "/v1/me")
        return body

    def push(
        self, client_id: str, mutations: Sequence[dict[str, Any]], utc_offset_min: int | None = None
    ) -> PushResponse:
        """One batch; `utc_offset_min` is the device's zone now (the server judges dates by it)."""
        payload: dict[str, Any] = {"protocol": PROTOCOL, "client_id": client_id, "mutations": list(mutations)}
        if utc_offset_min is not None:
            payload["utc_offset_min"] = utc_offset_min
        body: PushResponse = self.request("POST", "/v1/sync/push", json=payload)
        return body

    def high_water(self, client_ids: Sequence[str]) -> dict[str, int | None]:
        """The highest seq the server holds for each of these client ids (None: none)."""
        body = self.request("GET", "/v1/sync/high-water", params=[("client_id", c) for c in client_ids])
        marks: dict[str, int | None] = body.get("high_water", {})
        return marks

    def conflicts(self, after_version: int, limit: int = 1000) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", "/v1/conflicts",
                                            params={"after_version": after_version, "limit": limit})
        return body

    def dismiss_conflicts(self, ids: Sequence[int]) -> None:
        self.request("POST", "/v1/conflicts/dismiss", json={"ids": list(ids)})

    def probe(self, timeout_s: float = 2.0) -> bool:
        """One cheap request, no retries: is the server answering again?"""
        try:
            response = self.http.get("/healthz", timeout=timeout_s)
        except httpx.TransportError:
            return False
        return response.status_code < 500


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
