"""SIGTERM with SSE streams and long polls open: they end at once, the process exits promptly, and the
clients, reconnecting to the restarted server with what they held, lose nothing.

(Before, uvicorn waited for the requests in flight: one open SSE stream, held 60 s, kept a restart
waiting for the whole graceful-shutdown timeout.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from shape_follower import Follower, table_values
from sync_support import PulseServer, User

STREAMS = 3
POLLS = 3


def hold_sse(client: Follower, ended: list[tuple[str, float]]) -> None:
    params = {"table": "entries", "offset": client.offset, "handle": str(client.handle), "live": "true",
              "live_sse": "true", "cursor": "0"}
    try:
        with httpx.stream("GET", f"{client.base_url}/v1/shape", params=params, timeout=120,
                          headers={"authorization": f"Bearer {client.token}", "accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            for _ in r.iter_lines():
                pass
        ended.append(("sse", time.monotonic()))
    except httpx.TransportError:
        ended.append(("sse-cut", time.monotonic()))


def hold_poll(client: Follower, ended: list[tuple[str, float]]) -> None:
    try:
        response = client.request(live=True, timeout_s=120)
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.headers["retry-after"]
        ended.append((f"poll-{response.status_code}", time.monotonic()))
    except httpx.TransportError:
        ended.append(("poll-cut", time.monotonic()))


def test_sigterm_ends_open_streams_and_long_polls_at_once_and_clients_lose_nothing(
    start_server: Callable[..., PulseServer], make_user: Callable[..., User], token_for: Callable[[User], str],
    pg: psycopg.Connection[Any],
) -> None:
    server = start_server()
    user = make_user("stop")
    token = token_for(user)
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-09-01', 1)", (user.id,))
    clients = [Follower(server.url, token) for _ in range(STREAMS + POLLS)]
    for client in clients:
        while "2026-09-01" not in {d for _, d in client.follow().values()}:
            time.sleep(0.05)
    ended: list[tuple[str, float]] = []
    holders = [threading.Thread(target=hold_sse, args=(c, ended)) for c in clients[:STREAMS]]
    holders += [threading.Thread(target=hold_poll, args=(c, ended)) for c in clients[STREAMS:]]
    for holder in holders:
        holder.start()
    time.sleep(1.5)  # every request is held by now (a long poll is held 20 s, a stream 60 s)
    assert not ended

    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    exited_s = time.monotonic() - sent
    for holder in holders:
        holder.join(timeout=10)
    assert len(ended) == STREAMS + POLLS, ended
    # Each ended by the server's answer, not cut when the process went (the grace period's end).
    assert {kind for kind, _ in ended} <= {"sse", "poll-200", "poll-503"}, ended
    assert max(at for _, at in ended) - sent < exited_s + 0.5, ended
    assert server.proc.returncode in (0, -signal.SIGTERM)  # uvicorn ends by the signal it caught, once done
    assert exited_s < 5.0, exited_s

    # Written while the server is down; the restarted server brings it to every client, whose handles
    # still hold (nothing was rebuilt), from the offsets they had.
    pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s AND date = '2026-09-01'", (user.id,))
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-09-02', 3)", (user.id,))
    server.restart()
    for client in clients:
        held = client.handle
        client.follow()
        while len(client.values()) < 2 or client.values() != table_values(pg, user.id):
            client.follow()
            time.sleep(0.05)
        assert client.handle == held
        assert 409 not in {a.status for a in client.answers}
    print(f"SIGTERM with {STREAMS} SSE streams and {POLLS} long polls open: exited in {exited_s:.2f} s;"
          f" held requests ended {max(at for _, at in ended) - sent:.2f} s after the signal")
