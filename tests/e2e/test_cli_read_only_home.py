"""A read-only home still serves reads: `pulse history`, `show` and `export` on a store whose folder and
file are on a read-only mount, the same answers as before; a write fails with one line naming the folder,
and the store is left as it was.

The tests run as root, for whom permission bits do not apply: the home is made read-only for real, by a
read-only bind mount in a private mount namespace (`unshare -m`, then `mount --bind -o ro`), seen only
by the `pulse` process run inside it."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PULSE = Path(sys.executable).parent / "pulse"


def _namespaces_work() -> str | None:
    """None when a private read-only bind mount can be made here; else why not."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"
                            " && ! touch /tmp/.pulse-ro-probe 2>/dev/null"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a read-only bind mount in a private mount namespace: {probe.stderr.strip()[:200]}"
    return None


WHY_NOT = _namespaces_work() if sys.platform == "linux" else "Linux mount namespaces only"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


def run_read_only(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pulse ARGS` with `home` mounted read-only for that process alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), "COLUMNS": "120", "NO_COLOR": "1"})
    quoted = shlex.quote(str(home))
    script = (f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"
              f" && exec {shlex.quote(str(PULSE))} {shlex.join(args)}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)


def digest(home: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir())}


def test_reads_work_and_a_write_fails_in_one_line_naming_the_folder(
    pulse: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    for day, steps in (("2026-01-10", 9000), ("2026-01-11", 7000), ("2026-01-12", 12000)):
        assert pulse("log", "--date", day, "--steps", str(steps), "--sleep", "7.5").returncode == 0
    home: Path = pulse.home  # type: ignore[attr-defined]
    reads = [("history", "--from", "2026-01-01", "--to", "2026-01-31", "--json"),
             ("show", "2026-01-11", "--json"),
             ("export", "--format", "csv", "--all")]
    before = [pulse(*args) for args in reads]
    assert all(done.returncode == 0 for done in before), [d.stderr for d in before]
    stored = digest(home)

    for args, expected in zip(reads, before, strict=True):
        done = run_read_only(home, *args)
        assert done.returncode == 0, f"pulse {' '.join(args)}: {done.stderr}"
        assert done.stdout == expected.stdout
    written = tmp_path / "out.json"
    exported = run_read_only(home, "export", "--format", "json", "--all", "-o", str(written))
    assert exported.returncode == 0, exported.stderr
    assert len(written.read_text()) > 100

    refused = run_read_only(home, "log", "--date", "2026-01-13", "--steps", "5000")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"error: store: {home} is read-only")
    assert digest(home) == stored
    # And once the folder is writable again (outside the namespace it always was), writes work.
    assert pulse("log", "--date", "2026-01-13", "--steps", "5000").returncode == 0


def test_changes_still_in_the_write_ahead_log_are_read_too(
    pulse: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A process stopped before its last checkpoint leaves changes in pulse.db-wal only: they are read
    (through SQLite's read-only mode), not skipped as an immutable open would."""
    import sqlite3

    assert pulse("log", "--date", "2026-02-01", "--steps", "1111").returncode == 0
    home: Path = pulse.home  # type: ignore[attr-defined]
    holder = sqlite3.connect(home / "pulse.db", isolation_level=None)
    try:
        holder.execute("PRAGMA wal_autocheckpoint=0")
        holder.execute("UPDATE entries SET steps = 2222 WHERE date = '2026-02-01'")
        assert (home / "pulse.db-wal").stat().st_size > 0
        done = run_read_only(home, "history", "--from", "2026-02-01", "--to", "2026-02-01", "--json")
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert '"steps": 2222' in done.stdout, done.stdout
