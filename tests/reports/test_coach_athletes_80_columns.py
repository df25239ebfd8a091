"""`pulse coach athletes` on the demo coach's device in an 80-column terminal: every athlete's row shows
their last entry, last sync, day counts and every open flag whole (none cut at the border)."""

from __future__ import annotations

import json
import re
import subprocess

from report_support import FITBIT_USERS, PULSE, WELLTORY_USERS, Pulse, clean_env

AS_OF = "2016-05-12"


def test_every_cell_of_every_athlete_fits_80_columns(coach_device: Pulse) -> None:
    env = clean_env(PULSE_HOME=str(coach_device.home), COLUMNS="80")
    listing = json.loads(coach_device.ok("coach", "athletes", "--to", AS_OF, "--json").stdout)["athletes"]
    done = subprocess.run([str(PULSE), "coach", "athletes", "--to", AS_OF], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert " ".join(lines[:2]).startswith(f"{FITBIT_USERS + WELLTORY_USERS} athletes as of {AS_OF}")
    header = next(line for line in lines if line.startswith("Athlete"))
    assert header.split() == ["Athlete", "Last", "entry", "Last", "sync", "7d", "28d", "Open", "flags"]
    starts = {line.split()[0].rstrip("*"): i for i, line in enumerate(lines) if re.match(r"^(fitbit|welltory)-", line)}
    assert set(starts) == {row["athlete"] for row in listing}
    for row in listing:
        first = lines[starts[row["athlete"]]].split()
        assert first[1] == (row["last_entry"] or "–")
        assert first[-3:-1] == [str(row["days_7"]), str(row["days_28"])]  # then the first flag, or "–"
        codes = [f["code"] for f in row["flags"]]
        below = [lines[starts[row["athlete"]] + k].split() for k in range(len(codes))]
        assert [words[-1] for words in below] == codes or (not codes and first[-1] == "–"), (row, below)
        assert "T" not in " ".join(first[2:4]), "no ISO times in the table"
