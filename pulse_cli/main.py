"""The `pulse` command: global options, the command groups, and the one place errors become exit codes.

Commands are thin: parse, call one use case or query, render. Heavy modules (rich, importers) are
imported inside the commands that need them, so `pulse log` starts fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pulse_cli import __version__
from pulse_cli.commands import agent, coach, entries, erase, syncing, transfer
from pulse_cli.commands import verify as verify_command
from pulse_core.errors import PulseError, ValidationError

app = typer.Typer(
    name="pulse",
    help="NGX Pulse: log and read daily health metrics offline. Every write lands in a local store first.",
    epilog="Examples:  pulse log --sleep 7.5 --steps 9000   ·   pulse history --json   ·   pulse trends",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
entries.register(app)
transfer.register(app)
syncing.register(app)
agent.register(app)
coach.register(app)
verify_command.register(app)
erase.register(app)


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


def error_exit_code(exc: PulseError) -> int:
    """2 for invalid values or usage (like typer's own usage errors), 3 offline, 1 for other failures."""
    if isinstance(exc, ValidationError):
        return 2
    if exc.code == "offline":
        return 3
    return 1


def run() -> None:
    """Console-script entry point: user mistakes end as one red line, never a traceback."""
    try:
        app()
    except PulseError as exc:
        colour = sys.stderr.isatty()
        line = exc.message if exc.code == "offline" else f"error: {exc.message}"
        sys.stderr.write(f"\x1b[31m{line}\x1b[0m\n" if colour else f"{line}\n")
        sys.exit(error_exit_code(exc))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
