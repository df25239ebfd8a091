"""`pulse-server`: migrate, serve, maintain, seed the demo; users, tokens and grants in `cli_accounts`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pulse_server import cli_accounts
from pulse_server.cli_common import DatabaseOption, PlainUsage, bootstrap, check_port_free, password, plural

app = typer.Typer(name="pulse-server", help="The NGX Pulse sync server.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"pulse-server {version('ngx-pulse')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """The NGX Pulse sync server."""


@app.command(cls=PlainUsage)
def migrate(database_url: DatabaseOption = None) -> None:
    """Migrate the database to the latest schema (safe to re-run).

    \b
    Examples:
      pulse-server migrate
      pulse-server migrate --database-url postgresql://postgres@127.0.0.1/pulse
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


@app.command(cls=PlainUsage)
def doctor(
    database_url: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of lines.")] = False,
) -> None:
    """Check Postgres for the shape API. Looks at wal_level, max_slot_wal_keep_size and this project's
    replication slots (inactive ones and the WAL they retain). Exit 1 when the server cannot work as
    configured.

    \b
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


@app.command(cls=PlainUsage)
def maintain(
    database_url: DatabaseOption = None,
    result_retention_days: Annotated[float | None, typer.Option(metavar="DAYS", help=(
        "Keep exactly-once results this long (default $PULSE_RESULT_RETENTION_DAYS, else 30)."))] = None,
    conflict_retention_days: Annotated[float | None, typer.Option(metavar="DAYS", help=(
        "Keep the conflict audit this long (default $PULSE_CONFLICT_RETENTION_DAYS, else 180)."))] = None,
    shape_log_retention_days: Annotated[float | None, typer.Option(metavar="DAYS", help=(
        "Keep shape log changes this long (default $PULSE_SHAPE_LOG_RETENTION_DAYS, else 30)."))] = None,
    wait: Annotated[float, typer.Option(metavar="SECONDS", show_default=False, help=(
        "Wait this long while another instance maintains (default 60)."))] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as one JSON document.")] = False,
) -> None:
    """Prune and compact now what the sync keeps. That is exactly-once results (their seqs stay as
    high-water marks), the conflict audit and the shape log; the server also does it every
    PULSE_MAINTENANCE_INTERVAL_S.

    \b
    Examples:
      pulse-server maintain
      pulse-server maintain --result-retention-days 7 --json
    """
    import json

    from pulse_server import maintenance
    from pulse_server.api.app import retention_of
    from pulse_server.db.migrate import require_migrated
    from pulse_server.errors import ApiError
    from pulse_server.settings import libpq_url

    for name, days in (("result-retention-days", result_retention_days), ("wait", wait),
                       ("conflict-retention-days", conflict_retention_days),
                       ("shape-log-retention-days", shape_log_retention_days)):
        if days is not None and days < 0:
            raise ApiError(422, "invalid_value", f"{name}: {days:g} is out of range (allowed 0 or more)")
    settings = bootstrap(database_url, result_retention_days=result_retention_days,
                         conflict_retention_days=conflict_retention_days,
                         shape_log_retention_days=shape_log_retention_days)
    require_migrated(settings.database_url)
    try:
        report = maintenance.run(libpq_url(settings.database_url), retention_of(settings), wait_s=wait)
    except maintenance.MaintenanceBusy as exc:
        raise ApiError(503, "busy", f"{exc} (waited {wait:g} s)") from exc
    if as_json:
        typer.echo(json.dumps(report.fields()))
        return
    typer.echo(f"results pruned: {report.results_pruned} (high-water marks moved: {report.high_water_clients});"
               f" conflicts pruned: {report.conflicts_pruned}; expired sign-ins removed: {report.tokens_pruned};"
               f" shape log: {plural(report.log_folded, 'update')}"
               f" folded, {plural(report.log_trimmed, 'change')} trimmed (horizon {report.horizon[0]}_"
               f"{report.horizon[1]}); snapshot messages stored: {report.messages_filled}; {report.seconds:.2f} s")
    typer.echo("sizes: " + ", ".join(f"{t} {b / 1024:.0f} kB" for t, b in report.table_bytes.items()))


@app.command(cls=PlainUsage)
def serve(
    database_url: DatabaseOption = None,
    host: Annotated[str | None, typer.Option(metavar="HOST", help="Address to listen on (default 127.0.0.1).")]
    = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(metavar="N", help="Worker processes (default 1).")] = None,
    forwarded_allow_ips: Annotated[str | None, typer.Option(metavar="ADDRESSES", help=(
        "Proxies whose X-Forwarded-For is believed, comma-separated (default $PULSE_FORWARDED_ALLOW_IPS:"
        " none)."))] = None,
) -> None:
    """Serve the HTTP API and the web app (at /app/). Refused while the database is not migrated. Prints
    "listening on http://HOST:PORT" once the port is open. SIGTERM ends held long polls and SSE streams
    at once (clients reconnect), gives other requests PULSE_SHUTDOWN_GRACE_S (3) to finish, then stops.

    \b
    Examples:
      pulse-server serve --port 8000
      pulse-server serve --host 0.0.0.0 --workers 2
      pulse-server serve --port 8001 --forwarded-allow-ips 127.0.0.1
    """
    import logging
    import os

    import uvicorn

    from pulse_server import logs
    from pulse_server.db.migrate import require_migrated
    from pulse_server.metrics_folder import share_between_processes, unshare

    settings = bootstrap(database_url, host=host, port=port, workers=workers, forwarded_allow_ips=forwarded_allow_ips)
    require_migrated(settings.database_url)
    check_port_free(settings.host, settings.port)
    os.environ["PULSE_DATABASE_URL"] = settings.database_url  # worker processes read it again
    # Several processes: one set of metrics, whichever worker answers /metrics (before any of them starts)
    several = settings.workers > 1 or (settings.replication_reader and settings.replication_reader_process)
    logs.configure(settings.log_level)
    try:
        metrics_folder = share_between_processes() if several else None
    except OSError as exc:  # no temporary folder to write in: served all the same, and said
        metrics_folder = None
        logging.getLogger("pulse.server").warning(
            "metrics cannot be shared between the server's processes (%s): each worker answers /metrics with its"
            " own; set PROMETHEUS_MULTIPROC_DIR to a writable folder", exc)
    logs.announce_listening()
    reader = None
    if settings.replication_reader and settings.replication_reader_process:
        from pulse_server.replication.process import ReaderProcess

        os.environ["PULSE_REPLICATION_READER"] = "false"  # the workers run none: one process of its own does
        reader = ReaderProcess(settings)
        reader.start()
    trusted = [a.strip() for a in settings.forwarded_allow_ips.split(",") if a.strip()]
    # Only a trusted proxy's X-Forwarded-For is believed (uvicorn takes the right-most address not of a
    # trusted proxy); with none trusted, the headers are ignored and the socket's address is the client's.
    try:
        uvicorn.run("pulse_server.main:app_from_environment", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_config=None, access_log=False,
                    proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
                    timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)))
    finally:
        if reader is not None:
            reader.stop()
        unshare(metrics_folder)


@app.command(cls=PlainUsage)
def replicate(database_url: DatabaseOption = None) -> None:
    """Run only the replication reader, until SIGTERM or Ctrl-C. It streams the WAL into the shape log, for
    instances that only serve (PULSE_REPLICATION_READER=false). Any number may run; one leads at a time.

    \b
    Examples:
      pulse-server replicate
      PULSE_REPLICATION_READER=false pulse-server serve   # elsewhere: serving
    """
    from pulse_server.db.migrate import require_migrated
    from pulse_server.replication.process import run_reader

    settings = bootstrap(database_url)
    require_migrated(settings.database_url)
    run_reader(settings.database_url, settings.log_level, settings.replication_idle_wait_s)


@app.command("seed-demo", cls=PlainUsage)
def seed_demo_cmd(
    coach: Annotated[str, typer.Option("--coach", metavar="NAME", help="The coach the athletes grant.")] = "coach",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read a new coach's password from stdin.")]
    = False,
    data: Annotated[str | None, typer.Option("--data", metavar="DIR", help="Sample data (default tests/data).")]
    = None,
    database_url: DatabaseOption = None,
) -> None:
    """Seed the sample athletes of tests/data for a coach. That is the 33 Fitbit and 185 Welltory users,
    who grant COACH access, written through the server's own write path (re-run: no change).

    \b
    Examples:
      pulse-server seed-demo --coach coach
      echo 's3cret-pass' | pulse-server seed-demo --coach kim --password-stdin
    """
    from pathlib import Path

    from pulse_server.db.database import Database
    from pulse_server.db.migrate import require_migrated
    from pulse_server.demo import DATA_DIR, seed_demo

    settings = bootstrap(database_url)
    require_migrated(settings.database_url)
    db = Database(settings)
    try:
        done = seed_demo(db, coach, lambda: password(password_stdin), Path(data) if data else DATA_DIR,
                         skew_limit_ms=settings.clock_skew_limit_ms)
    finally:
        db.dispose()
    skipped = sum(done.skipped.values())
    typer.echo(f"coach {coach}{' (new)' if done.coach_created else ''}: {plural(done.athletes, 'athlete')}"
               f" ({done.athletes_created} new, {plural(done.grants_added, 'new grant')}); days: {done.days_written}"
               " written,"
               f" {done.days_unchanged} unchanged, {done.days_duplicate} duplicate, {skipped} skipped")


cli_accounts.register(app)


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
