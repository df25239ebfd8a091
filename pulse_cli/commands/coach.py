"""A coach's commands, over this device's copy of the athletes' entries (so they work offline):
`pulse coach athletes` and `pulse report`."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pulse_cli.commands.options import FromOption, JsonOption, open_device, print_json
from pulse_cli.store import meta
from pulse_core.errors import UsageError

if TYPE_CHECKING:
    from pulse_cli.bootstrap import Device
    from pulse_core.reports import Calendar

coach_app = typer.Typer(
    help="A coach's view of the athletes who granted access, from this device's copy (pulse sync to"
    " refresh). The report on them is pulse report.\n\n\b\nExamples:\n  pulse coach athletes\n"
    "  pulse coach athletes --to 2016-05-12 --json\n  pulse report --team --format html -o team.html",
    no_args_is_help=True,
)
FORMATS = "md|csv|json|html|pdf|fhir"
# A coach reads: any date will do, and each athlete's own today is the default (docs/reports.md).
ToOption = Annotated[str | None, typer.Option(
    "--to", metavar="DATE", help="Last day, YYYY-MM-DD, any date (default: each athlete's today, in their zone).")]


@coach_app.command("athletes")
def athletes(ctx: typer.Context, end: ToOption = None, as_json: JsonOption = False) -> None:
    """Each athlete's last entry and sync, days logged and open flags. Days logged are counted over the last
    7 and 28 days.

    "Last sync" is how long ago the athlete's newest change that this device has was made (its clock
    stamp). Each athlete is seen as of their own today, in their own zone (as their devices last pushed
    it; unknown, yours, marked *), or as of --to (any date) when that is earlier.

    \b
    Examples:
      pulse coach athletes
      pulse coach athletes --to 2016-05-12 --json
    """
    from pulse_cli.reports_render.model import athlete_rows, roster
    from pulse_cli.store.connection import read_meta
    from pulse_core.reports import asked_dates

    device = open_device(ctx)
    _, last = asked_dates(None, end, device.today)
    keys = roster(device.conn)
    rows = athlete_rows(device.conn, keys, _calendars(device, keys), last)
    device_sync = read_meta(device.conn, meta.LAST_SYNC)
    as_of = last.isoformat() if last else None
    if as_json:
        print_json({"as_of": as_of, "today": device.today.isoformat(), "device_last_sync": device_sync,
                    "athletes": rows})
        return
    if not rows:
        typer.echo("no athletes on this device: sign in as a coach (pulse login) and run pulse sync")
        return
    from pulse_cli.athletes_table import show_athletes

    show_athletes(rows, as_of, device_sync)


def _calendars(device: Device, keys: dict[str, str]) -> dict[str, Calendar]:
    """Each athlete's calendar now, by this device's corrected clock (docs/sync.md, "Clocks")."""
    from pulse_cli.reports_render.model import athlete_calendars
    from pulse_cli.store.clock import offset_ms, zone_offset_min

    now = dt.datetime.fromtimestamp((device.wall() + offset_ms(device.conn)) / 1000, dt.UTC)
    return athlete_calendars(device.conn, keys, now, device.today, zone_offset_min(device.conn))


def report(
    ctx: typer.Context,
    athlete: Annotated[
        list[str] | None,
        typer.Option("--athlete", "-a", metavar="NAME",
                     help="An athlete to report (repeatable; shell patterns like 'fitbit-*' work). Default: all."),
    ] = None,
    team: Annotated[bool, typer.Option("--team", help="Add the team roll-up, sorted by open flags.")] = False,
    start: FromOption = None,
    end: ToOption = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", metavar=FORMATS, help="Output format (default md).")]
    = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout (a PDF needs it).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Per athlete, as of --to: a weekly table, 7- and 28-day rolling averages, means over the range,
    compliance, readiness against baseline and open flags with their numbers; --team adds the roll-up.
    HTML and PDF add a chart per metric with its baseline band. Markdown to a terminal shows a summary.
    FHIR is an R4 Bundle: a Patient per athlete and their Observations (docs/fhir.md).

    Each athlete's days are their own: the range ends on their today, in their zone (as their devices
    last pushed it; unknown, yours), or on --to (any date) when that is earlier.

    \b
    Examples:
      pulse report --team --format html -o team.html
      pulse report -a fitbit-1503960366 --from 2016-04-12 --to 2016-05-12
      pulse report -a 'fitbit-*' --team --to 2016-05-12 -f pdf -o team.pdf
      pulse report --team --format csv -o long.csv
    """
    from pulse_cli.reports_render.formats import FORMATS as KNOWN
    from pulse_cli.reports_render.formats import render
    from pulse_cli.reports_render.model import build_report, roster, select_athletes
    from pulse_cli.store.connection import read_meta
    from pulse_core.reports import asked_dates

    if as_json and fmt is not None and fmt.lower() != "json":
        raise UsageError("format", fmt, "json with --json", f"format: --json and --format {fmt} ask for two formats"
                         " (give one: --format json is --json)")
    fmt = "json" if as_json else (fmt or "md").lower()
    if fmt not in KNOWN:
        raise UsageError("format", fmt, ", ".join(KNOWN), f"format: {fmt!r} is not one of {', '.join(KNOWN)}")
    if fmt == "pdf" and output is None:
        raise UsageError("output", None, "-o FILE", "output: a PDF is written to a file (allowed -o FILE)")
    device = open_device(ctx)
    asked_first, asked_last = asked_dates(start, end, device.today)
    keys = roster(device.conn)
    names = select_athletes(list(keys), athlete or [])
    chosen = {name: keys[name] for name in names}
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    built = build_report(device.conn, chosen, _calendars(device, chosen), asked_first, asked_last, team, generated)
    first, last = built.start, built.end
    built.server = read_meta(device.conn, meta.ACCOUNT_SERVER)
    if output is None and fmt == "md" and sys.stdout.isatty():
        from pulse_cli.reports_render import terminal

        terminal.summary(built)
        return
    content = render(built, fmt)
    if output is None:
        assert isinstance(content, str)
        sys.stdout.write(content)
        return
    try:
        if isinstance(content, bytes):
            output.write_bytes(content)
        else:
            output.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise UsageError("output", str(output), "a writable file path", f"output: cannot write {output}:"
                         f" {exc.strerror} (allowed a writable file path)") from exc
    from pulse_cli.reports_render.text import athletes_count

    typer.echo(f"wrote the {fmt} report of {athletes_count(len(names))} ({first.isoformat()} to"
               f" {last.isoformat()}) to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(coach_app, name="coach")
    app.command()(report)
