"""`pulse-server user|token|grant|revoke`: accounts, their tokens and coaches' access."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pulse_server.cli_common import DatabaseOption, PlainUsage, database, existing, password, plural, session

user_app = typer.Typer(help="Manage users: add, list, passwd, remove.", no_args_is_help=True)
token_app = typer.Typer(help="Issue and revoke bearer tokens.", no_args_is_help=True)

Username = Annotated[str, typer.Argument(metavar="NAME", help="Username.", show_default=False)]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]


@user_app.command("add", cls=PlainUsage)
def user_add(
    name: Username,
    coach: Annotated[bool, typer.Option("--coach", help="A coach account (reads granted athletes).")] = False,
    password_stdin: PasswordStdin = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user (prompted for a password unless --password-stdin).

    \b
    Examples:
      pulse-server user add ana
      echo 's3cret-pass' | pulse-server user add kim --coach --password-stdin
    """
    from pulse_server.accounts import add_user

    with session(database_url) as db:
        user = add_user(db, name, password(password_stdin), coach)
    typer.echo(f"added {'coach' if user.is_coach else 'athlete'} {user.username}")


@user_app.command("list", cls=PlainUsage)
def user_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of a table.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """List every user. Shows each one's role, days held, last write, grants and when they were added.

    \b
    Examples:
      pulse-server user list
      pulse-server user list --json
    """
    from pulse_server.accounts import list_users

    with session(database_url) as db:
        users = list_users(db)
    if as_json:
        typer.echo(json.dumps({"users": [
            {"username": u.username, "role": u.role, "created_at": u.created_at.isoformat(), "days": u.days,
             "last_write": u.last_write.isoformat() if u.last_write else None, "grants": u.grants}
            for u in users]}))
        return
    if not users:
        typer.echo("no users yet: pulse-server user add NAME")
        return
    width = max(8, *(len(u.username) for u in users))
    typer.echo(f"{'USERNAME':<{width}}  ROLE     DAYS   LAST WRITE        GRANTS  ADDED")
    for u in users:
        last = u.last_write.astimezone().strftime("%Y-%m-%d %H:%M") if u.last_write else "–"
        typer.echo(f"{u.username:<{width}}  {u.role:<7}  {u.days:>5}  {last:<16}  {u.grants:>6}"
                   f"  {u.created_at.astimezone():%Y-%m-%d}")


@user_app.command("passwd", cls=PlainUsage)
def user_passwd(name: Username, password_stdin: PasswordStdin = False, database_url: DatabaseOption = None) -> None:
    """Set a user's password. Prompted for unless --password-stdin; the user's tokens are revoked, so each
    of their devices signs in again.

    \b
    Examples:
      pulse-server user passwd ana
      echo 'n3w-s3cret-pass' | pulse-server user passwd ana --password-stdin
    """
    from pulse_server.accounts import find_user, set_password

    with session(database_url) as db:
        user = existing(find_user(db, name), name)
        revoked = set_password(db, user, password(password_stdin))
    typer.echo(f"password of {name} changed; {plural(revoked, 'token')} revoked"
               + (": each device signs in again" if revoked else ""))


@user_app.command("remove", cls=PlainUsage)
def user_remove(
    name: Username,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Remove a user and erase all their data here (asks first). That is their entries, conflicts, sync
    records, tokens and grants; the command says how many of each and asks (unless --yes). Their devices
    keep their own copies. Cannot be undone.

    \b
    Examples:
      pulse-server user remove ana
      pulse-server user remove ana --yes
    """
    import time

    from pulse_server.accounts import find_user, held_by, remove_user

    with database(database_url) as db:
        with db.session() as session:
            user = existing(find_user(session, name), name)
            held = held_by(session, user)
            user_id, is_coach = user.id, user.is_coach
        assert user_id is not None
        typer.echo(_wrapped(f"{name} ({'coach' if is_coach else 'athlete'}) has on this server: {_held_text(held)}."
                            f" Removing {name} erases all of it here, for good: {_aftermath(name, is_coach)}"))
        if not yes and not typer.confirm(f"Remove {name}?", default=False):
            typer.echo("nothing removed", err=True)
            raise typer.Exit(1)
        now_ms = int(time.time() * 1000)
        db.run(lambda conn: remove_user(conn, user_id, name, now_ms))
    typer.echo(f"removed {name}: erased {_held_text(held)}")


def _held_text(held: dict[str, int]) -> str:
    singular = {"entries": "entry", "sync records": "sync record", "tokens": "token", "grants": "grant",
                "conflicts": "conflict"}
    return ", ".join(f"{n} {kind if n != 1 else singular[kind]}" for kind, n in held.items())


def _aftermath(name: str, is_coach: bool) -> str:
    devices = f"{name}'s devices can no longer sign in or sync, and keep what they hold (pulse export works there)."
    if is_coach:
        return f"{devices} The athletes who granted {name} access keep all their data."
    return f"{devices} The coaches {name} granted lose access."


def _wrapped(text: str) -> str:
    import shutil
    import textwrap

    return textwrap.fill(text, width=min(100, shutil.get_terminal_size().columns))


@token_app.command("issue", cls=PlainUsage)
def token_issue(name: Username, database_url: DatabaseOption = None) -> None:
    """Issue a bearer token for a user and print it. The server stores only its hash.

    \b
    Examples:
      pulse-server token issue ana
    """
    from pulse_server.accounts import find_user, issue_token
    from pulse_server.cli_common import bootstrap

    with session(database_url) as db:
        user = existing(find_user(db, name), name)
        token, expires = issue_token(db, user, bootstrap(database_url).token_ttl_days)
    typer.echo(token)
    typer.echo(f"expires {expires.isoformat()}", err=True)


@token_app.command("revoke", cls=PlainUsage)
def token_revoke(name: Username, database_url: DatabaseOption = None) -> None:
    """Revoke every token of a user.

    \b
    Examples:
      pulse-server token revoke ana
    """
    from pulse_server.accounts import find_user, revoke_tokens

    with session(database_url) as db:
        count = revoke_tokens(db, existing(find_user(db, name), name))
    typer.echo(f"revoked {plural(count, 'token')} of {name}")


Coach = Annotated[str, typer.Argument(metavar="COACH", help="The coach's username.", show_default=False)]
Athlete = Annotated[str, typer.Argument(metavar="ATHLETE", help="The athlete's username.", show_default=False)]


def grant_cmd(coach: Coach, athlete: Athlete, database_url: DatabaseOption = None) -> None:
    """Let COACH read ATHLETE's entries.

    \b
    Examples:
      pulse-server grant kim ana
    """
    from pulse_server.accounts import find_user, grant

    with session(database_url) as db:
        grant(db, existing(find_user(db, athlete), athlete), coach)
    typer.echo(f"{coach} can read {athlete}")


def revoke_cmd(coach: Coach, athlete: Athlete, database_url: DatabaseOption = None) -> None:
    """Take COACH's access to ATHLETE's entries away.

    \b
    Examples:
      pulse-server revoke kim ana
    """
    from pulse_server.accounts import find_user, revoke_grant

    with session(database_url) as db:
        done = revoke_grant(db, existing(find_user(db, athlete), athlete), coach)
    typer.echo(f"{coach} can no longer read {athlete}" if done else f"{coach} had no access to {athlete}")


def erase_cmd(
    user: Annotated[str, typer.Option("--user", metavar="NAME", help="Whose entries to erase.")],
    start: Annotated[str | None, typer.Option("--from", metavar="DATE", help="First day erased (YYYY-MM-DD).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", metavar="DATE", help="Last day erased (YYYY-MM-DD).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="What was erased, as one JSON document.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Erase a user's entries of some days, here and on every device. Also their conflict audit and
    exactly-once results; every device and coach replica holding them drops them at its next sync, and
    writes to those days made before now are refused. An open end with only --from or --to; without
    both, the whole account, whose tokens are also revoked and grants removed (the account stays: to
    remove it too, pulse-server user remove). Asks first unless --yes.

    \b
    Examples:
      pulse-server erase --user ana --from 2026-01-01 --to 2026-01-31
      pulse-server erase --user ana --yes
    """
    import datetime as dt
    import time

    from pulse_server import erasure
    from pulse_server.accounts import find_user
    from sync.erasure import parse_range

    now_ms = int(time.time() * 1000)
    first, last = parse_range(start, end, dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date())
    whole = start is None and end is None
    with database(database_url) as db:
        with db.session() as session:
            account = existing(find_user(session, user), user)
        account_id = account.id
        assert account_id is not None
        what = (f"the whole account {user}: every entry, and revoke its sign-ins and grants" if whole else
                f"the entries of {user} of {_days(first, last)}")
        if not yes and not typer.confirm(f"Erase {what}, on the server now and on every device at its next"
                                         " sync? This cannot be undone.", default=False):
            raise typer.Exit(1)
        done = db.run(lambda conn: erasure.erase(conn, account_id, user, first, last, now_ms, whole))
    if as_json:
        typer.echo(json.dumps(done.as_json()))
        return
    typer.echo(f"erased {user}'s entries of {done.erasure.describe()}: {plural(done.entries, 'entry', 'entries')},"
               f" {plural(done.conflicts, 'conflict')}, {plural(done.results, 'exactly-once result')} (erasure"
               f" {done.erasure.id}); every device drops them at its next sync")
    if whole:
        typer.echo(f"revoked {plural(done.tokens, 'token')} and removed {plural(done.grants, 'grant')} of {user}")


def _days(first: object, last: object) -> str:
    if first is None:
        return f"every day up to {last}"
    if last is None:
        return f"every day from {first}"
    return f"{first} to {last}"


def register(app: typer.Typer) -> None:
    app.command("erase", cls=PlainUsage)(erase_cmd)
    app.command("grant", cls=PlainUsage)(grant_cmd)
    app.command("revoke", cls=PlainUsage)(revoke_cmd)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
