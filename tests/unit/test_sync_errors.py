"""One error tree and one retry policy for the sync package's two clients (sync/errors.py, sync/retry.py):
a shape request that fails is the same kind of failure as a push that fails, and both wait alike."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from sync.client import SyncClient
from sync.errors import (
    AuthExpired,
    Offline,
    PushRefused,
    ServerRefused,
    ShapeAuthError,
    ShapeError,
    ShapeProtocolError,
    ShapeRequestError,
    ShapeUnavailable,
    SyncError,
)
from sync.retry import RetryPolicy
from sync.shape_client import ShapeStream


def test_each_shape_failure_is_the_matching_push_failure() -> None:
    assert isinstance(ShapeUnavailable(3, "HTTP 503"), Offline)
    assert isinstance(ShapeAuthError(401, "revoked"), AuthExpired)
    refused = ShapeRequestError(400, "Invalid request", {"where": ["no such column"]})
    assert isinstance(refused, ServerRefused) and refused.status == 400 and "no such column" in str(refused)
    for error in (ShapeUnavailable(3, "x"), ShapeAuthError(403, "x"), refused, ShapeProtocolError("x")):
        assert isinstance(error, ShapeError) and isinstance(error, SyncError)
    for error in (Offline("x"), AuthExpired(), ServerRefused(413, "batch_too_large", "x"), PushRefused(426, "c", "m")):
        assert isinstance(error, SyncError) and not isinstance(error, ShapeError)


def test_a_refused_token_says_to_log_in_again_on_both_paths() -> None:
    assert "log in again (pulse login)" in str(AuthExpired())
    shape = ShapeAuthError(401, "the token is invalid, expired or revoked")
    assert "log in again (pulse login)" in str(shape) and "revoked" in str(shape)


def test_a_refusal_is_read_from_the_error_body() -> None:
    refused = ServerRefused.from_body(413, {"error": {"code": "batch_too_large", "message": "mutations: 600"}})
    assert (refused.status, refused.code, str(refused)) == (413, "batch_too_large", "mutations: 600")
    bare = ServerRefused.from_body(400, "not json")
    assert (bare.code, str(bare)) == ("", "server refused the request (400)")


class Always:
    """A server that answers every request the same, counting them."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(self.response.status_code, headers=self.response.headers, content=b"{}")


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_push_and_shape_clients_wait_by_the_same_policy_and_the_same_retry_after(as_date: bool) -> None:
    """Retry-After as seconds or as an HTTP date floors every wait of both clients, and both give up after
    the policy's attempts with an Offline."""
    # An HTTP date has whole seconds, and is read against the clock: 7 s from now is 6 to 7 s when read.
    retry_after = email.utils.formatdate(time.time() + 7.5, usegmt=True) if as_date else "7"
    policy = RetryPolicy(attempts=3, initial_s=0.5, max_s=1.0, jitter_s=0.0)
    waits: dict[str, list[float]] = {"push": [], "shape": []}
    busy = httpx.Response(503, headers={"retry-after": retry_after})

    push_server = Always(busy)
    with SyncClient("http://pulse.test", "t", retry=policy, transport=httpx.MockTransport(push_server),
                    sleep=waits["push"].append) as client, pytest.raises(Offline) as pushed:
        client.push("dev", [])
    shape_server = Always(busy)
    with ShapeStream("http://pulse.test", "t", retry=policy, transport=httpx.MockTransport(shape_server),
                     sleep=waits["shape"].append) as stream, pytest.raises(Offline) as pulled:
        stream.poll()

    assert push_server.requests == shape_server.requests == 3
    for client in ("push", "shape"):
        assert len(waits[client]) == 2 and all(6.0 <= w <= 7.5 for w in waits[client]), waits
        assert as_date or waits[client] == [7.0, 7.0]  # the policy's own waits (0.5, 1.0) are below the floor
    assert isinstance(pulled.value, ShapeUnavailable) and "503" in str(pushed.value) and "503" in str(pulled.value)

