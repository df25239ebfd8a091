"""Bounded storage: exactly-once results and the conflict audit kept for their windows, run by
`pulse-server maintain` and by the server's schedule, one instance at a time.

A database of its own (maintenance works on the whole database; the shared one serves other tests).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from server_support import PULSE_SERVER, Api, ServerProcess, clean_env, now_ms, set_mutation, stamp
from sqlmodel import select
from throwaway_db import migrated_database

from pulse_server.accounts import add_user, hash_token, issue_token
from pulse_server.db.database import Database
from pulse_server.db.models import User
from pulse_server.erasure import erase
from pulse_server.maintenance import MAINTENANCE_LOCK
from pulse_server.settings import Settings


@dataclass
class Setup:
    url: str
    server: ServerProcess
    user_id: int
    token: str
    pg: psycopg.Connection[Any]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with migrated_database("pulse_test_retain") as url:
        database = Database(Settings(database_url=url, pool_size=1))
        try:
            with database.session() as session:
                user = add_user(session, "keeper", "correct horse battery", False)
                assert user.id is not None
                token, _ = issue_token(session, user, 1)
                user_id = user.id
        finally:
            database.dispose()
        server = ServerProcess(tmp_path_factory.mktemp("retain") / "server.log",
                               {"PULSE_DATABASE_URL": url, "PULSE_MAINTENANCE_INTERVAL_S": "0"})
        try:
            server.wait_ready()
            with psycopg.connect(url, autocommit=True) as pg:
                yield Setup(url, server, user_id, token, pg)
        finally:
            server.stop()


def maintain(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULSE_SERVER), "maintain", *args], env=clean_env(PULSE_DATABASE_URL=url),
                          capture_output=True, text=True, timeout=120)


def maintained(url: str, *args: str) -> dict[str, Any]:
    done = maintain(url, "--json", *args)
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def mutations_for(client: str, seqs: range, month: str, days_ago: int = 0) -> list[dict[str, Any]]:
    """One mutation per seq, each to its own day of the month (`month` is YYYY-MM), made `days_ago`."""
    ms = now_ms() - days_ago * 86_400_000
    return [set_mutation(seq, f"{month}-{seq:02d}", {"steps": 1000 + seq}, stamp(ms, seq, client)) for seq in seqs]


def push(setup: Setup, client: str, seqs: range, month: str) -> list[dict[str, Any]]:
    return send(setup, client, mutations_for(client, seqs, month))


def send(setup: Setup, client: str, mutations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with Api(setup.server.url, setup.token) as api:
        results: list[dict[str, Any]] = api.pushed(client, mutations)["results"]
    return results


def recorded_seqs(setup: Setup, client: str) -> list[int]:
    rows = setup.pg.execute("SELECT seq FROM applied_mutations WHERE user_id = %s AND client_id = %s ORDER BY seq",
                            (setup.user_id, client)).fetchall()
    return [int(r[0]) for r in rows]


def high_water(setup: Setup, client: str) -> int | None:
    row = setup.pg.execute("SELECT seq FROM client_high_water WHERE user_id = %s AND client_id = %s",
                           (setup.user_id, client)).fetchone()
    return None if row is None else int(row[0])


def age_results(setup: Setup, client: str, seqs: range, days: int) -> None:
    setup.pg.execute("UPDATE applied_mutations SET applied_at = now() - make_interval(days => %s)"
                     " WHERE user_id = %s AND client_id = %s AND seq = ANY(%s)",
                     (days, setup.user_id, client, list(seqs)))


def test_results_past_their_window_become_a_high_water_mark_and_newer_ones_stay(setup: Setup) -> None:
    push(setup, "phone", range(1, 7), "2026-06")
    age_results(setup, "phone", range(1, 5), 31)
    figures = maintained(setup.url)
    assert (figures["results_pruned"], figures["high_water_clients"]) == (4, 1)
    assert recorded_seqs(setup, "phone") == [5, 6]
    assert high_water(setup, "phone") == 4
    assert maintained(setup.url)["results_pruned"] == 0  # nothing else is old enough
    # A mark is never lowered: results pruned later with a lower seq leave it where it is.
    setup.pg.execute("UPDATE client_high_water SET seq = 40 WHERE user_id = %s AND client_id = 'phone'",
                     (setup.user_id,))
    age_results(setup, "phone", range(5, 6), 31)
    assert maintained(setup.url)["results_pruned"] == 1
    assert high_water(setup, "phone") == 40
    # The window comes from the option (or PULSE_RESULT_RETENTION_DAYS): zero prunes everything.
    assert maintained(setup.url, "--result-retention-days", "0")["results_pruned"] == 1
    assert recorded_seqs(setup, "phone") == []


def test_a_replay_at_or_below_the_high_water_mark_whose_result_was_pruned_is_a_duplicate(setup: Setup) -> None:
    """Depends on the push side (pulse_server/push.py): a seq at or below client_high_water.seq with no
    recorded result is answered `duplicate` and never applied again."""
    sent = mutations_for("tablet", range(1, 4), "2026-07", days_ago=31)  # made, pushed, then aged, as in life
    first = send(setup, "tablet", sent)
    assert [r["status"] for r in first] == ["applied", "applied", "applied"]
    before = setup.pg.execute("SELECT steps, steps_hlc, xmin::text FROM entries WHERE user_id = %s"
                              " AND date = '2026-07-02'", (setup.user_id,)).fetchone()
    age_results(setup, "tablet", range(1, 4), 31)
    assert maintained(setup.url)["results_pruned"] == 3
    assert high_water(setup, "tablet") == 3
    replay = send(setup, "tablet", sent[1:2])  # seq 2 again, as it was sent, its result pruned
    assert [r["status"] for r in replay] == ["duplicate"], replay
    after = setup.pg.execute("SELECT steps, steps_hlc, xmin::text FROM entries WHERE user_id = %s"
                             " AND date = '2026-07-02'", (setup.user_id,)).fetchone()
    assert after == before  # not applied again: the row was not even rewritten
    assert recorded_seqs(setup, "tablet") == []


def test_a_copy_of_a_store_reusing_seqs_whose_results_were_pruned_is_told_of_the_clash(setup: Setup) -> None:
    """A home copied (or restored from a backup) pushes its own new edits under seqs the original pushed
    long ago, whose results were pruned since: they are not replays (each was made after every pruned
    result had been applied), and answered `clash`, never `duplicate` (which the device takes for
    applied: its edits were lost in silence)."""
    original = mutations_for("laptop", range(1, 3), "2026-08", days_ago=40)
    assert [r["status"] for r in send(setup, "laptop", original)] == ["applied", "applied"]
    age_results(setup, "laptop", range(1, 3), 40)
    assert maintained(setup.url)["results_pruned"] == 2
    pruned_before = setup.pg.execute(
        "SELECT now() - pruned_before FROM client_high_water WHERE user_id = %s AND client_id = 'laptop'",
        (setup.user_id,)).fetchone()
    assert pruned_before is not None and 39 <= pruned_before[0].days <= 40  # the newest pruned result's time

    ms = now_ms()
    copy = [set_mutation(2, "2026-08-20", {"note": "made on the copy"}, stamp(ms, 0, "laptop")),
            set_mutation(3, "2026-08-21", {"note": "made on the copy too"}, stamp(ms, 1, "laptop"))]
    results = send(setup, "laptop", copy)
    assert [r["status"] for r in results] == ["clash", "applied"], results
    assert results[0]["error"]["code"] == "client_id_reused"
    # The original's own replay, stamped when it was made, is still a duplicate.
    assert [r["status"] for r in send(setup, "laptop", original[:1])] == ["duplicate"]
    assert setup.pg.execute("SELECT count(*) FROM entries WHERE user_id = %s AND date = '2026-08-20'",
                            (setup.user_id,)).fetchone() == (0,)


def test_a_replay_of_a_clamped_mutation_whose_result_was_pruned_is_still_a_duplicate(setup: Setup) -> None:
    # Sent by a device three days fast: clamped when applied, its stamp as sent is later than that time.
    ahead = set_mutation(1, "2026-09-01", {"steps": 1}, stamp(now_ms() + 3 * 86_400_000, 0, "watch"))
    first = send(setup, "watch", [ahead])
    assert first[0]["status"] == "applied" and first[0]["clamped_from"] == ahead["hlc"]
    age_results(setup, "watch", range(1, 2), 40)
    assert maintained(setup.url)["results_pruned"] == 1
    assert [r["status"] for r in send(setup, "watch", [ahead])] == ["duplicate"]


def add_conflicts(setup: Setup, ages_days: list[int]) -> None:
    for i, age in enumerate(ages_days):
        setup.pg.execute(
            "INSERT INTO conflicts (user_id, date, client_id, seq, field, kept, lost, kept_hlc, lost_hlc, rule,"
            " clamped, created_at) VALUES (%s, '2026-06-03', 'phone', %s, 'steps', '1', '2', 'a', 'b',"
            " 'newer-stamp', false, now() - make_interval(days => %s))", (setup.user_id, 100 + i, age))


def conflict_ages(setup: Setup) -> list[int]:
    rows = setup.pg.execute("SELECT extract(day FROM now() - created_at)::int FROM conflicts WHERE user_id = %s"
                            " ORDER BY 1", (setup.user_id,)).fetchall()
    return [int(r[0]) for r in rows]


def test_the_conflict_audit_is_kept_for_its_window(setup: Setup) -> None:
    setup.pg.execute("DELETE FROM conflicts WHERE user_id = %s", (setup.user_id,))
    add_conflicts(setup, [400, 181, 179, 20, 0])
    assert maintained(setup.url)["conflicts_pruned"] == 2  # the default window: 180 days
    assert conflict_ages(setup) == [0, 20, 179]
    assert maintained(setup.url, "--conflict-retention-days", "10")["conflicts_pruned"] == 2
    assert conflict_ages(setup) == [0]


def signed_in(setup: Setup, username: str, count: int) -> tuple[int, list[str]]:
    """`username` (made if new) signed in `count` times: the user's id and the tokens."""
    database = Database(Settings(database_url=setup.url, pool_size=1))
    try:
        with database.session() as session:
            user = session.exec(select(User).where(User.username == username)).first()
            user = user or add_user(session, username, "correct horse battery", False)
            assert user.id is not None
            return user.id, [issue_token(session, user, 30)[0] for _ in range(count)]
    finally:
        database.dispose()


def expire(setup: Setup, tokens: list[str], days_ago: int) -> None:
    setup.pg.execute("UPDATE tokens SET expires_at = now() - make_interval(days => %s) WHERE token_hash = ANY(%s)",
                     (days_ago, [hash_token(t) for t in tokens]))


def kept_tokens(setup: Setup, tokens: list[str]) -> list[bool]:
    rows = {r[0] for r in setup.pg.execute("SELECT token_hash FROM tokens WHERE token_hash = ANY(%s)",
                                           ([hash_token(t) for t in tokens],))}
    return [hash_token(t) in rows for t in tokens]


def test_expired_sign_ins_are_removed_but_those_an_account_erasure_revoked_still_answer_it(setup: Setup) -> None:
    """Every sign-in made a row that stayed for good. Expired ones go now; an account erasure's revoked ones
    stay, so a device back after months, its token long expired, still learns the account was erased."""
    _, (live, expired, revoked_expired) = signed_in(setup, "keeper", 3)
    setup.pg.execute("UPDATE tokens SET revoked_at = now() WHERE token_hash = %s", (hash_token(revoked_expired),))
    gone_id, before_erasure = signed_in(setup, "gone", 2)
    with setup.pg.transaction():
        erase(setup.pg, gone_id, "gone", None, None, now_ms(), whole_account=True)
    _, after_erasure = signed_in(setup, "gone", 1)  # signed in afresh after it: an ordinary token
    expire(setup, [expired, revoked_expired, *before_erasure, *after_erasure], days_ago=90)

    figures = maintained(setup.url)

    assert figures["tokens_pruned"] == 3
    assert kept_tokens(setup, [live, setup.token, expired, revoked_expired]) == [True, True, False, False]
    assert kept_tokens(setup, [*before_erasure, *after_erasure]) == [True, True, False]
    with Api(setup.server.url, before_erasure[0]) as api:
        refused = api.get("/v1/me")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "account_erased"
    with Api(setup.server.url, expired) as api:
        assert api.get("/v1/me").json()["error"]["code"] == "unauthorized"
    with Api(setup.server.url, live) as api:
        assert api.get("/v1/me").status_code == 200
    assert maintained(setup.url)["tokens_pruned"] == 0


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    with Api(server.url) as api:
        text = api.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


def test_one_instance_at_a_time_and_the_schedule_reports_its_figures(setup: Setup, tmp_path: Path) -> None:
    with psycopg.connect(setup.url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK,))
        busy = maintain(setup.url, "--wait", "0")
        assert busy.returncode == 1
        assert busy.stderr.strip().splitlines() == ["error: maintenance is already running in another process"
                                                    " (waited 0 s)"]
        scheduled = ServerProcess(tmp_path / "scheduled.log", {
            "PULSE_DATABASE_URL": setup.url, "PULSE_MAINTENANCE_INTERVAL_S": "0.5",
            "PULSE_CONFLICT_RETENTION_DAYS": "0"})
        try:
            scheduled.wait_ready()
            add_conflicts(setup, [3])
            deadline = time.monotonic() + 30
            while _metric(scheduled, "pulse_maintenance_runs_total", outcome="skipped") < 2:
                assert time.monotonic() < deadline, scheduled.log_text()
                time.sleep(0.2)
            assert _metric(scheduled, "pulse_maintenance_runs_total", outcome="done") == 0
            assert conflict_ages(setup) != []  # nothing ran while the lock was held elsewhere
            holder.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))
            while _metric(scheduled, "pulse_maintenance_runs_total", outcome="done") < 1:
                assert time.monotonic() < deadline, scheduled.log_text()
                time.sleep(0.2)
            assert conflict_ages(setup) == []
            assert _metric(scheduled, "pulse_maintenance_removed_rows_total", what="conflicts") >= 1
            assert _metric(scheduled, "pulse_sync_table_bytes", table="shape_log") > 0
            lines = [json.loads(line) for line in scheduled.log_path.read_text().splitlines()
                     if '"maintenance done"' in line]
            assert lines and lines[0]["conflicts_pruned"] >= 1 and "table_bytes" in lines[0]
        finally:
            scheduled.stop()


def test_with_two_workers_every_scrape_reports_the_whole_server(setup: Setup, tmp_path: Path) -> None:
    """Each worker kept metrics of its own, so a scrape reported whichever worker answered it: its own share
    of the requests, and no maintenance at all from a worker that had not run one. Now the workers share
    them: every scrape counts every request, and says when the last maintenance of any worker ended."""
    server = ServerProcess(tmp_path / "two.log", {"PULSE_DATABASE_URL": setup.url, "PULSE_WORKERS": "2",
                                                  "PULSE_MAINTENANCE_INTERVAL_S": "0.5"})
    try:
        server.wait_ready()
        checks_before = _metric(server, "pulse_http_request_duration_seconds_count", method="GET",
                                route="/healthz", status="200")
        for _ in range(30):
            with Api(server.url) as api:  # a connection each: either worker may take it
                assert api.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while _metric(server, "pulse_maintenance_last_success_timestamp_seconds") == 0:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.2)
        counted = [_metric(server, "pulse_http_request_duration_seconds_count", method="GET", route="/healthz",
                           status="200") for _ in range(10)]
        ended = [_metric(server, "pulse_maintenance_last_success_timestamp_seconds") for _ in range(10)]
        with Api(server.url) as api:
            ready = api.get("/readyz").status_code == 200
        said_ready = [_metric(server, "pulse_replication_ready") for _ in range(10)]
    finally:
        server.stop()
    assert counted == [checks_before + 30] * 10
    assert all(t > 0 for t in ended), ended
    assert said_ready == [1.0 if ready else 0.0] * 10  # as the answering worker finds it, never a stale 0


def test_a_worker_killed_outright_leaves_no_reader_state_behind(setup: Setup, tmp_path: Path) -> None:
    """Each worker reports its reader's state under its pid. One killed outright (SIGKILL, the OOM killer)
    never says it ended: its last state stayed in every scrape ("following", from a process that is gone)
    until the server stopped. A scrape now drops the states of processes that are gone."""
    server = ServerProcess(tmp_path / "killed.log", {"PULSE_DATABASE_URL": setup.url, "PULSE_WORKERS": "2"})
    try:
        server.wait_ready()
        deadline = time.monotonic() + 30
        while len(workers := [pid for pid in _children(server.proc.pid) if _reported(server, pid)]) < 2:
            assert time.monotonic() < deadline, server.log_text()  # each worker's state, once it has run
            time.sleep(0.2)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in _children(server.proc.pid):
            assert time.monotonic() < deadline, "the killed worker is still there"
            time.sleep(0.1)
        time.sleep(0.5)  # the supervisor reaps it (and starts another)
        scrapes = [_reported(server, victim) for _ in range(10)]
        survivor = _reported(server, workers[1])
    finally:
        server.stop()
    assert scrapes == [[]] * 10
    assert survivor, "the other worker's state is still reported"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rpartition(")")[2].split()
        if entry.name.isdigit() and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _reported(server: ServerProcess, pid: int) -> list[str]:
    """The reader states a scrape reports under that process's pid."""
    with Api(server.url) as api:
        text = api.get("/metrics").text
    return re.findall(rf'^pulse_replication_reader_state{{pid="{pid}",state="(\w+)"}} 1\.0$', text, re.M)
