"""Write a synthetic but realistic Apple Health export.xml with exactly N top-level <Record>s.

    .venv/bin/python bench/make_apple_health_export.py /tmp/export.xml --records 1000000 --seed 7
    .venv/bin/python bench/make_apple_health_export.py /tmp/export.zip --records 100000  # zipped

What is in it, per simulated day (about 900 records a day, so 1,000,000 records is ~3 years):

- StepCount from an iPhone AND an Apple Watch counting the same walks (the phone in 1-10 minute
  samples, the watch in 1-3 minute samples, counts a few percent apart); some walks only the
  watch saw (phone left behind), and a morning hour the watch is charging so only the phone counts.
  DistanceWalkingRunning beside the phone's steps.
- SleepAnalysis: the phone's InBed for the night, the watch's AsleepCore/Deep/REM/Awake stages,
  every third night a sleep app's overlapping AsleepUnspecified (or legacy Asleep) over the same
  night, and now and then an afternoon nap. Nights start before midnight, so the wake day differs
  from the start's day.
- BodyMass from a Withings scale in kg most mornings, and a hand-entered lb weight some evenings.
- HeartRateVariabilitySDNN from the watch with its nested beats-per-minute list.
- Noise: HeartRate (with MetadataEntry), ActiveEnergyBurned, BasalEnergyBurned, a blood-pressure
  Correlation now and then (its Records nested, and also written again at the top level, as Apple
  does), ActivitySummary, Workout.
- Local times with their UTC offset: US Pacific with daylight saving, and a week in Europe.

Records are grouped by type then time, as in a real export. Deterministic for a given seed: each
(type, day) draws from its own random.Random. Written streaming, day by day, in constant memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

START = dt.date(2020, 1, 1)
PHONE = "Anna’s iPhone"
WATCH = "Anna’s Apple Watch"
PHONE_DEVICE = (
    "&lt;&lt;HKDevice: 0x283e3c1e0&gt;, name:iPhone, manufacturer:Apple, model:iPhone, "
    "hardware:iPhone12,1, software:14.4&gt;"
)
WATCH_DEVICE = (
    "&lt;&lt;HKDevice: 0x283e3c2d0&gt;, name:Apple Watch, manufacturer:Apple Inc., model:Watch, "
    "hardware:Watch5,4, software:7.2&gt;"
)
HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary)*)>
<!ATTLIST HealthData locale CDATA #REQUIRED>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate value CDATA #REQUIRED>
<!ELEMENT Me EMPTY>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ATTLIST Record
  type          CDATA #REQUIRED
  unit          CDATA #IMPLIED
  value         CDATA #IMPLIED
  sourceName    CDATA #REQUIRED
  sourceVersion CDATA #IMPLIED
  device        CDATA #IMPLIED
  creationDate  CDATA #IMPLIED
  startDate     CDATA #REQUIRED
  endDate       CDATA #REQUIRED
>
]>
<HealthData locale="en_US">
 <ExportDate value="{export_date}"/>
 <Me HKCharacteristicTypeIdentifierDateOfBirth="1988-03-14" \
HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale" \
HKCharacteristicTypeIdentifierBloodType="HKBloodTypeNotSet" \
HKCharacteristicTypeIdentifierFitzpatrickSkinType="HKFitzpatrickSkinTypeNotSet"/>
"""


def offset_for(day: dt.date) -> str:
    """US Pacific with daylight saving, except a week in Europe each autumn."""
    if dt.date(day.year, 10, 3) <= day <= dt.date(day.year, 10, 10):
        return "+0200"
    march = dt.date(day.year, 3, 8)
    dst_start = march + dt.timedelta(days=(6 - march.weekday()) % 7)
    november = dt.date(day.year, 11, 1)
    dst_end = november + dt.timedelta(days=(6 - november.weekday()) % 7)
    return "-0700" if dst_start <= day < dst_end else "-0800"


class Clock:
    """Formats "seconds from midnight of day i" (negative: the evening before) as export stamps."""

    def __init__(self) -> None:
        self._days: dict[int, tuple[str, str]] = {}

    def stamp(self, day: int, seconds: int) -> str:
        day += seconds // 86400
        seconds %= 86400
        cached = self._days.get(day)
        if cached is None:
            date = START + dt.timedelta(days=day)
            cached = self._days[day] = (date.isoformat(), offset_for(date))
        hours, rest = divmod(seconds, 3600)
        return f"{cached[0]} {hours:02d}:{rest // 60:02d}:{rest % 60:02d} {cached[1]}"


@dataclass(frozen=True)
class Walk:
    start: int  # seconds from midnight
    minutes: int
    cadence: int  # steps a minute
    phone: bool  # the phone was carried


def walks(seed: int, day: int) -> list[Walk]:
    rng = random.Random(f"{seed}:walks:{day}")
    out: list[Walk] = []
    cursor = 6 * 3600 + rng.randrange(3600)
    for _ in range(rng.randrange(6, 14)):
        cursor += rng.randrange(10 * 60, 80 * 60)
        minutes = rng.randrange(2, 26)
        if cursor + minutes * 60 > 23 * 3600:
            break
        out.append(Walk(cursor, minutes, rng.randrange(55, 125), rng.random() < 0.85))
        cursor += minutes * 60
    return out


def watch_charging(day: int) -> tuple[int, int]:
    return (7 * 3600, 8 * 3600)  # the watch charges while its owner showers and dresses


Line = str
Maker = Callable[[int, int, Clock], Iterator[Line]]


def record(kind: str, source: str, device: str, unit: str | None, start: str, end: str, value: str,
           created: str, children: str = "") -> Line:
    unit_attr = f' unit="{unit}"' if unit else ""
    version = "14.4" if source == PHONE else "7.2"
    head = (
        f' <Record type="{kind}" sourceName="{source}" sourceVersion="{version}" device="{device}"'
        f'{unit_attr} creationDate="{created}" startDate="{start}" endDate="{end}" value="{value}"'
    )
    return f"{head}>\n{children} </Record>\n" if children else f"{head}/>\n"


def phone_steps(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:phone-steps:{day}")
    for walk in walks(seed, day):
        if not walk.phone:
            continue
        t, left = walk.start, walk.minutes * 60
        while left > 0:
            piece = min(left, rng.randrange(60, 601))
            steps = max(1, round(walk.cadence * piece / 60 * rng.uniform(0.92, 1.05)))
            end = clock.stamp(day, t + piece)
            yield record("HKQuantityTypeIdentifierStepCount", PHONE, PHONE_DEVICE, "count",
                         clock.stamp(day, t), end, str(steps), clock.stamp(day, t + piece + 120))
            t, left = t + piece, left - piece


def phone_distance(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:phone-steps:{day}")  # the same pieces as the phone's steps
    for walk in walks(seed, day):
        if not walk.phone:
            continue
        t, left = walk.start, walk.minutes * 60
        while left > 0:
            piece = min(left, rng.randrange(60, 601))
            steps = max(1, round(walk.cadence * piece / 60 * rng.uniform(0.92, 1.05)))
            yield record("HKQuantityTypeIdentifierDistanceWalkingRunning", PHONE, PHONE_DEVICE, "km",
                         clock.stamp(day, t), clock.stamp(day, t + piece), f"{steps * 0.00074:.5f}",
                         clock.stamp(day, t + piece + 120))
            t, left = t + piece, left - piece


def watch_steps(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:watch-steps:{day}")
    off_from, off_to = watch_charging(day)
    for walk in walks(seed, day):
        t, left = walk.start, walk.minutes * 60
        while left > 0:
            piece = min(left, rng.randrange(60, 181))
            if not off_from <= t < off_to:
                steps = max(1, round(walk.cadence * piece / 60 * rng.uniform(0.95, 1.03)))
                yield record("HKQuantityTypeIdentifierStepCount", WATCH, WATCH_DEVICE, "count",
                             clock.stamp(day, t), clock.stamp(day, t + piece), str(steps),
                             clock.stamp(day, t + piece + 30))
            t, left = t + piece, left - piece


def sleep(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    """The night that ends on `day` (it starts the evening before), and sometimes a nap."""
    rng = random.Random(f"{seed}:sleep:{day}")
    kind = "HKCategoryTypeIdentifierSleepAnalysis"
    value = "HKCategoryValueSleepAnalysis"
    bed = -(90 * 60) + rng.randrange(-45 * 60, 60 * 60)  # around 22:30 the evening before
    wake = 6 * 3600 + rng.randrange(0, 90 * 60)
    created = clock.stamp(day, wake + 600)
    yield f' <Record type="{kind}" sourceName="{PHONE}" sourceVersion="14.4" creationDate="{created}" ' \
          f'startDate="{clock.stamp(day, bed)}" endDate="{clock.stamp(day, wake)}" value="{value}InBed"/>\n'
    t = bed + rng.randrange(8 * 60, 30 * 60)
    onset = t
    stages = ("AsleepCore", "AsleepDeep", "AsleepCore", "AsleepREM")
    i = 0
    while t < wake - 5 * 60:
        stage = "Awake" if rng.random() < 0.08 else stages[i % len(stages)]
        length = rng.randrange(2, 6) * 60 if stage == "Awake" else rng.randrange(8, 40) * 60
        end = min(t + length, wake - 5 * 60)
        yield f' <Record type="{kind}" sourceName="{WATCH}" sourceVersion="7.2" device="{WATCH_DEVICE}" ' \
              f'creationDate="{created}" startDate="{clock.stamp(day, t)}" ' \
              f'endDate="{clock.stamp(day, end)}" value="{value}{stage}"/>\n'
        t, i = end, i + 1
    if day % 3 == 0:
        legacy = "Asleep" if day % 6 == 0 else "AsleepUnspecified"
        yield f' <Record type="{kind}" sourceName="AutoSleep" sourceVersion="6.3" creationDate="{created}" ' \
              f'startDate="{clock.stamp(day, onset - 300)}" endDate="{clock.stamp(day, wake - 120)}" ' \
              f'value="{value}{legacy}"/>\n'
    if rng.random() < 0.1:
        nap = 14 * 3600 + rng.randrange(0, 7200)
        yield f' <Record type="{kind}" sourceName="{WATCH}" sourceVersion="7.2" device="{WATCH_DEVICE}" ' \
              f'creationDate="{clock.stamp(day, nap + 1800)}" startDate="{clock.stamp(day, nap)}" ' \
              f'endDate="{clock.stamp(day, nap + 1500)}" value="{value}AsleepCore"/>\n'


def body_mass(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:weight:{day}")
    kg = 68 + 3 * ((day % 365) / 365) + rng.uniform(-0.6, 0.6)
    if rng.random() < 0.6:
        t = 7 * 3600 + rng.randrange(0, 3600)
        meta = '  <MetadataEntry key="HKWasUserEntered" value="0"/>\n'
        line = record("HKQuantityTypeIdentifierBodyMass", "Health Mate", "", "kg", clock.stamp(day, t),
                      clock.stamp(day, t), f"{kg:.3f}", clock.stamp(day, t + 90), meta)
        yield line.replace(' device=""', "")
    if rng.random() < 0.1:
        t = 20 * 3600 + rng.randrange(0, 3600)
        meta = '  <MetadataEntry key="HKWasUserEntered" value="1"/>\n'
        yield record("HKQuantityTypeIdentifierBodyMass", "Health", "", "lb", clock.stamp(day, t),
                     clock.stamp(day, t), f"{kg / 0.45359237 + 1:.1f}", clock.stamp(day, t), meta
                     ).replace(' device=""', "")


def hrv(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:hrv:{day}")
    t = 0
    for _ in range(rng.randrange(3, 8)):
        t += rng.randrange(1800, 4 * 3600)
        if t >= 86000:
            break
        beats = "".join(
            f'   <InstantaneousBeatsPerMinute bpm="{rng.randrange(52, 80)}" '
            f'time="{i}:0{i % 10}.{i:02d} PM"/>\n'
            for i in range(rng.randrange(40, 70))
        )
        children = f"  <HeartRateVariabilityMetadataList>\n{beats}  </HeartRateVariabilityMetadataList>\n"
        yield record("HKQuantityTypeIdentifierHeartRateVariabilitySDNN", WATCH, WATCH_DEVICE, "ms",
                     clock.stamp(day, t), clock.stamp(day, t + 60), f"{rng.uniform(25, 95):.4f}",
                     clock.stamp(day, t + 65), children)


def heart_rate(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:hr:{day}")
    t = rng.randrange(0, 300)
    while t < 86400 - 60:
        meta = f'  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="{rng.randrange(0, 2)}"/>\n'
        yield record("HKQuantityTypeIdentifierHeartRate", WATCH, WATCH_DEVICE, "count/min",
                     clock.stamp(day, t), clock.stamp(day, t), str(rng.randrange(50, 130)),
                     clock.stamp(day, t + 20), meta)
        t += rng.randrange(150, 420)


def energy(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:energy:{day}")
    t = 6 * 3600 + rng.randrange(0, 600)
    while t < 23 * 3600:
        piece = rng.randrange(60, 600)
        yield record("HKQuantityTypeIdentifierActiveEnergyBurned", WATCH, WATCH_DEVICE, "kcal",
                     clock.stamp(day, t), clock.stamp(day, t + piece), f"{rng.uniform(0.1, 9):.3f}",
                     clock.stamp(day, t + piece + 10))
        t += piece + rng.randrange(0, 120)


def basal(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    rng = random.Random(f"{seed}:basal:{day}")
    for t in range(0, 86400, 1800):
        yield record("HKQuantityTypeIdentifierBasalEnergyBurned", WATCH, WATCH_DEVICE, "kcal",
                     clock.stamp(day, t), clock.stamp(day, t + 1800), f"{rng.uniform(28, 36):.3f}",
                     clock.stamp(day, t + 1810))


def blood_pressure(seed: int, day: int, clock: Clock) -> Iterator[Line]:
    """Top-level systolic/diastolic Records (a Correlation repeats them, written separately)."""
    rng = random.Random(f"{seed}:bp:{day}")
    if day % 7 == 0:
        t = 8 * 3600 + rng.randrange(0, 3600)
        for kind, value in (("Systolic", rng.randrange(105, 135)), ("Diastolic", rng.randrange(65, 88))):
            yield record(f"HKQuantityTypeIdentifierBloodPressure{kind}", "Health Mate", "", "mmHg",
                         clock.stamp(day, t), clock.stamp(day, t), str(value), clock.stamp(day, t + 60)
                         ).replace(' device=""', "")


MAKERS: tuple[tuple[str, Maker], ...] = (
    ("StepCount/iPhone", phone_steps),
    ("StepCount/Watch", watch_steps),
    ("DistanceWalkingRunning", phone_distance),
    ("SleepAnalysis", sleep),
    ("BodyMass", body_mass),
    ("HeartRateVariabilitySDNN", hrv),
    ("HeartRate", heart_rate),
    ("ActiveEnergyBurned", energy),
    ("BasalEnergyBurned", basal),
    ("BloodPressure", blood_pressure),
)


def plan(records: int, seed: int) -> list[list[int]]:
    """Records per (day, maker), over as many days as it takes to reach exactly `records`."""
    clock = Clock()
    days: list[list[int]] = []
    total = 0
    while total < records:
        day = len(days)
        counts = [sum(1 for _ in make(seed, day, clock)) for _, make in MAKERS]
        room = records - total
        if sum(counts) > room:  # the last day: keep each maker's first records until N is reached
            trimmed = []
            for count in counts:
                trimmed.append(min(count, room))
                room -= trimmed[-1]
            counts = trimmed
        days.append(counts)
        total += sum(counts)
    return days


def correlations(seed: int, days: int, clock: Clock) -> Iterator[Line]:
    for day in range(0, days, 7):
        lines = list(blood_pressure(seed, day, clock))
        if len(lines) != 2:
            continue
        start = lines[0].split('startDate="')[1][:25]
        inner = "".join("  " + line for line in lines)
        yield (f' <Correlation type="HKCorrelationTypeIdentifierBloodPressure" sourceName="Health Mate" '
               f'sourceVersion="2160040" creationDate="{start}" startDate="{start}" endDate="{start}">\n'
               f'{inner} </Correlation>\n')


def summaries(days: int) -> Iterator[Line]:
    for day in range(days):
        date = (START + dt.timedelta(days=day)).isoformat()
        yield (f' <ActivitySummary dateComponents="{date}" activeEnergyBurned="512.3" '
               'activeEnergyBurnedGoal="500" activeEnergyBurnedUnit="kcal" appleExerciseTime="34" '
               'appleExerciseTimeGoal="30" appleStandHours="11" appleStandHoursGoal="12"/>\n')


def write_export(out: IO[str], records: int, seed: int = 7) -> int:
    """Write the export to `out`; returns the number of days it spans."""
    days = plan(records, seed)
    clock = Clock()
    last = START + dt.timedelta(days=len(days))
    out.write(HEADER.format(export_date=f"{last.isoformat()} 09:00:00 {offset_for(last)}"))
    buffer: list[str] = []
    for index, (_, make) in enumerate(MAKERS):
        for day, counts in enumerate(days):
            wanted = counts[index]
            if not wanted:
                continue
            for n, line in enumerate(make(seed, day, clock)):
                if n >= wanted:
                    break
                buffer.append(line)
            if len(buffer) > 5000:
                out.write("".join(buffer))
                buffer.clear()
    out.write("".join(buffer))
    for line in correlations(seed, len(days), clock):
        out.write(line)
    out.write(
        ' <Workout workoutActivityType="HKWorkoutActivityTypeWalking" duration="31.2" durationUnit="min" '
        f'sourceName="{WATCH}" sourceVersion="7.2" creationDate="{clock.stamp(0, 40000)}" '
        f'startDate="{clock.stamp(0, 38000)}" endDate="{clock.stamp(0, 39872)}"/>\n'
    )
    for line in summaries(len(days)):
        out.write(line)
    out.write("</HealthData>\n")
    return len(days)


def make_export(path: Path, records: int, seed: int = 7) -> int:
    """Write export.xml (or, for a .zip path, an export.zip holding apple_health_export/export.xml)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive, archive.open(
            "apple_health_export/export.xml", "w", force_zip64=True
        ) as member:
            text = _TextSink(member)
            days = write_export(text, records, seed)  # type: ignore[arg-type]
            text.flush()
            return days
    with path.open("w", encoding="utf-8", newline="\n") as out:
        return write_export(out, records, seed)


class _TextSink:
    """The few text-file methods write_export uses, encoding UTF-8 into a binary stream."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(text.encode("utf-8"))
        return len(text)

    def flush(self) -> None:
        self._raw.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="export.xml to write (or a .zip)")
    parser.add_argument("--records", type=int, default=100_000, help="top-level <Record>s (default 100000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    days = make_export(args.path, args.records, args.seed)
    size = args.path.stat().st_size
    print(f"wrote {args.path}: {args.records} records over {days} days, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
