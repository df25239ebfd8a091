"""`pulse history`'s table is laid out by pulse_cli.history_table, not by rich's Table row by row; what
it prints must be what rich's Table prints for the same rows, character for character and, on a
colour terminal, style for style."""

from __future__ import annotations

import datetime as dt
import io
import random
from typing import Any

import pytest
from rich.console import Console

from pulse_cli.history_table import MISSING, HistoryTable

NOTES = ["", "", "", "easy run", "long ride with the club on the hills above the lake",
         "supercalifragilisticexpialidocious-intervals-6x800m", "日本語のメモ 長い散歩", "tab\tseparated",
         "two\nlines", "  padded  ", "[bold]not markup[/bold] :smile:", "bell\x07", "a b c d e f g h i j k l m n o"]


def _rows(count: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    day = dt.date(2016, 7, 1)

    def value(text: str) -> str:
        return MISSING if rng.random() < 0.2 else text

    rows = []
    for i in range(count):
        hrv = value(f"{rng.uniform(20, 150):.2f}".rstrip("0").rstrip("."))
        rows.append(((day + dt.timedelta(days=i)).isoformat(), value(f"{rng.uniform(3, 10):.2f}"),
                     hrv + (" sdnn" if rng.random() < 0.1 else ""), value(f"{rng.randrange(0, 100_000):,}"),
                     value(f"{rng.uniform(40, 120):.1f}"), value(str(rng.randrange(0, 101))), rng.choice(NOTES)))
    return rows


def _printed(renderable: Any, width: int, colour: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=colour, color_system="truecolor" if colour else None,
                      highlight=False, legacy_windows=False)
    console.print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("width", [30, 62, 66, 70, 75, 80, 93, 100, 120, 160, 240])
def test_the_table_prints_exactly_what_richs_table_prints(width: int, colour: bool) -> None:
    table = HistoryTable("2016-07-01 to 2016-10-08: 80 of 100 days logged", _rows(80, width))
    assert _printed(table, width, colour) == _printed(table.rich_table(), width, colour)


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_no_row_one_row_and_two_rows_print_as_richs_table(rows: int) -> None:
    table = HistoryTable("2016-07-01 to 2016-07-01: 0 of 1 days logged", _rows(rows, 3))
    for width in (50, 80, 120):
        assert _printed(table, width, True) == _printed(table.rich_table(), width, True)


def test_pulse_history_shows_every_day_and_a_note_as_written(pulse: Any) -> None:
    """Was: the note went to rich as markup, so '[red]...[/red]' lost its brackets and ':smile:' became 😄."""
    note = "[red]hills[/red] :smile:"
    for day in ("2026-01-01", "2026-01-02", "2026-01-04"):
        assert pulse("log", "--date", day, "--steps", "9000", "--sleep", "7", "--note", note).returncode == 0
    done = pulse("history", "--from", "2026-01-01", "--to", "2026-01-04")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "2026-01-01 to 2026-01-04: 3 of 4 days logged" in lines[0]
    days = [line for line in lines if line.startswith("│ 2026-")]
    assert [line[2:12] for line in days] == ["2026-01-01", "2026-01-02", "2026-01-04"]
    assert all(note in line for line in days), days
