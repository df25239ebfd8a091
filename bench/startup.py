"""Cold start of `pulse`, beside a bare interpreter and a minimal typer app measured the same way.

Run: .venv/bin/python bench/startup.py [--runs N]
Each figure is the median wall time of N fresh processes, and beside it the median CPU time (user +
system) the process used: on a shared machine the CPU time is what other work does not stretch, while
the wall time also holds I/O waits (`pulse log` commits to SQLite, and the store's checkpoint at exit
syncs the write-ahead log: an fdatasync that a disk busy with other work can make take 10 ms). The
cases are interleaved (one run of each, N times over) after one warm-up run each, so a load that comes
and goes weighs on all of them alike and the ratios hold. Bytecode is cached as it is for anyone who
installed pulse (the warm-up writes it, even when PYTHONDONTWRITEBYTECODE is set here): compiling
pulse's modules from source at every run would add ~15 ms that no user pays. Target (issue 17): `pulse log` at most 1.3x
the minimal typer app. Then an import-time breakdown of `pulse log`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET_RATIO = 1.3
MINIMAL_TYPER = '''
from typing import Annotated
import typer
app = typer.Typer()
@app.command()
def log(steps: Annotated[int | None, typer.Option()] = None, sleep: Annotated[float | None, typer.Option()] = None):
    print(steps, sleep)
app()
'''
BASE = "minimal typer app (--steps 1)"
COMPARED = ("pulse log --steps 8000 (table)", "pulse log --steps 8000 --json")


def one_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status})")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def interleaved(cases: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    for cmd in cases.values():
        one_run(cmd, env)  # warm-up: OS cache, bytecode
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, cmd in cases.items():
            samples[name].append(one_run(cmd, env))
    return samples


def import_breakdown(env: dict[str, str], top: int) -> list[tuple[int, str]]:
    code = "import sys; sys.argv=['pulse','log','--steps','8000','--json']; from pulse_cli.main import run; run()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:  # top-level imports and what they import directly
            rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"PULSE_HOME": str(Path(tmp) / "home"), "NO_COLOR": "1"})
        script = Path(tmp) / "minimal_typer.py"
        script.write_text(MINIMAL_TYPER)
        pulse = str(BIN / "pulse")
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            BASE: [sys.executable, str(script), "--steps", "1"],
            "pulse --help": [pulse, "--help"],
            COMPARED[0]: [pulse, "log", "--steps", "8000"],
            COMPARED[1]: [pulse, "log", "--steps", "8000", "--json"],
            "pulse history --json": [pulse, "history", "--json"],
        }
        load = os.getloadavg()[0]
        samples = interleaved(cases, args.runs, env)
        wall = {name: statistics.median(w for w, _ in values) for name, values in samples.items()}
        cpu = {name: statistics.median(c for _, c in values) for name, values in samples.items()}
        print(f"cold start, median of {args.runs} interleaved runs (ms); load average before: {load:.2f},"
              f" after: {os.getloadavg()[0]:.2f}")
        print(f"  {'':<34} {'wall':>7} {'fastest':>8} {'cpu':>7}")
        for name in cases:
            print(f"  {name:<34} {wall[name]:7.1f} {min(w for w, _ in samples[name]):8.1f} {cpu[name]:7.1f}")
        for name in COMPARED:
            ratio, cpu_ratio = wall[name] / wall[BASE], cpu[name] / cpu[BASE]
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"  {name} vs minimal typer app: wall {wall[name] - wall[BASE]:+.1f} ms, {ratio:.2f}x"
                  f" (target at most {TARGET_RATIO}x: {verdict}); cpu {cpu_ratio:.2f}x")
        print("\nimport time of `pulse log --json`, cumulative (us), largest first")
        for cumulative, name in import_breakdown(env, 15):
            print(f"  {cumulative:8d}  {name}")


if __name__ == "__main__":
    main()
