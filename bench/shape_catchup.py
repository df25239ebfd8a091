"""A coach's full shape catch-up over HTTP: 100 athletes x 365 days (36,500 rows). Targets: up-to-date
in at most 0.3 s, at most 150 bytes a row on the wire.

Run from the repo root (PostgreSQL with wal_level=logical at PGHOST:PGPORT, default 127.0.0.1:5432,
user postgres):

    .venv/bin/python bench/shape_catchup.py              # 5 runs
    .venv/bin/python bench/shape_catchup.py --runs 10
    .venv/bin/python bench/shape_catchup.py --columns user_id,date,sleep_hours,hrv_ms,steps,weight_kg,note,score
    .venv/bin/python bench/shape_catchup.py --client electric   # ElectricSQL's own client under Node

It creates `pulse_bench_<random>`, migrates it, creates a coach and 100 athletes who grant the coach
access (tokens from `pulse_server.accounts.issue_token`), starts `pulse-server serve` with the
replication reader and the shape watcher on (PULSE_LOG_LEVEL=warning), seeds a year of entries per
athlete with SQL (rows as a synced device leaves them: every field with its stamp and source), and
waits until the reader has put all of them in the shape log. Then, for each run, a fresh Python
process (this script with --follow) follows the coach's shape the way a client does: `offset=-1`
(the snapshot), then the offsets it is given until a response ends in `up-to-date`, applying each
message to its in-memory copy of the shape (rows by key), as a client keeps it. The time is measured
inside that process, from the first request to the applied up-to-date response (process start-up
and imports are not counted). Printed per run: seconds, response bytes, rows in the copy, and per
request its time, the time to its response headers (a snapshot's are sent before its rows are read),
to the last bytes of its body, and to the last message parsed and applied (the body is parsed as it
arrives, by `sync.shape_client.iter_messages` as the local agent parses it, and each message applied
as it comes out). The client accepts gzip, as httpx (and browsers, and Node's
fetch) do by default; the bytes are counted as they came over the wire, and once more for one run that
asks for no compression (`Accept-Encoding: identity`). For scale, the same rows and columns as a
`COPY ... TO STDOUT` (text format) are measured in the same run: its bytes and time.
At the end the server is stopped, the database's replication slots are dropped and the database is
dropped WITH (FORCE), even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from _server import (
    Server,
    create_athletes,
    replication_database,
    running_server,
    wait_for_slot,
)

if TYPE_CHECKING:
    import httpx

ATHLETES = 100
DAYS = 365
TARGET_S = 0.3
TARGET_BYTES_PER_ROW = 150
READER_ENV = {"PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "PULSE_LOG_LEVEL": "warning"}


# -- the database ------------------------------------------------------------------------------------




def create_coach(url: str, athlete_ids: list[int]) -> str:
    """A coach every athlete has granted access to; its bearer token."""
    import secrets

    import psycopg

    from pulse_server.accounts import add_user, issue_token
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    try:
        with db.session() as session:
            coach = add_user(session, "coach-bench", secrets.token_urlsafe(12), True)
            token, _ = issue_token(session, coach, 1)
            coach_id = coach.id
    finally:
        db.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO grants (athlete_id, coach_id) SELECT unnest(%s::bigint[]), %s",
                     (athlete_ids, coach_id))
    return token


SEED = """
INSERT INTO entries (user_id, date, sleep_hours, sleep_hours_hlc, sleep_hours_src, hrv_ms, hrv_method, hrv_ms_hlc,
                     hrv_ms_src, steps, steps_hlc, steps_src, weight_kg, weight_kg_hlc, weight_kg_src, note, note_hlc,
                     note_src, score, score_version, deleted, updated_at)
SELECT u, d::date, s.sleep, s.stamp, s.src, s.hrv, 'rmssd', s.stamp, s.src, s.steps, s.stamp, s.src,
       s.weight, s.stamp, s.src, CASE WHEN random() < 0.3 THEN 'felt ok after the long run' END, s.stamp, s.src,
       (50 + random() * 50)::int, 1, false, now()
FROM unnest(%s::bigint[]) u
CROSS JOIN generate_series('2025-01-01'::date, '2025-01-01'::date + %s - 1, '1 day') d
CROSS JOIN LATERAL (SELECT round((5 + random() * 4)::numeric, 2) AS sleep,
                           round((30 + random() * 70)::numeric, 2) AS hrv,
                           (random() * 20000)::int AS steps, round((55 + random() * 30)::numeric, 2) AS weight,
                           lpad((1735689600000 + (d::date - '2025-01-01'::date)::bigint * 86400000)::text, 16, '0')
                               || ':00000:watch-' || u AS stamp,
                           'watch-' || u AS src) s
"""


def seed_entries(url: str, athlete_ids: list[int]) -> float:
    """A year of entries per athlete, ten athletes per transaction; the seconds it took."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for i in range(0, len(athlete_ids), 10):
            with conn.transaction():
                conn.execute(SEED, (athlete_ids[i:i + 10], DAYS))
    return time.perf_counter() - started


def wait_for_log(url: str, rows: int, timeout_s: float = 300.0) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - started < timeout_s:
            row = conn.execute("SELECT count(*) FROM shape_rows").fetchone()
            if row is not None and row[0] >= rows:
                return time.perf_counter() - started
            time.sleep(0.1)
    raise RuntimeError(f"the reader did not put {rows} rows in the shape log within {timeout_s} s")


# -- the client (a separate process) -----------------------------------------------------------------


def follow(base_url: str, token: str, columns: str | None, encoding: str) -> dict[str, object]:
    """Follow the shape from offset -1 to up-to-date; what it took (bytes: as they came over the wire)."""
    import httpx

    from sync.shape_client import iter_messages  # the local agent's shape client parses bodies so

    size = 0
    decoded = 0
    copy: dict[str, dict[str, str | None]] = {}  # the client's copy of the shape, keyed as Electric keys rows
    # per request: offset, seconds in all, seconds to the response headers, to the whole body, to the
    # parsed body, bytes
    requests: list[tuple[str, float, float, float, float, int]] = []
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": encoding}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        http.get("/healthz")  # the connection is open before the clock starts, as a running client's is
        shape = {"table": "entries", **({"columns": columns} if columns else {})}
        params = {**shape, "offset": "-1"}
        started = time.perf_counter()
        while True:
            sent = time.perf_counter()
            arrived = [0.0, 0.0]  # when the last bytes came, and how many (decoded) there were
            with http.stream("GET", "/v1/shape", params=params) as reply:
                headers_at = time.perf_counter()
                if reply.status_code != 200:
                    raise RuntimeError(f"{reply.status_code}: {reply.read()[:200]!r}")
                # Messages are parsed as the body arrives and applied as they come out.
                for message in iter_messages(_timed(reply, arrived)):
                    operation = message["headers"].get("operation")
                    if operation == "insert":
                        copy[message["key"]] = message["value"]
                    elif operation == "update":
                        copy[message["key"]].update(message["value"])
                    elif operation == "delete":
                        copy.pop(message["key"], None)
            done_at = time.perf_counter()
            size += reply.num_bytes_downloaded
            decoded += int(arrived[1])
            requests.append((params["offset"], done_at - sent, headers_at - sent, arrived[0] - sent,
                             done_at - sent, reply.num_bytes_downloaded))
            if "electric-up-to-date" in reply.headers:
                break
            params = {**shape, "offset": reply.headers["electric-offset"], "handle": reply.headers["electric-handle"]}
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "bytes": size, "decoded_bytes": decoded, "rows": len(copy), "requests": requests}


def _timed(reply: httpx.Response, arrived: list[float]) -> Iterator[bytes]:
    """The body's decoded bytes as they come; `arrived` holds the time of the last read and the count."""
    for chunk in reply.iter_bytes():
        arrived[0], arrived[1] = time.perf_counter(), arrived[1] + len(chunk)
        yield chunk


def run_client(base_url: str, token: str, columns: str | None, encoding: str = "gzip") -> dict[str, object]:
    """This script with --follow, in a fresh process; its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--follow", base_url, "--encoding", encoding]
    if columns:
        command += ["--columns", columns]
    done = subprocess.run(command, input=token, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"client failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


ELECTRIC_DIR = Path(__file__).resolve().parent.parent / "tests" / "server" / "electric_client"


def run_electric_client(base_url: str, token: str, columns: str | None, encoding: str = "") -> dict[str, object]:
    """bench/electric_catchup.mjs (Electric's own client under Node), in a fresh process; its result."""
    if not (ELECTRIC_DIR / "node_modules" / "@electric-sql" / "client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ELECTRIC_DIR, check=True, capture_output=True)
    script = Path(__file__).resolve().parent / "electric_catchup.mjs"
    command = ["node", str(script), base_url, *([columns] if columns else [])]
    env = {**os.environ, "SHAPE_TOKEN": token, **({"SHAPE_ENCODING": encoding} if encoding else {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"Electric's client failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def copy_size(url: str, athlete_ids: list[int], columns: str | None) -> tuple[int, float]:
    """The bytes of `COPY (the shape's rows and columns) TO STDOUT` and the seconds it took."""
    import psycopg
    from psycopg import sql

    from pulse_server.shapes.protocol import DEFAULT_COLUMNS
    from sync.stamps_column import COLUMNS as STAMP_COLUMNS

    # The table's own columns: `stamps` is the twelve stamp and source columns it folds.
    asked = [c.strip() for c in columns.split(",")] if columns else list(DEFAULT_COLUMNS)
    picked = [x for c in asked for x in (STAMP_COLUMNS if c == "stamps" else (c,))]
    query = sql.SQL("COPY (SELECT {} FROM entries e JOIN users u ON u.id = e.user_id WHERE e.user_id = ANY({})"
                    " ORDER BY e.user_id, e.date) TO STDOUT").format(
        sql.SQL(", ").join(sql.SQL("u.username") if c == "username" else sql.SQL("e.{}").format(sql.Identifier(c))
                           for c in picked),
        sql.Literal(athlete_ids))
    size = 0
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy(query) as copy:
            for data in copy:
                size += len(data)
        return size, time.perf_counter() - started


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="catch-ups to time, each from a fresh process")
    parser.add_argument("--columns", help="the shape's columns= parameter (default: all columns), e.g."
                        " user_id,date,sleep_hours,hrv_ms,hrv_method,steps,weight_kg,note,score,deleted,username")
    parser.add_argument("--client", choices=("python", "electric"), default="python",
                        help="python: httpx, bodies parsed as sync.shape_client parses them (orjson) (default);"
                        " electric: ElectricSQL's own TypeScript client (@electric-sql/client) under Node, its"
                        " Shape's rows at the first up-to-date")
    parser.add_argument("--follow", metavar="URL", help=argparse.SUPPRESS)  # internal: be the Python client
    parser.add_argument("--encoding", default="gzip", help=argparse.SUPPRESS)  # internal: the client's Accept-Encoding
    args = parser.parse_args()
    if args.follow:
        print(json.dumps(follow(args.follow, sys.stdin.readline().strip(), args.columns, args.encoding)))
        return

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with replication_database() as url:
        accounts = create_athletes(url, ATHLETES)
        token = create_coach(url, [a.user_id for a in accounts])
        server: Server
        with running_server(url, 1, READER_ENV) as server:
            wait_for_slot(url)
            seeded = seed_entries(url, [a.user_id for a in accounts])
            logged = wait_for_log(url, ATHLETES * DAYS)
            print(f"seeded {ATHLETES * DAYS} rows in {seeded:.2f} s; in the shape log {logged:.2f} s later")
            base_url = f"http://127.0.0.1:{server.port}"
            results = []
            for run in range(1, args.runs + 1):
                if args.client == "electric":
                    result = run_electric_client(base_url, token, args.columns)
                    results.append(result)
                    steps = ", ".join(f"offset={r['offset']}: headers {r['headers_ms']:.0f} ms"
                                      f" {r.get('encoding') or 'identity'}"
                                      for r in result["requests"])  # type: ignore[attr-defined]
                    print(f"run {run}: {result['seconds']:.3f} s, {result['rows']} rows ({steps})")
                    continue
                result = run_client(base_url, token, args.columns)
                results.append(result)
                steps = ", ".join(f"offset={o}: {t * 1000:.0f} ms (headers {h * 1000:.0f}, body {r * 1000:.0f},"
                                  f" applied {p * 1000:.0f}) {b / 1e6:.2f} MB"
                                  for o, t, h, r, p, b in result["requests"])  # type: ignore[attr-defined]
                print(f"run {run}: {result['seconds']:.3f} s, {result['bytes'] / 1e6:.2f} MB,"  # type: ignore[operator]
                      f" {result['rows']} rows ({steps})")
            times = [float(r["seconds"]) for r in results]  # type: ignore[arg-type]
            median = statistics.median(times)
            print(f"catch-up of {ATHLETES} athletes x {DAYS} days ({args.client} client): median {median:.3f} s,"
                  f" best {min(times):.3f} s, worst {max(times):.3f} s over {len(times)} runs;"
                  f" {results[0]['rows']} rows; target <= {TARGET_S} s: {'met' if median <= TARGET_S else 'NOT met'}")
            copy_bytes, copy_s = copy_size(url, [a.user_id for a in accounts], args.columns)
            rows = ATHLETES * DAYS
            print(f"COPY of the same rows and columns: {copy_bytes} bytes ({copy_bytes / rows:.0f} a row) in"
                  f" {copy_s:.3f} s")
            if args.client == "electric":
                plain = run_electric_client(base_url, token, args.columns, "identity")
                print(f"without compression (Accept-Encoding: identity): {float(str(plain['seconds'])):.3f} s")
            if args.client == "python":
                wire = int(str(results[0]["bytes"]))
                met = "met" if wire / rows <= TARGET_BYTES_PER_ROW else "NOT met"
                plain = run_client(base_url, token, args.columns, "identity")
                raw = int(str(plain["bytes"]))
                print(f"on the wire, gzip: {wire} bytes, {wire / rows:.0f} a row, {wire / copy_bytes:.2f}x COPY"
                      f" (target <= {TARGET_BYTES_PER_ROW} a row: {met}); uncompressed: {raw} bytes,"
                      f" {raw / rows:.0f} a row, {raw / copy_bytes:.2f}x COPY, caught up in"
                      f" {float(str(plain['seconds'])):.3f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
