"""Commands that talk to a sync server: login, logout, sync, status, conflicts, rejected."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from pulse_cli.commands.options import JsonOption, open_device, print_json
from pulse_core.errors import NotFoundError, UsageError

rejected_app = typer.Typer(help="Mutations the server refused: list, discard.", no_args_is_help=False,
                           invoke_without_command=True)


def login(
    ctx: typer.Context,
    server: Annotated[str, typer.Option("--server", metavar="URL", help="The sync server, e.g. http://127.0.0.1:8000.")],
    username: Annotated[str, typer.Option("--username", metavar="NAME", help="Your username on that server.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Sign in to a sync server. The first login adopts what you logged before it.

    Examples:
      pulse login --server http://127.0.0.1:8000 --username ana
      echo "$PASSWORD" | pulse login --server https://pulse.example --username ana --password-stdin
    """
    from pulse_cli.agent.account import Account, bind_home, save_account
    from sync.client import SyncClient

    device = open_device(ctx)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("Password", hide_input=True)
    with SyncClient(server) as anonymous:
        token = anonymous.login(username, password)
    with SyncClient(server, token["access_token"]) as client:
        me = client.me()
    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        bind_home(device.conn, server.rstrip("/"), username)
    save_account(device.home, Account(server.rstrip("/"), username, me["role"], token["access_token"],
                                      token["expires_at"]))
    from pulse_cli.agent import outbox

    pending = outbox.counts(device.conn).get("pending", 0)
    typer.echo(f"logged in as {username} ({me['role']}) on {server}; {pending} changes to sync")


def logout(
    ctx: typer.Context,
    discard: Annotated[
        bool, typer.Option("--discard", help="Log out even with changes not yet synced (they are dropped).")
    ] = False,
) -> None:
    """Sign out (forget the token). Refused while changes are waiting to sync, unless --discard.

    Examples:
      pulse logout
      pulse logout --discard
    """
    from pulse_cli.agent import outbox
    from pulse_cli.agent.account import forget_token

    device = open_device(ctx)
    pending = outbox.counts(device.conn).get("pending", 0)
    if pending and not discard:
        raise UsageError("pending", pending, "0, or --discard",
                         f"pending: {pending} changes are not synced yet; run pulse sync first, or --discard them")
    if pending:
        from pulse_cli.agent.runner import discard as discard_changes

        discard_changes(device)
    forget_token(device.home)
    typer.echo("logged out" + (f"; {pending} unsynced changes discarded" if pending else ""))


def sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Push your changes, pull the server's, and show what went up and what came down.

    Exit codes: 0 synced; 3 offline or server unavailable (nothing lost: changes stay queued); 1 other.

    Examples:
      pulse sync
      pulse sync --json
    """
    from pulse_cli.agent.runner import run_sync

    device = open_device(ctx)
    report = run_sync(device)
    if as_json:
        print_json(report.as_json())
        return
    pushed = ", ".join(f"{n} {status}" for status, n in sorted(report.pushed.items())) or "nothing"
    typer.echo(f"pushed: {pushed}; pulled {report.pulled} changes" + (" (refetched)" if report.refetched else ""))
    if report.rejected:
        typer.echo(f"{report.rejected} rejected changes: see pulse rejected")
    if report.pending:
        typer.echo(f"{report.pending} changes still queued")


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Server, last sync, pending and rejected changes, conflicts and the breaker's state.

    Examples:
      pulse status
      pulse status --json
    """
    from pulse_cli.agent.runner import sync_status

    device = open_device(ctx)
    info = sync_status(device)
    if as_json:
        print_json(info)
        return
    for name, value in info.items():
        typer.echo(f"{name.replace('_', ' ')}: {'-' if value is None else value}")


def conflicts(
    ctx: typer.Context,
    reassert: Annotated[
        int | None, typer.Option("--reassert", metavar="ID", help="Log the losing value again, as a new edit.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Conflicts the server resolved: what lost to what, and why; --reassert ID makes the loser win now.

    Examples:
      pulse conflicts
      pulse conflicts --reassert 3
    """
    from pulse_cli.agent.runner import list_conflicts, reassert_conflict

    device = open_device(ctx)
    if reassert is not None:
        entry = reassert_conflict(device, reassert)
        typer.echo(f"re-asserted conflict {reassert}: {entry.date.isoformat()} will sync at the next pulse sync")
        return
    rows = list_conflicts(device)
    if as_json:
        print_json({"conflicts": rows})
        return
    if not rows:
        typer.echo("no conflicts")
    for row in rows:
        typer.echo(f"[{row['id']}] {row['date']} {row['field']}: kept {_show(row['kept'])} over {_show(row['lost'])}"
                   f" ({row['rule']}: a hand-set value beats an import, then the later stamp wins;"
                   f" kept {row['kept_hlc']}, lost {row['lost_hlc']})")


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@rejected_app.callback()
def rejected(
    ctx: typer.Context,
    discard: Annotated[int | None, typer.Option("--discard", metavar="SEQ", help="Drop a rejected change.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Changes the server refused, with its reason. Fix one with pulse log, then --discard it.

    Examples:
      pulse rejected
      pulse rejected --discard 12
    """
    from pulse_cli.agent import outbox

    device = open_device(ctx)
    if discard is not None:
        from pulse_cli.agent.runner import discard as discard_changes

        if not discard_changes(device, discard):
            raise NotFoundError(f"seq: no rejected change {discard}")
        typer.echo(f"discarded {discard}")
        return
    rows = outbox.by_status(device.conn, "rejected")
    if as_json:
        print_json({"rejected": [{**r.wire(), "seq": r.seq, "error": (r.result or {}).get("error")} for r in rows]})
        return
    if not rows:
        typer.echo("no rejected changes")
    for r in rows:
        error = (r.result or {}).get("error") or {}
        typer.echo(f"[{r.seq}] {r.date} {r.op} {json.dumps(r.fields)}: {error.get('message', 'rejected')}")


def register(app: typer.Typer) -> None:
    for command in (login, logout, sync, status, conflicts):
        app.command()(command)
    app.add_typer(rejected_app, name="rejected")
