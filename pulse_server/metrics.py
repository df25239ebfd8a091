"""Prometheus metrics: request latency by route, mutations by outcome, breaker state, pool use."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
            "pulse_db_breaker_state", "Database circuit breaker: 0 closed, 1 half-open, 2 open",
            registry=self.registry,
        )
        self.pool_in_use = Gauge("pulse_db_pool_in_use", "Connections checked out of the pool",
                                 registry=self.registry)
        self.pool_size = Gauge("pulse_db_pool_size", "Size of the connection pool", registry=self.registry)
        self.replication_lag = Gauge(
            "pulse_replication_lag_bytes", "WAL bytes not yet acknowledged by the shape log's replication slot",
            registry=self.registry,
        )
