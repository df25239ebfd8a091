"""`pulse verify`: prove that this device holds exactly what the server holds, day by day (docs/verify.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pulse_cli.commands.options import JsonOption, open_device, print_json
from pulse_core.errors import UsageError

if TYPE_CHECKING:
    from pulse_cli.agent.verify import VerifyReport

DRIFT_EXIT = 1  # days differ and were not (or could not be) repaired


def verify(
    ctx: typer.Context,
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="First day (default: the first).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day (default: the last).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Fetch the days that differ again, then check again.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Compare this device's copy of your entries with the server's, by checksums: every value with its
    stamp and source, deleted days too. Changes not yet pushed are not compared (they are not drift).
    One request when everything matches; each day that differs is named. Exit 0 when the device matches
    the server (after --repair: matches again), 1 when days differ, 3 offline.

    \b
    Examples:
      pulse verify
      pulse verify --from 2026-01-01 --repair
      pulse verify --json
    """
    from pulse_cli.agent.verify import describe, run_verify
    from pulse_core.values import parse_date

    device = open_device(ctx)
    first = parse_date(start, device.today, "from", reading=True) if start else None
    last = parse_date(end, device.today, "to", reading=True) if end else None
    if first and last and first > last:
        raise UsageError("from", first.isoformat(), f"a day up to {last.isoformat()}",
                         f"from: {first.isoformat()} is after --to {last.isoformat()} (allowed a day up to"
                         f" {last.isoformat()})")
    report = run_verify(device, first, last, repair)
    if as_json:
        print_json(report.as_json())
    else:
        for diff in report.differences:
            typer.echo(describe(diff, report.coach))
        typer.echo(_summary(report))
    if not report.clean:
        raise typer.Exit(DRIFT_EXIT)


def _summary(report: VerifyReport) -> str:
    from pulse_cli.sync_text import plural

    cost = f"({plural(report.requests, 'request')}, {report.bytes_received:,} bytes received)"
    if not report.differences:
        return (f"this device matches the server: {plural(report.days_checked, 'day')} in"
                f" {plural(report.months, 'month')} {cost}")
    if not report.repaired:
        return (f"{plural(len(report.differences), 'day')} differ from the server {cost};"
                " pulse verify --repair fetches them again")
    if report.remaining:
        return (f"{plural(len(report.remaining), 'day')} still differ from the server after fetching them again"
                f" {cost}")
    return f"repaired {plural(len(report.differences), 'day')}; checked again: this device matches the server {cost}"


def register(app: typer.Typer) -> None:
    app.command()(verify)
