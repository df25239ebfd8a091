"""Commands that talk to a sync server: login, logout, sync, status, conflicts, rejected."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pulse_cli.commands.options import JsonOption, open_device, print_json
from pulse_core.errors import NotFoundError, UsageError


def login(
    ctx: typer.Context,
    server: Annotated[str, typer.Option("--server", metavar="URL", help="The sync server, e.g. http://127.0.0.1:8000.")],
    username: Annotated[str, typer.Option("--username", metavar="NAME", help="Your username on that server.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Sign in to a sync server. The first login adopts what you logged before it.

    \b
    Examples:
      pulse login --server http://127.0.0.1:8000 --username ana
      echo "$PASSWORD" | pulse login --server https://pulse.example \\
          --username ana --password-stdin
    """
    from pulse_cli.agent import outbox
    from pulse_cli.agent.account import Account, bind_home, save_account
    from pulse_cli.agent.runner import sign_in
    from pulse_cli.store import clock
    from pulse_cli.sync_text import plural

    device = open_device(ctx)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("Password", hide_input=True)
    token, me, sent_at, received_at = sign_in(server, username, password)
    url = server.strip().rstrip("/")
    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        bind_home(device.conn, url, username, me["role"], me["account"] if isinstance(me.get("account"), str) else None)
        if isinstance(me.get("server_time_ms"), int):  # from now on stamps and "today" use the server's time
            clock.learn_offset(device.conn, me["server_time_ms"], sent_at, received_at)
    save_account(device.home, Account(url, username, me["role"], token["access_token"], token["expires_at"]))
    pending = outbox.counts(device.conn).get("pending", 0)
    typer.echo(f"logged in as {username} ({me['role']}) on {url}; {plural(pending, 'change')} to sync")
    off = clock.offset_ms(device.conn)
    if abs(off) > clock.FAR_OFF_MS:
        typer.echo(f"this device's clock is {clock.describe_offset(off)} the server's: dates and stamps use the"
                   " server's time")


def logout(
    ctx: typer.Context,
    discard: Annotated[
        bool, typer.Option("--discard", help="Log out even with changes not yet synced (they are dropped).")
    ] = False,
) -> None:
    """Sign out (forget the token). Refused while changes are waiting to sync (exit 4: they exist nowhere
    else), unless --discard drops them.

    \b
    Examples:
      pulse logout
      pulse logout --discard
    """
    from pulse_cli.agent import outbox
    from pulse_cli.agent.account import forget_token
    from pulse_cli.sync_text import plural

    device = open_device(ctx)
    pending = outbox.counts(device.conn).get("pending", 0)
    if pending and not discard:
        from pulse_cli.exits import RefusedToLoseData

        waiting = "1 change is" if pending == 1 else f"{pending} changes are"
        raise RefusedToLoseData(f"pending: {waiting} not synced yet and would be lost; run pulse sync first,"
                                " or pulse logout --discard to drop them")
    if pending:
        from pulse_cli.agent.runner import discard as discard_changes

        discard_changes(device)
    forget_token(device.home)
    typer.echo("logged out" + (f"; {plural(pending, 'unsynced change')} discarded" if pending else ""))


def sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Push your changes, pull the server's, and show what went up and what came down.

    Exit codes: 0 synced; 3 offline or server unavailable (nothing lost: changes stay queued); 1 other.

    \b
    Examples:
      pulse sync
      pulse sync --json
    """
    from pulse_cli.agent.runner import run_sync
    from pulse_cli.sync_text import plural

    device = open_device(ctx)
    report = run_sync(device)
    if as_json:
        print_json(report.as_json())
        return
    pushed = ", ".join(f"{n} {status}" for status, n in sorted(report.pushed.items())) or "nothing"
    typer.echo(f"pushed: {pushed}; pulled {plural(report.pulled, 'change')}"
               + (" (refetched)" if report.refetched else ""))
    if report.new_client_id:
        typer.echo(f"this store was a copy of another (restored or copied): it now syncs as {report.new_client_id},"
                   " and its changes were pushed again under that id")
    if report.repushed:
        typer.echo(f"the server had lost {plural(report.repushed, 'change')} of this device (restored from a"
                   " backup?): pushed again")
    if report.erasures:
        typer.echo(f"{plural(report.erasures, 'erasure')} of entries on the server applied: those days are gone"
                   " from this device too")
    if report.pushed.get("held"):
        typer.echo(f"{plural(report.pushed['held'], 'change')} held: dated after your tomorrow as the server"
                   " counts days; sent again at each sync until the date comes")
    if report.rejected:
        typer.echo(f"{plural(report.rejected, 'rejected change')}: see pulse rejected")
    if report.conflicts:
        typer.echo(f"{plural(report.conflicts, 'open conflict')}: see pulse conflicts")
    if report.pending:
        typer.echo(f"{plural(report.pending, 'change')} still queued")


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Your account and server, the last sync, changes waiting to be pushed, rejected changes, open
    conflicts, whether the server answered at the last tries, and this device's clock.

    \b
    Examples:
      pulse status
      pulse status --json
    """
    from pulse_cli.agent.runner import sync_status
    from pulse_cli.sync_text import status_lines

    device = open_device(ctx)
    info = sync_status(device)
    if as_json:
        print_json(info)
        return
    for line in status_lines(info):
        typer.echo(line)


def conflicts(
    ctx: typer.Context,
    reassert: Annotated[
        int | None, typer.Option("--reassert", metavar="ID", help="Log the losing value again, as a new edit.")
    ] = None,
    dismiss: Annotated[
        int | None, typer.Option("--dismiss", metavar="ID", help="Put a conflict aside, on every device.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also those re-asserted, superseded or dismissed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Conflicts on your entries, from every device: what lost to what, and why. Open ones by default.
    Values are shown as they were typed; times are this computer's local dates and times.

    \b
    Examples:
      pulse conflicts
      pulse conflicts --reassert 3
      pulse conflicts --dismiss 3
      pulse conflicts --all --json
    """
    from pulse_cli.agent.runner import dismiss_conflict, list_conflicts, reassert_conflict
    from pulse_cli.store.connection import read_meta
    from pulse_cli.sync_text import conflict_lines

    device = open_device(ctx)
    if reassert is not None and dismiss is not None:
        raise UsageError("--dismiss", dismiss, "one of --reassert or --dismiss",
                         "--dismiss: give --reassert or --dismiss, not both")
    if reassert is not None:
        entry = reassert_conflict(device, reassert)
        typer.echo(f"re-asserted conflict {reassert}: {entry.date.isoformat()} will sync at the next pulse sync")
        return
    if dismiss is not None:
        dismiss_conflict(device, dismiss)
        typer.echo(f"dismissed conflict {dismiss} (every device hears of it at the next sync)")
        return
    rows = list_conflicts(device, include_closed=show_all)
    if as_json:
        print_json({"conflicts": rows})
        return
    if not rows:
        typer.echo("no open conflicts" if not show_all else "no conflicts")
    own = read_meta(device.conn, "client_id")
    for row in rows:
        for line in conflict_lines(row, own):
            typer.echo(line)


def rejected(
    ctx: typer.Context,
    discard: Annotated[int | None, typer.Option("--discard", metavar="SEQ", help="Drop a rejected change.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Changes the server refused, with its reason. Fix one with pulse log, then --discard it.

    \b
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
    from pulse_cli.sync_text import change_text

    for r in rows:
        error = (r.result or {}).get("error") or {}
        typer.echo(f"[{r.seq}] {r.date} {change_text(r.op, r.fields)}: {error.get('message', 'rejected')}")


def register(app: typer.Typer) -> None:
    for command in (login, logout, sync, status, conflicts, rejected):
        app.command()(command)
