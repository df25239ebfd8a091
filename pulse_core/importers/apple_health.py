"""Reading days from an Apple Health export: `export.xml`, or the `export.zip` the Health app
writes (which holds `apple_health_export/export.xml`), or the unzipped folder.

The file is parsed streaming (`xml.etree.ElementTree.iterparse`), handling each top-level
`Record` as it starts and clearing the tree after every top-level element, so memory holds only
the per-day aggregates below, however large the export (real ones reach gigabytes). Records
inside a `Correlation` are skipped: Apple writes each of them again at the top level. The internal
DTD is dropped before parsing (iOS 16 and later write a broken one), and so are the control
characters XML forbids (some apps put U+000B in source names).

Every timestamp in the export carries its own UTC offset (`2016-04-18 08:25:32 -0700`); a
sample's day is the local date as written there, never converted to this computer's zone.

- steps (HKQuantityTypeIdentifierStepCount): an iPhone and an Apple Watch both count the steps
  of the same walk, so adding every sample double counts; and the clock time says little on its
  own (Tokyo's 10:00 and Los Angeles' 10:00 of one travel day are 16 hours apart; Berlin's 02:00
  comes twice the night the clocks go back). So samples are compared on the absolute time line
  (UTC, each stamp by its own offset). Samples from any sources that overlap there, directly or
  through others, form one span; in a span the source with the most steps counts in full, and
  each other source, taken in order of its steps (a tie: by name), counts only the part of its
  samples that the sources before it did not cover (in proportion to time, rounded half up). So
  a walk two devices recorded counts once, by the one that counted more of it; a walk only the
  phone saw (the Watch charging) counts; samples that overlap nothing all count. A span is never
  below the best source's steps in it, nor above the sum of all of them. Each sample's steps
  belong to the local date of its own offset (a phone still on Tokyo time puts its steps on
  Tokyo's date); a sample that runs past its local midnight is shared out over the dates in
  proportion to its time, in whole steps; a sample without length (end not after start) counts
  as one second. Memory: each source's back-to-back samples of one date are joined into a run
  (a walk is one run, 32 bytes; a run partly covered is prorated as a whole), 17 runs a day for
  a phone and a watch in bench/'s exports; an export lists each source's samples together, not
  by time, so the runs are kept until the end of the file.
- sleep_hours (HKCategoryTypeIdentifierSleepAnalysis): only time asleep (Asleep,
  AsleepUnspecified, AsleepCore, AsleepDeep, AsleepREM), not InBed or Awake. Asleep intervals
  from all sources are merged (their union, on the absolute time line, so a Watch and a sleep
  app recording the same night count it once); each merged stretch belongs to the day you woke:
  the local date of its end. Memory: a few merged stretches per day.
- weight_kg (HKQuantityTypeIdentifierBodyMass): lb x 0.45359237 (exact, Decimal), st x 14 lb,
  g / 1000, kg as is; the last sample of the day (by startDate; a tie goes to the later record).
- hrv_ms (HKQuantityTypeIdentifierHeartRateVariabilitySDNN): hrv_method "sdnn", the first sample
  of the day (by startDate; a tie goes to the earlier record).
- Other record types are ignored; so are samples whose value or dates cannot be read, and
  body-mass samples in a unit not listed above.

The export is read and checked when `read_apple_health` is called (errors and progress come
before the store is locked); it returns an iterator over the days in date order.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
import zipfile
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import ParseError, iterparse

from pulse_core.importers._common import ByteCounter, CountingReader, Progress, file_size, usage
from pulse_core.usecases import DayRecord

STEPS = "HKQuantityTypeIdentifierStepCount"
SLEEP = "HKCategoryTypeIdentifierSleepAnalysis"
BODY_MASS = "HKQuantityTypeIdentifierBodyMass"
HRV_SDNN = "HKQuantityTypeIdentifierHeartRateVariabilitySDNN"

ASLEEP = frozenset(
    "HKCategoryValueSleepAnalysis" + name
    for name in ("Asleep", "AsleepUnspecified", "AsleepCore", "AsleepDeep", "AsleepREM")
)
KG_PER_LB = Decimal("0.45359237")
KG_PER_UNIT = {
    "kg": Decimal(1),
    "lb": KG_PER_LB,
    "lbs": KG_PER_LB,
    "st": 14 * KG_PER_LB,
    "g": Decimal("0.001"),
}
EXPORT_XML = "export.xml"
ZIP_MEMBER = "apple_health_export/export.xml"
ALLOWED = "an Apple Health export.xml or export.zip"
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_ORDINAL = EPOCH.date().toordinal()
ZONE = re.compile(r"([+-])(\d\d):?(\d\d)")  # the offset after a stamp's time: -0700 (or -07:00)
ONE_SECOND = dt.timedelta(seconds=1)
COMPACT_AT = 32  # merge a day's asleep intervals once this many have piled up
# Control characters XML 1.0 forbids (all but tab, LF and CR); some apps write them into names.
# UTF-8 never uses these bytes inside a multi-byte character, so deleting them is safe.
FORBIDDEN_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))
ROOT_TAG = re.compile(rb"<HealthData[\s>/]")
HEAD_LIMIT = 1 << 22  # look this far for the root tag (the DTD is about 10 KB)


Run = tuple[int, int, int, int, int]  # start, end (UTC seconds), steps, local day, source index
UNREADABLE = "unreadable "  # `held` key prefix: a record of a kind read, whose value or dates could not be
READ = {STEPS: "step count", SLEEP: "sleep analysis", BODY_MASS: "body mass", HRV_SDNN: "HRV (SDNN)"}


class _Day:
    """One day's aggregates; with slots and arrays, a few hundred bytes a day."""

    __slots__ = ("hrv", "sleep", "weight")

    def __init__(self) -> None:
        self.sleep: array[int] | None = None  # asleep intervals that end this day: start, end, ...
        self.weight: tuple[int, Decimal] | None = None  # (instant, kg) of the day's last sample
        self.hrv: tuple[int, str] | None = None  # (instant, ms) of the day's first sample


class _StepRuns:
    """One source's step samples on the UTC time line, back-to-back samples of one local date
    joined into a run: start and end (seconds since the epoch), steps and the local date (days
    since 1970-01-01) of each run, in parallel arrays."""

    __slots__ = ("counts", "days", "ends", "in_order", "starts")

    def __init__(self) -> None:
        self.starts = array("q")
        self.ends = array("q")
        self.counts = array("q")
        self.days = array("q")
        self.in_order = True  # runs were added by start time (exports list a source's samples so)

    def add(self, start: int, end: int, count: int, day: int) -> None:
        if self.starts:
            last_start, last_end = self.starts[-1], self.ends[-1]
            if last_start <= start <= last_end and day == self.days[-1]:  # the same walk goes on
                if end > last_end:
                    self.ends[-1] = end
                self.counts[-1] += count
                return
            if start < last_start:
                self.in_order = False
        self.starts.append(start)
        self.ends.append(end)
        self.counts.append(count)
        self.days.append(day)

    def runs(self, source: int) -> Iterator[Run]:
        """The runs by start time."""
        starts = self.starts
        order: Sequence[int] = range(len(starts))
        if not self.in_order:
            order = sorted(order, key=starts.__getitem__)
        for i in order:
            yield starts[i], self.ends[i], self.counts[i], self.days[i], source


class _Aggregates:
    """Everything kept while parsing: a bounded amount per day (per walk for steps), nothing per
    record."""

    def __init__(self) -> None:
        self.days: dict[str, _Day] = {}
        self.sources: dict[str, int] = {}  # step sources, numbered in order of appearance
        self.steps: list[_StepRuns] = []  # by source number
        self._dates: dict[str, int] = {}  # "2016-04-18" -> days since 1970-01-01
        self._zones: dict[str, int] = {}  # " -0700" -> -25200 seconds

    def day(self, key: str) -> _Day:
        day = self.days.get(key)
        if day is None:
            day = self.days[key] = _Day()
        return day

    def add_steps(self, attrib: Mapping[str, str]) -> None:
        value = attrib["value"]
        try:
            count = int(value)
        except ValueError:
            count = int(Decimal(value).to_integral_value(ROUND_HALF_UP))
        if count <= 0:
            return
        local, offset = self._clock(attrib["startDate"])
        end_local, end_offset = self._clock(attrib["endDate"])
        start, end = local - offset, end_local - end_offset
        if end <= start:
            end = start + 1
        source = attrib.get("sourceName", "")
        index = self.sources.get(source)
        if index is None:
            index = self.sources[source] = len(self.sources)
            self.steps.append(_StepRuns())
        runs = self.steps[index]
        day = local // SECONDS_PER_DAY
        if end + offset <= (day + 1) * SECONDS_PER_DAY:  # ends by its own midnight: almost every sample
            runs.add(start, end, count, day)
            return
        span, given, cursor = end - start, 0, start
        while cursor < end:  # share it out over the local dates it spans, in whole steps, exactly
            stop = min(end, (day + 1) * SECONDS_PER_DAY - offset)
            share = count * (stop - start) // span - given
            runs.add(cursor, stop, share, day)
            given, cursor, day = given + share, stop, day + 1

    def _clock(self, text: str) -> tuple[int, int]:
        """`2016-04-18 08:25:32 -0700` as (seconds since 1970-01-01 00:00 on its own clock, its
        offset in seconds); the instant is the first minus the second."""
        date = text[:10]
        day = self._dates.get(date)
        if day is None:
            day = self._dates[date] = dt.date.fromisoformat(date).toordinal() - EPOCH_ORDINAL
        zone = text[19:]
        offset = self._zones.get(zone)
        if offset is None:
            offset = self._zones[zone] = _offset(zone)
        seconds = int(text[11:13]) * SECONDS_PER_HOUR + int(text[14:16]) * 60 + int(text[17:19])
        return day * SECONDS_PER_DAY + seconds, offset

    def add_sleep(self, attrib: Mapping[str, str]) -> None:
        if attrib.get("value") not in ASLEEP:
            return
        end_text = attrib["endDate"]
        start, end = _instant(attrib["startDate"]), _instant(end_text)
        if end <= start:
            return
        day = self.day(end_text[:10])
        intervals = day.sleep
        if intervals is None:
            day.sleep = array("q", (start, end))
        elif intervals[-2] <= start <= intervals[-1]:  # the next stage of the same sleep
            if end > intervals[-1]:
                intervals[-1] = end
        else:
            intervals.extend((start, end))
            if len(intervals) >= 2 * COMPACT_AT:
                day.sleep = array("q", [t for pair in _union(_pairs(intervals)) for t in pair])

    def add_weight(self, attrib: Mapping[str, str]) -> None:
        per_unit = KG_PER_UNIT.get(attrib.get("unit", "").strip().lower())
        if per_unit is None:
            return
        kg = Decimal(attrib["value"]) * per_unit
        if not kg.is_finite():
            return
        start = attrib["startDate"]
        instant = _instant(start)
        day = self.day(start[:10])
        if day.weight is None or instant >= day.weight[0]:  # a tie: the later record wins
            day.weight = (instant, kg)

    def add_hrv(self, attrib: Mapping[str, str]) -> None:
        value = attrib["value"].strip()
        start = attrib["startDate"]
        instant = _instant(start)
        day = self.day(start[:10])
        if day.hrv is None or instant < day.hrv[0]:  # a tie: the earlier record wins
            day.hrv = (instant, value)

    def records(self, origin: str) -> Iterator[DayRecord]:
        """The days in date order, emptying the aggregates as it goes."""
        asleep = _asleep_by_wake_day(
            (start, end, key)
            for key, day in self.days.items()
            if day.sleep is not None
            for start, end in _union(_pairs(day.sleep))
        )
        by_start = heapq.merge(*(source.runs(index) for index, source in enumerate(self.steps)))
        steps = _steps_by_date(_steps_by_day(by_start, list(self.sources)))
        self.steps = []
        for key in sorted(self.days.keys() | steps.keys()):
            day = self.days.pop(key, None) or _Day()
            fields: dict[str, object] = {}
            if key in steps:
                fields["steps"] = steps[key]
            seconds = asleep.pop(key, None)
            if seconds is not None:
                fields["sleep_hours"] = Decimal(seconds) / SECONDS_PER_HOUR
            if day.weight is not None:
                fields["weight_kg"] = day.weight[1]
            if day.hrv is not None:
                fields.update(hrv_ms=day.hrv[1], hrv_method="sdnn")
            try:
                date = dt.date.fromisoformat(key)
            except ValueError:
                continue  # a date the export could not have written; nothing to attach it to
            if fields:
                yield DayRecord(date, fields, origin)


def _offset(zone: str) -> int:
    """Seconds east of UTC of a stamp's offset (` -0700`); a stamp without one is in UTC."""
    zone = zone.strip()
    if zone in ("", "Z"):
        return 0
    match = ZONE.fullmatch(zone)
    if match is None:
        raise ValueError(f"not a UTC offset: {zone!r}")
    seconds = int(match[2]) * SECONDS_PER_HOUR + int(match[3]) * 60
    return -seconds if match[1] == "-" else seconds


def _steps_by_day(runs: Iterable[Run], names: Sequence[str]) -> dict[int, int]:
    """Steps per local day from runs sorted by start: each span of overlapping runs settled alone."""
    totals: dict[int, int] = {}
    span: list[Run] = []
    reach = 0  # the latest end in the span
    for run in runs:
        if span and run[0] >= reach:
            _settle(span, names, totals)
            span = []
        if not span or run[1] > reach:
            reach = run[1]
        span.append(run)
    if span:
        _settle(span, names, totals)
    return totals


def _settle(span: list[Run], names: Sequence[str], totals: dict[int, int]) -> None:
    """Add one span's steps to `totals`: its sources by their steps in the span (most first, a tie
    by name), each counting only what the sources before it left uncovered."""
    by_source: dict[int, list[Run]] = {}
    for run in span:
        by_source.setdefault(run[4], []).append(run)
    steps = {source: sum(run[2] for run in runs) for source, runs in by_source.items()}
    ranked = sorted(by_source, key=lambda source: (-steps[source], names[source]))
    covered: list[tuple[int, int]] = []  # what the sources counted so far saw, disjoint, sorted
    for source in ranked:
        starts, ends = [start for start, _ in covered], [end for _, end in covered]
        for start, end, count, day, _ in by_source[source]:
            kept = _uncovered_share(count, start, end, starts, ends) if covered else count
            if kept:
                totals[day] = totals.get(day, 0) + kept
        covered = _union(covered + [(run[0], run[1]) for run in by_source[source]])


def _uncovered_share(count: int, start: int, end: int, starts: list[int], ends: list[int]) -> int:
    """The steps of [start, end) outside the disjoint sorted intervals, in proportion to time."""
    seen = 0
    i = bisect_right(ends, start)
    while i < len(starts) and starts[i] < end:
        seen += min(end, ends[i]) - max(start, starts[i])
        i += 1
    length = end - start
    return (2 * count * (length - seen) + length) // (2 * length)  # rounded half up


def _steps_by_date(totals: dict[int, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for day, count in totals.items():
        try:
            out[dt.date.fromordinal(EPOCH_ORDINAL + day).isoformat()] = count
        except (ValueError, OverflowError):
            continue  # a sample ending past year 9999 on its clock: nothing to attach it to
    return out


def _pairs(flat: array[int]) -> list[tuple[int, int]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _instant(text: str) -> int:
    """Seconds since the epoch of `2016-04-18 08:25:32 -0700`."""
    moment = dt.datetime.fromisoformat(text[:19] + text[19:].replace(" ", ""))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // ONE_SECOND


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _asleep_by_wake_day(stretches: Iterable[tuple[int, int, str]]) -> dict[str, int]:
    """Union asleep intervals across days and sources; each merged stretch goes to its end's day."""
    ordered = sorted(stretches)
    totals: dict[str, int] = {}
    if not ordered:
        return totals
    first, last, wake_day = ordered[0]
    for start, end, day in ordered[1:]:
        if start <= last:  # overlaps (or touches) the current stretch: one sleep
            if end > last:
                last, wake_day = end, day
            continue
        totals[wake_day] = totals.get(wake_day, 0) + last - first
        first, last, wake_day = start, end, day
    totals[wake_day] = totals.get(wake_day, 0) + last - first
    return totals


def read_apple_health(
    path: Path, progress: Progress | None = None, held: Counter[str] | None = None
) -> Iterator[DayRecord]:
    """The days in the Apple Health export at `path`, in date order. `held`, if given, counts what the file
    held besides the records read (see `describe_held`): for a hint when no day comes of it."""
    path = Path(path)
    if not path.exists():
        raise usage("file", path, ALLOWED, "does not exist")
    if path.is_dir():
        inside = next((p for p in (path / EXPORT_XML, path / ZIP_MEMBER) if p.is_file()), None)
        if inside is None:
            raise usage("file", path, ALLOWED, f"is a folder without {EXPORT_XML}")
        path = inside
    aggregates = _Aggregates()
    with ExitStack() as stack:
        stream, total, name = _open(path, stack)
        counter = ByteCounter(total, progress)
        _parse(CountingReader(stream, counter), aggregates, name, Counter() if held is None else held)
        counter.finish()
    return aggregates.records(f"apple-health {name}")


def _open(path: Path, stack: ExitStack) -> tuple[IO[bytes], int, str]:
    """The export.xml byte stream, its size and a name for messages."""
    try:
        if zipfile.is_zipfile(path):
            archive = stack.enter_context(zipfile.ZipFile(path))
            member = _zip_member(archive)
            if member is None:
                raise usage("file", path, ALLOWED, f"is a zip without {ZIP_MEMBER}")
            stream = stack.enter_context(archive.open(member))
            return stream, member.file_size, f"{path.name}:{member.filename}"
        return stack.enter_context(path.open("rb")), file_size(path), path.name
    except (OSError, zipfile.BadZipFile) as exc:
        raise usage("file", path, ALLOWED, f"cannot be read: {exc}") from None


def _zip_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """`apple_health_export/export.xml` (the folder's name varies with the phone's language)."""
    candidates = [
        info for info in archive.infolist() if info.filename.rsplit("/", 1)[-1] == EXPORT_XML
    ]
    candidates.sort(key=lambda info: (info.filename != ZIP_MEMBER, info.filename.count("/")))
    return candidates[0] if candidates else None


class _ExportStream:
    """export.xml as the parser should see it: without its internal DTD and without the control
    characters XML forbids. Exports from iOS 16 on carry a broken DTD (an ATTLIST missing its
    `>`: "syntax error: line 156") and some carry U+000B in names; neither matters to the data."""

    def __init__(self, raw: CountingReader) -> None:
        self._raw = raw
        self._head = True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._head:
            self._head = False
            data = self._without_doctype(data, size)
        return data.translate(None, FORBIDDEN_BYTES)

    def _without_doctype(self, data: bytes, size: int) -> bytes:
        root = ROOT_TAG.search(data)
        while root is None and len(data) < HEAD_LIMIT:
            more = self._raw.read(size if size > 0 else 1 << 16)
            if not more:
                break
            data += more
            root = ROOT_TAG.search(data)
        doctype = data.find(b"<!DOCTYPE")
        if root is None or doctype < 0 or doctype > root.start():
            return data
        return data[:doctype] + data[root.start() :]


def _parse(stream: CountingReader, aggregates: _Aggregates, name: str, held: Counter[str]) -> None:
    handlers: dict[str | None, Callable[[Mapping[str, str]], None]] = {
        STEPS: aggregates.add_steps,
        SLEEP: aggregates.add_sleep,
        BODY_MASS: aggregates.add_weight,
        HRV_SDNN: aggregates.add_hrv,
    }
    try:
        context = iterparse(_ExportStream(stream), events=("start", "end"))
        event, root = next(context)
        if root.tag != "HealthData":
            raise usage("file", name, ALLOWED, f"is not an Apple Health export (its root is <{root.tag}>)")
        depth = 1
        for event, element in context:
            if event == "start":
                depth += 1
                if depth == 2 and element.tag == "Record":
                    kind = element.get("type")
                    held[str(kind)] += 1
                    handler = handlers.get(kind)
                    if handler is not None:
                        try:
                            handler(element.attrib)
                        except (KeyError, ValueError, IndexError, InvalidOperation, OverflowError):
                            held[UNREADABLE + str(kind)] += 1  # a sample without a readable value or date
                elif depth == 2:
                    held[element.tag] += 1
            else:
                depth -= 1
                if depth == 1:
                    root.clear()  # drop the finished top-level element and everything under it
    except ParseError as exc:
        raise usage("file", name, ALLOWED, f"is not well-formed XML: {exc}") from None
    except StopIteration:
        raise usage("file", name, ALLOWED, "is empty") from None


def describe_held(held: Counter[str]) -> str:
    """Why an export gave no day, from what it held: `the file held 2 records (body mass index 1, heart rate
    1), 2 activity summaries and 1 workout; pulse reads step count, sleep analysis, body mass and HRV
    (SDNN) records, and this file has none`."""
    unreadable = {k.removeprefix(UNREADABLE): n for k, n in held.items() if k.startswith(UNREADABLE)}
    records = {k: n for k, n in held.items() if k.startswith("HK")}
    others = {k: n for k, n in held.items() if not k.startswith(("HK", UNREADABLE)) and k not in ("Me", "ExportDate")}
    parts = []
    if records:
        kinds = ", ".join(f"{READ.get(k) or _spoken(k)} {n}" for k, n in sorted(records.items(), key=lambda kv: -kv[1]))
        parts.append(f"{_count(sum(records.values()), 'record')} ({kinds})")
    parts += [_count(n, _spoken(tag)) for tag, n in sorted(others.items())]
    held_text = f"the file held {_joined(parts) if parts else 'no records'}"
    if unreadable:
        kinds = _joined([f"{READ.get(k, k)} {n}" for k, n in sorted(unreadable.items())])
        return f"{held_text}; of the records pulse reads, these had a value, unit or date it could not read: {kinds}"
    if SLEEP in records:  # read, yet no day: every sample was in bed or awake
        return f"{held_text}; its sleep analysis records are time in bed or awake, and only time asleep counts"
    return f"{held_text}; pulse reads {_joined([*READ.values()])} records, and this file has none"


def _spoken(name: str) -> str:
    """`HKQuantityTypeIdentifierBodyMassIndex` -> "body mass index", `ActivitySummary` -> "activity summary"."""
    bare = re.sub(r"^HK\w*?TypeIdentifier", "", name)
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", bare).lower()


def _count(n: int, noun: str) -> str:
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else many}"


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
