"""`pulse agent`: a foreground process that keeps the device in sync.

apscheduler runs a sync round every `interval` seconds and, through a cheap local watch of the
outbox, as soon as something new is queued; a separate thread keeps a live shape pull open. SIGTERM
or SIGINT stops it after the round in hand has finished and saved its state.
"""

from __future__ import annotations

import logging
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pulse_cli.agent.account import load_account
from pulse_cli.agent.breaker_state import load_breaker, save_breaker
from pulse_cli.agent.live_state import LiveState, RoundState
from pulse_cli.agent.pull import follow_live
from pulse_cli.agent.runner import LoginRequired, Unreachable, run_sync
from pulse_cli.bootstrap import Device, bootstrap
from pulse_cli.sync_text import plural
from pulse_core.errors import PulseError
from sync.shape_client import ShapeStream

log = logging.getLogger("pulse.agent")
PROBE_EVERY_S = 3.0


class Agent:
    def __init__(self, device: Device, interval_s: float = 60.0, watch_s: float = 0.5) -> None:
        self.home: Path = device.home
        self.upstream = device.upstream  # every round's device reaches the server the same way
        self.interval_s = interval_s
        self.watch_s = watch_s
        self.stop = threading.Event()
        self._seen_seq = -1
        self._watch_conn: sqlite3.Connection | None = None
        self._streams: list[ShapeStream] = []
        self._scheduler: Any = None
        self._live: threading.Thread | None = None
        self._next_probe = 0.0
        self.rounds = RoundState(self.home)  # `pulse status`: why the rounds fail, while they do

    def _device(self) -> Device:
        return bootstrap(str(self.home), upstream=self.upstream)

    def round(self) -> None:
        """One push + pull round; failures are reported (the log, and `pulse status` while they last) and
        retried later, never fatal. A server that cannot be reached is the breaker's to report."""
        device: Device | None = None
        try:
            device = self._device()  # a store that cannot be opened fails the round like anything else
            # What is pending now goes with this round, whichever job started it: the outbox watch starts
            # another only for a change queued after (it took a change a failed round had tried for new
            # when its first look came after that round, and synced again at once)
            self._seen_seq = self._newest_pending()
            report = run_sync(device, automatic=True)
            pushed = sum(report.pushed.values())
            if pushed or report.pulled:
                log.info("synced: pushed %d, pulled %d, %d pending", pushed, report.pulled, report.pending)
            if report.pushed.get("rejected"):  # refused for good: said louder than a count among the pushed
                log.warning("the server refused %s (pulse rejected lists them, with why; fix or discard them"
                            " there): %d rejected in all", plural(report.pushed["rejected"], "change"),
                            report.rejected)
            self.rounds.succeeded()
        except Unreachable as exc:
            log.warning("%s", exc.message)
            self.rounds.succeeded()  # not this round's fault: `pulse status` says the server is unreachable
        except LoginRequired as exc:
            log.error("%s", exc.message)
            self.rounds.failed(exc.message)
        except PulseError as exc:
            log.error("sync failed: %s", exc.message)
            self.rounds.failed(exc.message)
        except Exception as exc:  # anything else (a bug, the store refusing a write): never a silent stop
            log.exception("sync failed: %s: %s", type(exc).__name__, exc)
            self.rounds.failed(f"{type(exc).__name__}: {exc}")
        finally:
            if device is not None:
                device.close()

    def verify(self) -> None:
        """Hourly, and once after start: does this device hold exactly the server's rows? One request when
        it does; a day that differs is logged and fetched again (docs/verify.md). Never fatal."""
        from pulse_cli.agent.verify import log_report, run_verify

        device = self._device()
        try:
            if not load_breaker(device.conn).is_open(time.time()):  # the server is away: the next hour
                log_report(run_verify(device, repair=True))
        except PulseError as exc:
            log.warning("verify: %s", exc.message)
        finally:
            device.close()

    def watch_outbox(self) -> None:
        """Runs twice a second: one query on a read-only connection kept open, no network; a new pending
        change triggers a round."""
        newest = self._newest_pending()
        if newest > self._seen_seq:
            self.round()  # which takes what is pending as it starts as seen
        else:
            self._seen_seq = newest  # lower when changes went (a change queued again later is new)

    def _newest_pending(self) -> int:
        if self._watch_conn is None:
            uri = (self.home / "pulse.db").resolve().as_uri() + "?mode=ro"
            self._watch_conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        row = self._watch_conn.execute("SELECT coalesce(max(seq), 0) FROM outbox WHERE status = 'pending'").fetchone()
        return int(row[0])

    def probe_while_away(self) -> None:
        """While the breaker keeps rounds away from a server that went down, one cheap request every 1.5
        to 3 s (jittered) notices its return, and a round starts at once: not after the breaker's
        cool-down, which grows to minutes."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + random.uniform(PROBE_EVERY_S / 2, PROBE_EVERY_S)
        back = False
        device = self._device()
        try:
            breaker = load_breaker(device.conn)
            account = load_account(self.home)
            if account is None or not breaker.is_open(time.time()):
                return
            with self.upstream.client(account.server, account.token) as client:
                back = client.probe(timeout_s=PROBE_EVERY_S / 2)
            if back:
                log.info("server %s answers again: syncing now", account.server)
                breaker.success()
                save_breaker(device.conn, breaker)
        finally:
            device.close()
        if back:
            self.round()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the round in hand", signum)
        self.stop.set()
        for stream in self._streams:  # end the held live request now rather than in up to 20 s
            stream.close()

    def run_forever(self) -> None:
        quiet_logging()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        try:
            while not self.stop.wait(0.5):
                pass
        finally:
            self.shutdown()

    def start(self) -> None:
        """Start the scheduled rounds, the outbox watch and the live pull, in background threads."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        if load_account(self.home) is None:
            raise LoginRequired("account: not logged in; run pulse login --server URL --username NAME")
        # What is queued now goes with the first round; anything queued after it starts one, however the
        # first round and the first look at the outbox fall in time.
        self._seen_seq = self._newest_pending()
        # One worker: rounds never overlap, and a round always finishes before shutdown returns.
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self._scheduler.add_job(self.round, "interval", seconds=self.interval_s, id="sync", next_run_time=_now())
        self._scheduler.add_job(self.watch_outbox, "interval", seconds=self.watch_s, id="watch-outbox")
        self._scheduler.add_job(self.probe_while_away, "interval", seconds=0.5, id="probe")
        # One request of month digests an hour (docs/verify.md has its cost), and one at start.
        self._scheduler.add_job(self.verify, "interval", seconds=3600, id="verify", next_run_time=_now())
        self._live = threading.Thread(target=follow_live, args=(self.home, self.stop, self._streams, self.upstream),
                                      name="live-pull", daemon=True)
        self._scheduler.start()
        self._live.start()
        log.info("agent running for %s (interval %.0f s); Ctrl-C to stop", self.home, self.interval_s)

    def shutdown(self) -> None:
        self.stop.set()
        for stream in self._streams:
            stream.close()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)  # the round in hand finishes and commits first
        # The live pull holds no unsaved state while a long-poll is held (each batch commits with
        # its cursor), so it is not waited for: its request is simply dropped.
        if self._live is not None:
            self._live.join(timeout=1)
        LiveState(self.home).clear()  # `pulse status`: no agent follows the server now
        self.rounds.clear()  # ... nor runs rounds
        if self._watch_conn is not None:
            self._watch_conn.close()
        log.info("agent stopped")


def quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # A line per job run or request (50 MiB a day); skipped runs while a long round retries are expected.
    for noisy, level in (("apscheduler", logging.ERROR), ("httpx", logging.WARNING), ("httpcore", logging.WARNING)):
        logging.getLogger(noisy).setLevel(level)


def _now() -> object:
    import datetime as dt

    return dt.datetime.now(dt.UTC)

