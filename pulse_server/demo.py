"""`pulse-server seed-demo`: the real sample data as a team, so a new user sees a real report at once.

Every Fitbit user of the Fitabase set (33, as `fitbit-<Id>`) and every Welltory HRV user (185, as
`welltory-<user_code>`) becomes an athlete who granted one coach access. Their days are read with
the same readers `pulse import` uses and written through the server's own exactly-once path
(`Reconciler.apply_batch`), as mutations of the server's clients `seed-fitbit` / `seed-welltory`
with source "fitbit" / "welltory" and `seq` = the day's ordinal. So re-running changes nothing:
days whose stored values already match are not sent at all, and a replayed mutation would only be
answered `duplicate`.

Demo athletes get an unusable password hash: nobody can sign in as them. The coach is created
(with the password given) only if missing; an existing user of that name must be a coach.
"""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlmodel import Session, select

from pulse_core.entry import MERGE_FIELDS, Entry, FieldValue
from pulse_core.errors import ValidationError
from pulse_core.usecases import DayRecord
from pulse_core.values import parse_fields
from pulse_server.accounts import add_user, check_username, find_user
from pulse_server.db.database import Database
from pulse_server.db.entries import PostgresEntryRepository
from pulse_server.db.models import Grant, User
from pulse_server.errors import ApiError
from pulse_server.push import Reconciler
from sync.hlc import SKEW_LIMIT_MS, Stamp

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"
FITBIT_IDS = ("fitbit", "dailyActivity_merged.csv", "Id")
WELLTORY_IDS = ("welltory", "hrv_measurements_no_rr.csv", "user_code")
CLIENTS = {"fitbit": "seed-fitbit", "welltory": "seed-welltory"}
NO_LOGIN = "!demo athlete: no password can match this"
BATCH = 500


@dataclass(frozen=True)
class DemoAthlete:
    username: str
    source: str  # "fitbit" | "welltory"
    source_user: str


@dataclass
class SeedSummary:
    coach: str
    coach_created: bool = False
    athletes: int = 0
    athletes_created: int = 0
    grants_added: int = 0
    days_written: int = 0
    days_unchanged: int = 0
    days_duplicate: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def demo_athletes(data_dir: Path = DATA_DIR) -> list[DemoAthlete]:
    """Every user id in the Fitbit activity file and the Welltory HRV file, in file order."""
    out: list[DemoAthlete] = []
    for source, name, column in (FITBIT_IDS, WELLTORY_IDS):
        path = data_dir / source / name
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                ids = dict.fromkeys(row[column].strip() for row in csv.DictReader(handle) if row.get(column))
        except OSError as exc:
            raise ApiError(422, "invalid_value", f"data: cannot read {path}: {exc.strerror}", field="data",
                           value=str(path), allowed="the repository's tests/data folder") from exc
        out.extend(DemoAthlete(check_username(f"{source}-{user}".lower()), source, user) for user in ids)
    return out


def read_days(athlete: DemoAthlete, data_dir: Path = DATA_DIR) -> Iterator[DayRecord]:
    """The athlete's days, read by the same reader `pulse import` uses."""
    if athlete.source == "fitbit":
        from pulse_core.importers.fitbit import read_fitbit

        return read_fitbit(data_dir / "fitbit", athlete.source_user)
    from pulse_core.importers.welltory import read_welltory

    return read_welltory(data_dir / "welltory", athlete.source_user)


def split_welltory(data_dir: Path, into: Path) -> Path:
    """The Welltory files split into one folder per user (the reader filters by user anyway).

    Reading the whole study once per user (185 times) takes seconds; each user's own rows, no time.
    Each user's data folder is `into/<user_code>` (its `welltory/` holds their rows, header kept).
    """
    from pulse_core.importers.welltory import HRV_NAMES, SLEEP, WEARABLES

    source = data_dir / "welltory"
    for name in (*HRV_NAMES, SLEEP, WEARABLES):
        path = source / name
        if not path.is_file():
            continue
        writers: dict[str, Any] = {}
        handles = []
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                column = [c.strip() for c in header].index("user_code")
                for row in reader:
                    if len(row) <= column:
                        continue
                    user = row[column].strip()
                    if user not in writers:
                        folder = into / user / "welltory"
                        folder.mkdir(parents=True, exist_ok=True)
                        out = (folder / name).open("w", newline="", encoding="utf-8")
                        handles.append(out)
                        writers[user] = csv.writer(out)
                        writers[user].writerow(header)
                    writers[user].writerow(row)
        finally:
            for out in handles:
                out.close()
    return into


def seed_demo(
    db: Database,
    coach: str,
    password: Callable[[], str],
    data_dir: Path = DATA_DIR,
    now_ms: Callable[[], int] | None = None,
    skew_limit_ms: int = SKEW_LIMIT_MS,
) -> SeedSummary:
    """Create the coach (asking `password()` only then), the athletes and grants, and write their days."""
    clock = now_ms or _wall_ms
    summary = SeedSummary(coach)
    athletes = demo_athletes(data_dir)
    summary.athletes = len(athletes)
    with db.session() as session:
        _refuse_real_accounts(session, [a.username for a in athletes])  # before anything is created
        coach_id = _ensure_coach(session, coach, password, summary)
        ids = _ensure_athletes(session, athletes, summary)
        _ensure_grants(session, coach_id, ids.values(), summary)
    reconciler = Reconciler(clock, skew_limit_ms)
    with tempfile.TemporaryDirectory(prefix="pulse-seed-") as tmp:
        split = split_welltory(data_dir, Path(tmp))
        for athlete in athletes:
            own = split / athlete.source_user if athlete.source == "welltory" else data_dir
            _seed_days(db, reconciler, ids[athlete.username], athlete, read_days(athlete, own), summary)
    return summary


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _ensure_coach(session: Session, name: str, password: Callable[[], str], summary: SeedSummary) -> int:
    row = find_user(session, check_username(name))
    if row is None:
        row = add_user(session, name, password(), is_coach=True)
        summary.coach_created = True
    if not row.is_coach:
        raise ApiError(409, "not_a_coach", f"coach: {name} exists and is not a coach (allowed a coach or a new name)",
                       field="coach", value=name, allowed="a coach or a new name")
    assert row.id is not None
    return row.id


def _refuse_real_accounts(session: Session, names: list[str]) -> None:
    """A demo athlete's name held by an account that signs in is a real person's: the demo never grants
    a coach their entries nor writes into them (only its own athletes, which cannot sign in, are adopted)."""
    real = session.exec(select(User.username).where(
        User.username.in_(names), User.password_hash != NO_LOGIN, User.is_coach.is_(False)  # type: ignore[attr-defined]
    ).order_by(User.username)).first()
    if real is not None:
        raise ApiError(409, "already_exists", f"username: {real} is an account that signs in, not a demo athlete"
                       " (allowed a name the demo created or a new one; rename or remove that account first)",
                       field="username", value=real)


def _ensure_athletes(session: Session, athletes: list[DemoAthlete], summary: SeedSummary) -> dict[str, int]:
    names = [a.username for a in athletes]
    existing = {u.username: u for u in session.exec(select(User).where(User.username.in_(names)))}  # type: ignore[attr-defined]
    for name in names:
        if name in existing:
            if existing[name].is_coach:
                raise ApiError(409, "already_exists", f"username: {name} exists as a coach", field="username",
                               value=name)
            continue
        user = User(username=name, password_hash=NO_LOGIN, is_coach=False)
        session.add(user)
        existing[name] = user
        summary.athletes_created += 1
    session.commit()
    ids = {}
    for name in names:
        session.refresh(existing[name])
        user_id = existing[name].id
        assert user_id is not None
        ids[name] = user_id
    return ids


def _ensure_grants(session: Session, coach_id: int, athlete_ids: Any, summary: SeedSummary) -> None:
    granted = set(session.exec(select(Grant.athlete_id).where(Grant.coach_id == coach_id)))
    for athlete_id in athlete_ids:
        if athlete_id not in granted:
            session.add(Grant(athlete_id=athlete_id, coach_id=coach_id))
            summary.grants_added += 1
    session.commit()


def _seed_days(
    db: Database, reconciler: Reconciler, user_id: int, athlete: DemoAthlete, days: Iterator[DayRecord],
    summary: SeedSummary,
) -> None:
    wanted: dict[dt.date, dict[str, FieldValue]] = {}
    for record in days:
        try:
            fields = parse_fields(record.fields)
        except ValidationError as exc:
            summary.skipped[f"invalid {exc.field}"] += 1
            continue
        if fields:
            wanted[record.date] = fields

    def write(conn: psycopg.Connection[Any]) -> Counter[str]:
        tally: Counter[str] = Counter()
        stored = {e.date: e for e in PostgresEntryRepository(conn).list_including_deleted(str(user_id), None, None)}
        client = CLIENTS[athlete.source]
        stamp = str(Stamp(reconciler.now_ms(), 0, client))
        batch = []
        for day, fields in sorted(wanted.items()):
            current = stored.get(day)
            if current is not None and _same(current, fields, athlete.source):
                tally["unchanged"] += 1
                continue
            base = {name: current.stamps.get(name) if current else None for name in _merge_names(fields)}
            batch.append({"seq": day.toordinal(), "date": day.isoformat(), "op": "set", "fields": _wire(fields),
                          "base": base, "hlc": stamp, "source": athlete.source})
        for start in range(0, len(batch), BATCH):
            outcome = reconciler.apply_batch(conn, user_id, client, batch[start:start + BATCH])
            for result in outcome.results:
                status = result["status"]
                tally[f"rejected {result['error'].get('field')}" if status == "rejected" else status] += 1
        return tally

    # Counted after the transaction: a retried one must not count twice.
    tally = db.run(write)
    summary.days_unchanged += tally.pop("unchanged", 0)
    summary.days_duplicate += tally.pop("duplicate", 0)
    summary.days_written += tally.pop("applied", 0) + tally.pop("conflict", 0)
    summary.skipped.update(tally)


def _same(entry: Entry, fields: dict[str, FieldValue], source: str) -> bool:
    return not entry.deleted and all(
        entry.value(name) == value and entry.sources.get("hrv_ms" if name == "hrv_method" else name) == source
        for name, value in fields.items()
    )


def _merge_names(fields: dict[str, FieldValue]) -> list[str]:
    return [name for name in MERGE_FIELDS if name in fields]


def _wire(fields: dict[str, FieldValue]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in fields.items()}
