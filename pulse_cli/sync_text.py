"""`pulse status` and `pulse conflicts` written for people: values as they were typed, clock stamps as local
dates and times, counts with their nouns. The JSON outputs keep the raw fields (docs/cli.md)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

# field: (how people call it, its unit)
UNITS = {"sleep_hours": ("sleep", "h"), "hrv_ms": ("HRV", "ms"), "steps": ("steps", "steps"),
         "weight_kg": ("weight", "kg"), "note": ("note", "")}
API_CLIENT = "api"  # the client id of writes made through the REST API (pulse_server/push.py)


def plural(count: int, noun: str, many: str | None = None) -> str:
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def local_time(when: dt.datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def stamp_time(stamp: str | None) -> str:
    """A clock stamp (`<ms>:<counter>:<client>`, docs/sync.md) as this computer's local date and time."""
    if not stamp:
        return "at an unknown time"
    ms = int(stamp.split(":", 1)[0])
    return local_time(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


def stamp_origin(stamp: str | None, own_client: str | None) -> str:
    node = stamp.split(":", 2)[2] if stamp and stamp.count(":") >= 2 else ""
    if node and node == own_client:
        return "on this device"
    if node == API_CLIENT:
        return "through the API"
    return f"on device {node}" if node else "on another device"


def number(value: Any) -> str:
    """7.5 -> "7.5", 8.0 -> "8", 9000 -> "9,000": the value as it was typed (the wire carries floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = format(Decimal(repr(value)).normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"{int(whole):,}" + (f".{cents}" if cents else "")


def field_value(field: str, value: Any) -> str:
    """A conflict's value: `6 h`, `62 ms (rmssd)`, `9,000 steps`, `"easy run"`, or `nothing` (cleared)."""
    if isinstance(value, dict):  # HRV travels with its method
        shown = field_value(field, value.get(field))
        method = value.get("hrv_method")
        return f"{shown} ({method})" if method and shown != "nothing" else shown
    if value is None:
        return "nothing"
    if field == "note":
        return f'"{value}"'
    return f"{number(value)} {UNITS.get(field, (field, ''))[1]}".rstrip()


def conflict_lines(row: dict[str, Any], own_client: str | None) -> list[str]:
    """Three lines a conflict: what was kept over what, and when and where each was written."""
    field = row["field"]
    kept, lost = field_value(field, row["kept"]), field_value(field, row["lost"])
    label = UNITS.get(field, (field, ""))[0]
    return [
        f"[{row['id']}] {row['date']} {label}: kept {kept} over {lost} ({row['state']}; {_why(row)})",
        f"    kept {kept}: written {stamp_time(row['kept_hlc'])} {stamp_origin(row['kept_hlc'], own_client)}",
        f"    lost {lost}: written {stamp_time(row['lost_hlc'])} {stamp_origin(row['lost_hlc'], own_client)}",
    ]


def _why(row: dict[str, Any]) -> str:
    """The reason under the merge rule (lww@2, docs/sync.md): a value set by hand beats an import; between
    two of a kind the later one wins. So an earlier value can only have won by being set by hand."""
    if (row.get("kept_hlc") or "") >= (row.get("lost_hlc") or ""):
        return "the later change wins"
    return "a value set by hand beats an import"


def status_lines(info: dict[str, Any]) -> list[str]:
    """`pulse status` for people, from the dict `--json` prints."""
    rows = [
        ("account", _account(info)),
        ("last sync", _last_sync(info.get("last_sync"))),
        ("to push", "nothing" if not info["pending"] else plural(info["pending"], "change")),
        ("rejected", "none" if not info["rejected"] else f"{plural(info['rejected'], 'change')}: see pulse rejected"),
        ("conflicts", "none open" if not info["conflicts"] else f"{info['conflicts']} open: see pulse conflicts"),
        ("server", _server(info)),
        ("live", _live(info)),
        ("clock", "in step with the server's" if info["clock"] == "ok" else info["clock"]),
        ("device id", info.get("client_id") or "not yet made (at the first change)"),
    ]
    if info.get("agent_rounds") and info["logged_in"]:  # only while the agent's rounds fail
        rows.insert(2, ("failing", _rounds(info["agent_rounds"])))
    if info.get("scrub_due"):  # only while an erasure is out of the tables but not yet out of the files
        rows.append(("erasure", "the erased days are gone from the tables but still in the store's files (another"
                                " process was reading it); the next sync rewrites them"))
    return [f"{name:<10} {value}" for name, value in rows]


def _rounds(rounds: dict[str, Any]) -> str:
    since = rounds.get("since")
    when = f" since {local_time(dt.datetime.fromisoformat(since))}" if since else ""
    return (f"the agent's syncs fail{when}: {rounds['error']}; it tries again at each change and each"
            " interval (its log has the detail)")


def _account(info: dict[str, Any]) -> str:
    if info["logged_in"]:
        return f"{info['username']} ({info['role']}) on {info['server']}"
    if info.get("username"):
        return f"signed out (was {info['username']}); pulse login to sync again"
    return "not signed in: pulse login --server URL --username NAME"


def _last_sync(stamp: str | None) -> str:
    if not stamp:
        return "never"
    return local_time(dt.datetime.fromisoformat(stamp))


def _server(info: dict[str, Any]) -> str:
    if not info["logged_in"]:
        return "none"
    state, wait = info["breaker"], info["breaker_retry_in_s"]
    if state == "open":
        return (f"unreachable at the last tries; the agent tries again in {max(1, round(wait))} s"
                " (pulse sync tries at once)")
    if state == "half-open":
        return "unreachable at the last tries; the next sync tries it first"
    return "reachable at the last sync" if info.get("last_sync") else "not tried yet"


def _live(info: dict[str, Any]) -> str:
    live = info.get("live_pull")
    if not info["logged_in"]:
        return "none"
    if live is None:
        return "no agent running (pulse agent follows the server live)"
    if live["state"] == "following":
        return f"the agent follows the server (pid {live['pid']})"
    since = live.get("since")
    when = f" since {local_time(dt.datetime.fromisoformat(since))}" if since else ""
    if live["state"] == "connecting":
        return f"the agent has asked the server{when} and has no answer yet (pid {live['pid']})"
    return (f"the agent's live pull fails{when}: {live.get('error')}; it tries again every few seconds"
            " (its log has the detail)")


def change_text(op: str, fields: dict[str, Any]) -> str:
    """A queued change for people: `set sleep 7.5 h, HRV 62 ms (rmssd)`, `delete the day`."""
    if op == "delete":
        return "delete the day"
    parts = []
    for name, value in fields.items():
        if name == "hrv_method":
            continue
        shown = field_value(name, {name: value, "hrv_method": fields.get("hrv_method")} if name == "hrv_ms" else value)
        parts.append(f"{UNITS.get(name, (name, ''))[0]} {shown}")
    return "set " + ", ".join(parts) if parts else op
