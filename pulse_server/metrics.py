"""Prometheus metrics: request latency by route, mutations by outcome, breaker state, pool use, the
replication reader (state, lag, rebuilds) and maintenance (runs, rows removed, table sizes).

A server of several processes (`--workers N`, or the reader in a process of its own) shares them through
prometheus_client's multiprocess mode (`serve` sets PROMETHEUS_MULTIPROC_DIR before any process starts,
`metrics_folder`): whichever worker answers `/metrics` reports every process's counters summed, and each
gauge as its `multiprocess_mode` says: the latest maintenance of any worker, each process's reader state under a
`pid` label (a process that is gone, even one killed outright, leaves at the next scrape), the leading
reader's lag (the reader process reports its own), and the figures read as the
scrape is answered (readiness, the slot's lag, the breaker and the pool) as the answering worker reads
them. A single process keeps them in memory, as before.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pulse_server.metrics_folder import forget_the_ended, shared

# pulse_replication_reader_state's states ("off": this process runs no reader)
READER_STATES = ("starting", "standby", "rebuilding", "following", "failing", "stopped", "off")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "pulse_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.mutations = Counter(
            "pulse_mutations_total", "Pushed mutations by outcome", ["status"], registry=self.registry
        )
        self.breaker_state = Gauge(
            "pulse_db_breaker_state", "Database circuit breaker of the answering process: 0 closed, 1 half-open,"
            " 2 open", registry=self.registry, multiprocess_mode="mostrecent",
        )
        self.replication_state = Gauge(
            "pulse_replication_reader_state", "This process's replication reader: 1 for its current state",
            ["state"], registry=self.registry, multiprocess_mode="liveall",
        )
        self.replication_ready = Gauge(
            "pulse_replication_ready", "1 when a reader follows the slot (shape clients may be told up-to-date)",
            registry=self.registry, multiprocess_mode="mostrecent",
        )
        self.replication_lag_seconds = Gauge(
            "pulse_replication_lag_seconds",
            "Age of the newest commit the leading reader logged in its last busy round (0 idle)",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.replication_rebuilds = Counter(
            "pulse_replication_rebuilds", "Shape log rebuilds (slot lost or missing, database restored or promoted)",
            registry=self.registry,
        )
        self.maintenance_runs = Counter(
            "pulse_maintenance_runs", "Maintenance runs by outcome (done, skipped: another instance ran it, failed)",
            ["outcome"], registry=self.registry,
        )
        self.maintenance_removed = Counter(
            "pulse_maintenance_removed_rows",
            "Rows maintenance removed: results (pruned), conflicts, tokens (expired), log_folded, log_trimmed",
            ["what"], registry=self.registry,
        )
        self.maintenance_last_success = Gauge(
            "pulse_maintenance_last_success_timestamp_seconds", "When the last maintenance run ended",
            registry=self.registry, multiprocess_mode="max",
        )
        self.maintenance_seconds = Gauge("pulse_maintenance_duration_seconds", "How long the last run took",
                                         registry=self.registry, multiprocess_mode="mostrecent")
        self.sync_table_bytes = Gauge(
            "pulse_sync_table_bytes", "Size of each table the sync keeps, after the last maintenance run",
            ["table"], registry=self.registry, multiprocess_mode="mostrecent",
        )
        self.pool_in_use = Gauge("pulse_db_pool_in_use", "Connections checked out of the answering process's pool",
                                 registry=self.registry, multiprocess_mode="mostrecent")
        self.pool_size = Gauge("pulse_db_pool_size", "Size of the answering process's pool", registry=self.registry,
                               multiprocess_mode="mostrecent")
        self.replication_lag = Gauge(
            "pulse_replication_lag_bytes", "WAL bytes not yet acknowledged by the shape log's replication slot",
            registry=self.registry, multiprocess_mode="mostrecent",
        )

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's metrics, or every process's when they are shared."""
        if not shared():
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        forget_the_ended()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
