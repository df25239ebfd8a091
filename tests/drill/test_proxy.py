"""What deploy/nginx/pulse.conf promises, checked against one real instance behind it: the client's
address passed on and believed only from the proxy, nobody's forged X-Forwarded-For; compression left to
the server; SSE events passed on as they come; a long poll held as long as the server holds it."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import _nginx
import httpx
import psycopg
import pytest
from shape_follower import Follower
from sync_support import PulseServer, User
from throwaway_db import migrated_database

from pulse_server.accounts import add_user, find_user, issue_token
from pulse_server.db.database import Database
from pulse_server.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not _nginx.available(), reason="needs nginx (.ci/test installs it)")]

PASSWORD = "correct horse battery"


@dataclass
class Proxied:
    server: PulseServer
    nginx: _nginx.Nginx
    database: Database
    pg: psycopg.Connection[Any]

    def user(self) -> tuple[User, str]:
        with self.database.session() as session:
            row = add_user(session, f"px-{secrets.token_hex(4)}", PASSWORD, False)
            assert row.id is not None
            user = User(row.id, row.username)
        with self.database.session() as session:
            found = find_user(session, user.username)
            assert found is not None
            token, _ = issue_token(session, found, 1)
        return user, token


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    logs = tmp_path_factory.mktemp("proxied")
    with migrated_database("pulse_proxy") as url:
        env = {"PULSE_DATABASE_URL": url, "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true",
               "PULSE_FORWARDED_ALLOW_IPS": "127.0.0.1", "PULSE_LOG_LEVEL": "warning",
               "PULSE_LOGIN_FREE_FAILURES": "2", "PULSE_LOGIN_FIRST_DELAY_S": "120"}
        server = PulseServer(logs / "server.log", env)
        nginx = _nginx.Nginx([server.port], root=logs / "nginx")
        database = Database(Settings(database_url=url, pool_size=2))
        try:
            server.wait_ready()
            nginx.start()
            nginx.wait_ready()
            with psycopg.connect(url, autocommit=True) as pg:
                yield Proxied(server, nginx, database, pg)
        finally:
            database.dispose()
            nginx.stop()
            server.close()


@pytest.fixture
def bound() -> Iterator[Callable[[str, str], httpx.Client]]:
    """`bound(url, "127.0.0.2")`: a client whose connections come from that source address."""
    opened: list[httpx.Client] = []

    def open_client(url: str, address: str) -> httpx.Client:
        opened.append(httpx.Client(base_url=url, timeout=40, transport=httpx.HTTPTransport(local_address=address)))
        return opened[-1]

    yield open_client
    for http in opened:
        http.close()


def counted_addresses(pg: psycopg.Connection[Any]) -> set[str]:
    return {r[0][len("addr:"):] for r in pg.execute("SELECT key FROM login_throttle WHERE key LIKE 'addr:%'")}


def test_the_address_counted_is_the_clients_through_the_proxy_and_a_forged_one_is_ignored(
    proxied: Proxied, bound: Callable[[str, str], httpx.Client]
) -> None:
    proxied.pg.execute("DELETE FROM login_throttle")
    user, _ = proxied.user()
    forged = {"x-forwarded-for": "203.0.113.7", "forwarded": "for=203.0.113.8", "x-real-ip": "203.0.113.9"}
    wrong = {"username": user.username, "password": "wrong password"}
    # Through nginx from 127.0.0.2, naming another address: counted under 127.0.0.2 (nginx sets the header).
    via_proxy = bound(proxied.nginx.url, "127.0.0.2")
    assert [via_proxy.post("/v1/auth/token", json=wrong, headers=forged).status_code for _ in range(4)] == [
        401, 401, 401, 429]
    # Straight to the instance from 127.0.0.3 (not the trusted proxy), naming another address: 127.0.0.3.
    direct = bound(proxied.server.url, "127.0.0.3")
    assert direct.post("/v1/auth/token", json=wrong, headers=forged).status_code == 401
    assert counted_addresses(proxied.pg) == {"127.0.0.2", "127.0.0.3"}
    # And through the proxy, another client address is another address to the instance: not held back.
    other = bound(proxied.nginx.url, "127.0.0.4")
    assert other.post("/v1/auth/token", json={"username": user.username, "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("path", ["/app/", "/app/js/sync.js", "/openapi.json"])
def test_compression_is_left_to_the_server(proxied: Proxied, path: str) -> None:
    """Debian's nginx.conf turns gzip on; the site turns it off for what it proxies: the same bytes and
    the same Content-Encoding come back through nginx as from the instance, for a client asking gzip."""
    asked = {"accept-encoding": "gzip"}
    with httpx.Client(timeout=10) as http:
        direct = http.get(f"{proxied.server.url}{path}", headers=asked)
        through = http.get(f"{proxied.nginx.url}{path}", headers=asked)
    assert direct.status_code == through.status_code == 200
    assert through.headers.get("content-encoding") == direct.headers.get("content-encoding")
    assert through.content == direct.content and len(through.content) > 1000


def test_an_sse_event_is_passed_on_as_it_comes(proxied: Proxied) -> None:
    """nginx buffers answers by default; a buffered stream would bring nothing before its 60 s end."""
    user, token = proxied.user()
    follower = Follower(proxied.nginx.url, token).follow()
    query = {"table": "entries", "offset": follower.offset, "handle": follower.handle, "live": "true",
             "live_sse": "true", "cursor": "0"}
    with httpx.Client(base_url=proxied.nginx.url, timeout=70, headers={"authorization": f"Bearer {token}"}) as http, \
            http.stream("GET", "/v1/shape", params=query) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        written = time.monotonic()
        proxied.pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-01', 4242)", (user.id,))
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("value", {}).get("steps") == "4242":
                break
        arrived = time.monotonic() - written
    assert arrived < 15, arrived  # typically 0.05 s; the stream itself lasts 60 s


def test_a_long_poll_is_held_as_long_as_the_server_holds_it(proxied: Proxied) -> None:
    """No change for this user: the instance answers up-to-date after about 20 s, and nginx waits for it
    (a proxy read timeout under 20 s would answer 504)."""
    _, token = proxied.user()
    follower = Follower(proxied.nginx.url, token).follow()
    started = time.monotonic()
    response = follower.request(live=True, timeout_s=60)
    held = time.monotonic() - started
    assert response.status_code == 200 and follower.answers[-1].up_to_date
    assert held >= 15, held
