"""ElectricSQL's own TypeScript client (`@electric-sql/client` 1.5.x, under Node) syncs from our `GET /v1/shape`.

A real `pulse-server` with the replication reader and the shape-log watcher on; `electric_client/shape_stream.mjs`
runs the official `ShapeStream` + `Shape` as a subprocess and prints every HTTP response, message batch and
materialised row set as JSON lines with wall-clock timestamps, which these tests compare with Postgres.
The package is installed here (`npm ci` in tests/server/electric_client) when it is missing: node and npm are
required, not optional. `pytest -s` prints the measured latencies (write committed -> line printed by Node).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import psycopg
import pytest
from psycopg import sql
from server_support import Api, ServerProcess, User, now_ms, set_mutation, stamp

from sync import stamps_column

ELECTRIC_DIR = Path(__file__).parent / "electric_client"
SCRIPT = ELECTRIC_DIR / "shape_stream.mjs"
LIVE_BUDGET_S = 1.0  # a write reaches a live client within this, measured from its commit
SCOPE_BUDGET_S = 5.0  # a grant or revoke reaches a coach's live stream within this (not the 20 s live hold)
# What the client's default parser turns each Postgres type into (parser.ts: defaultParser).
JS_TYPES = {"int2": "number", "int4": "number", "int8": "bigint", "bool": "boolean"}
DAYS = ("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")
EVERY_ROW = sql.SQL("true")

Event = dict[str, Any]
Row = dict[str, str | None]


# -- installing the client --------------------------------------------------------------------------------------

def _pinned_versions() -> dict[str, str]:
    pinned: dict[str, str] = json.loads((ELECTRIC_DIR / "package.json").read_text())["dependencies"]
    return pinned


def _installed_versions() -> dict[str, str | None]:
    """Each pinned package's installed version (None when missing)."""
    found: dict[str, str | None] = {}
    for package in _pinned_versions():
        manifest = ELECTRIC_DIR / "node_modules" / package / "package.json"
        found[package] = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    return found


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned packages (@electric-sql/client, @tanstack/db and its Electric
    collection) installed beside the scripts."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are required for the Electric client test (Node 20+): install them "
                    "(e.g. apt-get install nodejs npm) and re-run; this test is never skipped")
    with open(Path(tempfile.gettempdir()) / "pulse-electric-client-npm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once must not both install
        if _installed_versions() != _pinned_versions():
            command = [npm, "ci"] if (ELECTRIC_DIR / "package-lock.json").exists() else [npm, "install"]
            done = subprocess.run([*command, "--no-audit", "--no-fund"], cwd=ELECTRIC_DIR, capture_output=True,
                                  text=True, timeout=300, check=False)
            if done.returncode != 0:
                pytest.fail(f"`{' '.join(command)}` in {ELECTRIC_DIR} failed:\n{done.stdout}\n{done.stderr}")
    assert _installed_versions() == _pinned_versions()
    # One copy of @tanstack/db: a second one (nested under the Electric collection) breaks createCollection.
    assert not (ELECTRIC_DIR / "node_modules" / "@tanstack" / "electric-db-collection" / "node_modules" / "@tanstack"
                / "db").exists()
    return node


# -- the Node side ------------------------------------------------------------------------------------------

class NodeStream:
    """`shape_stream.mjs` as a subprocess: its JSON lines collected in order, waited on with a deadline."""

    def __init__(self, node: str, shape_url: str, user: User, label: str, log_dir: Path,
                 extra_args: list[str], script: Path = SCRIPT) -> None:
        command = [node, str(script), "--url", shape_url, "--label", label, *extra_args]
        self.label = label
        self.events: list[Event] = []
        self._arrived: queue.Queue[None] = queue.Queue()
        self._stderr_path = log_dir / f"{label}.stderr"
        self._stderr: TextIO = self._stderr_path.open("w")
        self.proc = subprocess.Popen(
            command, cwd=ELECTRIC_DIR, env={**os.environ, "SHAPE_TOKEN": user.token},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"node-{label}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event: Event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line, "t": time.time() * 1000}
            self.events.append(event)
            self._arrived.put(None)
        self._arrived.put(None)

    def mark(self) -> int:
        """A position in the event list: `wait_for(..., since=mark)` looks only at later events."""
        return len(self.events)

    def wait_for(self, what: str, predicate: Callable[[Event], bool], since: int = 0,
                 timeout_s: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout_s
        seen = since
        while True:
            while seen < len(self.events):
                event = self.events[seen]
                seen += 1
                if event["event"] == "error":
                    pytest.fail(f"[{self.label}] the Electric client gave up: {event}\n{self.transcript()}")
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not self._reader.is_alive() and seen == len(self.events)):
                pytest.fail(f"[{self.label}] {what}: not seen within {timeout_s} s\n{self.transcript()}")
            with contextlib.suppress(queue.Empty):
                self._arrived.get(timeout=min(remaining, 0.5))

    def wait_rows(self, expected: list[Row], since: int = 0, timeout_s: float = 10.0) -> Event:
        """The first `rows` event (after `since`) whose rows, in Postgres text form, are `expected`."""
        return self.wait_for(f"rows equal to Postgres ({len(expected)} rows)",
                             lambda e: e["event"] == "rows" and _as_text(e["rows"]) == expected, since, timeout_s)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def of(self, kind: str, since: int = 0) -> list[Event]:
        """Events of one kind after `since`; for `http`, only answered requests (not those aborted on restart)."""
        return [e for e in self.events[since:] if e["event"] == kind and (kind != "http" or e["status"] is not None)]

    def transcript(self, last: int = 25) -> str:
        lines = [json.dumps(e)[:600] for e in self.events[-last:]]
        self._stderr.flush()
        return "node events (last):\n" + "\n".join(lines) + "\nnode stderr:\n" + self._stderr_path.read_text()[-3000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def follow(node: str, shape_server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., NodeStream]]:
    """`follow(user, label, *args)` starts the Electric client on the shape as that user (more options of
    shape_stream.mjs in `args`: --where, --param, --columns, --handle/--offset); all are stopped after."""
    started: list[NodeStream] = []

    def start(user: User, label: str, *args: str) -> NodeStream:
        stream = NodeStream(node, f"{shape_server.url}/v1/shape", user, label, tmp_path, list(args))
        started.append(stream)
        return stream

    yield start
    for stream in started:
        stream.close()


# -- the server and Postgres ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shape_server(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], pg: psycopg.Connection[Any]
) -> ServerProcess:
    """A server that feeds the shape log from logical replication, ready once a probe write is served."""
    server = start_server(replication_reader="true", shape_watcher="true")
    probe = make_user(prefix="probe")
    for steps in (1, 2):  # two writes: the reader must also keep reading after the first wakes it
        _put(server, probe, DAYS[0], {"steps": steps})
        _wait_until_served(server, pg, probe, timeout_s=15,
                           what=f"probe write {steps}: the replication reader is not feeding the shape log")
    return server


def _pg_rows(pg: psycopg.Connection[Any], users: list[User], columns: list[str],
             where: sql.Composable = EVERY_ROW) -> list[Row]:
    """The shape's columns of these users' entries (`where` over `e`), every value cast to text, in key order;
    `stamps` as the twelve columns it folds (compared with the client's rows unfolded, `_as_text`)."""
    columns = [x for c in columns for x in (stamps_column.COLUMNS if c == "stamps" else (c,))]
    picked = [sql.SQL("u.username") if c == "username" else sql.SQL("e.{}::text").format(sql.Identifier(c))
              for c in columns]
    query = sql.SQL("SELECT {} FROM entries e JOIN users u ON u.id = e.user_id WHERE e.user_id = ANY(%s)"
                    " AND ({}) ORDER BY e.user_id, e.date").format(sql.SQL(", ").join(picked), where)
    rows = pg.execute(query, ([u.id for u in users],)).fetchall()
    # A bool cast to text is 'true'/'false'; its text output form (what replication and Electric send) is 't'/'f'.
    booleans = {r[0] for r in pg.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'entries'::regclass"
                                         " AND atttypid = 'boolean'::regtype").fetchall()}
    return [{c: {"true": "t", "false": "f"}.get(v or "", v) if c in booleans else v
             for c, v in zip(columns, row, strict=True)} for row in rows]


def _as_text(rows: list[dict[str, Any]]) -> list[Row]:
    """The client's parsed values back in Postgres text form (bigints arrive as decimal strings), `stamps`
    unfolded into its twelve columns."""

    def text(value: Any) -> str | None:
        if isinstance(value, bool):
            return "t" if value else "f"
        return None if value is None else str(value)

    out = [{k: text(v) for k, v in stamps_column.expand(row).items()} for row in rows]
    return sorted(out, key=lambda r: (int(r["user_id"] or 0), r["date"] or ""))


def _served_snapshot(server: ServerProcess, user: User) -> tuple[list[Row], dict[str, Any]]:
    """What `GET /v1/shape?offset=-1` serves this user right now (raw text values) and its schema."""
    with Api(server.url, user.token) as api:
        response = api.get("/v1/shape", params={"table": "entries", "offset": "-1"})
    assert response.status_code == 200, response.text
    rows = [m["value"] for m in response.json() if "key" in m]
    return _as_text(rows), json.loads(response.headers["electric-schema"])


def _wait_until_served(server: ServerProcess, pg: psycopg.Connection[Any], *users: User, timeout_s: float = 10,
                       what: str = "the shape log did not catch up") -> list[str]:
    """Wait until `GET /v1/shape` serves these users' rows as they are in Postgres; the shape's columns."""
    deadline = time.monotonic() + timeout_s
    while True:
        for user in users:
            served, schema = _served_snapshot(server, user)
            expected = _pg_rows(pg, [user], list(schema))
            if served != expected:
                break
        else:
            return list(schema)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (within {timeout_s} s):\nserved   {served}\nPostgres {expected}")
        time.sleep(0.1)


def _put(server: ServerProcess, user: User, day: str, fields: dict[str, Any]) -> None:
    with Api(server.url, user.token) as api:
        response = api.put(f"/v1/entries/{day}", json=fields)
    assert response.status_code == 200, response.text


def _grant(server: ServerProcess, athlete: User, coach: User, give: bool) -> None:
    with Api(server.url, athlete.token) as api:
        if give:
            response = api.post("/v1/grants", json={"coach": coach.username})
            assert response.status_code == 201, response.text
        else:
            response = api.delete(f"/v1/grants/{coach.username}")
            assert response.status_code == 204, response.text


def _changes(event: Event) -> list[dict[str, Any]]:
    return [m for m in event.get("messages", []) if "key" in m]


def _change_for(user: User, day: str, column: str, value: Any) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return event["event"] == "messages" and any(
            m["value"].get("user_id") == str(user.id) and m["value"].get("date") == day
            and m["value"].get(column) == value for m in _changes(event))
    return match


def _deleted(user: User, day: str) -> Callable[[Event], bool]:
    key = f'"public"."entries"/"{user.id}"/"{day}"'

    def match(event: Event) -> bool:
        return event["event"] == "messages" and any(
            m["key"] == key and m["headers"]["operation"] == "delete" for m in _changes(event))
    return match


def _latency(label: str, before: float, committed: float, event: Event) -> None:
    """Print the time from the write's commit to the line Node printed; assert it, the write's own time included."""
    arrived = float(event["t"]) / 1000
    print(f"\n  {label}: {1000 * (arrived - committed):.1f} ms after commit "
          f"({1000 * (arrived - before):.1f} ms after the write was sent)")
    assert arrived - before < LIVE_BUDGET_S, f"{label} took {arrived - before:.3f} s (budget {LIVE_BUDGET_S} s)"


def _check_schema(pg: psycopg.Connection[Any], schema: dict[str, Any]) -> None:
    """The electric-schema header names each column's real Postgres type, so the client parses it right."""
    catalog = {
        name: (typname, not_null) for name, typname, not_null in pg.execute(
            "SELECT a.attname, t.typname, a.attnotnull FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = 'entries'::regclass AND a.attnum > 0 AND NOT a.attisdropped").fetchall()
    }
    catalog["username"] = ("text", True)
    catalog["stamps"] = ("text", False)  # the twelve *_hlc/*_src text columns folded (docs/shapes.md, "Stamps")
    primary_key = [r[0] for r in pg.execute(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = 'entries'::regclass AND i.indisprimary ORDER BY k.n").fetchall()]
    for column, info in schema.items():
        assert column in catalog, f"{column} is not a column of entries"
        assert info["type"] == catalog[column][0], (column, info, catalog[column])
        if info.get("not_null"):
            assert catalog[column][1], column
        if column in primary_key:
            assert info.get("pk_index") == primary_key.index(column), (column, info)


# -- the tests ------------------------------------------------------------------------------------------------

def test_the_electric_client_gets_an_athletes_snapshot_then_pushes_and_sql_writes_live_and_never_others_rows(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    athlete, other = make_user(), make_user()
    _put(shape_server, athlete, DAYS[0], {"steps": 9000, "sleep_hours": 7.5, "note": 'a "quoted" note, ü, 😀'})
    _put(shape_server, athlete, DAYS[1], {"hrv_ms": 55.3, "hrv_method": "sdnn", "weight_kg": 72.4})
    _put(shape_server, athlete, DAYS[2], {"steps": 4000})
    with Api(shape_server.url, athlete.token) as api:
        assert api.delete(f"/v1/entries/{DAYS[2]}").status_code == 204  # a tombstone: deleted, fields null
    _put(shape_server, other, DAYS[0], {"steps": 1111})
    _put(shape_server, other, DAYS[1], {"note": "the other athlete's"})
    columns = _wait_until_served(shape_server, pg, athlete, other)

    stream = follow(athlete, "athlete")
    first = stream.wait_for("the initial rows", lambda e: e["event"] == "rows")
    assert _as_text(first["rows"]) == _pg_rows(pg, [athlete], columns)
    # The first response carried every header the client requires, and a schema true to Postgres.
    initial = next(e for e in stream.of("http") if e["params"].get("offset") == "-1")
    assert initial["status"] == 200 and initial["authorization"]
    assert {"electric-handle", "electric-offset", "electric-schema"} <= set(initial["headers"])
    assert "electric-up-to-date" not in initial["headers"]
    _check_schema(pg, json.loads(initial["headers"]["electric-schema"]))
    assert initial["params"]["table"] == "entries"
    schema = json.loads(initial["headers"]["electric-schema"])
    for column, kind in first["types"].items():
        if kind != "null":
            assert kind == JS_TYPES.get(schema[column]["type"], "string"), (column, kind, schema[column])
    day_one = next(r for r in first["rows"] if r["date"] == DAYS[0])
    assert day_one["sleep_hours"] == "7.50" and day_one["user_id"] == str(athlete.id)  # numeric(4,2), int8

    # A push: live within a second, and the change names the push's transaction (read-your-writes).
    mark = stream.mark()
    with Api(shape_server.url, athlete.token) as api:
        base = pg.execute("SELECT steps_hlc FROM entries WHERE user_id = %s AND date = %s",
                          (athlete.id, DAYS[0])).fetchone()
        assert base is not None
        before = time.time()
        pushed = api.pushed("electric-test", [set_mutation(1, DAYS[0], {"steps": 12345},
                                                           stamp(now_ms(), 0, "electric-test"), {"steps": base[0]})])
        committed = time.time()
    assert pushed["results"][0]["status"] == "applied", pushed
    arrived = stream.wait_for("the pushed change", _change_for(athlete, DAYS[0], "steps", 12345), mark)
    _latency("push -> Electric client", before, committed, arrived)
    change = next(m for m in _changes(arrived) if m["value"]["date"] == DAYS[0])
    assert int(pushed["txid"]) in change["headers"]["txids"], (pushed, change["headers"])
    stream.wait_rows(_pg_rows(pg, [athlete], columns), mark)

    # Writes by hand in SQL (no server involved): an update, then a hard delete.
    mark = stream.mark()
    before = time.time()
    pg.execute("UPDATE entries SET steps = 23456 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[1]))
    committed = time.time()
    arrived = stream.wait_for("the SQL update", _change_for(athlete, DAYS[1], "steps", 23456), mark)
    _latency("SQL UPDATE -> Electric client", before, committed, arrived)
    stream.wait_rows(_pg_rows(pg, [athlete], columns), mark)
    mark = stream.mark()
    before = time.time()
    pg.execute("DELETE FROM entries WHERE user_id = %s AND date = %s", (athlete.id, DAYS[2]))
    committed = time.time()
    arrived = stream.wait_for("the SQL delete", _deleted(athlete, DAYS[2]), mark)
    _latency("SQL DELETE -> Electric client", before, committed, arrived)
    stream.wait_rows(_pg_rows(pg, [athlete], columns), mark)

    # The other athlete writes (through the API and in SQL) while this stream is live: nothing arrives
    # for them; the athlete's own next write does, and the rows are still exactly the athlete's.
    mark = stream.mark()
    _put(shape_server, other, DAYS[2], {"steps": 777})
    pg.execute("UPDATE entries SET note = 'by hand' WHERE user_id = %s", (other.id,))
    pg.execute("UPDATE entries SET note = 'after the other' WHERE user_id = %s AND date = %s",
               (athlete.id, DAYS[0]))
    stream.wait_for("the athlete's write after the other's", _change_for(athlete, DAYS[0], "note", "after the other"),
                    mark)
    stream.wait_rows(_pg_rows(pg, [athlete], columns), mark)
    for event in stream.of("messages"):
        for message in _changes(event):
            assert message["key"].startswith(f'"public"."entries"/"{athlete.id}"/'), message
            assert message["value"]["user_id"] == str(athlete.id), message
    for event in stream.of("rows"):
        assert {r["user_id"] for r in event["rows"]} <= {str(athlete.id)}
    assert all(e["status"] == 200 for e in stream.of("http")), [e["status"] for e in stream.of("http")]
    assert stream.of("warning") == []
    # In a browser the client can read the electric-* headers only if CORS exposes them.
    with Api(shape_server.url, athlete.token) as api:
        response = api.get("/v1/shape", params={"table": "entries", "offset": "-1"},
                           headers={"Origin": "http://localhost:5173"})
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    required = {"electric-handle", "electric-offset", "electric-schema", "electric-cursor", "electric-up-to-date"}
    assert required <= exposed, exposed

    # A narrower shape through the client's own `where` + positional `params` and `columns` options; a row
    # that an update moves out of the filter leaves the client's rows (the server sends it as a delete).
    narrow = follow(athlete, "athlete-narrow", "--where", "steps > $1", "--param", "10000",
                    "--columns", "user_id,date,steps,note")
    narrow_columns, over_10k = ["user_id", "date", "steps", "note"], sql.SQL("e.steps > 10000")
    rows = narrow.wait_rows(_pg_rows(pg, [athlete], narrow_columns, over_10k))["rows"]
    assert len(rows) == 2, rows
    sent = narrow.of("http")[0]["params"]
    assert sent["where"] == "steps > $1" and sent["params[1]"] == "10000", sent
    assert sent["columns"] == '"user_id","date","steps","note"', sent
    mark = narrow.mark()
    pg.execute("UPDATE entries SET steps = 5000 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[1]))
    narrow.wait_for("the row moved out of the filter", _deleted(athlete, DAYS[1]), mark)
    assert len(narrow.wait_rows(_pg_rows(pg, [athlete], narrow_columns, over_10k), mark)["rows"]) == 1


def test_an_electric_where_on_a_column_left_out_of_columns_still_filters_the_whole_row(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    athlete = make_user()
    for day, steps in zip(DAYS[:3], (1000, 2000, 3000), strict=True):
        _put(shape_server, athlete, day, {"steps": steps})
    with Api(shape_server.url, athlete.token) as api:
        assert api.delete(f"/v1/entries/{DAYS[2]}").status_code == 204
    _wait_until_served(shape_server, pg, athlete)
    stream = follow(athlete, "athlete-where", "--where", "deleted = false", "--columns", "user_id,date,steps")
    first = stream.wait_for("the first rows", lambda e: e["event"] == "rows")
    expected = _pg_rows(pg, [athlete], ["user_id", "date", "steps"], sql.SQL("NOT e.deleted"))
    assert len(expected) == 2
    assert _as_text(first["rows"]) == expected


def test_a_coachs_electric_stream_refetches_on_409_after_a_grant_or_revoke_and_ends_with_exactly_the_new_scope(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    first, second, coach = make_user(), make_user(), make_user(coach=True)
    _put(shape_server, first, DAYS[0], {"steps": 5000, "note": "first's"})
    _put(shape_server, first, DAYS[1], {"sleep_hours": 6.25})
    _put(shape_server, second, DAYS[0], {"weight_kg": 80.1})
    columns = _wait_until_served(shape_server, pg, first, second)
    _grant(shape_server, first, coach, give=True)

    stream = follow(coach, "coach")
    initial = stream.wait_rows(_pg_rows(pg, [first], columns))
    assert {r["username"] for r in initial["rows"]} == {first.username}
    old_handle, old_offset = initial["handle"], initial["offset"]

    # A grant changes the scope: the held live request answers 409 with the new handle at once (no write
    # needed), and the client refetches from -1 with that handle.
    time.sleep(0.3)  # the client's live request is now held by the server
    mark = stream.mark()
    started = time.time()
    _grant(shape_server, second, coach, give=True)
    widened = stream.wait_rows(_pg_rows(pg, [first, second], columns), mark, timeout_s=SCOPE_BUDGET_S)
    print(f"\n  grant -> coach stream refetched the wider scope: {widened['t'] - 1000 * started:.0f} ms")
    conflict = next(e for e in stream.of("http", mark) if e["status"] == 409)
    assert json.loads(conflict["body"]) == [{"headers": {"control": "must-refetch"}}]
    new_handle = conflict["headers"]["electric-handle"]
    assert new_handle != old_handle and widened["handle"] == new_handle
    refetch = stream.of("http", mark)[stream.of("http", mark).index(conflict) + 1]
    assert refetch["params"]["offset"] == "-1" and refetch["params"]["handle"] == new_handle
    assert any(m.get("headers", {}).get("control") == "must-refetch"
               for e in stream.of("messages", mark) for m in e["messages"])

    # A revoke, likewise: 409 at once, and the client ends with exactly the narrower scope.
    time.sleep(0.3)
    mark = stream.mark()
    started = time.time()
    _grant(shape_server, first, coach, give=False)
    narrowed = stream.wait_rows(_pg_rows(pg, [second], columns), mark, timeout_s=SCOPE_BUDGET_S)
    print(f"\n  revoke -> coach stream refetched the narrower scope: {narrowed['t'] - 1000 * started:.0f} ms")
    assert any(e["status"] == 409 for e in stream.of("http", mark))
    assert {r["user_id"] for r in narrowed["rows"]} == {str(second.id)}

    # Resuming from a stale handle and offset (a client that was away): 409, refetch, the current scope.
    mark = stream.mark()
    stream.send({"cmd": "restart", "handle": old_handle, "offset": old_offset})
    stream.wait_rows(_pg_rows(pg, [second], columns), mark)
    resumed = stream.of("http", mark)
    assert resumed[0]["params"]["handle"] == old_handle and resumed[0]["status"] == 409, resumed[0]
    assert resumed[1]["params"]["offset"] == "-1" and resumed[1]["status"] == 200
    assert stream.of("warning") == []


def test_after_a_revoke_the_athletes_next_write_never_reaches_the_coachs_held_live_request(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    first, second, coach = make_user(), make_user(), make_user(coach=True)
    _put(shape_server, first, DAYS[0], {"steps": 6000})
    _put(shape_server, second, DAYS[0], {"steps": 7000})
    columns = _wait_until_served(shape_server, pg, first, second)
    _grant(shape_server, first, coach, give=True)
    _grant(shape_server, second, coach, give=True)
    stream = follow(coach, "coach-revoked")
    stream.wait_rows(_pg_rows(pg, [first, second], columns))
    time.sleep(0.3)  # the client's live request is now held by the server

    mark = stream.mark()
    _grant(shape_server, first, coach, give=False)
    pg.execute("UPDATE entries SET note = 'after the revoke' WHERE user_id = %s", (first.id,))
    pg.execute("UPDATE entries SET note = 'still granted' WHERE user_id = %s", (second.id,))
    stream.wait_rows(_pg_rows(pg, [second], columns), mark)
    leaked = [m["value"] for e in stream.of("messages", mark) for m in _changes(e)
              if m["value"].get("user_id") == str(first.id)]
    assert leaked == [], f"the coach received {len(leaked)} change(s) of an athlete who had revoked access"


def test_a_fresh_electric_stream_is_not_mistaken_for_a_stale_cache_when_a_coachs_scope_returns_to_an_earlier_one(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    first, second, coach = make_user(), make_user(), make_user(coach=True)
    _put(shape_server, first, DAYS[0], {"steps": 3000})
    _put(shape_server, second, DAYS[0], {"steps": 4000})
    columns = _wait_until_served(shape_server, pg, first, second)
    _grant(shape_server, first, coach, give=True)
    stream = follow(coach, "coach-reload")
    stream.wait_rows(_pg_rows(pg, [first], columns))

    time.sleep(0.3)
    mark = stream.mark()
    _grant(shape_server, second, coach, give=True)  # 409: the client records the first handle as expired
    stream.wait_rows(_pg_rows(pg, [first, second], columns), mark)
    # The coach closes the app; the second athlete revokes; the coach opens the app again (a new stream in
    # the same client runtime, as after a reload in a browser, where the expired handles are in localStorage).
    stream.send({"cmd": "stop"})
    stream.wait_for("the stream to stop", lambda e: e["event"] == "stopped", mark)
    _grant(shape_server, second, coach, give=False)
    mark = stream.mark()
    stream.send({"cmd": "restart"})
    stream.wait_rows(_pg_rows(pg, [first], columns), mark)  # the data ends right either way
    snapshots = [e for e in stream.of("http", mark) if e["params"].get("offset") == "-1"]
    warnings = [e["message"][:160] for e in stream.of("warning", mark)]
    assert len(snapshots) == 1 and warnings == [], (len(snapshots), warnings)


def test_a_live_sse_electric_stream_receives_live_changes(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],
) -> None:
    athlete = make_user()
    _put(shape_server, athlete, DAYS[0], {"steps": 8000})
    _put(shape_server, athlete, DAYS[1], {"steps": 5000})
    columns = _wait_until_served(shape_server, pg, athlete)
    stream = follow(athlete, "athlete-sse", "--live-sse")
    stream.wait_rows(_pg_rows(pg, [athlete], columns))
    time.sleep(0.3)  # the client's live SSE request is now held by the server
    mark = stream.mark()
    pg.execute("UPDATE entries SET steps = 8001 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[0]))
    stream.wait_for("the change over SSE", _change_for(athlete, DAYS[0], "steps", 8001), mark, timeout_s=3)
    with pg.transaction():  # two changes in one transaction, then one more: each arrives once, in order
        pg.execute("UPDATE entries SET steps = 8002 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[0]))
        pg.execute("UPDATE entries SET steps = 5001 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[1]))
    pg.execute("UPDATE entries SET steps = 8003 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[0]))
    stream.wait_for("the last change over SSE", _change_for(athlete, DAYS[0], "steps", 8003), mark, timeout_s=3)
    stream.wait_rows(_pg_rows(pg, [athlete], columns), mark)
    steps = [m["value"]["steps"] for e in stream.of("messages", mark) for m in _changes(e)]
    assert steps == [8001, 8002, 5001, 8003], steps  # int4 parsed by the client
    sse = [e for e in stream.of("http") if e["params"].get("live_sse") == "true"]
    assert sse and all(e["status"] == 200 for e in sse), sse
    assert sse[0]["headers"]["content-type"].startswith("text/event-stream"), sse[0]["headers"]
    assert {"electric-handle", "electric-offset", "electric-cursor"} <= set(sse[0]["headers"]), sse[0]["headers"]
    # The changes came over the held stream, not over new requests.
    live = [e for e in stream.of("http", mark) if e["params"].get("live") == "true"]
    assert live == [], [e["params"] for e in live]
    assert stream.of("warning") == [] and stream.of("error") == []
