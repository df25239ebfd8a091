"""`pulse history`'s table, laid out once for all its rows.

rich's Table measures, wraps and renders every cell of every row through its general machinery:
0.8 ms a row, 2.9 s for ten years of days (bench/data_scale.py). This table is laid out as rich lays
that one out (the same column widths, cells padded and aligned the same way, notes wrapped by rich
itself) and yields one line of segments per row. The title, header and borders are rich's own: a
Table with the same columns at those widths and no rows. tests/e2e/test_history_table.py checks the
output against rich's Table, character for character and colour for colour, over many widths.

When the console is too narrow for the number columns, rich's own Table renders it (rich then
shrinks every column, which is not worth repeating here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.box import HEAVY_HEAD
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

MISSING = "–"  # a day with no value: drawn dim
DIM = Style(dim=True)
COLUMNS = ("Date", "Sleep h", "HRV ms", "Steps", "Weight kg", "Score", "Note")
TEXT_COLUMNS = ("Date", "Note")  # left-aligned; the numbers are right-aligned
NOTE = len(COLUMNS) - 1
BORDERS = len(COLUMNS) + 1  # the cells' borders take one character each, edges included
PADDING = 2  # one space either side of a cell


class HistoryTable:
    """Rows of seven cells: six values (MISSING for none) and a note, shown as written."""

    def __init__(self, title: str, rows: Sequence[tuple[str, ...]]) -> None:
        self.title = title
        self.rows = rows

    def rich_table(self, widths: Sequence[int] | None = None) -> Table:
        """rich's Table of these rows (of none, with the column widths given: the frame of the fast path)."""
        table = Table(title=self.title)
        for i, header in enumerate(COLUMNS):
            table.add_column(header, justify="left" if header in TEXT_COLUMNS else "right",
                             no_wrap=header != "Note", overflow="ellipsis",
                             width=None if widths is None else widths[i] - PADDING)
        if widths is None:
            for row in self.rows:
                table.add_row(*(_value_text(cell) for cell in row[:NOTE]), Text(row[NOTE]))
        return table

    def widths(self, max_width: int) -> list[int] | None:
        """The column widths (padding included) rich gives this table in `max_width` columns, or None
        when the number columns alone do not fit (then rich shrinks them all)."""
        natural = [cell_len(header) for header in COLUMNS]
        for row in self.rows:
            for i, cell in enumerate(row):
                width = _note_width(cell) if i == NOTE else cell_len(cell)
                if width > natural[i]:
                    natural[i] = width
        room = max_width - BORDERS
        widths = [min(width + PADDING, room) for width in natural]
        excess = sum(widths) - room
        if excess > 0:  # rich narrows the only column that may wrap, the note, by the excess
            widths[NOTE] -= excess
        if widths[NOTE] < PADDING + 1:
            return None
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.widths(options.max_width)
        if widths is None:
            yield self.rich_table()
            return
        frame = list(Segment.split_lines(console.render(self.rich_table(widths), options)))
        for line in frame[:-1]:  # the title, the top border, the header and the line under it
            yield from line
            yield Segment.line()
        table_options = options.update(width=sum(widths) + BORDERS, highlight=False, height=None)
        box = HEAVY_HEAD.substitute(table_options, safe=console.safe_box)
        for i, row in enumerate(self.rows):
            last = i == len(self.rows) - 1
            edges = (box.foot_left, box.foot_vertical, box.foot_right) if last else \
                (box.mid_left, box.mid_vertical, box.mid_right)
            yield from _row(console, widths, row, edges)
        yield from frame[-1]
        yield Segment.line()


def _note_width(note: str) -> int:
    """The widest line of a note, as rich measures a Text (control characters dropped)."""
    text = note if note.isprintable() else Text(note).plain
    return max(map(cell_len, text.splitlines()), default=0)


def _value_text(cell: str) -> Text:
    text = Text(cell)
    if cell.startswith(MISSING):
        text.stylize("dim", 0, len(MISSING))
    return text


def _row(console: Console, widths: Sequence[int], row: tuple[str, ...],
         edges: tuple[str, str, str]) -> Iterator[Segment]:
    """One row as rich's Table draws it, in as few segments as can be (only MISSING has a style)."""
    left, divider, right = edges
    notes = _note_lines(console, widths[NOTE] - PADDING, row[NOTE])
    plain = left
    for i, cell in enumerate(row[:NOTE]):
        pad = " " * (widths[i] - PADDING - _cells(cell))
        before, after = ("", pad) if COLUMNS[i] in TEXT_COLUMNS else (pad, "")
        if cell.startswith(MISSING):
            yield Segment(plain + " " + before)
            yield Segment(MISSING, DIM)
            plain = cell[len(MISSING):] + after + " " + divider
        else:
            plain += " " + before + cell + after + " " + divider
    yield Segment(f"{plain} {notes[0]} {right}\n")
    blank = left + divider.join(" " * width for width in widths[:NOTE]) + divider
    for note in notes[1:]:
        yield Segment(f"{blank} {note} {right}\n")


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


def _note_lines(console: Console, width: int, note: str) -> list[str]:
    """The note's lines, each `width` cells: a short plain note as it is, any other wrapped by rich's Text
    as its Table wraps a cell (words moved to the next line, a longer word cut, ellipsis, tabs)."""
    if note.isprintable() and _cells(note) <= width and note.strip() == note:
        return [note + " " * (width - _cells(note))]
    lines = Text(note).wrap(console, width, justify="left", overflow="ellipsis", tab_size=console.tab_size)
    return [line.plain + " " * (width - cell_len(line.plain)) for line in lines]
