"""What `pulse` says to people, at 80 columns and with its exit codes, on a device with no server:
status in words, plurals, --clear by either name, contradictions refused, imports that read nothing
explained, Ctrl-C during an import, and `agent --serve` refusing before it starts."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from calendar_days import day
from conftest import DATA, PULSE

from pulse_cli.agent.account import Account, save_account

pytestmark = pytest.mark.e2e



def run80(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), "COLUMNS": "80", "NO_COLOR": "1"})
    return subprocess.run([str(PULSE), *args], capture_output=True, text=True, env=env, input=input, timeout=120)


def test_status_reads_as_words_on_a_device_that_never_signed_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--steps", "5000").returncode == 0
    client_id = json.loads(run80(home, "status", "--json").stdout)["client_id"]
    done = run80(home, "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "account    not signed in: pulse login --server URL --username NAME",
        "last sync  never",
        "to push    1 change",
        "rejected   none",
        "conflicts  none open",
        "server     none",
        "live       none",
        "clock      in step with the server's",
        f"device id  {client_id}",
    ]


def test_logout_with_a_change_not_synced_is_refused_with_exit_4_and_says_so_in_the_singular(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--sleep", "7").returncode == 0
    done = run80(home, "logout")
    assert done.returncode == 4
    assert done.stderr == ("error: pending: 1 change is not synced yet and would be lost; run pulse sync first, or"
                           " pulse logout --discard to drop them\n")
    assert json.loads(run80(home, "status", "--json").stdout)["pending"] == 1, "nothing was dropped"
    assert run80(home, "log", "--date", day(-1), "--steps", "100").returncode == 0
    dropped = run80(home, "logout", "--discard")
    assert (dropped.returncode, dropped.stdout) == (0, "logged out; 2 unsynced changes discarded\n")


@pytest.mark.parametrize(("short", "long"), [("sleep", "sleep_hours"), ("weight", "weight_kg"), ("hrv", "hrv_ms")])
def test_clear_takes_the_options_name_or_the_fields(tmp_path: Path, short: str, long: str) -> None:
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--sleep", "7", "--weight", "70", "--hrv", "50", "--steps", "10")\
        .returncode == 0
    for name in (short, long):
        assert run80(home, "log", "--date", day(-1), f"--{short}", "8" if short != "weight" else "71").returncode == 0
        done = run80(home, "log", "--date", day(-1), "--clear", name, "--json")
        assert done.returncode == 0, done.stderr
        entry = json.loads(done.stdout)["entry"]
        assert entry[long] is None and entry["steps"] == 10


def test_clear_with_an_unknown_name_says_what_it_takes(tmp_path: Path) -> None:
    done = run80(tmp_path / "home", "log", "--clear", "sleeep")
    assert done.returncode == 2
    assert done.stderr == ("error: clear: 'sleeep' is not a field (allowed sleep, hrv, steps, weight or note (or"
                           " sleep_hours, hrv_ms, weight_kg))\n")


@pytest.mark.parametrize("fmt", ["csv", "md", "pdf"])
def test_report_refuses_json_with_another_format(tmp_path: Path, fmt: str) -> None:
    done = run80(tmp_path / "home", "report", "--json", "--format", fmt)
    assert done.returncode == 2
    assert done.stderr == (f"error: format: --json and --format {fmt} ask for two formats (give one: --format json"
                           " is --json)\n")
    assert done.stdout == ""


def test_trends_days_out_of_range_is_one_line_naming_the_range(tmp_path: Path) -> None:
    done = run80(tmp_path / "home", "trends", "--days", "0")
    assert (done.returncode, done.stderr) == (2, "error: days: 0 is out of range (allowed 1 to 3660)\n")


def test_an_apple_health_file_with_nothing_to_read_says_what_it_held(tmp_path: Path) -> None:
    done = run80(tmp_path / "home", "import", "apple-health", str(DATA / "apple_health" / "dogsheep_zip_export.xml"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "apple-health: 0 days read: 0 imported, 0 updated, 0 unchanged, 0 skipped"
    hint = " ".join(line.strip() for line in lines[1:])
    # The file (tests/data/PROVENANCE.md): one BodyMassIndex and one HeartRate record, two ActivitySummary,
    # one Workout; none of the four record types pulse reads.
    assert hint == ("nothing counted: the file held 2 records (body mass index 1, heart rate 1), 2 activity summaries"
                    " and 1 workout; pulse reads step count, sleep analysis, body mass and HRV (SDNN) records, and"
                    " this file has none")
    assert all(len(line) <= 80 and line.startswith("  ") for line in lines[1:])


def write_steps_export(path: Path, days: int) -> None:
    """An Apple Health export of `days` days with 96 step samples each (15 minutes apart)."""
    start = dt.datetime(2016, 1, 1)
    with path.open("w") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<HealthData locale="en_US">\n')
        for i in range(days * 96):
            t = start + dt.timedelta(minutes=15 * i)
            stamp = t.strftime("%Y-%m-%d %H:%M:%S -0700")
            end = (t + dt.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S -0700")
            out.write(f' <Record type="HKQuantityTypeIdentifierStepCount" sourceName="Phone" unit="count"'
                      f' startDate="{stamp}" endDate="{end}" value="{i % 97 + 3}"/>\n')
        out.write("</HealthData>\n")


def test_ctrl_c_during_an_import_says_nothing_was_kept_and_exits_130(tmp_path: Path) -> None:
    export = tmp_path / "export.xml"
    write_steps_export(export, 1500)  # ~40 MB: a second or more to read, on any machine
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--steps", "1").returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), "COLUMNS": "80", "NO_COLOR": "1"})
    proc = subprocess.Popen([str(PULSE), "import", "apple-health", str(export)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _has_open(proc.pid, export):  # the import is reading the file: the store is not yet locked
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err == "interrupted: nothing of this import was kept (it is written all at once, at the end)\n"
    assert out == ""
    with sqlite3.connect(home / "pulse.db") as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def signed_in(home: Path, role: str) -> None:
    assert run80(home, "status").returncode == 0  # creates the store
    save_account(home, Account("http://127.0.0.1:9", "kim" if role == "coach" else "ana", role, "t0ken",
                               "2100-01-01T00:00:00Z"))


def test_agent_serve_on_a_port_in_use_is_one_line_and_exit_1_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    signed_in(home, "athlete")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run80(home, "agent", "--serve", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr == (f"error: port: 127.0.0.1:{port} is in use (address already in use): another pulse agent"
                           " --serve? choose another with --port\n")
    assert done.stdout == ""


def test_agent_serve_on_a_coachs_device_says_the_app_is_for_athletes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    signed_in(home, "coach")
    done = run80(home, "agent", "--serve", "--port", "1")
    assert done.returncode == 2
    assert done.stderr == ("error: account: the web app is for athletes, and kim is a coach here: run pulse agent"
                           " without --serve to keep this device in sync, and read with pulse report\n")


@pytest.mark.parametrize(("args", "needle"), [(["--port", "0"], "port: 0 is out of range (allowed 1 to 65535)"),
                                              (["--interval", "0.5"], "interval: 0.5 is out of range (allowed 1 or"
                                                                      " more)")])
def test_agent_options_out_of_range_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    done = run80(tmp_path / "home", "agent", *args)
    assert (done.returncode, done.stderr) == (2, f"error: {needle}\n")


def history_rows(home: Path, *args: str) -> Any:
    done = run80(home, "history", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_read_range_may_end_in_any_future_year(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--steps", "4321").returncode == 0
    year = dt.date.today().year
    found = history_rows(home, "--from", f"{year}-01-01", "--to", f"{year}-12-31")
    assert [e["steps"] for e in found["entries"]] == [4321] and found["to"] == f"{year}-12-31"
    table = run80(home, "history", "--from", f"{year}-01-01", "--to", f"{year}-12-31")
    days = (dt.date(year, 12, 31) - dt.date(year, 1, 1)).days + 1
    assert table.returncode == 0 and f"1 of {days} days logged" in table.stdout


def test_an_import_shows_progress_by_bytes_read_on_a_terminal_and_nothing_elsewhere(tmp_path: Path) -> None:
    import pty
    import select

    export = tmp_path / "export.xml"
    write_steps_export(export, 1500)
    total = f"/{export.stat().st_size / 1e6:.1f} MB"  # rich counts bytes in SI units
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(tmp_path / "tty"), "COLUMNS": "80", "TERM": "xterm"})
    env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(PULSE), "import", "apple-health", str(export)], env=env, stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0
    assert total in seen.decode(errors="replace"), seen[-400:]
    assert out.startswith("apple-health: 1500 days read: 1500 imported")  # 96 samples a day, 1500 days

    quiet = run80(tmp_path / "pipe", "import", "apple-health", str(export))
    assert (quiet.returncode, quiet.stderr) == (0, "")


@pytest.mark.parametrize("args", [["log", "--date", day(-1), "--steps", "5"], ["history", "--json"],
                                  ["log", "--date", "1800-01-01", "--steps", "5"]])
def test_a_command_closes_the_store_when_it_ends_so_no_write_ahead_log_is_left(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    assert run80(home, "log", "--date", day(-1), "--steps", "1").returncode == 0
    run80(home, *args)
    assert sorted(p.name for p in home.iterdir() if p.name.startswith("pulse.db")) == ["pulse.db"]
