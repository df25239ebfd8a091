"""`pulse agent`: keep this device in sync in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from pulse_cli.commands.options import open_device, within


def agent(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", show_default=False,
                                            help="Push and pull at least this often, 1 or more (default 60).")]
    = 60.0,
    serve: Annotated[bool, typer.Option("--serve", help="Also serve the web app over this device's store.")] = False,
    port: Annotated[int, typer.Option("--port", metavar="PORT", show_default=False,
                                      help="Port for --serve (default 8765).")] = 8765,
    host: Annotated[str, typer.Option("--host", metavar="HOST", show_default=False,
                                      help="Address for --serve (default 127.0.0.1: this device only).")]
    = "127.0.0.1",
) -> None:
    """Sync in the foreground: pushes on a schedule and as soon as you log something, keeps a live
    pull open, and stops cleanly on Ctrl-C or SIGTERM after finishing the batch in hand.

    With --serve, the web app (the PWA) is served at http://HOST:PORT/app/ over this device's store:
    sign in with your sync server username and password; what you log there is synced by this agent.
    The app is for athletes: a coach's device is refused. A port in use is refused before anything
    starts (exit 1).

    \b
    Examples:
      pulse agent
      pulse agent --interval 30
      pulse agent --serve --port 8765
    """
    within("interval", interval, 1)
    within("port", port, 1, 65535)
    device = open_device(ctx)
    if serve:
        from pulse_cli.agent.serve import serve as serve_app

        serve_app(device, host, port, interval)
        return
    from pulse_cli.agent.daemon import Agent

    Agent(device, interval_s=interval).run_forever()


def register(app: typer.Typer) -> None:
    app.command()(agent)
