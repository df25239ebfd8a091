"""Table models (sqlmodel). The alembic migrations create exactly these tables.

Column types are chosen with the Postgres text format in mind, since the shape API sends values as
text: `numeric(4,2)` sleep travels as "7.50", `date` as "2026-11-27".
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Numeric,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    username: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    is_coach: bool = False
    created_at: dt.datetime = Field(default_factory=_utcnow)
    utc_offset_min: int | None = Field(default=None, sa_column=Column(SmallInteger))  # the zone of the last push


class Token(SQLModel, table=True):
    __tablename__ = "tokens"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    token_hash: str = Field(sa_column=Column(Text, unique=True, nullable=False))  # SHA-256 hex, never the token
    created_at: dt.datetime = Field(default_factory=_utcnow)
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None


class Grant(SQLModel, table=True):
    """An athlete lets a coach read their entries."""

    __tablename__ = "grants"

    athlete_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    )
    coach_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    )
    created_at: dt.datetime = Field(default_factory=_utcnow)


class EntryRow(SQLModel, table=True):
    __tablename__ = "entries"

    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    date: dt.date = Field(sa_column=Column(Date, primary_key=True))
    sleep_hours: Decimal | None = Field(default=None, sa_column=Column(Numeric(4, 2)))
    hrv_ms: Decimal | None = Field(default=None, sa_column=Column(Numeric(5, 2)))
    hrv_method: str | None = None
    steps: int | None = None
    weight_kg: Decimal | None = Field(default=None, sa_column=Column(Numeric(5, 2)))
    note: str | None = None
    score: int | None = Field(default=None, sa_column=Column(SmallInteger))
    score_version: int | None = Field(default=None, sa_column=Column(SmallInteger))
    deleted: bool = False
    sleep_hours_hlc: str | None = None
    sleep_hours_src: str | None = None
    hrv_ms_hlc: str | None = None
    hrv_ms_src: str | None = None
    steps_hlc: str | None = None
    steps_src: str | None = None
    weight_kg_hlc: str | None = None
    weight_kg_src: str | None = None
    note_hlc: str | None = None
    note_src: str | None = None
    deleted_hlc: str | None = None
    deleted_src: str | None = None
    updated_at: dt.datetime = Field(default_factory=_utcnow)


class AppliedMutation(SQLModel, table=True):
    """Exactly-once: a (user, client, seq) and its result, recorded with the mutation's effect."""

    __tablename__ = "applied_mutations"
    __table_args__ = (Index("applied_mutations_applied_at", "applied_at"),)

    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    client_id: str = Field(sa_column=Column(Text, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True))
    result: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    digest: bytes | None = Field(default=None, sa_column=Column(LargeBinary))  # SHA-256 of what was sent
    date: dt.date | None = Field(default=None, sa_column=Column(Date))  # the mutation's day (erasures remove it)
    applied_at: dt.datetime = Field(default_factory=_utcnow)


class ClientHighWater(SQLModel, table=True):
    """The highest seq of a (user, client) whose results were pruned: replays at or below it are duplicates."""

    __tablename__ = "client_high_water"

    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    client_id: str = Field(sa_column=Column(Text, primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    # When the newest of the pruned results had been applied (NULL: folded before migration 0017)
    pruned_before: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: dt.datetime = Field(default_factory=_utcnow)


class ConflictRecord(SQLModel, table=True):
    """The conflict audit: what lost to what, under which rule."""

    __tablename__ = "conflicts"
    __table_args__ = (
        Index("conflicts_user_date", "user_id", "date"),
        Index("conflicts_user_version", "user_id", "version"),
        Index("conflicts_created_at", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    date: dt.date
    client_id: str
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    field: str
    kept: Any = Field(default=None, sa_column=Column(JSONB))
    lost: Any = Field(default=None, sa_column=Column(JSONB))
    kept_hlc: str | None = None
    lost_hlc: str | None = None
    rule: str
    clamped: bool = False
    created_at: dt.datetime = Field(default_factory=_utcnow)
    dismissed_at: dt.datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    version: int | None = Field(default=None, sa_column=Column(
        BigInteger, nullable=False, server_default=text("nextval('conflict_version_seq')")))


class ErasureRecord(SQLModel, table=True):
    """An erasure of a user's entries of a range of days (docs/erasure.md): who, which days, when; no value."""

    __tablename__ = "erasures"
    __table_args__ = (Index("erasures_user", "user_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    date_from: dt.date | None = Field(default=None, sa_column=Column(Date))  # None: from the first day
    date_to: dt.date | None = Field(default=None, sa_column=Column(Date))  # None: to the last day
    erased_ms: int = Field(sa_column=Column(BigInteger, nullable=False))  # the server's clock at the erasure
    whole_account: bool = False
    created_at: dt.datetime = Field(default_factory=_utcnow)
