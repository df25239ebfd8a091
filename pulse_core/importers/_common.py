"""What the readers share: one-line usage errors, byte counting for progress, checked CSV files."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from pulse_core.errors import UsageError

Progress = Callable[[int, int], None]

# Report progress at most every this many bytes (and always at the end), so a multi-gigabyte
# file does not call back hundreds of thousands of times.
PROGRESS_STEP = 1 << 20


def usage(field: str, value: object, allowed: str, what: str) -> UsageError:
    """A `UsageError` whose message is one line: `field: value what (allowed ...)`."""
    message = f"{field}: {value} {what} (allowed {allowed})".replace("\r", " ").replace("\n", " ")
    return UsageError(field, value, allowed, message)


class ByteCounter:
    """Counts bytes read across one or more files and reports `progress(done, total)` now and then."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        self._reported = -PROGRESS_STEP

    def add(self, count: int) -> None:
        self.done += count
        if self._progress is not None and self.done - self._reported >= PROGRESS_STEP:
            self._reported = self.done
            self._progress(self.done, self.total)

    def finish(self) -> None:
        if self._progress is not None and self._reported != self.done:
            self._reported = self.done
            self._progress(self.done, self.total)


class CountingReader(io.RawIOBase):
    """A read-only binary stream that counts what passes through it into a `ByteCounter`."""

    def __init__(self, raw: IO[bytes], counter: ByteCounter) -> None:
        super().__init__()
        self._raw = raw
        self._counter = counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self._counter.add(count)
        return count

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._counter.add(len(data))
        return data


def require_dir(path: Path, field: str, allowed: str) -> None:
    if not path.exists():
        raise usage(field, path, allowed, "does not exist")
    if not path.is_dir():
        raise usage(field, path, allowed, "is not a folder")


def require_file(folder: Path, name: str, field: str, allowed: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise usage(field, folder, allowed, f"has no {name}")
    return path


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class CsvFile:
    """A CSV file read row by row as dicts, its header checked for the columns the reader needs."""

    def __init__(self, path: Path, required: Sequence[str], counter: ByteCounter) -> None:
        self.path = path
        self.name = path.name
        self._required = required
        self._counter = counter

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(line number, row) for every data row; bytes read go to the counter."""
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise usage("file", self.path, "a readable CSV file", f"cannot be read: {exc.strerror}") from None
        with raw:
            text = io.TextIOWrapper(
                io.BufferedReader(CountingReader(raw, self._counter)), encoding="utf-8-sig", newline=""
            )
            reader = csv.reader(text)
            try:
                header = next(reader, None)
                self._check_header(header)
                assert header is not None
                columns = [name.strip() for name in header]
                for row in reader:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # a blank line
                    yield reader.line_num, dict(zip(columns, row, strict=False))
            except UnicodeDecodeError:
                raise usage("file", self.name, "UTF-8 text", "is not UTF-8 text") from None
            except csv.Error as exc:
                where = f"{self.name} line {reader.line_num}"
                raise usage("file", where, "well-formed CSV", f"is malformed: {exc}") from None

    def _check_header(self, header: list[str] | None) -> None:
        allowed = "a header with " + ", ".join(self._required)
        if header is None:
            raise usage("header", self.name, allowed, "is empty")
        present = {name.strip() for name in header}
        missing = [name for name in self._required if name not in present]
        if missing:
            raise usage("header", self.name, allowed, f"has no column {', '.join(missing)}")


def bad_row(csv_file: CsvFile, line: int, column: str, value: str, allowed: str) -> UsageError:
    return usage(column, repr(value), allowed, f"in {csv_file.name} line {line} is malformed")


def us_date(csv_file: CsvFile, line: int, column: str, value: str) -> dt.date:
    """`4/12/2016`, or the date part of `4/12/2016 12:00:00 AM`."""
    text = value.strip().split(" ", 1)[0]
    try:
        month, day, year = text.split("/")
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        raise bad_row(csv_file, line, column, value, "a date as M/D/YYYY") from None


def iso_date(csv_file: CsvFile, line: int, column: str, value: str) -> dt.date:
    """`2020-04-21`, or the date part of `2020-04-21 21:23:08`."""
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise bad_row(csv_file, line, column, value, "a date as YYYY-MM-DD") from None


def decimal_or_none(value: str) -> Decimal | None:
    """The number in `value`, or None when it is empty or not a finite number."""
    text = value.strip()
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def unknown_user(user: str, where: str, ids: Sequence[str]) -> UsageError:
    example = f", e.g. {sorted(ids)[0]}" if ids else ""
    allowed = f"one of {len(ids)} ids{example}"
    return usage("source-user", user, allowed, f"is not in {where}")
