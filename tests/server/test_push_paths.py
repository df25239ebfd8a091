"""One push contract, four ways to answer it: the same batches through the cloud server's unlocked,
locked and savepoint paths (`pulse_server/push.py`, on Postgres) and through the device's relay of a
browser's pushes (`pulse_cli/agent/relay.py`, on SQLite) give the same results, as the answer carries them
(`sync.wire.push_response`), in every status (docs/push-protocol.md)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from server_support import UnlockedOnly, delete_mutation, must_be_found, set_mutation, stamp

from pulse_cli.agent.relay import relay_batch
from pulse_cli.store.connection import open_store
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_server.accounts import add_user, issue_token
from pulse_server.db.database import Database
from pulse_server.push import Reconciler
from sync.hlc import SKEW_LIMIT_MS  # the server's default, and the device relay's limit
from sync.wire import MutationResult, push_response

NOW = 1_764_230_400_000  # 2025-11-27 08:00 UTC: the server's clock and the device's, injected
TODAY = dt.date(2025, 11, 27)
CLIENT = "browser-1"
Path_ = Callable[[list[dict[str, Any]]], list[MutationResult]]


def day(offset: int) -> str:
    return (TODAY + dt.timedelta(days=offset)).isoformat()


def at(ms: int, counter: int = 0) -> str:
    return stamp(ms, counter, CLIENT)


def batches() -> list[list[dict[str, Any]]]:
    first = [
        set_mutation(1, day(-2), {"steps": 9000}, at(NOW - 5000)),
        set_mutation(2, day(-2), {"steps": 8000}, at(NOW - 6000)),  # older, and blind to the 9000: a conflict
        set_mutation(3, day(-1), {"sleep_hours": 7.5, "hrv_ms": 62}, at(NOW - 4000)),
        set_mutation(4, day(-1), {"sleep_hours": 30}, at(NOW - 3000)),  # out of range
        delete_mutation(5, day(-3), at(NOW - 2000)),  # a day never written: a tombstone all the same
        set_mutation(6, day(-1), {"note": "ahead"}, at(NOW + 3_600_000)),  # an hour ahead: clamped
        set_mutation(3, day(-1), {"sleep_hours": 7.5, "hrv_ms": 62}, at(NOW - 4000)),  # again, same batch
        {**set_mutation(7, day(-1), {"steps": 1}, "not a stamp")},
        {**set_mutation(8, day(-4), {"steps": 1, "weight_kg": 71.4}, at(NOW - 1000)), "source": "fitbit"},
    ]
    second = [
        first[0],  # a replay of an applied one
        first[3],  # a replay of a rejected one
        set_mutation(1, day(-2), {"steps": 1}, at(NOW - 5000)),  # seq 1 again with other content
        set_mutation(9, day(-2), {"steps": 100}, at(NOW - 900), base={"steps": at(NOW - 5000)}),
        delete_mutation(10, day(-2), at(NOW - 800), base={"steps": at(NOW - 900)}),
        set_mutation(11, day(-4), {"steps": 2}, at(NOW - 950), base={"steps": None}),  # by hand, over the import
    ]
    ahead = NOW + 3_600_000  # a device an hour fast, each edit made on top of the one before
    third = [
        set_mutation(12, day(-5), {"steps": 5}, at(ahead)),
        set_mutation(13, day(-5), {"steps": 6}, at(ahead + 10), base={"steps": at(ahead)}),
        delete_mutation(14, day(-5), at(ahead + 20), base={"steps": at(ahead + 10)}),
    ]
    return [first, second, third]


# The statuses, worked out from the rules (docs/push-protocol.md), not read from the code.
EXPECTED = [
    ["applied", "conflict", "applied", "rejected", "applied", "applied", "duplicate", "rejected", "applied"],
    ["duplicate", "duplicate", "clash", "applied", "applied", "conflict"],
    ["applied", "applied", "applied"],  # clamped, in the order made: neither a replay nor a conflict
]


@pytest.fixture
def new_user(db: Database) -> Callable[[], tuple[int, str]]:
    def make() -> tuple[int, str]:
        with db.session() as session:
            row = add_user(session, f"paths-{secrets.token_hex(5)}", "correct horse battery", False)
            token, _ = issue_token(session, row, 1)
            user_id = row.id
        assert user_id is not None
        return user_id, token

    return make


def _server_paths(database_url: str, user: Callable[[], tuple[int, str]]) -> dict[str, Path_]:
    def unlocked(raw: list[dict[str, Any]]) -> list[MutationResult]:
        reconciler = UnlockedOnly(lambda: NOW, SKEW_LIMIT_MS)
        with psycopg.connect(database_url, autocommit=True) as conn:
            principal, outcome = reconciler.apply_batch_unlocked(conn, token, CLIENT, raw, must_be_found)
        assert principal.id == user_id
        return outcome.results

    def locked(raw: list[dict[str, Any]]) -> list[MutationResult]:
        with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
            return Reconciler(lambda: NOW, SKEW_LIMIT_MS).apply_batch(conn, locked_id, CLIENT, raw).results

    def savepoints(raw: list[dict[str, Any]]) -> list[MutationResult]:
        with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
            reconciler = Reconciler(lambda: NOW, SKEW_LIMIT_MS)
            return reconciler.apply_batch_savepoints(conn, savepoint_id, CLIENT, raw).results

    user_id, token = user()
    locked_id, savepoint_id = user()[0], user()[0]
    return {"unlocked": unlocked, "locked": locked, "savepoints": savepoints}


def _relay(home: Path) -> Path_:
    conn = open_store(home)

    def relay(raw: list[dict[str, Any]]) -> list[MutationResult]:
        return relay_batch(SqliteUnitOfWork(conn, lambda: NOW), CLIENT, raw, NOW, TODAY)

    return relay


def _answered(results: Sequence[MutationResult]) -> list[MutationResult]:
    return push_response(NOW, None, None, 500, None, results)["results"]


def test_every_path_gives_every_result_alike(
    database_url: str, new_user: Callable[[], tuple[int, str]], tmp_path: Path
) -> None:
    paths = {**_server_paths(database_url, new_user), "relay": _relay(tmp_path / "device")}
    for raw, expected in zip(batches(), EXPECTED, strict=True):
        answers = {name: _answered(path(raw)) for name, path in paths.items()}
        assert [r["status"] for r in answers["unlocked"]] == expected
        for name in ("locked", "savepoints", "relay"):
            assert answers[name] == answers["unlocked"], name

    first = answers_of(paths, batches()[0])
    conflict = first[1]["conflicts"]
    assert conflict == [{"field": "steps", "kept": 9000, "lost": 8000, "kept_hlc": at(NOW - 5000),
                         "lost_hlc": at(NOW - 6000), "rule": "lww@2"}]
    assert first[5]["hlc"] == stamp(NOW, 0, CLIENT) and first[5]["clamped_from"] == at(NOW + 3_600_000)
    assert first[3]["error"]["code"] == "out_of_range" and first[3]["error"]["field"] == "sleep_hours"
    assert first[7]["error"]["code"] == "invalid_hlc"
    assert [r["hlc"] for r in answers["unlocked"]] == [stamp(NOW, n, CLIENT) for n in range(3)]  # the third


def answers_of(paths: dict[str, Path_], raw: list[dict[str, Any]]) -> list[MutationResult]:
    """The batch once more, through every path: all replays now, alike; the first path's answers."""
    answers = [_answered(path(raw)) for path in paths.values()]
    assert all(a == answers[0] for a in answers)
    assert {r["status"] for r in answers[0]} <= {"duplicate", "clash"}
    return [_original(r) for r in answers[0]]


def _original(result: MutationResult) -> MutationResult:
    answer = result.copy()
    if result["status"] == "duplicate" and result.get("original_status"):
        answer["status"] = result["original_status"]
    return answer


def test_a_date_ahead_of_today_is_held_by_the_server_and_rejected_by_the_device(
    database_url: str, new_user: Callable[[], tuple[int, str]], tmp_path: Path
) -> None:
    """The one difference, by design: the server keeps nothing of a mutation dated ahead of the user's
    today (the device sends it again); the device app judges by its own calendar and refuses it."""
    ahead = [set_mutation(1, day(2), {"steps": 5}, at(NOW))]
    server = [_answered(path(ahead)) for path in _server_paths(database_url, new_user).values()]
    relayed = _answered(_relay(tmp_path / "device")(ahead))
    assert server[0] == server[1] == server[2]
    assert server[0][0]["status"] == "held" and relayed[0]["status"] == "rejected"
    assert server[0][0]["error"] == relayed[0]["error"] and relayed[0]["error"]["code"] == "future_date"
