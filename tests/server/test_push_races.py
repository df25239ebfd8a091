"""A push that read without locks and a push under locks writing the same new day at once: neither
loses the other's values (docs/push-protocol.md, "Concurrent pushes").

The push under locks is the server's own `Reconciler.apply_batch`, paused between its read (no row for
the day yet) and its write; the other push is a real request to a real server, sent in that pause."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import psycopg
from server_support import Api, ServerProcess, User, now_ms, set_mutation, stamp

from pulse_core.entry import Entry
from pulse_server.erasure import Known
from pulse_server.push import Reconciler, Recorded, _Merged
from sync.wire import Mutation, MutationResult


class PausedBetweenReadAndWrite(Reconciler):
    """The push under locks, stopped after it has read the day (holding its lock) until `go` is set."""

    def __init__(self) -> None:
        super().__init__(now_ms, 60_000)
        self.read_done = threading.Event()
        self.go = threading.Event()

    def _merge_batch(self, user_id: int, client_id: str, raw: Sequence[dict[str, Any]],
                     parsed: list[Mutation | MutationResult], earlier: Recorded, entries: dict[dt.date, Entry],
                     server_ms: int, known: Known) -> _Merged:
        self.read_done.set()
        assert self.go.wait(30), "the test never let the paused push go on"
        return super()._merge_batch(user_id, client_id, raw, parsed, earlier, entries, server_ms, known)


def test_a_new_day_written_by_two_pushes_at_once_keeps_both_values(
    server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any], database_url: str
) -> None:
    user = make_user()
    day = (dt.date.today() - dt.timedelta(days=3)).isoformat()
    at = now_ms() - 60_000
    locked = PausedBetweenReadAndWrite()
    failures: list[BaseException] = []

    def push_under_locks() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
                locked.apply_batch(conn, user.id, "locked-device",
                                   [set_mutation(1, day, {"steps": 1000}, stamp(at, 1, "locked-device"))])
        except BaseException as exc:  # reported by the test below
            failures.append(exc)
            locked.read_done.set()

    answers: list[httpx.Response] = []

    def push_over_http() -> None:
        with Api(server.url, user.token) as api:
            answers.append(api.push("fast-device", [set_mutation(1, day, {"sleep_hours": 7.5},
                                                                 stamp(at + 1_000, 1, "fast-device"))]))

    under_locks = threading.Thread(target=push_under_locks)
    under_locks.start()
    assert locked.read_done.wait(30) and not failures, failures
    assert pg.execute("SELECT count(*) FROM entries WHERE user_id = %s", (user.id,)).fetchone() == (0,)

    over_http = threading.Thread(target=push_over_http)
    over_http.start()
    # The HTTP push either answers at once (it does not wait for the day's lock) or waits for the lock the
    # paused push holds; either way, let the paused push write now.
    deadline = now_ms() + 10_000
    while over_http.is_alive() and now_ms() < deadline:
        waiting = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                             " AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()
        if waiting and waiting[0]:
            break
        over_http.join(0.05)
    locked.go.set()
    under_locks.join(30)
    over_http.join(30)
    assert not failures, failures
    assert answers and answers[0].status_code == 200, answers
    assert [r["status"] for r in answers[0].json()["results"]] == ["applied"]

    row = pg.execute("SELECT steps, sleep_hours FROM entries WHERE user_id = %s AND date = %s",
                     (user.id, day)).fetchone()
    assert row is not None
    assert (row[0], float(row[1]) if row[1] is not None else None) == (1000, 7.5)
