"""`pulse agent`: keep this device in sync in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from pulse_cli.commands.options import open_device


def agent(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", min=1.0,
                                            help="Push and pull at least this often (default 60).")] = 60.0,
) -> None:
    """Sync in the foreground: pushes on a schedule and as soon as you log something, keeps a live
    pull open, and stops cleanly on Ctrl-C or SIGTERM after finishing the batch in hand.

    Examples:
      pulse agent
      pulse agent --interval 30
    """
    from pulse_cli.agent.daemon import Agent

    device = open_device(ctx)
    Agent(device, interval_s=interval).run_forever()


def register(app: typer.Typer) -> None:
    app.command()(agent)
