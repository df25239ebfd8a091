"""The `pulse` command: global options, the table of commands, and the one place errors become exit codes.

Commands are thin: parse, call one use case or query, render. Each command's module is imported only when
that command runs (`pulse_cli.lazy`), and heavy modules (rich, importers, httpx) only inside the commands
that need them, so `pulse log` starts fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pulse_cli import __version__
from pulse_cli.exits import INTERRUPTED, Interrupted, exit_code
from pulse_cli.lazy import LazyGroup
from pulse_core.errors import PulseError

# name: (module in pulse_cli/commands, the one line `pulse --help` shows), in the order it lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "log": ("entries", "Set fields of a day's entry; shows its score and any warnings."),
    "show": ("entries", "One day's entry, its score and readiness against your baseline."),
    "history": ("entries", "Entries in a date range: a table with sparklines, or JSON."),
    "trends": ("entries", "7- and 28-day rolling averages of each metric and the score."),
    "delete": ("entries", "Delete a day's entry (asks first)."),
    "erase": ("erase", "Erase days of your entries on the server and every device."),
    "import": ("transfer", "Import days from a Fitbit, Welltory or Apple Health export."),
    "export": ("transfer", "Export your entries as CSV, JSON or FHIR."),
    "login": ("syncing", "Sign in to a sync server."),
    "logout": ("syncing", "Sign out; refused while changes wait to sync."),
    "sync": ("syncing", "Push your changes and pull the server's."),
    "status": ("syncing", "Account, last sync, changes waiting, conflicts, the server."),
    "conflicts": ("syncing", "Conflicts on your entries: what lost to what, and why."),
    "rejected": ("syncing", "Changes the server refused, with its reason."),
    "verify": ("verify", "Check that this device holds exactly what the server holds."),
    "agent": ("agent", "Stay in sync in the foreground; --serve also serves the web app."),
    "coach": ("coach", "A coach's list of the athletes who granted access."),
    "report": ("coach", "A coach's report on athletes: md, csv, json, html, pdf, fhir."),
}


class PulseCommands(LazyGroup):
    table = COMMANDS


app = typer.Typer(
    name="pulse",
    cls=PulseCommands,
    help="NGX Pulse: log and read daily health metrics offline. Every write lands in a local store first.",
    epilog="\b\nExamples:\n  pulse log --sleep 7.5 --steps 9000\n  pulse history --json\n  pulse trends",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"pulse {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            metavar="PATH",
            help="Folder of the local store (default: $PULSE_HOME, else $XDG_DATA_HOME/pulse).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """NGX Pulse: log and read daily health metrics offline."""
    ctx.obj = {"home": home}


def run() -> None:
    """Console-script entry point: user mistakes end as one red line, never a traceback."""
    try:
        app()
    except PulseError as exc:
        colour = sys.stderr.isatty()
        line = exc.message if exc.code in ("offline", Interrupted.code) else f"error: {exc.message}"
        sys.stderr.write(f"\x1b[31m{line}\x1b[0m\n" if colour else f"{line}\n")
        sys.exit(exit_code(exc))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)
    finally:
        _leaving()


def _leaving() -> None:
    """The process ends next. The interpreter's exit runs the cycle collector over every object start-up
    made (typer's and the command's, about 19,000): ~10 ms of `pulse log`'s ~80 ms (bench/startup.py) to free
    memory the OS takes back anyway. Frozen, they are skipped; the store is already closed (open_device),
    and what must happen at exit still does (atexit handlers, flushing stdout and stderr)."""
    import gc

    gc.freeze()
