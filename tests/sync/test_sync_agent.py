"""`pulse agent` as a real background process: it pushes as soon as something is logged, pulls other
devices' changes live, follows again when its own database refused a change, and stops cleanly on
SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fault_proxy import ANSWER, Fault, HttpFaultProxy
from sync_support import PULSE, Device, PulseServer, User, clean_env, day, wait_for

pytestmark = pytest.mark.e2e


class AgentProcess:
    def __init__(self, device: Device, log_path: Path, interval_s: float) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen([str(PULSE), "agent", "--interval", str(interval_s)],
                                     env=clean_env(PULSE_HOME=str(device.home), NO_COLOR="1"),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(device: Device, interval_s: float = 2) -> AgentProcess:
        agent = AgentProcess(device, tmp_path / f"agent-{device.name}.log", interval_s=interval_s)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def server_steps(pg: psycopg.Connection[Any], user: User, date: str) -> int | None:
    row = pg.execute("SELECT steps FROM entries WHERE user_id = %s AND date = %s", (user.id, date)).fetchone()
    return None if row is None else row[0]


def test_the_agent_pushes_on_change_pulls_live_and_stops_cleanly_on_sigterm(
    make_device: Callable[..., Device], make_user: Callable[..., User], start_agent: Callable[[Device], AgentProcess],
    pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    agent = start_agent(a)
    wait_for(lambda: "agent running" in agent.text(), 30, "the agent to start", every_s=0.1)
    wait_for(lambda: a.meta("last_sync"), 30, "the agent's first round", every_s=0.1)
    time.sleep(1.0)  # let the live pull settle on its long poll

    # Push on change: no `pulse sync`, no waiting for the 2 s schedule to come round by luck.
    a.log(day(-1), steps=4242)
    logged = time.monotonic()
    wait_for(lambda: server_steps(pg, user, day(-1)) == 4242, 10, "A's edit on the server", every_s=0.05)
    assert time.monotonic() - logged < 3.0, "pushed within about the 2 s interval"
    wait_for(lambda: a.outbox_counts() == {"applied": 1}, 10, "A's outbox acknowledged")

    # Live pull: B's change shows up in A's history with no command run on A.
    b.log(day(-2), note="from B")
    b.synced()
    pushed = time.monotonic()
    wait_for(lambda: [e["note"] for e in a.history(day(-2), day(-2))] == ["from B"], 15, "B's edit on A",
             every_s=0.2)
    assert time.monotonic() - pushed < 10.0

    agent.proc.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    code = agent.proc.wait(timeout=30)
    took = time.monotonic() - stopping
    assert code == 0, agent.text()
    assert took < 8.0, f"the agent took {took:.1f} s to stop"
    log = agent.text()
    assert "stopping after the round in hand" in log
    assert "agent stopped" in log
    assert "Traceback" not in log
    assert not (a.home / "agent-live.json").exists()  # a stopped agent leaves no live state behind
    assert a.status()["live_pull"] is None


def test_the_live_pull_follows_again_after_the_device_database_refused_a_change(
    make_device: Callable[..., Device], make_user: Callable[..., User], start_agent: Callable[..., AgentProcess],
) -> None:
    """The device's database is held by another writer for longer than the agent waits for it, while a
    change arrives: the live pull says so in the log and follows again; nothing waits for the next
    scheduled round (10 minutes away here)."""
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    assert a.status()["live_pull"] is None  # no agent yet
    assert "no agent running" in a.ok("status").stdout
    agent = start_agent(a, interval_s=600)
    wait_for(lambda: "agent running" in agent.text(), 30, "the agent to start", every_s=0.1)
    wait_for(lambda: a.meta("last_sync"), 30, "the agent's first round", every_s=0.1)
    time.sleep(1.0)  # let the live pull settle on its long poll
    assert a.status()["live_pull"]["state"] == "following"

    holder = sqlite3.connect(a.home / "pulse.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        b.log(day(-2), note="while A was busy")
        b.synced()
        wait_for(lambda: "live pull stopped by OperationalError" in agent.text(), 40,
                 "the refused change in A's log", every_s=0.2)
        # Said by `pulse status` too, not only in the agent's log (status only reads the store).
        live = a.status()["live_pull"]
        assert live["state"] == "retrying" and live["pid"] == agent.proc.pid, live
        assert "OperationalError: database is locked" in live["error"], live
        text = a.ok("status").stdout
        assert "live pull fails" in text and "database is locked" in text, text
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: [e["note"] for e in a.history(day(-2), day(-2))] == ["while A was busy"], 20,
             "the refused change on A once its database is free", every_s=0.2)
    wait_for(lambda: a.status()["live_pull"]["state"] == "following", 20, "status to say it follows again",
             every_s=0.2)

    b.log(day(-3), note="later")
    b.synced()
    wait_for(lambda: [e["note"] for e in a.history(day(-3), day(-3))] == ["later"], 20, "a later change on A live",
             every_s=0.2)
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.text()
    agent.proc.kill()  # killed, not stopped: its state file stays, but names a process that is gone
    agent.proc.wait(timeout=10)
    assert a.status()["live_pull"] is None


def test_pulse_status_says_why_the_agents_syncs_fail_until_one_passes(
    make_device: Callable[..., Device], make_user: Callable[..., User], start_agent: Callable[..., AgentProcess],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    """Rounds that fail for a reason other than an unreachable server (here a proxy answering the push
    with a page of its own) are said by `pulse status`, not only in the agent's log; the line goes once a
    round passes."""
    proxy = HttpFaultProxy(("127.0.0.1", server.port))
    try:
        user = make_user()
        a = make_device("A", proxy.url)
        assert a.login(user).returncode == 0
        assert a.status()["agent_rounds"] is None
        proxy.always("POST", "/v1/sync/push", Fault(ANSWER, status=404))
        agent = start_agent(a, interval_s=600)
        wait_for(lambda: "agent running" in agent.text(), 30, "the agent to start", every_s=0.1)
        a.log(day(-1), steps=4321)
        wait_for(lambda: a.status()["agent_rounds"] is not None, 30, "status to say the syncs fail", every_s=0.2)
        rounds = a.status()["agent_rounds"]
        assert "answered 404, not as the sync server does" in rounds["error"], rounds
        assert rounds["pid"] == agent.proc.pid
        text = a.ok("status").stdout
        assert "the agent's syncs fail since" in text and "answered 404" in text, text
        assert a.outbox_counts() == {"pending": 1}

        # The agent is held still while the user syncs by hand, so that no round of its own comes between
        # (one could, on a busy machine: a look at the outbox that comes late, a live pull's refetch)
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            proxy.always("POST", "/v1/sync/push", None)
            time.sleep(1.1)  # the failure's time and the sync's are kept to the second
            a.synced()  # by hand, before the agent's next round: status no longer says it
            assert (a.home / "agent-round.json").exists() and a.status()["agent_rounds"] is None
            assert "syncs fail" not in a.ok("status").stdout
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        assert server_steps(pg, user, day(-1)) == 4321
        a.log(day(-2), steps=1234)  # a new change starts one of the agent's rounds at once
        wait_for(lambda: server_steps(pg, user, day(-2)) == 1234, 30, "the agent's round", every_s=0.2)
        wait_for(lambda: not (a.home / "agent-round.json").exists(), 10, "the agent's passing round to clear it",
                 every_s=0.2)
        assert "Traceback" not in agent.text()
    finally:
        proxy.close()


def test_an_agent_whose_server_has_not_answered_is_not_said_to_follow_it(
    make_device: Callable[..., Device], make_user: Callable[..., User], start_agent: Callable[..., AgentProcess],
    server: PulseServer,
) -> None:
    """`pulse status` said "the agent follows the server" from the moment the live pull opened its stream,
    before any answer: an agent started while the server kept every connection waiting was said to follow
    it until the client's timeout. Now it is "connecting" until the first answer."""
    proxy = HttpFaultProxy(("127.0.0.1", server.port))
    try:
        user = make_user()
        a = make_device("A", proxy.url)
        assert a.login(user).returncode == 0
        proxy.blackhole()  # connections accepted, never answered
        agent = start_agent(a, interval_s=600)
        wait_for(lambda: a.status()["live_pull"] is not None, 30, "the live pull's state", every_s=0.1)
        live = a.status()["live_pull"]
        assert (live["state"], live["pid"]) == ("connecting", agent.proc.pid), live
        text = a.ok("status").stdout
        assert "has no answer yet" in text and "follows the server" not in text, text

        proxy.up()
        wait_for(lambda: a.status()["live_pull"]["state"] == "following", 40, "status to say it follows",
                 every_s=0.2)
        assert "the agent follows the server" in a.ok("status").stdout
        assert "Traceback" not in agent.text()
    finally:
        proxy.close()


def test_changes_the_server_refuses_in_an_agents_round_are_said_in_its_log(
    make_device: Callable[..., Device], make_user: Callable[..., User], start_agent: Callable[[Device], AgentProcess],
) -> None:
    """A change queued here and then refused by the server (its day erased from another device meanwhile)
    was only a count among "pushed" in the agent's log: now a warning of its own says so and where to see why."""
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    a.log(day(-3), steps=1234)  # queued on A, made before the erasure
    b.ok("erase", "--from", day(-3), "--to", day(-3), "--yes")

    agent = start_agent(a)

    wait_for(lambda: a.outbox_counts().get("rejected") == 1, 30, "A's change refused by the server")
    wait_for(lambda: "the server refused 1 change (pulse rejected lists them" in agent.text(), 10,
             "the refusal in the agent's log")

