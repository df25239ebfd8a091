"""Running the alembic migrations to head (safe to re-run)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def known_revisions() -> list[str]:
    """The migrations this code has (pulse_server/migrations/versions), newest first."""
    from alembic.script import ScriptDirectory

    return [script.revision for script in ScriptDirectory.from_config(alembic_config("")).walk_revisions()]


def current_revision(database_url: str) -> str | None:
    """The migration the database is at; None when it was never migrated."""
    import psycopg

    from pulse_server.settings import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def require_migrated(database_url: str) -> None:
    """One line, before anything uses the database, when it is behind this code's schema (without it a
    server would say it is up, refuse every sign-in and log a missing table every second). A database
    ahead of the code, at a migration it does not know, is served: during a rolling upgrade old
    instances serve on the new schema (docs/deploy.md)."""
    from psycopg.conninfo import conninfo_to_dict

    from pulse_server.errors import ApiError
    from pulse_server.settings import libpq_url

    at, known = current_revision(database_url), known_revisions()
    if at is not None and (at == known[0] or at not in known):
        return
    name = conninfo_to_dict(libpq_url(database_url)).get("dbname", "")
    where = "is not migrated" if at is None else f"is at migration {at}, this server needs {known[0]}"
    raise ApiError(503, "unavailable", f"database {name} {where}: run pulse-server migrate first")
