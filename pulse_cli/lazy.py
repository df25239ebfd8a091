"""Commands loaded when called: `pulse log` imports the one module that holds `log`, not all of them.

Importing every command module up front cost `pulse log` about 40 ms of its start-up (issue 17; measure
with bench/startup.py). `pulse --help` lists every command from the table's one-line summaries, so it
imports none of them either; a test checks the table against the modules' own `register` functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter

PACKAGE = "pulse_cli.commands"


def load_command(module: str, name: str) -> Command | None:
    """Command `name` of a module of `pulse_cli.commands`, built as typer builds it; only that one is built
    (building all five of `entries` would cost `pulse log` another ~2 ms)."""
    from typer.main import get_command_from_info, get_command_name, get_group_from_info

    holder = typer.Typer(rich_markup_mode=None)
    importlib.import_module(f"{PACKAGE}.{module}").register(holder)
    _plain_usage(holder)
    for info in holder.registered_commands:
        if (info.name or get_command_name(getattr(info.callback, "__name__", ""))) == name:
            return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=None)
    for group in holder.registered_groups:
        if group.name == name:
            return get_group_from_info(group, pretty_exceptions_short=True, suggest_commands=True,
                                       rich_markup_mode=None)
    return None


class PlainUsageCommand(TyperCommand):
    """Usage as POSIX writes it: a required argument bare (`pulse delete [OPTIONS] DATE`), not typer's `{DATE}`."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        return [_unbraced(piece) for piece in super().collect_usage_pieces(ctx)]


def _unbraced(piece: str) -> str:
    return piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece


def _plain_usage(app: typer.Typer) -> None:
    """Every command of `app` and of its sub-apps built as a PlainUsageCommand."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = PlainUsageCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _plain_usage(group.typer_instance)


def registered_names(module: str) -> list[str]:
    """Every command name a module registers (for the test that keeps the table complete)."""
    from typer.main import get_group

    holder = typer.Typer(rich_markup_mode=None)
    importlib.import_module(f"{PACKAGE}.{module}").register(holder)
    return list(get_group(holder).commands)


class LazyGroup(TyperGroup):
    """A group whose commands are named in `table` (name: (module, one-line summary)) and loaded on use."""

    table: ClassVar[dict[str, tuple[str, str]]] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.table:
            return None
        if cmd_name not in self.commands:
            command = load_command(self.table[cmd_name][0], cmd_name)
            if command is None:
                return None
            self.commands[cmd_name] = command
        return self.commands[cmd_name]

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in self.table.items()])

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        """As typer's, with "Did you mean" drawn from the table (typer's looks only at loaded commands)."""
        from difflib import get_close_matches

        from typer._click.exceptions import UsageError

        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            matches = get_close_matches(args[0], list(self.table)) if args else []
            if matches:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise
