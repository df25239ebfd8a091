"""Moving data in and out: `pulse import fitbit|welltory|apple-health` and `pulse export`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from pulse_cli.bootstrap import Device
from pulse_cli.commands.options import FromOption, JsonOption, ToOption, open_device, print_json
from pulse_cli.exits import Interrupted
from pulse_cli.store import meta
from pulse_core import queries
from pulse_core.errors import UsageError
from pulse_core.usecases import DayRecord, ImportSummary, import_days

import_app = typer.Typer(
    help="Import days from a tracker's export, in one transaction (Ctrl-C keeps nothing of it, exit 130)."
    " Re-importing changes nothing and values you set by hand are kept. Days you deleted are skipped, unless"
    " --restore-deleted.\n\n\b\nExamples:\n"
    "  pulse import fitbit tests/data/fitbit --source-user 1503960366\n"
    "  pulse import welltory tests/data/welltory --source-user 6be5033971\n"
    "  pulse import apple-health ~/Downloads/export.zip",
    no_args_is_help=True,
)

Progress = Callable[[int, int], None]
SourceUser = Annotated[str, typer.Option("--source-user", metavar="ID", help="Whose rows to import.")]
RestoreOption = Annotated[
    bool,
    typer.Option("--restore-deleted", help="Fill days you deleted and fields you cleared with the imported values"
                 " (they then count as set by hand); else they are left empty."),
]
NOTHING_READ = "the files held rows for that user, but none with a value pulse reads"


def _run_import(
    ctx: typer.Context,
    source: str,
    read: Callable[[Progress | None], Iterator[DayRecord]],
    as_json: bool,
    restore_deleted: bool,
    why_nothing: Callable[[], str] = lambda: NOTHING_READ,
) -> None:
    device = open_device(ctx)
    from pulse_cli import render

    newest = _newest_change(device)
    try:
        with render.import_progress(enabled=not as_json) as progress:
            summary: ImportSummary = import_days(
                device.uow(), device.user, read(progress), source, device.today, restore_deleted=restore_deleted
            )
    except KeyboardInterrupt:
        raise _interrupted(device, newest) from None
    if as_json:
        print_json(summary.as_json())
        return
    render.import_summary(summary)
    if summary.read == 0:
        render.import_hint(why_nothing())


def _newest_change(device: Device) -> int:
    """The newest change queued on this device: every change an import writes queues one (pulse_cli/store/uow.py)."""
    row = device.conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
    return int(row[0])


def _interrupted(device: Device, newest: int) -> Interrupted:
    """What Ctrl-C left: an import reads the whole file, then writes every day in one transaction, which
    Ctrl-C rolls back; only once the commit returned is anything kept."""
    if _newest_change(device) == newest:
        return Interrupted("interrupted: nothing of this import was kept (it is written all at once, at the end)")
    return Interrupted("interrupted after the import was saved: pulse history shows it")


@import_app.command("fitbit")
def import_fitbit(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder with dailyActivity_merged.csv etc.")],
    source_user: SourceUser,
    restore_deleted: RestoreOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import a Fitbit (Fitabase) export: steps, sleep, weight.

    \b
    Examples:
      pulse import fitbit tests/data/fitbit --source-user 1503960366
      pulse import fitbit tests/data/fitbit --source-user 1503960366 \\
          --restore-deleted
    """
    from pulse_core.importers.fitbit import read_fitbit

    _run_import(ctx, "fitbit", lambda p: read_fitbit(folder, source_user, p), as_json, restore_deleted)


@import_app.command("welltory")
def import_welltory(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder with hrv_measurements*.csv etc.")],
    source_user: Annotated[str, typer.Option("--source-user", metavar="CODE", help="Whose rows to import.")],
    restore_deleted: RestoreOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import Welltory data: morning HRV (RMSSD), sleep and steps.

    \b
    Examples:
      pulse import welltory tests/data/welltory --source-user 6be5033971
    """
    from pulse_core.importers.welltory import read_welltory

    _run_import(ctx, "welltory", lambda p: read_welltory(folder, source_user, p), as_json, restore_deleted)


@import_app.command("apple-health")
def import_apple_health(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="export.xml or export.zip from the Health app.")],
    restore_deleted: RestoreOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import an Apple Health export: steps, sleep, weight, HRV. Read streaming, with progress by bytes read
    on a terminal; steps are de-duplicated across devices. When no day comes of the file, says what it
    held and why nothing counted.

    \b
    Examples:
      pulse import apple-health ~/Downloads/export.zip
      pulse import apple-health tests/data/apple_health/tdda_export6s3sample.xml
    """
    from collections import Counter

    from pulse_core.importers.apple_health import describe_held, read_apple_health

    held: Counter[str] = Counter()
    _run_import(ctx, "apple-health", lambda p: read_apple_health(file, p, held), as_json, restore_deleted,
                lambda: describe_held(held))


def export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="csv|json|fhir", show_default=False,
                                     help="Output format (default csv).")] = "csv",
    start: FromOption = None,
    end: ToOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout.")
    ] = None,
    all_days: Annotated[bool, typer.Option("--all", help="Every day logged, ignoring --from/--to.")] = False,
) -> None:
    """Export entries as CSV (one row per day), JSON (the documented entry schema) or FHIR (an R4 Bundle of
    Observations with LOINC codes and UCUM units, for a clinician's system; docs/fhir.md).

    \b
    Examples:
      pulse export --format csv -o pulse.csv
      pulse export --format json --from 2026-01-01
      pulse export --format fhir --all -o pulse-fhir.json
    """
    if fmt not in ("csv", "json", "fhir"):
        raise UsageError("format", fmt, "csv, json or fhir", f"format: {fmt!r} is not one of csv, json or fhir")
    device = open_device(ctx)
    if all_days:
        rows = device.entries.list(device.user)
    else:
        first, last = queries.date_range(start, end, device.today)
        rows = device.entries.list(device.user, first, last)
    from pulse_cli.export import write_export
    from pulse_cli.store.connection import read_meta

    username = read_meta(device.conn, meta.ACCOUNT_USERNAME) or "me"  # who a FHIR export is of
    server = read_meta(device.conn, meta.ACCOUNT_SERVER)
    if output is None:
        write_export(rows, fmt, sys.stdout, username, server)
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as handle:
            write_export(rows, fmt, handle, username, server)
    except OSError as exc:
        raise UsageError("output", str(output), "a writable file path", f"output: cannot write {output}: "
                         f"{exc.strerror} (allowed a writable file path)") from exc
    from pulse_cli.sync_text import plural

    typer.echo(f"exported {plural(len(rows), 'day')} to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.command()(export)
