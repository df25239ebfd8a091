"""One sync round: push the outbox in batches, pull the shape, rebuild the local view.

Every step commits locally before the next leaves the process: results are stored with the outbox
rows they answer, shape rows with the cursor that brought them. Nothing typed is ever lost: on any
failure the outbox keeps its pending mutations and the next round starts from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pulse_cli.agent import outbox, replica
from pulse_cli.agent.account import Account
from pulse_cli.agent.breaker_state import load_breaker, save_breaker
from pulse_cli.bootstrap import Device
from pulse_cli.store.connection import read_meta, write_meta
from sync.client import Offline, SyncClient
from sync.hlc import Stamp

PUSH_BATCH = 200
SHAPE = "entries"
OFFSET_TOLERANCE_MS = 1_000
SKEW_LIMIT_MS = 60_000  # the server clamps stamps further ahead than this


@dataclass
class SyncReport:
    pushed: dict[str, int] = field(default_factory=dict)
    pulled: int = 0
    refetched: bool = False
    pending: int = 0
    rejected: int = 0
    conflicts: int = 0
    clock_offset_ms: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"pushed": self.pushed, "pulled": self.pulled, "refetched": self.refetched, "pending": self.pending,
                "rejected": self.rejected, "conflicts": self.conflicts, "clock_offset_ms": self.clock_offset_ms}


class BreakerOpen(Offline):
    pass


class SyncEngine:
    def __init__(
        self,
        device: Device,
        account: Account,
        client: SyncClient,
        pull: Callable[[SyncEngine, SyncReport], None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.conn = device.conn
        self.account = account
        self.client = client
        self.pull_step = pull
        self.now = now

    # -- the round --------------------------------------------------------------------------------
    def sync(self, push_only: bool = False) -> SyncReport:
        breaker = load_breaker(self.conn)
        if breaker.is_open(self.now()):
            raise BreakerOpen(f"server unreachable ({breaker.state.last_error}); next try in "
                              f"{breaker.retry_in(self.now()):.0f} s", breaker.retry_in(self.now()))
        report = SyncReport()
        try:
            self.push(report)
            if not push_only and self.pull_step is not None:
                self.pull_step(self, report)
                self.rebuild()
        except Offline as exc:
            breaker.failure(self.now(), str(exc), exc.retry_after_s)
            save_breaker(self.conn, breaker)
            raise
        breaker.success()
        save_breaker(self.conn, breaker)
        self._summarise(report)
        return report

    def push(self, report: SyncReport) -> None:
        client_id = read_meta(self.conn, "client_id") or ""
        after = 0
        while True:
            batch = outbox.pending(self.conn, PUSH_BATCH, after)
            if not batch:
                return
            # This device's own mutations, and those it relays for each browser under the browser's id.
            by_client: dict[str, list[outbox.OutboxRow]] = {}
            for row in batch:
                by_client.setdefault(row.client_id or client_id, []).append(row)
            for sender, rows in by_client.items():
                sent_at = self.now()
                response = self.client.push(sender, [row.wire() for row in rows])
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    tally = outbox.record_results(self.conn, rows, response)
                    self._learn_clock(response, sent_at)
                for status, count in tally.items():
                    report.pushed[status] = report.pushed.get(status, 0) + count
            after = batch[-1].seq

    def _learn_clock(self, response: dict[str, Any], sent_at: float) -> None:
        """The server's clock is the reference: remember how far ours is off (sync-protocol.md, clock sanity)."""
        server_ms = response.get("server_time_ms")
        if not isinstance(server_ms, int):
            return
        midpoint_ms = int((sent_at + self.now()) / 2 * 1000)
        offset = server_ms - midpoint_ms
        write_meta(self.conn, "clock_offset_ms", str(offset if abs(offset) > OFFSET_TOLERANCE_MS else 0))
        # A clock that ran ahead left the last stamp in the future, and the HLC never goes back past its
        # last stamp: bring it back to server time, as the server has clamped those stamps anyway.
        last = read_meta(self.conn, "hlc_last")
        if last:
            stamp = Stamp.parse(last)
            if stamp.ms > server_ms + SKEW_LIMIT_MS:
                write_meta(self.conn, "hlc_last", str(Stamp(server_ms, 0, stamp.node)))

    def rebuild(self) -> None:
        pulled = int(read_meta(self.conn, "pulled_lsn") or 0)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            replica.rebuild_view(self.conn, outbox.to_reapply(self.conn, pulled), self.device.today)

    def _summarise(self, report: SyncReport) -> None:
        counts = outbox.counts(self.conn)
        report.pending = counts.get("pending", 0)
        report.rejected = counts.get("rejected", 0)
        report.conflicts = int(self.conn.execute("SELECT count(*) FROM conflicts").fetchone()[0])
        report.clock_offset_ms = int(read_meta(self.conn, "clock_offset_ms") or 0)
