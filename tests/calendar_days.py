"""Today, read when a test asks for it, never when its module was imported.

A full run takes twenty minutes; one that crosses midnight dated a test's "today" by the day the run
began while the processes it started wrote by the new one (a CI run at 00:06 did). Dates are the test
process's local calendar, as the `pulse` processes it starts read theirs (tests/conftest.py also holds
a test back while midnight is a moment away).
"""

from __future__ import annotations

import datetime as dt


def today() -> dt.date:
    return dt.date.today()


def day(offset: int) -> str:
    """A date `offset` days from today, as the CLI takes it."""
    return (today() + dt.timedelta(days=offset)).isoformat()
