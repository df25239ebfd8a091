"""Throwaway Postgres databases for the tests: created, migrated, and dropped with their replication slots."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from pulse_server.db.migrate import migrate

# The cluster the tests use: libpq's own variables, so psql and .ci/postgres agree with the tests.
PG_HOST = os.environ.get("PGHOST") or "127.0.0.1"
PG_PORT = int(os.environ.get("PGPORT") or 5432)
PG_USER = os.environ.get("PGUSER") or "postgres"


def url_of(name: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


ADMIN_URL = url_of("postgres")


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A new database `<prefix>_<random>` migrated to head; its slots and itself dropped at the end."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(url_of(name))
        yield url_of(name)
    finally:
        drop_database(name)


def drop_database(name: str, timeout_s: float = 10.0) -> None:
    """Slots are cluster-wide and block DROP DATABASE: end their readers, drop them, then the database."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        deadline = time.monotonic() + timeout_s
        while True:
            admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                          " WHERE database = %s AND active_pid IS NOT NULL", (name,))
            try:
                admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                              " WHERE database = %s", (name,))
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
