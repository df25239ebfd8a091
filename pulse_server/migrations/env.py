"""Alembic environment: the URL comes from the caller's config (see pulse_server.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

from pulse_server.db import models  # noqa: F401  (registers the tables on the metadata)
from pulse_server.settings import psycopg_url

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = psycopg_url(config.get_main_option("sqlalchemy.url") or "")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # One migrator at a time, even when several server instances start together.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7041977)")
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `pulse-server migrate`")
run_migrations_online()
