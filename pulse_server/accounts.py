"""Accounts: users with argon2 password hashes, opaque bearer tokens stored as SHA-256, coach grants."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, text, update
from sqlmodel import Session, select

from pulse_server.db.models import Grant, Token, User
from pulse_server.errors import ApiError

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same either way.
_DUMMY_HASH = _hasher.hash("not a real password")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    id: int
    username: str
    is_coach: bool

    @property
    def role(self) -> str:
        return "coach" if self.is_coach else "athlete"


def check_username(name: str) -> str:
    if not USERNAME.match(name):
        raise ApiError(422, "invalid_value", f"username: {name!r} is not valid (allowed 2-64 of a-z 0-9 _ . -,"
                       " starting with a letter or digit)", field="username", value=name,
                       allowed="2-64 of a-z 0-9 _ . -")
    return name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(password: str) -> str:
    if len(password) < 8:
        raise ApiError(422, "invalid_value", "password: too short (allowed 8 or more characters)",
                       field="password", allowed="8 or more characters")
    return password


def add_user(session: Session, username: str, password: str, is_coach: bool) -> User:
    check_username(username)
    check_password(password)
    if session.exec(select(User).where(User.username == username)).first() is not None:
        raise ApiError(409, "already_exists", f"username: {username} already exists", field="username", value=username)
    user = User(username=username, password_hash=_hasher.hash(password), is_coach=is_coach)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = find_user(session, username)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def issue_token(session: Session, user: User, ttl_days: int) -> tuple[str, dt.datetime]:
    """A random token; only its SHA-256 is stored, so a database leak reveals no usable token."""
    token = secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=ttl_days)
    assert user.id is not None
    session.add(Token(user_id=user.id, token_hash=hash_token(token), expires_at=expires))
    session.commit()
    return token, expires


def principal_for_token(session: Session, token: str) -> Principal | None:
    now = dt.datetime.now(dt.UTC)
    row = session.exec(
        select(User)
        .join(Token, Token.user_id == User.id)  # type: ignore[arg-type]
        .where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None), Token.expires_at > now)  # type: ignore[union-attr]
    ).first()
    if row is None or row.id is None:
        return None
    return Principal(row.id, row.username, row.is_coach)


_PRINCIPAL_SQL = (
    "SELECT u.id, u.username, u.is_coach, extract(epoch FROM t.expires_at)::float8 FROM tokens t"
    " JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s AND t.revoked_at IS NULL AND t.expires_at > now()"
)


def principal_on(conn: psycopg.Connection[Any], token: str) -> Principal | None:
    """`principal_for_token` as one query on a raw connection the caller already holds (the push's own)."""
    found = principal_and_expiry_on(conn, hash_token(token))
    return None if found is None else found[0]


def principal_and_expiry_on(conn: psycopg.Connection[Any], token_hash: str) -> tuple[Principal, float] | None:
    """The token's principal and when the token expires (seconds since the epoch), by the token's hash."""
    row = conn.execute(_PRINCIPAL_SQL, (token_hash,)).fetchone()
    return None if row is None else (Principal(int(row[0]), str(row[1]), bool(row[2])), float(row[3]))


def revoke_tokens(session: Session, user: User) -> int:
    result = session.execute(
        update(Token)
        .where(Token.user_id == user.id, Token.revoked_at.is_(None))  # type: ignore[union-attr,arg-type]
        .values(revoked_at=dt.datetime.now(dt.UTC))
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def find_user(session: Session, username: str) -> User | None:
    if not USERNAME.fullmatch(username):  # no such user can exist (and a NUL byte would be a driver error)
        return None
    return session.exec(select(User).where(User.username == username)).first()


def grant(session: Session, athlete: Principal | User, coach_name: str) -> User:
    coach = find_user(session, coach_name)
    if coach is None or not coach.is_coach or coach.id == athlete.id:
        raise ApiError(404, "not_found", f"coach: no coach named {coach_name}", field="coach", value=coach_name)
    assert athlete.id is not None and coach.id is not None
    exists = session.get(Grant, (athlete.id, coach.id))
    if exists is None:
        session.add(Grant(athlete_id=athlete.id, coach_id=coach.id))
        session.commit()
    return coach


def revoke_grant(session: Session, athlete: Principal | User, coach_name: str) -> bool:
    coach = find_user(session, coach_name)
    if coach is None:
        return False
    result = session.execute(delete(Grant).where(Grant.athlete_id == athlete.id, Grant.coach_id == coach.id))  # type: ignore[arg-type]
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def grants_of(session: Session, who: Principal) -> list[dict[str, Any]]:
    """An athlete sees the coaches they granted; a coach sees the athletes who granted them, each with the
    zone their devices last pushed from (null: never told), so the coach's views count the athlete's days."""
    if who.is_coach:
        athletes = session.exec(
            select(User.username, Grant.created_at, User.utc_offset_min)
            .join(Grant, Grant.athlete_id == User.id)  # type: ignore[arg-type]
            .where(Grant.coach_id == who.id).order_by(User.username)
        ).all()
        return [{"athlete": name, "since": since.isoformat(), "utc_offset_min": offset}
                for name, since, offset in athletes]
    rows = session.exec(
        select(User.username, Grant.created_at).join(Grant, Grant.coach_id == User.id)  # type: ignore[arg-type]
        .where(Grant.athlete_id == who.id).order_by(User.username)
    ).all()
    return [{"coach": name, "since": since.isoformat()} for name, since in rows]


def readable_user(session: Session, who: Principal, username: str | None) -> int:
    """The user id whose entries `who` may read: their own, or a granting athlete's (else 404)."""
    if username is None or username == who.username:
        return who.id
    other = find_user(session, username)
    granted = who.is_coach and other is not None and session.get(Grant, (other.id, who.id)) is not None
    if granted and other is not None and other.id is not None:
        return other.id
    raise ApiError(404, "not_found", f"user: no readable user {username}", field="user", value=username)


@dataclass(frozen=True)
class UserSummary:
    """A user as `pulse-server user list` shows them."""

    username: str
    role: str
    created_at: dt.datetime
    days: int  # entries held (deleted days included: they are tombstones the devices sync)
    last_write: dt.datetime | None
    grants: int  # coaches granted (an athlete) or athletes granting (a coach)


def list_users(session: Session) -> list[UserSummary]:
    rows = session.execute(text(
        "SELECT u.username, u.is_coach, u.created_at,"
        " (SELECT count(*) FROM entries e WHERE e.user_id = u.id),"
        " (SELECT max(e.updated_at) FROM entries e WHERE e.user_id = u.id),"
        " (SELECT count(*) FROM grants g WHERE CASE WHEN u.is_coach THEN g.coach_id ELSE g.athlete_id END = u.id)"
        " FROM users u ORDER BY u.username")).all()
    return [UserSummary(name, "coach" if coach else "athlete", created, int(days), last, int(grants))
            for name, coach, created, days, last, grants in rows]


def set_password(session: Session, user: User, password: str) -> int:
    """A new password; every token of the user is revoked, so each device signs in again. Returns how many."""
    check_password(password)
    user.password_hash = _hasher.hash(password)
    session.add(user)
    revoked = session.execute(
        update(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))  # type: ignore[union-attr,arg-type]
        .values(revoked_at=dt.datetime.now(dt.UTC)))
    session.commit()
    return int(revoked.rowcount)  # type: ignore[attr-defined]


# What the server holds of a user, by kind: what `remove_user` erases.
HELD = {
    "entries": "SELECT count(*) FROM entries WHERE user_id = :id",
    "conflicts": "SELECT count(*) FROM conflicts WHERE user_id = :id",
    "sync records": "SELECT count(*) FROM applied_mutations WHERE user_id = :id",
    "tokens": "SELECT count(*) FROM tokens WHERE user_id = :id",
    "grants": "SELECT count(*) FROM grants WHERE athlete_id = :id OR coach_id = :id",
}


def held_by(session: Session, user: User) -> dict[str, int]:
    """What the server holds of a user, by kind: what `remove_user` would erase."""
    return {kind: int(session.execute(text(query), {"id": user.id}).scalar_one()) for kind, query in HELD.items()}


def remove_user(conn: psycopg.Connection[Any], user_id: int, username: str, now_ms: int) -> None:
    """Erase the whole account as an erasure does (docs/erasure.md: entries, conflict audit, exactly-once
    results, tokens, grants; the replication reader then purges the shape log of the user's days), then
    the user, in the caller's transaction. The user's row takes with it (ON DELETE CASCADE) the tokens,
    the high-water marks and the erasure record; what has no foreign key to users goes by hand."""
    from pulse_server.erasure import erase

    erase(conn, user_id, username, None, None, now_ms, whole_account=True)
    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    # After the grants went: deleting a coach's grants bumps their scope version (trigger, migration 0002).
    conn.execute("DELETE FROM scope_versions WHERE user_id = %s", (user_id,))
    # Failed sign-ins are counted per (address, username): "pair:<address>/<username as JSON>".
    suffix = "/" + json.dumps(username)
    conn.execute("DELETE FROM login_throttle WHERE key LIKE 'pair:%%' AND right(key, %s) = %s",
                 (len(suffix), suffix))
