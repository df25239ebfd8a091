"""The client side of the wire: one narrow HTTP transport for auth and push, with retries.

Retries follow the one policy of `sync.retry` (exponential backoff with jitter, `Retry-After` as a
floor). Errors are translated once into the package's hierarchy (`sync.errors`): `Offline` (unreachable,
or 5xx/429 after the retries), `AuthExpired` (401: log in again), `ServerRefused` (any other 4xx, a 3xx,
or a 2xx that is not the server's answer: then without an error code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from sync.errors import AuthExpired, Offline, ServerRefused
from sync.retry import Retryable, RetryPolicy, retry_after_seconds, retrying
from sync.wire import PROTOCOL, PushResponse

USER_AGENT = "ngx-pulse-sync/1"
# A push or sign-in: 4 attempts, about 1 s of waiting in all, so `pulse sync` against a server that is
# away answers "offline" within a few seconds; the breaker spaces the rounds after that.
PUSH_RETRY = RetryPolicy(attempts=4, initial_s=0.125, max_s=4.0, jitter_s=0.25)
# Signing in is a person waiting at the prompt: two attempts, a fraction of a second apart.
SIGN_IN_RETRY = RetryPolicy(attempts=2, initial_s=0.1, max_s=0.2, jitter_s=0.2)


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


class SyncClient:
    """Auth and push over httpx. `transport` lets tests inject faults without patching."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy = PUSH_RETRY,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        headers = {"user-agent": USER_AGENT}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                 transport=transport)
        self.retry = retry
        self.sleep = sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, answers: Callable[[dict[str, Any]], bool] | None = None,
                **kwargs: Any) -> Any:
        """The answer's JSON object; `answers` tells whether a successful one is the answer asked for."""
        try:
            for attempt in retrying(self.retry, self.sleep or time.sleep):
                with attempt:
                    return self._once(method, path, answers, **kwargs)
        except Retryable as exc:
            raise Offline(str(exc), exc.retry_after_s or 0.0) from exc
        raise AssertionError("unreachable")

    def _once(
        self, method: str, path: str, answers: Callable[[dict[str, Any]], bool] | None, **kwargs: Any
    ) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, reset, timed out: the request may or may not have landed
            raise Retryable(f"cannot reach {self.http.base_url}: {why_unreachable(exc)}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Retryable(f"server answered {response.status_code}",
                            retry_after_seconds(response.headers.get("retry-after")))
        body = _json(response)
        if response.status_code == 401:
            raise AuthExpired.from_body(body)
        if response.status_code >= 300:  # a redirect (not followed: a request never changes address
            # silently) is no answer either: said as a refusal that is not the sync server's own
            raise ServerRefused.from_body(response.status_code, body)
        if response.status_code == 204 and answers is None:  # no content, where none is asked for
            return {}
        if not isinstance(body, dict) or (answers is not None and not answers(body)):
            # a 2xx that is not the server's answer (a captive portal's or a proxy's page): never taken for
            # one that holds nothing
            raise not_an_answer(response, body)
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
        body: PushResponse = self.request("POST", "/v1/sync/push", answers=_is_push_answer, json=payload)
        return body

    def high_water(self, client_ids: Sequence[str]) -> dict[str, int | None]:
        """The highest seq the server holds for each of these client ids (None: none)."""
        body = self.request("GET", "/v1/sync/high-water", params=[("client_id", c) for c in client_ids],
                            answers=holds("high_water", dict))
        marks: dict[str, int | None] = body.get("high_water", {})
        return marks

    def conflicts(self, after_version: int, limit: int = 1000) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", "/v1/conflicts", answers=holds("conflicts", list),
                                            params={"after_version": after_version, "limit": limit})
        return body

    def dismiss_conflicts(self, ids: Sequence[int]) -> None:
        self.request("POST", "/v1/conflicts/dismiss", json={"ids": list(ids)})

    def erasures(self, after: int, limit: int = 1000) -> dict[str, Any]:
        """The erasures of the entries this user holds with an id after `after` (docs/erasure.md)."""
        body: dict[str, Any] = self.request("GET", "/v1/erasures", params={"after": after, "limit": limit},
                                            answers=holds("erasures", list))  # never "none" for another's JSON
        return body

    def erase(self, first: str | None, last: str | None) -> dict[str, Any]:
        """Erase this user's entries from `first` to `last` (None: an open end) on the server."""
        params = {k: v for k, v in (("from", first), ("to", last)) if v is not None}
        body: dict[str, Any] = self.request("DELETE", "/v1/me/entries", params=params,
                                            answers=holds("erasure", dict))
        return body

    def probe(self, timeout_s: float = 2.0) -> bool:
        """One cheap request, no retries: is the server answering again?"""
        try:
            response = self.http.get("/healthz", timeout=timeout_s)
        except httpx.TransportError:
            return False
        return response.status_code < 500


def _json(response: httpx.Response) -> Any:
    """The answer's JSON; None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def not_an_answer(response: httpx.Response, body: Any) -> ServerRefused:
    """A successful status with a body that is not the answer asked for: said as an answer that is not
    the sync server's own (no error code), like a proxy's page."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    what = "not a JSON object" if not isinstance(body, dict) else "not the answer asked for"
    return ServerRefused(response.status_code, "", f"{response.status_code} {what} ({kind})")


def holds(member: str, kind: type) -> Callable[[dict[str, Any]], bool]:
    """An answer that holds `member` as a `kind`."""
    return lambda body: isinstance(body.get(member), kind)


def _is_push_answer(body: dict[str, Any]) -> bool:
    """A push answer has a result list (taken as one, an answer without it would leave every change
    pending with nothing said, and the round would pass)."""
    results = body.get("results")
    return isinstance(results, list) and all(isinstance(r, dict) for r in results)
