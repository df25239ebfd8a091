"""The shape log watcher does not end on an error it did not expect: it says so and follows the log again.

A throwaway database whose shape log is written directly (no reader: only the watcher is under test). The
fault is real: a notification on the erasure channel that is not the reader's JSON, which the watcher
cannot read. Before, that ended the watcher's thread in silence, and every live client of the process
stopped receiving changes while /readyz stayed green.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import psycopg
import pytest
from replication_support import wait_for
from throwaway_db import migrated_database

from pulse_server.replication.batch import ERASED_CHANNEL
from pulse_server.replication.health import ReplicationHealth
from pulse_server.replication.reader import LOG_CHANNEL
from pulse_server.shapes.log import LogWatcher


@pytest.fixture()
def log_url() -> Iterator[str]:
    with migrated_database("pulse_watch_heal") as url:
        yield url


def write_change(conn: psycopg.Connection[tuple[object, ...]], lsn: int) -> None:
    """One change into the log, the new head and the notification, as the reader writes them."""
    with conn.transaction():
        conn.execute("INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
                     " VALUES (%s, 0, 1, 1, '2025-01-01', 'insert', '{\"steps\": \"1\"}')", (lsn,))
        conn.execute("UPDATE shape_state SET head_lsn = %s, head_op = 0", (lsn,))
        conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, f"{lsn}_0"))


class NotedHealth(ReplicationHealth):
    """The health /readyz reads, with every reason it was told of kept for the test (the next status read
    clears the reason itself within a second, once the watcher follows again)."""

    def __init__(self) -> None:
        super().__init__(watched=True)
        self.reasons: list[str] = []

    def failed(self, error: str) -> bool:
        self.reasons.append(error)
        return super().failed(error)


def test_a_notification_it_cannot_read_is_logged_and_the_watcher_follows_again(
    log_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    health = NotedHealth()
    watcher = LogWatcher(log_url, health=health)
    loop = asyncio.new_event_loop()
    caplog.set_level(logging.WARNING, logger="pulse.shapes")
    try:
        with psycopg.connect(log_url, autocommit=True) as conn:
            watcher.start(loop)
            wait_for(lambda: watcher.known_head() is not None, 10, "the watcher to read the log")
            write_change(conn, 100)
            wait_for(lambda: watcher.head == (100, 0), 10, "the watcher to follow the first change")

            conn.execute("SELECT pg_notify(%s, 'not the reader''s json')", (ERASED_CHANNEL,))
            wait_for(lambda: any("watcher failed" in r.getMessage() for r in caplog.records), 10,
                     "the failure in the log")
            failure = next(r for r in caplog.records if "watcher failed" in r.getMessage())
            assert failure.levelno == logging.ERROR and failure.exc_info is not None  # with its traceback
            said = health.reasons
            assert any("shape log watcher failed" in f and "JSONDecodeError" in f for f in said), said

            started = time.monotonic()
            write_change(conn, 200)
            wait_for(lambda: watcher.head == (200, 0) and watcher.known_head() is not None, 15,
                     "the watcher to follow the log again")
            assert time.monotonic() - started < 15
            assert watcher._thread is not None and watcher._thread.is_alive()
    finally:
        watcher.stop()
        if watcher._thread is not None:
            watcher._thread.join(5)
        loop.close()
