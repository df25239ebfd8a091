"""Running a coroutine from a test, whatever the suite runs before it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_own_thread(main: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 30.0) -> T:
    """`asyncio.run(main())` on a thread of its own, its result or its exception: the suite's Playwright
    session keeps an event loop running on the main thread, where a second loop cannot start."""
    results: list[T] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(asyncio.run(main()))
        except BaseException as exc:  # re-raised in the test's thread below
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout_s)
    assert not runner.is_alive(), f"the coroutine did not finish within {timeout_s} s"
    if failures:
        raise failures[0]
    return results[0]
