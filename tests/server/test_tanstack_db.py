"""A second real client: TanStack DB's Electric collection (`@tanstack/electric-db-collection` 0.4.x, with
`@tanstack/db` pinned to the version it depends on) against a real server, as an app uses it.

`electric_client/tanstack_collection.mjs` keeps an athlete's entries (where `deleted = false`) as a TanStack
DB collection, writes optimistic inserts, updates and deletes through `POST /v1/sync/push` and settles each
by the push's txid (the collection waits until a shape message carries it), and runs a live query that
filters (steps > 5000). Its JSON lines are compared with Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from server_support import ServerProcess, User
from test_electric_client import (  # noqa: F401 (fixtures)
    DAYS,
    ELECTRIC_DIR,
    NodeStream,
    _put,
    _wait_until_served,
    node,
    shape_server,
)

SCRIPT = ELECTRIC_DIR / "tanstack_collection.mjs"
SETTLE_S = 10.0  # a write is settled (its txid seen in the shape) well within this


@pytest.fixture
def collection(node: str, shape_server: ServerProcess, tmp_path: Path) -> Iterator[Callable[[User, str], NodeStream]]:  # noqa: F811
    started: list[NodeStream] = []

    def start(user: User, label: str) -> NodeStream:
        app = NodeStream(node, shape_server.url, user, label, tmp_path, [], script=SCRIPT)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


def _rows(pg: psycopg.Connection[Any], user: User) -> list[dict[str, Any]]:
    """The athlete's live days as the collection shows them."""
    rows = pg.execute("SELECT date::text, steps, note FROM entries WHERE user_id = %s AND NOT deleted ORDER BY date",
                      (user.id,)).fetchall()
    return [{"date": d, "steps": s, "note": n, "deleted": False} for d, s, n in rows]


def _over_5000(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"date": r["date"], "steps": r["steps"]} for r in rows if r["steps"] is not None and r["steps"] > 5000]


def test_optimistic_writes_through_push_settle_by_txid_and_psql_writes_and_a_filtering_live_query_follow(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],  # noqa: F811
    collection: Callable[[User, str], NodeStream],
) -> None:
    athlete = make_user()
    _put(shape_server, athlete, DAYS[0], {"steps": 9000, "note": "long run"})
    _put(shape_server, athlete, DAYS[1], {"steps": 3000})
    _wait_until_served(shape_server, pg, athlete)
    app = collection(athlete, "tanstack")
    app.wait_for("the first sync", lambda e: e["event"] == "ready", timeout_s=20)
    app.wait_for("the synced rows", lambda e: e["event"] == "rows" and e["rows"] == _rows(pg, athlete))
    app.wait_for("the filtered rows", lambda e: e["event"] == "filtered" and e["rows"] == [
        {"date": DAYS[0], "steps": 9000}])

    # An optimistic insert: shown at once, pushed, settled when the shape carries the push's txid.
    mark = app.mark()
    app.send({"cmd": "insert", "id": 1, "row": {"date": DAYS[2], "steps": 12000, "user_id": str(athlete.id)}})
    optimistic = app.wait_for("the optimistic insert", lambda e: e["event"] == "optimistic" and e["id"] == 1, mark)
    assert any(r["date"] == DAYS[2] and r["steps"] == 12000 for r in optimistic["rows"]), optimistic
    pushed = app.wait_for("the push's answer", lambda e: e["event"] == "pushed", mark)
    assert isinstance(pushed["txid"], str) and pushed["txid"].isdigit(), pushed  # a decimal string
    settled = app.wait_for("the insert settled by its txid", lambda e: e["event"] == "settled" and e["id"] == 1,
                           mark, timeout_s=SETTLE_S)
    assert settled["rows"] == _rows(pg, athlete)
    app.wait_for("the live query's new row", lambda e: e["event"] == "filtered"
                 and {"date": DAYS[2], "steps": 12000} in e["rows"], mark)

    # An optimistic update that takes a day out of the live query's filter.
    mark = app.mark()
    app.send({"cmd": "update", "id": 2, "date": DAYS[0], "changes": {"steps": 4000}})
    pushed = app.wait_for("the update's push", lambda e: e["event"] == "pushed", mark)
    # based on the stamp the app was shown (a named column): a plain overwrite, no conflict recorded
    assert [r["status"] for r in pushed["results"]] == ["applied"], pushed
    app.wait_for("the update settled", lambda e: e["event"] == "settled" and e["id"] == 2, mark, timeout_s=SETTLE_S)
    assert pg.execute("SELECT steps FROM entries WHERE user_id = %s AND date = %s",
                      (athlete.id, DAYS[0])).fetchone() == (4000,)
    app.wait_for("the filtered rows after the update", lambda e: e["event"] == "filtered"
                 and e["rows"] == _over_5000(_rows(pg, athlete)), mark)

    # An optimistic delete: a tombstone on the server, a move out of the shape's `deleted = false`.
    mark = app.mark()
    app.send({"cmd": "delete", "id": 3, "date": DAYS[1]})
    settled = app.wait_for("the delete settled", lambda e: e["event"] == "settled" and e["id"] == 3, mark,
                           timeout_s=SETTLE_S)
    assert [r["date"] for r in settled["rows"]] == [DAYS[0], DAYS[2]]
    assert pg.execute("SELECT deleted FROM entries WHERE user_id = %s AND date = %s",
                      (athlete.id, DAYS[1])).fetchone() == (True,)

    # A write by hand in SQL reaches the collection and the live query.
    mark = app.mark()
    pg.execute("UPDATE entries SET steps = 15000 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[0]))
    app.wait_for("the psql write", lambda e: e["event"] == "rows" and e["rows"] == _rows(pg, athlete), mark)
    app.wait_for("the psql write in the live query", lambda e: e["event"] == "filtered"
                 and e["rows"] == _over_5000(_rows(pg, athlete)), mark)
    assert [e for e in app.events if e["event"] == "failed"] == []
