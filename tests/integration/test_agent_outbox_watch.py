"""The agent's outbox watch starts a round for a change queued since the last round, never again for one a
round has already tried (tests/sync/test_sync_agent.py drives the same agent as a process)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import httpx
from fake_sync_server import FakeSyncServer

from pulse_cli.agent.account import Account, bind_home, save_account
from pulse_cli.agent.daemon import Agent
from pulse_cli.agent.live_state import read_rounds
from pulse_cli.agent.upstream import Upstream
from pulse_cli.bootstrap import bootstrap
from pulse_core.usecases import log_entry

URL = "http://pulse.test"


def _no_wait(_: float) -> None:
    raise AssertionError("the fake server never asks to wait")


def test_a_change_a_failed_round_tried_does_not_start_another_when_the_watch_looks_after(tmp_path: Path) -> None:
    server = FakeSyncServer(lambda: time.time_ns() // 1_000_000)
    proxy_says_404 = [True]  # a proxy in front of the server answers pushes with a page of its own

    def answer(request: httpx.Request) -> httpx.Response:
        if proxy_says_404[0] and request.url.path == "/v1/sync/push":
            return httpx.Response(404, text="<html>Not Found</html>", headers={"content-type": "text/html"})
        return server.answer(request)

    device = bootstrap(str(tmp_path / "home"), upstream=Upstream(httpx.MockTransport(answer), _no_wait))
    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        bind_home(device.conn, URL, server.username, "athlete")
    save_account(device.home, Account(URL, server.username, "athlete", server.token(), ""))
    yesterday = device.today - dt.timedelta(days=1)
    log_entry(device.uow(), device.user, yesterday.isoformat(), {"steps": "4321"}, device.today)
    agent = Agent(device, interval_s=600)
    try:
        agent.round()  # the first scheduled round, before the watch's first look: it fails
        assert read_rounds(device.home) is not None
        proxy_says_404[0] = False
        pushes = server.requests.count("POST /v1/sync/push")
        agent.watch_outbox()  # its first look: the pending change is not new, the failed round tried it
        assert server.requests.count("POST /v1/sync/push") == pushes
        assert read_rounds(device.home) is not None  # still failing until a round passes

        log_entry(device.uow(), device.user, device.today.isoformat(), {"steps": "10"}, device.today)
        agent.watch_outbox()  # a change queued since: a round, which passes
        assert server.requests.count("POST /v1/sync/push") == pushes + 1
        assert read_rounds(device.home) is None
        assert len(server.entries) == 2
    finally:
        device.close()
