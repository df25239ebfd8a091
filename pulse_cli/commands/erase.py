"""`pulse erase`: erase your entries of a range of days, on the server and on every device (docs/erasure.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from pulse_cli.commands.options import JsonOption, open_device, print_json


def erase(
    ctx: typer.Context,
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="First day erased (default: the first).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day erased (default: the last).")]
    = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Erase your entries from --from to --to (either left out: an open end; both: every day) on the
    server now, with their conflict audit, and on each of your devices and your coaches' at its next
    sync; this device drops them at once. Changes to those days made before now, still queued anywhere,
    are refused (pulse rejected). Needs the server (exit 3 offline). Asks first unless --yes.

    \b
    Examples:
      pulse erase --from 2026-01-01 --to 2026-01-31
      pulse erase --from 2026-03-05 --to 2026-03-05 --yes
      pulse erase --json --yes
    """
    from pulse_cli.agent.runner import erase_entries, require_account
    from pulse_cli.sync_text import plural
    from sync.erasure import Erasure, parse_range

    device = open_device(ctx)
    first, last = parse_range(start, end, device.today)
    require_account(device)
    days = Erasure(0, "", first, last, 0).describe()
    if not yes and not typer.confirm(f"Erase your entries of {days} from the server and every device (yours and"
                                     " your coaches')? This cannot be undone.", default=False):
        raise typer.Exit(1)
    done = erase_entries(device, first, last)
    if as_json:
        print_json(done)
        return
    removed = done["removed"]
    typer.echo(f"erased {plural(removed['entries'], 'entry', 'entries')} of {days} on the server (and"
               f" {plural(removed['conflicts'], 'conflict')}); this device dropped them; your other devices and"
               " your coaches' drop them at their next sync")
    if done["refused"]:
        typer.echo(f"{plural(done['refused'], 'queued change')} to those days made before the erasure"
                   " refused: see pulse rejected")


def register(app: typer.Typer) -> None:
    app.command()(erase)
