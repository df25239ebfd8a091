"""The one retry policy of the sync clients (`sync.client` for auth and push, `sync.shape_client` for
shapes): exponential backoff with jitter, floored by the server's `Retry-After`, over tenacity."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial_s: float = 0.25  # the first wait; it doubles each attempt up to max_s
    max_s: float = 20.0
    jitter_s: float = 1.0  # plus up to this much at random, so many devices do not come back together
    retry_after_max_s: float = 300.0  # a Retry-After is a floor, but not an unbounded one

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait after failed attempt number `attempt` (1, 2, ...): exponential, jittered, floored by Retry-After."""
        backoff = min(self.max_s, self.initial_s * 2.0 ** (attempt - 1)) + random.uniform(0, self.jitter_s)
        if retry_after_s is not None:
            backoff = max(backoff, min(retry_after_s, self.retry_after_max_s))
        return backoff


class Retryable(Exception):
    """A failure worth asking again (5xx, 429, the network), with the server's Retry-After if it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(header: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


class _Wait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = error.retry_after_s if isinstance(error, Retryable) else None
        return self.policy.delay(retry_state.attempt_number, retry_after)


def retrying(
    policy: RetryPolicy, sleep: Callable[[float], None],
    retried: tuple[type[BaseException], ...] = (Retryable,),
) -> tenacity.Retrying:
    """Attempts under `policy`; the last failure is raised as itself once the attempts are spent."""
    return tenacity.Retrying(stop=tenacity.stop_after_attempt(policy.attempts), wait=_Wait(policy),
                             retry=tenacity.retry_if_exception_type(retried), sleep=sleep, reraise=True)
