"""The replication reader in a process of its own (`PULSE_REPLICATION_READER_PROCESS`, docs/deploy.md).

`pulse-server serve` then starts one reader process beside its workers, which run no reader: the
reader's decoding and shape-log writes never hold a worker's interpreter lock while pushes wait for
it, and a worker's pushes never delay the reader. `pulse-server replicate` runs the same reader alone,
for deployments whose serving instances run none (`PULSE_REPLICATION_READER=false`). Either way the
leader lock still lets only one reader follow the slot; the workers learn its state from the slot's
status, as a worker whose reader does not lead always has (`replication.health`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from types import FrameType

from pulse_server import logs, metrics, metrics_folder
from pulse_server.replication.reader import ReplicationReader
from pulse_server.settings import Settings, libpq_url

log = logging.getLogger("pulse.replication")


def run_reader(database_url: str, log_level: str, wait_s: float, parent: int | None = None) -> None:
    """The reader in the foreground until SIGTERM or SIGINT, or, given the `parent` process id, until that
    process is gone (a server ended by its signal, or killed, never runs its own clean-up)."""
    logs.configure(log_level)
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    if parent is not None:
        threading.Thread(target=_stop_when_orphaned, args=(parent, stop, wait_s), daemon=True).start()
    if not metrics_folder.shared():  # `pulse-server replicate` alone: no /metrics to report to
        ReplicationReader(libpq_url(database_url), wait_s=wait_s).run(stop)
        return
    measured = metrics.Metrics()  # beside `serve`'s workers: its state, lag and rebuilds in their /metrics
    reader = ReplicationReader(libpq_url(database_url), wait_s=wait_s,
                               on_rebuild=lambda _: measured.replication_rebuilds.inc())
    threading.Thread(target=_report, args=(reader, measured, stop), daemon=True).start()
    reader.run(stop)  # once this process is gone, its state leaves /metrics at the next scrape


def _report(reader: ReplicationReader, measured: metrics.Metrics, stop: threading.Event) -> None:
    """The reader's state and lag into the shared metrics, every second."""
    while True:
        for name in metrics.READER_STATES:
            measured.replication_state.labels(name).set(1 if name == reader.state else 0)
        measured.replication_lag_seconds.set(reader.lag_s if reader.is_leader else 0)
        if stop.wait(1.0):
            return


def _stop_when_orphaned(parent: int, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        if os.getppid() != parent:
            stop.set()


class ReaderProcess:
    """One reader process started beside the server's workers, started again if it fails (a non-zero exit),
    stopped with them."""

    restart_after_s = 1.0

    def __init__(self, settings: Settings) -> None:
        self.args = (settings.database_url, settings.log_level, settings.replication_idle_wait_s, os.getpid())
        self.context = multiprocessing.get_context("spawn")
        self.process: multiprocessing.process.BaseProcess | None = None
        self.stopping = threading.Event()
        self.watch: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self.watch = threading.Thread(target=self._watch, name="replication-process", daemon=True)
        self.watch.start()

    def _spawn(self) -> None:
        self.process = self.context.Process(target=run_reader, args=self.args, name="pulse-replication-reader")
        self.process.start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            assert self.process is not None
            self.process.join()
            if self.stopping.is_set() or self.process.exitcode == 0:
                return  # stopped by us, or by a signal to the whole group (the server is stopping too)
            log.warning("replication reader process exited; starting it again",
                        extra={"fields": {"exitcode": self.process.exitcode}})
            if self.stopping.wait(self.restart_after_s):
                return
            self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stopping.set()
        process = self.process
        if process is None or process.exitcode is not None:
            return
        process.terminate()  # SIGTERM: the reader stops at its next look at the flag (PULSE_REPLICATION_IDLE_WAIT_S)
        process.join(timeout_s)
        if process.exitcode is None:
            process.kill()
            process.join(5)
