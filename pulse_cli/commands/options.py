"""Options shared by several commands, and the device each command opens."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from pulse_cli.bootstrap import Device, bootstrap
from pulse_core.errors import UsageError

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (schema in docs/cli.md).")]
FromOption = Annotated[str | None, typer.Option("--from", metavar="DATE", help="First day, YYYY-MM-DD.")]
ToOption = Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day, YYYY-MM-DD (default today).")]


def open_device(ctx: typer.Context) -> Device:
    """The device's store, closed when the command ends (its write-ahead log checkpointed then, not left
    to whenever the interpreter's exit gets to it: `pulse_cli.main.run`)."""
    home = (ctx.find_root().obj or {}).get("home")
    device = bootstrap(home)
    ctx.call_on_close(device.close)
    return device


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def within(field: str, value: float, low: float, high: float | None = None) -> None:
    """A number option in its range, else one line naming it (typer's own range check prints its ranges as
    `1<=x<=3660` in every --help)."""
    if value < low or (high is not None and value > high):
        allowed = f"{low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise UsageError(field, value, allowed, f"{field}: {value:g} is out of range (allowed {allowed})")
