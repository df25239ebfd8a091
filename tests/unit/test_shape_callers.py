"""What a process holds of live clients' tokens (pulse_server/shapes/callers.py): forgotten on every
revocation, grants change and lost LISTEN, never kept from a read that a forget overtook, never used
while not listening or past the token's expiry."""

from __future__ import annotations

import time

from pulse_server.accounts import Principal
from pulse_server.shapes.callers import Caller, Callers
from pulse_server.shapes.scope import Scope

ANA = Caller(Principal(1, "ana", False), Scope({1: "ana"}), time.time() + 3600)
BO = Caller(Principal(2, "bo", False), Scope({2: "bo"}), time.time() + 3600)
COACH = Caller(Principal(9, "coach", True), Scope({1: "ana"}, 4), time.time() + 3600)


def listening() -> Callers:
    callers = Callers()
    callers.listen(True)
    return callers


def test_nothing_is_held_or_used_while_not_listening() -> None:
    callers = Callers()
    callers.keep("a", ANA, callers.generation)
    assert callers.lookup("a") is None
    held = listening()
    held.keep("a", ANA, held.generation)
    assert held.lookup("a") is not None
    held.listen(False)
    assert held.lookup("a") is None
    held.listen(True)  # a LISTEN made again: what was held before may have missed a revocation
    assert held.lookup("a") is None


def test_a_read_overtaken_by_a_forget_is_not_kept_and_its_mark_forces_a_new_read() -> None:
    callers = listening()
    generation = callers.generation  # the read begins
    callers.forget_tokens(frozenset({2}))  # anyone's revocation meanwhile
    assert callers.keep("a", ANA, generation) == -1
    assert callers.lookup("a") is None
    mark = callers.keep("a", ANA, callers.generation)
    assert mark == callers.mark(1) != -1
    assert callers.lookup("a") == (ANA, mark)


def test_a_revocation_forgets_its_users_entries_and_moves_only_their_marks() -> None:
    callers = listening()
    for key, caller in (("a", ANA), ("b", BO), ("c", COACH)):
        callers.keep(key, caller, callers.generation)
    ana, bo = callers.mark(1), callers.mark(2)
    callers.forget_tokens(frozenset({1}))
    assert callers.lookup("a") is None and callers.lookup("b") is not None and callers.lookup("c") is not None
    assert callers.mark(1) != ana and callers.mark(2) == bo
    callers.forget_tokens(None)  # everyone's (a rename, or too many users for one notification)
    assert callers.lookup("b") is None and callers.lookup("c") is None and callers.mark(2) != bo


def test_a_grants_change_forgets_only_coaches() -> None:
    callers = listening()
    callers.keep("a", ANA, callers.generation)
    callers.keep("c", COACH, callers.generation)
    callers.forget_coaches()
    assert callers.lookup("a") is not None and callers.lookup("c") is None


def test_an_expired_token_is_not_used() -> None:
    callers = listening()
    expired = Caller(ANA.who, ANA.scope, time.time() - 1)
    callers.keep("a", expired, callers.generation)
    assert callers.lookup("a") is None


def test_the_watcher_reads_the_users_a_tokens_notification_names_and_everyone_for_anything_else() -> None:
    from pulse_server.shapes.log import LogWatcher

    watcher = LogWatcher("postgresql://127.0.0.1:1/none")  # not started: no connection is made
    before = {user: watcher.callers.mark(user) for user in (1, 2, 3, 4)}
    watcher._tokens_changed(["1,2", "3"])
    assert [watcher.callers.mark(u) != before[u] for u in (1, 2, 3, 4)] == [True, True, True, False]
    for payload in ("", "not users"):  # the trigger's "everyone", and a NOTIFY not made by it
        before = {user: watcher.callers.mark(user) for user in (1, 4)}
        watcher._tokens_changed(["2", payload])
        assert all(watcher.callers.mark(u) != before[u] for u in (1, 4))
