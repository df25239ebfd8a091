"""The sign-in throttle's rules on the in-memory store (the device app's), on a clock the test moves."""

from __future__ import annotations

import pytest

from pulse_server.errors import ApiError
from pulse_server.ratelimit import LoginThrottle, MemoryThrottleStore, ThrottlePolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = ThrottlePolicy(pair_free=2, address_free=4, first_delay_s=1.0, max_delay_s=8.0, forget_s=3600.0)


def outcome(throttle: LoginThrottle, username: str, address: str) -> int:
    """The Retry-After of a refused attempt, or 0 if it was let through (and counted)."""
    try:
        throttle.check(username, address)
    except ApiError as exc:
        assert exc.status == 429 and exc.code == "rate_limited"
        return int(exc.headers["Retry-After"])
    return 0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(MemoryThrottleStore(clock), POLICY)


def test_waits_double_past_the_free_failures_up_to_the_cap(throttle: LoginThrottle, clock: Clock) -> None:
    waits = []
    assert [outcome(throttle, "ana", "10.0.0.1") for _ in range(2)] == [0, 0]  # free
    for _ in range(6):
        assert outcome(throttle, "ana", "10.0.0.1") == 0  # let through, counted
        waits.append(outcome(throttle, "ana", "10.0.0.1"))  # refused, not counted
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8, 8, 8]


def test_another_address_is_never_held_back_by_this_one(throttle: LoginThrottle) -> None:
    for _ in range(5):
        outcome(throttle, "ana", "10.0.0.1")
    assert outcome(throttle, "ana", "10.0.0.1") > 0
    assert outcome(throttle, "ana", "10.0.0.2") == 0


def test_a_success_clears_the_pair_and_takes_its_attempt_back_from_the_address(
    throttle: LoginThrottle, clock: Clock
) -> None:
    store = throttle.store
    assert isinstance(store, MemoryThrottleStore)
    for _ in range(2):
        outcome(throttle, "ana", "10.0.0.1")
    assert outcome(throttle, "ana", "10.0.0.1") == 0  # the right password this time
    throttle.succeeded("ana", "10.0.0.1")
    assert [c.failures for c in store.counts.values()] == [2]  # the address's two failures, no pair
    # The address can still fail twice for others before its own wait (4 free): a success is not free
    # attempts for a guesser, it only takes back its own.
    assert [outcome(throttle, f"guess{i}", "10.0.0.1") for i in range(4)] == [0, 0, 0, 1]


def test_counts_are_forgotten_a_while_after_the_last_failure(throttle: LoginThrottle, clock: Clock) -> None:
    for _ in range(3):
        outcome(throttle, "ana", "10.0.0.1")
    assert outcome(throttle, "ana", "10.0.0.1") == 1
    clock.now += POLICY.forget_s
    assert [outcome(throttle, "ana", "10.0.0.1") for _ in range(3)] == [0, 0, 0]
    assert outcome(throttle, "ana", "10.0.0.1") == 1
