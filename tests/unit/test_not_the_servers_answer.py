"""A successful status whose body is not the sync server's answer (a captive portal's page, another service's
JSON behind a misrouted proxy) is a refusal without an error code in the CLI's clients (sync/client.py), never
an answer that holds nothing: the round stops and says whose answer it was not, and nothing is lost or
taken for "none"."""

from __future__ import annotations

import httpx
import pytest

from sync.client import SyncClient
from sync.errors import ServerRefused


@pytest.mark.parametrize(("status", "content", "kind"), [
    (200, b"<html><body>Sign in to the hotel's Wi-Fi</body></html>", "text/html"),
    (200, b'{"ok": true}', "application/json"),  # JSON, but no results
    (200, b'{"results": ["applied"]}', "application/json"),  # results that are not results
    (201, b"[]", "application/json"),
], ids=["portal-page", "no-results", "bad-results", "array"])
def test_a_successful_status_that_is_not_a_push_answer_is_a_refusal_without_a_code(
    status: int, content: bytes, kind: str
) -> None:
    """A 2xx whose body is not a push answer (a captive portal's page, another service's JSON) was taken for an
    answer with no results: every change stayed pending with nothing said, and the round passed. Now it is
    a refusal with no error code, which the engine never takes as a judgement of the changes."""
    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": kind}, content=content)

    with SyncClient("http://pulse.test", "t", transport=httpx.MockTransport(page)) as client, \
            pytest.raises(ServerRefused) as refused:
        client.push("dev", [{"seq": 1}])

    assert (refused.value.status, refused.value.code) == (status, "")
    assert kind in str(refused.value)


def test_a_no_content_answer_is_empty_and_a_push_answer_is_returned_whole() -> None:
    answer = {"server_time_ms": 1, "txid": None, "lsn": None, "max_batch": 500, "high_water": None,
              "results": [{"seq": 1, "status": "applied"}]}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/conflicts/dismiss":
            return httpx.Response(204)
        return httpx.Response(200, json=answer)

    with SyncClient("http://pulse.test", "t", transport=httpx.MockTransport(server)) as client:
        assert client.push("dev", [{"seq": 1}]) == answer
        client.dismiss_conflicts([1])  # no body, no error


@pytest.mark.parametrize("empty", [False, True], ids=["json", "no-content"])
@pytest.mark.parametrize("ask", ["push", "erasures", "conflicts", "high_water", "erase"])
def test_another_services_json_is_never_taken_for_an_empty_list(ask: str, empty: bool) -> None:
    """`{}` from something else was read as "no erasures" (a device kept erased days), "no conflicts" or
    "no marks", and so was a 204: now every one is a refusal without a code, said by the round."""
    def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(204) if empty else httpx.Response(200, json={"ok": True})

    calls = {"push": lambda c: c.push("dev", [{"seq": 1}]), "erasures": lambda c: c.erasures(0),
             "conflicts": lambda c: c.conflicts(0),
             "high_water": lambda c: c.high_water(["dev"]), "erase": lambda c: c.erase(None, None)}
    with SyncClient("http://pulse.test", "t", transport=httpx.MockTransport(other)) as client, \
            pytest.raises(ServerRefused) as refused:
        calls[ask](client)
    assert (refused.value.status, refused.value.code) == (204 if empty else 200, "")


def test_a_sign_in_answered_by_a_page_is_said_as_not_the_servers_and_never_a_traceback() -> None:
    """`pulse login` and `pulse agent --serve`'s password check, answered 200 by a captive portal's page:
    the first says whose answer it was not; the second has no answer (the device checks what it remembers)
    where `response.json()` raised before."""
    from pulse_cli.agent.account import Account
    from pulse_cli.agent.runner import sign_in
    from pulse_cli.agent.upstream import Upstream
    from pulse_cli.exits import PulseError

    def portal(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/rules":  # the check that it is a pulse server passes (as a cache could)
            return httpx.Response(200, json={"limits": {}})
        return httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>Wi-Fi</html>")

    upstream = Upstream(httpx.MockTransport(portal), sleep=lambda _: None)
    with pytest.raises(PulseError) as refused:
        sign_in("http://pulse.test", "ann", "secret", upstream)
    assert "answered 200, not as the sync server does" in str(refused.value)
    assert "text/html" in str(refused.value)

    account = Account("http://pulse.test", "ann", "athlete", "old-token", "2027-01-01T00:00:00+00:00")
    assert upstream.check_password(account, "ann", "secret") is None
    assert account.token == "old-token"
