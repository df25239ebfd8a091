"""Moving data in and out: `pulse import fitbit|welltory|apple-health` and `pulse export`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from pulse_cli.commands.options import FromOption, JsonOption, ToOption, open_device, print_json
from pulse_cli.store import meta
from pulse_core import queries
from pulse_core.errors import UsageError
from pulse_core.usecases import DayRecord, ImportSummary, import_days

import_app = typer.Typer(
    help="Import days from a tracker's export. Re-importing changes nothing; values you set by hand are kept;"
    " days you deleted are skipped unless --restore-deleted.",
    no_args_is_help=True,
)

Progress = Callable[[int, int], None]
SourceUser = Annotated[str, typer.Option("--source-user", metavar="ID", help="Whose rows to import.")]
RestoreOption = Annotated[
    bool,
    typer.Option("--restore-deleted", help="Fill days you deleted and fields you cleared with the imported values"
                 " (they then count as set by hand); else they are left empty."),
]


def _run_import(
    ctx: typer.Context,
    source: str,
    read: Callable[[Progress | None], Iterator[DayRecord]],
    as_json: bool,
    restore_deleted: bool,
) -> None:
    device = open_device(ctx)
    from pulse_cli import render

    with render.import_progress(enabled=not as_json) as progress:
        summary: ImportSummary = import_days(
            device.uow(), device.user, read(progress), source, device.today, restore_deleted=restore_deleted
        )
    if as_json:
        print_json(summary.as_json())
    else:
        render.import_summary(summary)


@import_app.command("fitbit")
def import_fitbit(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder with dailyActivity_merged.csv etc.")],
    source_user: SourceUser,
    restore_deleted: RestoreOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import a Fitbit (Fitabase) export: steps, minutes asleep, weight.

    Examples:
      pulse import fitbit tests/data/fitbit --source-user 1503960366
      pulse import fitbit tests/data/fitbit --source-user 1503960366 --restore-deleted
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

    Examples:
      pulse import welltory tests/data/welltory --source-user 8d7f2c6e8d
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
    """Import an Apple Health export, streaming: steps (de-duplicated across devices), sleep, weight, HRV.

    Examples:
      pulse import apple-health ~/Downloads/export.zip
    """
    from pulse_core.importers.apple_health import read_apple_health

    _run_import(ctx, "apple-health", lambda p: read_apple_health(file, p), as_json, restore_deleted)


def export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="csv|json|fhir", help="Output format.")] = "csv",
    start: FromOption = None,
    end: ToOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout.")
    ] = None,
    all_days: Annotated[bool, typer.Option("--all", help="Every day logged, ignoring --from/--to.")] = False,
) -> None:
    """Export entries as CSV (one row per day), JSON (the documented entry schema) or FHIR (an R4 Bundle of
    Observations with LOINC codes and UCUM units, for a clinician's system; docs/fhir.md).

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
    typer.echo(f"exported {len(rows)} days to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.command()(export)
