"""Server configuration, read from the environment (`PULSE_*`) by pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync.hlc import SKEW_LIMIT_MS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/pulse"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # The addresses of the reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (uvicorn's forwarded_allow_ips: "127.0.0.1", "10.0.0.5,10.0.0.6", a network "10.0.0.0/24").
    # Empty (the default): no proxy is trusted and a request's address is its socket's.
    forwarded_allow_ips: str = ""
    pool_size: int = Field(default=10, ge=1, le=200)
    pool_timeout_s: float = 5.0
    statement_timeout_ms: int = 15_000
    token_ttl_days: int = 30
    max_batch: int = 500
    max_body_bytes: int = 1_048_576
    # Sign-in throttling (docs/api.md): failed attempts free per (username, address) and per address, then
    # a wait of login_first_delay_s doubling with each failure up to login_max_delay_s; counts forgotten
    # login_forget_s after their last failure. Kept in Postgres, shared by every worker and instance.
    login_free_failures: int = Field(default=5, ge=0)
    login_address_free_failures: int = Field(default=30, ge=0)
    login_first_delay_s: float = Field(default=1.0, gt=0)
    login_max_delay_s: float = Field(default=900.0, gt=0)
    login_forget_s: float = Field(default=86_400.0, gt=0)
    breaker_failures: int = 5
    breaker_reset_s: float = 5.0
    clock_skew_limit_ms: int = SKEW_LIMIT_MS
    # Pushes doing their database work at once (on threads of their own, at most pool_size), and how many
    # more may wait for a turn before the answer is 503 with Retry-After (load shedding).
    push_concurrency: int = Field(default=4, ge=1, le=200)
    push_queue_limit: int = Field(default=256, ge=0)
    log_level: str = "info"
    # Run the replication reader in this process (one leader among all instances) and the shape
    # log watcher that wakes live requests. Both need Postgres with wal_level=logical.
    replication_reader: bool = True
    # With replication_reader, `serve` runs the reader in one process of its own beside its workers, which
    # then run none (docs/deploy.md): its decoding and writes never hold a worker's interpreter lock.
    replication_reader_process: bool = False
    # How long an idle reader waits on its stream before it looks at its stop flag again (a commit wakes
    # it at once; this bounds only how late a shutdown or a slot check may come).
    replication_idle_wait_s: float = Field(default=0.5, gt=0, le=60)
    shape_watcher: bool = True
    # Serve the web app (/app/) from this folder instead of the one in the package (docs/pwa.md).
    web_root: Path | None = None
    # Bounded storage (pulse-server maintain, and the server every maintenance_interval_s; 0: never).
    # Exactly-once results kept this long (their seqs are kept forever in client_high_water), the conflict
    # audit this long, shape log changes this long (a client further behind refetches its snapshot), and
    # the newest shape_log_tail_changes changes never compacted.
    result_retention_days: float = Field(default=30.0, ge=0)
    conflict_retention_days: float = Field(default=180.0, ge=0)
    shape_log_retention_days: float = Field(default=30.0, ge=0)
    shape_log_tail_changes: int = Field(default=10_000, ge=0)
    maintenance_interval_s: float = Field(default=3600.0, ge=0)
    # On SIGTERM, held long polls and SSE streams end at once; other requests get this long to finish.
    shutdown_grace_s: float = Field(default=3.0, ge=0)


def psycopg_url(url: str) -> str:
    """SQLAlchemy needs `postgresql+psycopg://`; people and psycopg itself write `postgresql://`, or a
    libpq key=value string. Several hosts (`host=a,b` or `postgresql://a:1,b:2/db`, with
    `target_session_attrs=read-write` to follow a failover) become SQLAlchemy's repeated `host=` form."""
    if url.startswith("postgresql+psycopg://"):
        return url
    params = conninfo_to_dict(url)
    hosts = str(params.pop("host", "")).split(",") if params.get("host") else []
    ports = str(params.pop("port", "")).split(",") if params.get("port") else []
    if len(hosts) <= 1 and "://" in url:  # one host: the URL as written, with SQLAlchemy's scheme
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url
    if len(ports) == 1:
        ports = ports * len(hosts)
    user = quote(str(params.pop("user", "")), safe="")
    password = params.pop("password", None)
    credentials = f"{user}:{quote(str(password), safe='')}@" if password is not None else (f"{user}@" if user else "")
    database = quote(str(params.pop("dbname", "")), safe="")
    query = [("host", f"{h}:{ports[i]}" if i < len(ports) and ports[i] else h) for i, h in enumerate(hosts)]
    query += [(k, str(v)) for k, v in params.items()]
    return f"postgresql+psycopg://{credentials}/{database}" + (f"?{urlencode(query)}" if query else "")


def libpq_url(url: str) -> str:
    """The plain form psycopg's `connect()` takes (a `postgresql://` URL or a key=value string)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
