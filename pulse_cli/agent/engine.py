"""One sync round: push the outbox in batches, pull the shape, rebuild the local view.

Every step commits locally before the next leaves the process: results are stored with the outbox
rows they answer, shape rows with the cursor that brought them. Nothing typed is ever lost: on any
failure the outbox keeps its pending mutations and the next round starts from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pulse_cli.agent import athlete_zones, conflicts, erasures, identity, outbox, relay, replica
from pulse_cli.agent.account import Account
from pulse_cli.agent.breaker_state import load_breaker, save_breaker
from pulse_cli.agent.pull import pull_shape
from pulse_cli.bootstrap import Device
from pulse_cli.store import clock, meta
from pulse_cli.store.connection import read_meta
from sync.client import SyncClient
from sync.errors import Offline, ServerRefused
from sync.wire import PushResponse

log = logging.getLogger("pulse.agent")
PUSH_BATCH = 200
MAX_PASSES = 4  # a round pushes again after taking a new id or requeueing; never forever


@dataclass
class SyncReport:
    pushed: dict[str, int] = field(default_factory=dict)
    pulled: int = 0
    refetched: bool = False
    pending: int = 0
    rejected: int = 0
    conflicts: int = 0
    clock_offset_ms: int = 0
    repushed: int = 0  # acknowledged changes a restored server had lost, pushed again
    new_client_id: str | None = None  # taken because another store used this device's id
    erasures: int = 0  # erasures of days held here, applied this round (docs/erasure.md)

    def as_json(self) -> dict[str, Any]:
        return {"pushed": self.pushed, "pulled": self.pulled, "refetched": self.refetched, "pending": self.pending,
                "rejected": self.rejected, "conflicts": self.conflicts, "clock_offset_ms": self.clock_offset_ms,
                "repushed": self.repushed, "new_client_id": self.new_client_id, "erasures": self.erasures}


class BreakerOpen(Offline):
    pass


class SyncEngine:
    def __init__(
        self,
        device: Device,
        account: Account,
        client: SyncClient,
        pull: Callable[[Device, Account, Callable[[], None]], tuple[int, bool]] = pull_shape,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.conn = device.conn
        self.account = account
        self.client = client
        self.pull_step = pull
        self.now = now

    # -- the round --------------------------------------------------------------------------------
    def sync(self, push_only: bool = False, automatic: bool = False) -> SyncReport:
        """One round. The breaker spaces automatic rounds only: a command the user typed always tries."""
        breaker = load_breaker(self.conn)
        if automatic and breaker.is_open(self.now()):
            raise BreakerOpen(f"server unreachable ({breaker.state.last_error}); next try in "
                              f"{breaker.retry_in(self.now()):.0f} s", breaker.retry_in(self.now()))
        report = SyncReport()
        try:
            self.push(report)
            self.refill(report)  # a server restored from a backup is refilled, whether or not it says so
            if not push_only:
                # Before the pull: a day erased on the server leaves here, with what the outbox held of it.
                report.erasures = erasures.exchange(self.conn, self.client, self.account.username)
                conflicts.exchange(self.conn, self.client)
                athlete_zones.refresh(self.conn, self.client, self.account.role)  # a coach's: where each athlete is
                # Each batch refreshes the view's rows it touches; a refetch first refills the server.
                pulled, refetched = self.pull_step(self.device, self.account, lambda: self.refill(report))
                report.pulled += pulled
                report.refetched = report.refetched or refetched
        except Offline as exc:
            breaker.failure(self.now(), str(exc), exc.retry_after_s)
            save_breaker(self.conn, breaker)
            raise
        breaker.success()
        save_breaker(self.conn, breaker)
        self._tidy()
        self._summarise(report)
        return report

    def refill(self, report: SyncReport) -> None:
        """Whatever this device had acknowledged that the server no longer holds (one request: its
        high-water marks) is pushed again: each round, and before a refetch is applied."""
        requeued = identity.requeue_lost(self.conn, self.client)
        if requeued:
            report.repushed += requeued
            self.push(report)

    def _tidy(self) -> None:
        """Keep the store bounded: acknowledged mutations past their window, old conflicts, the device
        app's shape log folded to each day's newest change."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            outbox.prune(self.conn)
            relay.prune(self.conn)  # a browser's results, relayed by `pulse agent --serve`
            conflicts.prune(self.conn)
            replica.compact_shape_log(self.conn)
        erasures.scrub_if_due(self.conn)  # an erasure whose rewrite of the file could not be done at once

    def push(self, report: SyncReport) -> None:
        """Push every pending mutation, oldest first, each under the id it is sent with; take a new id
        when the server says another store uses ours, and queue again what a restored server lost."""
        for _ in range(MAX_PASSES):
            again = False
            after = 0
            while batch := outbox.pending(self.conn, PUSH_BATCH, after):
                current = identity.current_id(self.conn)
                by_client: dict[str, list[outbox.OutboxRow]] = {}
                for row in batch:  # this device's own, and those it relays for each browser
                    by_client.setdefault(row.client_id or current, []).append(row)
                for sender, rows in by_client.items():
                    again |= self._send(sender, sender == current, rows, report)
                after = batch[-1].seq
            if not again:
                return

    def _send(self, sender: str, own: bool, rows: list[outbox.OutboxRow], report: SyncReport) -> bool:
        """One batch of one sender; whether the outbox changed so that another pass is needed."""
        sent_at = self.now()
        try:
            response = self.client.push(sender, [row.wire() for row in rows], clock.zone_offset_min(self.conn))
        except ServerRefused as exc:
            return self._refused(sender, own, rows, exc, report)
        high_water = response.get("high_water")
        # The server holds seqs of our id that this store never issued: another store uses it.
        stolen = own and isinstance(high_water, int) and high_water > identity.highest_issued_seq(self.conn)
        knows = "high_water" in response and not stolen
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            # Before this batch's results are recorded: its rows are past the mark, and still pending.
            current = identity.current_id(self.conn)
            requeued = outbox.requeue_past(self.conn, sender, current, high_water) if knows else 0
            tally = outbox.record_results(self.conn, rows, response, clashed=stolen)
            self._refresh(rows)
            self._learn_clock(response, sent_at)
            if tally.get("clash") or stolen:
                new_id = identity.take_new_id(self.conn, {sender})
                log.warning("client id %s is used by another store (a restored or copied one): now %s; "
                            "its pending changes are pushed again under the new id", sender, new_id)
                report.new_client_id = new_id
        if requeued:
            log.warning("the server holds seqs of %s only up to %s: %d acknowledged changes pushed again",
                        sender, high_water, requeued)
            report.repushed += requeued
        for status, count in tally.items():
            report.pushed[status] = report.pushed.get(status, 0) + count
        return bool(tally.get("clash") or stolen or requeued)

    def _refused(
        self, sender: str, own: bool, rows: list[outbox.OutboxRow], exc: ServerRefused, report: SyncReport
    ) -> bool:
        """A 4xx for the whole batch. One that can never pass (403: this account may not write) rejects
        the batch; otherwise it is halved until the one mutation the server refuses is found and
        rejected alone. A protocol the server does not speak (426) stops the round: nothing is rejected.
        So does any other 4xx, or one without the sync server's error code (a proxy's page during a
        deploy, a wrong server path): it says nothing about the mutations, which stay pending, and the
        round fails loudly instead."""
        if exc.status in (401, 426) or not _about_the_batch(exc):
            raise exc
        if len(rows) > 1 and exc.status != 403:
            middle = len(rows) // 2
            first = self._send(sender, own, rows[:middle], report)
            return self._send(sender, own, rows[middle:], report) or first
        error = {"code": exc.code or "refused", "message": str(exc)}
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            count = outbox.reject(self.conn, rows, error)
            self._refresh(rows)
        report.pushed["rejected"] = report.pushed.get("rejected", 0) + count
        return False

    def _learn_clock(self, response: PushResponse, sent_at: float) -> None:
        server_ms = response.get("server_time_ms")
        if isinstance(server_ms, int):
            clock.learn_offset(self.conn, server_ms, sent_at, self.now())

    def rebuild(self) -> None:
        """The whole local view made again (a repair); a round refreshes only the rows it touched."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            replica.rebuild_local_view(self.conn)

    def _refresh(self, rows: list[outbox.OutboxRow]) -> None:
        """The view's rows of these mutations, once the server answered them (in the caller's transaction):
        a rejected one leaves the view, an applied one may carry the stamp the server clamped it to."""
        if read_meta(self.conn, meta.REFETCHING) != "1":  # the view is made again once the refetch is done
            replica.refresh_view(self.conn, {(r.user_id, r.date) for r in rows})

    def _summarise(self, report: SyncReport) -> None:
        counts = outbox.counts(self.conn)
        report.pending = counts.get("pending", 0)
        report.rejected = counts.get("rejected", 0)
        report.conflicts = conflicts.open_count(self.conn)
        report.clock_offset_ms = int(read_meta(self.conn, meta.CLOCK_OFFSET_MS) or 0)


def _about_the_batch(exc: ServerRefused) -> bool:
    """Whether a whole-batch 4xx judges the mutations: a request too large (413, from the server or a proxy
    in front, halved until it passes), or the sync server's own refusal of the batch (400, 403, 422 with
    its error code, docs/api.md)."""
    return exc.status == 413 or (exc.status in (400, 403, 422) and bool(exc.code))
