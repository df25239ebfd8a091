"""`pulse-server`: migrate, serve, and manage users, tokens and grants."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pulse_server.settings import Settings

app = typer.Typer(name="pulse-server", help="The NGX Pulse sync server.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
token_app = typer.Typer(help="Issue and revoke bearer tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

DatabaseOption = Annotated[str | None, typer.Option("--database-url", envvar="PULSE_DATABASE_URL",
                                                    help="postgresql:// URL (default postgresql://postgres@127.0.0.1:5432/pulse).")]


def bootstrap(database_url: str | None = None, **overrides: object) -> Settings:
    """The server process's one place where configuration is read."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def migrate(database_url: DatabaseOption = None) -> None:
    """Migrate the database to the latest schema (safe to re-run).

    Examples:
      pulse-server migrate
      PULSE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/pulse pulse-server migrate
    """
    from pulse_server.db.migrate import migrate as run

    settings = bootstrap(database_url)
    run(settings.database_url)
    typer.echo("database at head")
    found = _examine(settings.database_url)
    for line in [f"problem: {p}" for p in found.problems] + [f"warning: {w}" for w in found.warnings]:
        typer.echo(line, err=True)


def _examine(database_url: str):  # type: ignore[no-untyped-def]
    import psycopg

    from pulse_server.replication.doctor import examine
    from pulse_server.settings import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=5) as conn:
        return examine(conn)


@app.command()
def doctor(
    database_url: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of lines.")] = False,
) -> None:
    """Check Postgres for the shape API: wal_level, max_slot_wal_keep_size, and this project's replication
    slots (inactive ones and the WAL they retain). Exit 1 when the server cannot work as configured.

    Examples:
      pulse-server doctor
      pulse-server doctor --json
    """
    import json

    from pulse_server.replication.doctor import report_lines

    found = _examine(bootstrap(database_url).database_url)
    if as_json:
        typer.echo(json.dumps(found.as_json()))
    else:
        for line in report_lines(found):
            typer.echo(line)
    if found.problems:
        raise typer.Exit(1)


@app.command()
def maintain(
    database_url: DatabaseOption = None,
    result_retention_days: Annotated[float | None, typer.Option(
        min=0, help="Keep exactly-once results this long (default PULSE_RESULT_RETENTION_DAYS, 30).")] = None,
    conflict_retention_days: Annotated[float | None, typer.Option(
        min=0, help="Keep the conflict audit this long (default PULSE_CONFLICT_RETENTION_DAYS, 180).")] = None,
    shape_log_retention_days: Annotated[float | None, typer.Option(
        min=0, help="Keep shape log changes this long (default PULSE_SHAPE_LOG_RETENTION_DAYS, 30).")] = None,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait while another instance maintains.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as one JSON document.")] = False,
) -> None:
    """Prune and compact now what the sync keeps: exactly-once results (their seqs stay as high-water
    marks), the conflict audit, the shape log. The server also does it every PULSE_MAINTENANCE_INTERVAL_S.

    Examples:
      pulse-server maintain
      pulse-server maintain --result-retention-days 7 --json
    """
    import json

    from pulse_server import maintenance
    from pulse_server.api.app import retention_of
    from pulse_server.errors import ApiError
    from pulse_server.settings import libpq_url

    settings = bootstrap(database_url, result_retention_days=result_retention_days,
                         conflict_retention_days=conflict_retention_days,
                         shape_log_retention_days=shape_log_retention_days)
    try:
        report = maintenance.run(libpq_url(settings.database_url), retention_of(settings), wait_s=wait)
    except maintenance.MaintenanceBusy as exc:
        raise ApiError(503, "busy", f"{exc} (waited {wait:g} s)") from exc
    if as_json:
        typer.echo(json.dumps(report.fields()))
        return
    typer.echo(f"results pruned: {report.results_pruned} (high-water marks moved: {report.high_water_clients});"
               f" conflicts pruned: {report.conflicts_pruned}; shape log: {report.log_folded} updates folded,"
               f" {report.log_trimmed} changes trimmed (horizon {report.horizon[0]}_{report.horizon[1]});"
               f" {report.seconds:.2f} s")
    typer.echo("sizes: " + ", ".join(f"{t} {b / 1024:.0f} kB" for t, b in report.table_bytes.items()))


@app.command()
def serve(
    database_url: DatabaseOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        help="Proxies whose X-Forwarded-For is believed, comma-separated (default PULSE_FORWARDED_ALLOW_IPS:"
             " none).")] = None,
) -> None:
    """Serve the HTTP API; SIGTERM ends held long polls and SSE streams at once (clients reconnect),
    gives other requests PULSE_SHUTDOWN_GRACE_S (3) to finish, then stops.

    Examples:
      pulse-server serve --port 8000
      pulse-server serve --host 0.0.0.0 --workers 2
      pulse-server serve --port 8001 --forwarded-allow-ips 127.0.0.1   # behind nginx (deploy/)
    """
    import os

    import uvicorn

    from pulse_server import logs

    settings = bootstrap(database_url, host=host, port=port, workers=workers, forwarded_allow_ips=forwarded_allow_ips)
    os.environ["PULSE_DATABASE_URL"] = settings.database_url  # worker processes read it again
    logs.configure(settings.log_level)
    trusted = [a.strip() for a in settings.forwarded_allow_ips.split(",") if a.strip()]
    # Only a trusted proxy's X-Forwarded-For is believed (uvicorn takes the right-most address not of a
    # trusted proxy); with none trusted, the headers are ignored and the socket's address is the client's.
    uvicorn.run("pulse_server.main:app_from_environment", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_config=None, access_log=False,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)))


def _session(database_url: str | None):  # type: ignore[no-untyped-def]
    from pulse_server.db.database import Database

    return Database(bootstrap(database_url)).session()


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Username.")],
    coach: Annotated[bool, typer.Option("--coach", help="A coach account (reads granted athletes).")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user (prompted for a password unless --password-stdin).

    Examples:
      pulse-server user add ana
      echo 's3cret-pass' | pulse-server user add coach-kim --coach --password-stdin
    """
    from pulse_server.accounts import add_user

    with _session(database_url) as session:
        user = add_user(session, name, _password(password_stdin), coach)
    typer.echo(f"added {'coach' if user.is_coach else 'athlete'} {user.username}")


@token_app.command("issue")
def token_issue(name: Annotated[str, typer.Argument(help="Username.")], database_url: DatabaseOption = None) -> None:
    """Issue a bearer token for a user and print it (it is stored only as a hash).

    Examples:
      pulse-server token issue ana
    """
    from pulse_server.accounts import find_user, issue_token

    settings = bootstrap(database_url)
    with _session(database_url) as session:
        user = _existing(find_user(session, name), name)
        token, expires = issue_token(session, user, settings.token_ttl_days)
    typer.echo(token)
    typer.echo(f"expires {expires.isoformat()}", err=True)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="Username.")], database_url: DatabaseOption = None) -> None:
    """Revoke every token of a user.

    Examples:
      pulse-server token revoke ana
    """
    from pulse_server.accounts import find_user, revoke_tokens

    with _session(database_url) as session:
        count = revoke_tokens(session, _existing(find_user(session, name), name))
    typer.echo(f"revoked {count} tokens of {name}")


@app.command("grant")
def grant_cmd(coach: str, athlete: str, database_url: DatabaseOption = None) -> None:
    """Let COACH read ATHLETE's entries.

    Examples:
      pulse-server grant coach-kim ana
    """
    from pulse_server.accounts import find_user, grant

    with _session(database_url) as session:
        grant(session, _existing(find_user(session, athlete), athlete), coach)
    typer.echo(f"{coach} can read {athlete}")


@app.command("revoke")
def revoke_cmd(coach: str, athlete: str, database_url: DatabaseOption = None) -> None:
    """Take COACH's access to ATHLETE's entries away.

    Examples:
      pulse-server revoke coach-kim ana
    """
    from pulse_server.accounts import find_user, revoke_grant

    with _session(database_url) as session:
        done = revoke_grant(session, _existing(find_user(session, athlete), athlete), coach)
    typer.echo(f"{coach} can no longer read {athlete}" if done else f"{coach} had no access to {athlete}")


@app.command("erase")
def erase_cmd(
    user: Annotated[str, typer.Option("--user", metavar="NAME", help="Whose entries to erase.")],
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="First day erased (YYYY-MM-DD).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day erased (YYYY-MM-DD).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="What was erased, as one JSON document.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Erase a user's entries of a range of days (an open end with only --from or --to) from the server,
    with their conflict audit and exactly-once results; every device and coach replica holding them
    drops them at its next sync, and writes to those days made before now are refused. Without --from
    and --to: the whole account, whose tokens are also revoked and grants removed. Asks first unless --yes.

    Examples:
      pulse-server erase --user ana --from 2026-01-01 --to 2026-01-31
      pulse-server erase --user ana --yes
    """
    import datetime as dt
    import json
    import time

    from pulse_server import erasure
    from pulse_server.accounts import find_user
    from pulse_server.db.database import Database
    from sync.erasure import parse_range

    now_ms = int(time.time() * 1000)
    first, last = parse_range(start, end, dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date())
    whole = start is None and end is None
    db = Database(bootstrap(database_url))
    try:
        with db.session() as session:
            account = _existing(find_user(session, user), user)
        assert account.id is not None
        what = (f"the whole account {user}: every entry, and revoke its sign-ins and grants" if whole else
                f"the entries of {user} of {_days(first, last)}")
        if not yes and not typer.confirm(f"Erase {what}, on the server now and on every device at its next"
                                         " sync? This cannot be undone.", default=False):
            raise typer.Exit(1)
        done = db.run(lambda conn: erasure.erase(conn, account.id, user, first, last, now_ms, whole))
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(done.as_json()))
        return
    typer.echo(f"erased {user}'s entries of {done.erasure.describe()}: {done.entries} entries, {done.conflicts}"
               f" conflicts, {done.results} exactly-once results (erasure {done.erasure.id}); every device drops"
               " them at its next sync")
    if whole:
        typer.echo(f"revoked {done.tokens} tokens and removed {done.grants} grants of {user}")


def _days(first: object, last: object) -> str:
    if first is None:
        return f"every day up to {last}"
    if last is None:
        return f"every day from {first}"
    return f"{first} to {last}"


@app.command("seed-demo")
def seed_demo_cmd(
    coach: Annotated[str, typer.Option("--coach", metavar="NAME", help="The coach the athletes grant.")] = "coach",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read a new coach's password from stdin.")]
    = False,
    data: Annotated[str | None, typer.Option("--data", metavar="DIR", help="Sample data (default tests/data).")]
    = None,
    database_url: DatabaseOption = None,
) -> None:
    """Seed the 33 Fitbit and 185 Welltory sample users as athletes who granted COACH access (re-run: no change).

    Examples:
      pulse-server seed-demo --coach coach
      echo 's3cret-pass' | pulse-server seed-demo --coach coach-kim --password-stdin
    """
    from pathlib import Path

    from pulse_server.db.database import Database
    from pulse_server.demo import DATA_DIR, seed_demo

    settings = bootstrap(database_url)
    db = Database(settings)
    try:
        done = seed_demo(db, coach, lambda: _password(password_stdin), Path(data) if data else DATA_DIR,
                         skew_limit_ms=settings.clock_skew_limit_ms)
    finally:
        db.dispose()
    skipped = sum(done.skipped.values())
    typer.echo(f"coach {coach}{' (new)' if done.coach_created else ''}: {done.athletes} athletes"
               f" ({done.athletes_created} new, {done.grants_added} new grants); days: {done.days_written} written,"
               f" {done.days_unchanged} unchanged, {done.days_duplicate} duplicate, {skipped} skipped")


def _existing(user, name: str):  # type: ignore[no-untyped-def]
    from pulse_server.errors import ApiError

    if user is None:
        raise ApiError(404, "not_found", f"user: no user named {name}", field="user", value=name)
    return user


def run() -> None:
    """Console entry point: errors become one line and an exit code, never a traceback."""
    from pulse_core.errors import PulseError, ValidationError
    from pulse_server.errors import ApiError

    try:
        app()
    except ApiError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        sys.exit(2 if exc.status in (400, 409, 422) else 1)
    except ValidationError as exc:  # a value given on the command line
        sys.stderr.write(f"error: {exc.message}\n")
        sys.exit(2)
    except PulseError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        sys.exit(1)
    except Exception as exc:  # database down and the like: one line, not a traceback
        name = type(exc).__name__
        if name in ("OperationalError", "DatabaseUnavailable"):
            sys.stderr.write(f"error: database unavailable: {str(exc).splitlines()[0] if str(exc) else name}\n")
            sys.exit(1)
        raise
