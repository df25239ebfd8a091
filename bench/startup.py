"""Cold start of `pulse`, beside a bare interpreter and a minimal typer app measured the same way.

Run: .venv/bin/python bench/startup.py [--runs N]
Each figure is the median wall time of N fresh processes (after one warm-up run each, so the OS
file cache is warm but no Python state is shared). Then an import-time breakdown of `pulse log`.
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
MINIMAL_TYPER = '''
from typing import Annotated
import typer
app = typer.Typer()
@app.command()
def log(steps: Annotated[int | None, typer.Option()] = None, sleep: Annotated[float | None, typer.Option()] = None):
    print(steps, sleep)
app()
'''


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


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
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PULSE_HOME": str(Path(tmp) / "home"), "NO_COLOR": "1"}
        script = Path(tmp) / "minimal_typer.py"
        script.write_text(MINIMAL_TYPER)
        pulse = str(BIN / "pulse")
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "minimal typer app (--steps 1)": [sys.executable, str(script), "--steps", "1"],
            "pulse --help": [pulse, "--help"],
            "pulse log --steps 8000 (table)": [pulse, "log", "--steps", "8000"],
            "pulse log --steps 8000 --json": [pulse, "log", "--steps", "8000", "--json"],
            "pulse history --json": [pulse, "history", "--json"],
        }
        results = {name: timed(cmd, args.runs, env) for name, cmd in cases.items()}
        print(f"cold start, median of {args.runs} runs (ms)")
        for name, ms in results.items():
            print(f"  {name:<34} {ms:7.1f}")
        base = results["minimal typer app (--steps 1)"]
        for name in ("pulse log --steps 8000 (table)", "pulse log --steps 8000 --json"):
            print(f"  {name} vs minimal typer app: {results[name] - base:+.1f} ms")
        print("\nimport time of `pulse log --json`, cumulative (us), largest first")
        for cumulative, name in import_breakdown(env, 15):
            print(f"  {cumulative:8d}  {name}")


if __name__ == "__main__":
    main()
