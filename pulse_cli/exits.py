"""The exit codes of `pulse` (docs/cli.md, "Exit codes") and the errors that end with the rarer ones.

Every command ends through `pulse_cli.main.run`, which maps an error to its code here, once.
"""

from __future__ import annotations

from pulse_core.errors import PulseError, ValidationError

FAILED = 1  # a failure that is not a bad value
USAGE = 2  # bad usage or an invalid value (typer's own usage errors use 2 as well)
OFFLINE = 3  # the server cannot be reached; nothing is lost
KEPT_DATA = 4  # refused, because going on would lose data (changes not yet synced); nothing was changed
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


class RefusedToLoseData(PulseError):
    """Going on would drop data that exists nowhere else (changes not yet synced): refused, nothing changed."""

    code = "refused_to_lose_data"


class Interrupted(PulseError):
    """Ctrl-C, with what became of the work in hand (an import says that none of it was kept)."""

    code = "interrupted"


def exit_code(exc: PulseError) -> int:
    if isinstance(exc, ValidationError):
        return USAGE
    return {"offline": OFFLINE, RefusedToLoseData.code: KEPT_DATA, Interrupted.code: INTERRUPTED}.get(
        exc.code, FAILED)
