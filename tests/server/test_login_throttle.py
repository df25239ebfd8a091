"""Sign-in throttling shared by every instance, that cannot lock anyone out.

Two real `pulse-server` processes on one database; clients bound to two source addresses (127.0.0.2
and 127.0.0.3) so the server sees two addresses. Each instance would allow its own attempts if counts
lived in its memory; here every count is Postgres's."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from server_support import ServerProcess, User, error_body

from pulse_server.accounts import add_user
from pulse_server.db.database import Database
from pulse_server.errors import ApiError
from pulse_server.ratelimit import LoginThrottle, PostgresThrottleStore, ThrottlePolicy

PASSWORD = "correct horse battery"
FREE, ADDRESS_FREE = 3, 8  # failures free per (username, address) and per address on these two servers
DELAY_S = 120  # the first wait: longer than any of these tests, so a block holds while a test runs


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


@pytest.fixture(scope="module")
def instances(start_server: Callable[..., ServerProcess]) -> tuple[ServerProcess, ServerProcess]:
    settings = {"login_free_failures": str(FREE), "login_address_free_failures": str(ADDRESS_FREE),
                "login_first_delay_s": str(DELAY_S)}
    return start_server(**settings), start_server(**settings)


@pytest.fixture(autouse=True)
def fresh_counts(pg: psycopg.Connection[Any]) -> None:
    """Every test starts with no failure counted anywhere (the addresses are shared between tests)."""
    pg.execute("DELETE FROM login_throttle")


@pytest.fixture
def athlete(db: Database) -> User:
    name = unique_name("throttled")
    with db.session() as session:
        row = add_user(session, name, PASSWORD, False)
    assert row.id is not None
    return User(row.id, name, PASSWORD)


@pytest.fixture
def from_address() -> Iterator[Callable[[str, str], httpx.Client]]:
    opened: list[httpx.Client] = []

    def open_client(url: str, address: str) -> httpx.Client:
        http = httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=address))
        opened.append(http)
        return http

    yield open_client
    for http in opened:
        http.close()


def sign_in(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post("/v1/auth/token", json={"username": username, "password": password})


def test_wrong_passwords_from_one_address_never_keep_the_right_one_out_from_another(
    instances: tuple[ServerProcess, ServerProcess], athlete: User, from_address: Callable[[str, str], httpx.Client]
) -> None:
    a, b = instances
    attacker = [from_address(a.url, "127.0.0.2"), from_address(b.url, "127.0.0.2")]
    # Ten wrong passwords for the athlete from 127.0.0.2, alternating between the two instances.
    statuses = [sign_in(attacker[i % 2], athlete.username, "wrong password").status_code for i in range(10)]
    # The count is shared: FREE free failures, one more that starts the wait, then 429 on either instance
    # (counted per process, each instance would have let FREE + 1 through, 8 of the 10 in all).
    assert statuses == [401] * (FREE + 1) + [429] * (10 - FREE - 1)
    limited = sign_in(attacker[0], athlete.username, athlete.password)
    assert limited.status_code == 429  # this pair did wrong: even the right password waits
    assert error_body(limited)["code"] == "rate_limited"
    assert DELAY_S - 30 <= int(limited.headers["retry-after"]) <= DELAY_S
    # The owner, from an address that did nothing wrong, gets in on both instances, every time.
    for url in (a.url, b.url, a.url):
        owner = sign_in(from_address(url, "127.0.0.3"), athlete.username, athlete.password)
        assert owner.status_code == 200, owner.text
        assert owner.json()["access_token"]


def test_an_address_guessing_across_usernames_waits_for_all_of_them_and_no_other_address_does(
    instances: tuple[ServerProcess, ServerProcess], athlete: User, from_address: Callable[[str, str], httpx.Client]
) -> None:
    a, b = instances
    sprayer = [from_address(a.url, "127.0.0.2"), from_address(b.url, "127.0.0.2")]
    # One wrong password for each of many usernames: no pair reaches its limit, the address does.
    statuses = [sign_in(sprayer[i % 2], unique_name("guess"), "wrong password").status_code
                for i in range(ADDRESS_FREE + 3)]
    assert statuses == [401] * (ADDRESS_FREE + 1) + [429, 429]
    assert sign_in(sprayer[1], athlete.username, athlete.password).status_code == 429
    for url in (a.url, b.url):
        assert sign_in(from_address(url, "127.0.0.3"), athlete.username, athlete.password).status_code == 200


def test_a_successful_sign_in_clears_its_pair(
    instances: tuple[ServerProcess, ServerProcess], athlete: User, from_address: Callable[[str, str], httpx.Client]
) -> None:
    a, b = instances
    person = [from_address(a.url, "127.0.0.2"), from_address(b.url, "127.0.0.2")]
    typos = [sign_in(person[i % 2], athlete.username, "a typo").status_code for i in range(FREE)]
    assert typos == [401] * FREE
    assert sign_in(person[1], athlete.username, athlete.password).status_code == 200
    # Counted from nothing again: FREE + 1 failures before a wait (without the clearing, the next
    # failure would already be past the limit).
    again = [sign_in(person[i % 2], athlete.username, "a typo").status_code for i in range(FREE + 2)]
    assert again == [401] * (FREE + 1) + [429]


def test_forged_forwarded_for_does_not_change_the_address_a_direct_client_is_counted_under(
    instances: tuple[ServerProcess, ServerProcess], athlete: User, from_address: Callable[[str, str], httpx.Client]
) -> None:
    """No proxy is trusted by default: a client cannot get a fresh allowance by naming another address."""
    a, _ = instances
    http = from_address(a.url, "127.0.0.2")
    statuses = [http.post("/v1/auth/token", json={"username": athlete.username, "password": "wrong password"},
                          headers={"x-forwarded-for": f"198.51.100.{i}", "forwarded": f"for=198.51.100.{i}"}
                          ).status_code for i in range(FREE + 2)]
    assert statuses == [401] * (FREE + 1) + [429]


def test_attempts_sent_at_once_to_the_shared_store_are_counted_exactly(database_url: str) -> None:
    """Twenty attempts at the same instant (threads on their own pooled connections, as several workers
    and instances would be): exactly FREE + 1 are let through to check a password."""
    from pulse_server.settings import Settings

    database = Database(Settings(database_url=database_url, pool_size=20))
    throttle = LoginThrottle(PostgresThrottleStore(database.run),
                             ThrottlePolicy(pair_free=FREE, address_free=1000, first_delay_s=DELAY_S))
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            throttle.check("racer", "127.0.0.9")
            outcomes.append("let through")
        except ApiError as exc:
            outcomes.append(str(exc.status))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    database.dispose()
    assert sorted(outcomes) == ["429"] * (20 - FREE - 1) + ["let through"] * (FREE + 1)


def test_the_wait_grows_with_each_failure_past_the_free_ones(database_url: str) -> None:
    """On Postgres's clock: after the free failure, waits of 0.3, 0.6, 1.2 s, then the cap of 1.2 s; an
    attempt during a wait is refused and not counted."""
    import time

    from pulse_server.settings import Settings

    database = Database(Settings(database_url=database_url, pool_size=2))
    throttle = LoginThrottle(PostgresThrottleStore(database.run),
                             ThrottlePolicy(pair_free=1, address_free=1000, first_delay_s=0.3, max_delay_s=1.2))
    waits = []
    refused = 0
    try:
        throttle.check("grower", "127.0.0.8")  # the free failure
        throttle.check("grower", "127.0.0.8")  # one past it: let through, and the first wait starts
        last = time.monotonic()
        for _ in range(4):
            while True:
                try:
                    throttle.check("grower", "127.0.0.8")
                except ApiError as exc:
                    assert exc.status == 429 and int(exc.headers["Retry-After"]) >= 1
                    refused += 1
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                waits.append(now - last)
                last = now
                break
    finally:
        database.dispose()
    expected = [0.3, 0.6, 1.2, 1.2]
    assert refused >= 4
    assert all(e - 0.1 <= w < e + 5 for w, e in zip(waits, expected, strict=True)), (waits, expected)
    assert waits[2] > waits[0] + 0.5, waits
