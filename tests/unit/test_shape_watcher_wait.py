"""A held live request's wait on the shape log watcher (pulse_server/shapes/log.py `LogWatcher.wait`).

Thousands of requests hold such a wait at once (bench/shape_latency.py holds 10,000): each must cost
no task of its own, end at its timeout, and be woken by a change for one of its users and by nothing
else. The watcher is not started: its thread is what would call `_wake`, here called by hand.
"""

from __future__ import annotations

import asyncio
import time

from own_thread import run_in_own_thread

from pulse_server.shapes.log import LogWatcher

NOWHERE = "postgresql://127.0.0.1:1/none"  # never connected to: the watcher's thread is not started


def test_a_held_wait_runs_no_task_of_its_own_and_ends_at_its_timeout() -> None:
    async def main() -> tuple[float, int, int]:
        watcher = LogWatcher(NOWHERE)
        started = time.monotonic()
        waiting = asyncio.ensure_future(watcher.wait(0.3, (0, 0), watcher.epoch, {1}))
        await asyncio.sleep(0.1)
        tasks_while_held = len(asyncio.all_tasks())  # this coroutine's task and the waiting one
        await waiting
        return time.monotonic() - started, tasks_while_held, len(watcher._waiters)

    waited, tasks, left = run_in_own_thread(main)
    assert tasks == 2, "the wait made a task of its own (asyncio.wait_for does, for every wait)"
    assert 0.25 <= waited < 3.0
    assert left == 0


def test_a_held_wait_is_woken_by_a_change_for_its_user_and_not_by_anothers() -> None:
    async def main() -> tuple[bool, float]:
        watcher = LogWatcher(NOWHERE)
        waiting = asyncio.ensure_future(watcher.wait(30.0, (0, 0), watcher.epoch, {1}))
        await asyncio.sleep(0.05)
        watcher._wake(frozenset({2}))  # another user's change
        await asyncio.sleep(0.1)
        woken_by_other = waiting.done()
        woke = time.monotonic()
        watcher._wake(frozenset({1, 3}))
        await asyncio.wait_for(waiting, 5.0)
        return woken_by_other, time.monotonic() - woke

    woken_by_other, took = run_in_own_thread(main)
    assert not woken_by_other
    assert took < 1.0


def test_held_waits_are_woken_by_their_users_changes_by_an_event_for_all_and_by_their_tokens_changing() -> None:
    """The waits are indexed by user (a commit wakes its users' waits without a look at every held one):
    each is woken by exactly what concerns it, and the indexes are empty once the waits end."""

    async def main() -> tuple[list[set[str]], int]:
        watcher = LogWatcher(NOWHERE)
        waits = {
            "athlete 1": watcher.wait(30.0, (0, 0), watcher.epoch, {1}, (1, 0)),
            "coach of 1 and 2": watcher.wait(30.0, (0, 0), watcher.epoch, {1, 2}, (9, 0)),
            "athlete 3": watcher.wait(30.0, (0, 0), watcher.epoch, {3}, (3, 0)),
            "any change": watcher.wait(30.0, (0, 0), watcher.epoch, None),
        }
        held = {name: asyncio.ensure_future(w) for name, w in waits.items()}
        rounds: list[set[str]] = []
        for wake in (lambda: watcher._wake(frozenset({2})), lambda: watcher._wake_holders(frozenset({3})),
                     lambda: watcher._wake(None)):
            await asyncio.sleep(0.05)
            before = {name for name, task in held.items() if task.done()}
            wake()
            await asyncio.sleep(0.05)
            rounds.append({name for name, task in held.items() if task.done()} - before)
        await asyncio.wait_for(asyncio.gather(*held.values()), 5.0)
        return rounds, len(watcher._waiters) + len(watcher._by_user) + len(watcher._any_change) + len(
            watcher._by_holder)

    rounds, left = run_in_own_thread(main)
    assert rounds == [{"coach of 1 and 2", "any change"}, {"athlete 3"}, {"athlete 1"}]
    assert left == 0


def test_a_wait_returns_at_once_when_its_users_tokens_changed_since_it_read_them() -> None:
    async def main() -> float:
        watcher = LogWatcher(NOWHERE)
        mark = watcher.callers.mark(1)
        watcher.callers.forget_tokens(frozenset({1}))
        started = time.monotonic()
        await asyncio.wait_for(watcher.wait(30.0, (0, 0), watcher.epoch, {1}, (1, mark)), 5.0)
        return time.monotonic() - started

    assert run_in_own_thread(main) < 1.0


def test_a_scopes_changes_from_the_tail_are_those_of_its_users_after_the_offset_in_log_order() -> None:
    """`changes_after` finds a scope's changes through the tail's index by user; what it gives must be
    what walking the whole tail gives, also after the oldest changes were cut and erased ones removed."""
    import json
    import random

    from pulse_server.shapes.log import LogChange

    rng = random.Random(17)
    watcher = LogWatcher(NOWHERE, keep_bytes=60_000)  # ~130 changes of ~60 bytes (+400 counted each)
    lsn = 100

    def check() -> None:
        for _ in range(200):
            users = set(rng.sample(range(1, 40), rng.choice([1, 1, 2, 5, 39])))
            pick = rng.randrange(len(watcher.tail) + 1)
            after = (0, 0) if pick == len(watcher.tail) else watcher.tail[pick].offset
            changes, head = watcher.changes_after(after, users)
            assert changes == [c for c in watcher.tail if c.offset > after and c.user_id in users]
            assert head == watcher.head

    for _ in range(30):
        batch = []
        for op in range(rng.randint(1, 12)):
            user = rng.randint(1, 39)
            value = json.dumps({"user_id": str(user), "date": f"2026-01-{rng.randint(1, 28):02d}"})
            batch.append(LogChange(lsn, op, lsn, user, "update", value))
        lsn += 1
        with watcher._lock:
            watcher._add(batch)
        check()
    assert watcher.tail[0].lsn > 100  # the oldest were cut
    erased = {"user_id": 7, "lsn": lsn, "from": None, "to": None}
    watcher._forget_erased([json.dumps(erased)])
    assert all(c.user_id != 7 for c in watcher.tail)
    assert watcher.changes_after((0, 0), {7}) == ([], watcher.head)
    check()
