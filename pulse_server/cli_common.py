"""What the `pulse-server` commands share: the one place configuration is read, the database option, a
session on a migrated database, passwords, and usage lines as POSIX writes them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperCommand

from pulse_server.settings import Settings

if TYPE_CHECKING:
    from sqlmodel import Session
    from typer._click import Context

    from pulse_server.db.database import Database
    from pulse_server.db.models import User

DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", envvar="PULSE_DATABASE_URL", metavar="URL", show_envvar=False,
    help="postgresql:// URL (default $PULSE_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/pulse).")]


def bootstrap(database_url: str | None = None, **overrides: object) -> Settings:
    """The server process's one place where configuration is read."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def database(database_url: str | None) -> Iterator[Database]:
    """The database, once it is known to be migrated (else one line: run pulse-server migrate first)."""
    from pulse_server.db.database import Database
    from pulse_server.db.migrate import require_migrated

    settings = bootstrap(database_url)
    require_migrated(settings.database_url)
    db = Database(settings)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def session(database_url: str | None) -> Iterator[Session]:
    """An ORM session on the migrated database."""
    with database(database_url) as db, db.session() as opened:
        yield opened


def password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def existing(user: User | None, name: str) -> User:
    from pulse_server.errors import ApiError

    if user is None:
        raise ApiError(404, "not_found", f"user: no user named {name}", field="user", value=name)
    return user


def plural(count: int, noun: str, many: str | None = None) -> str:
    return f"{count} {noun if count == 1 else many or noun + 's'}"


class PlainUsage(TyperCommand):
    """Usage as POSIX writes it: a required argument bare (`pulse-server grant COACH ATHLETE`), not `{COACH}`."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def check_port_free(host: str, port: int) -> None:
    """One line before anything starts when HOST:PORT cannot be listened on (uvicorn would start the app,
    the replication reader with it, then fail to bind and exit 3)."""
    import errno
    import socket

    from pulse_core.errors import PulseError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
            hint = ": choose another with --port" if exc.errno == errno.EADDRINUSE else ""
            raise PulseError(f"cannot listen on {host}:{port}: {why}{hint}") from None
