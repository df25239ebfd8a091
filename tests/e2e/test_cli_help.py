"""Every `pulse` command's --help, read at 80 columns as a person would: a one-line summary per command,
examples one to a line that really run, one placeholder style; and start-up loads only the command run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, PULSE

from pulse_cli.lazy import registered_names
from pulse_cli.main import COMMANDS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"import": ["fitbit", "welltory", "apple-health"], "coach": ["athletes"]}
EVERY = [[name] for name in COMMANDS] + [[group, sub] for group, subs in GROUPS.items() for sub in subs]


def help_of(*command: str, columns: int = 80) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"COLUMNS": str(columns), "NO_COLOR": "1", "PULSE_HOME": "/nonexistent/pulse-help"})
    done = subprocess.run([str(PULSE), *command, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def examples(text: str) -> list[str]:
    """The example commands under "Examples:", a line each (a trailing backslash continues the line)."""
    lines = text.split("Examples:", 1)[1].splitlines()[1:]
    found: list[str] = []
    for line in lines:
        if not line.strip() or not line.startswith("    "):
            break
        if found and found[-1].endswith("\\"):
            found[-1] = found[-1][:-1].rstrip() + " " + line.strip()
        else:
            found.append(line.strip())
    return found


def test_the_table_names_every_command_the_modules_register_and_only_those() -> None:
    by_module: dict[str, set[str]] = {}
    for name, (module, _) in COMMANDS.items():
        by_module.setdefault(module, set()).add(name)
    modules = {p.stem for p in (ROOT / "pulse_cli" / "commands").glob("*.py")} - {"__init__", "options"}
    assert set(by_module) == modules
    for module, names in by_module.items():
        assert set(registered_names(module)) == names, module


def test_pulse_help_lists_every_command_with_its_whole_summary_at_80_columns() -> None:
    text = help_of()
    listed = {}
    for line in text.split("Commands:", 1)[1].splitlines():
        match = re.match(r"^  (\S+)\s+(.+)$", line)
        if match:
            listed[match[1]] = match[2]
    assert listed == {name: summary for name, (_, summary) in COMMANDS.items()}
    assert all(len(line) <= 80 for line in text.splitlines())
    assert examples(text) == ["pulse log --sleep 7.5 --steps 9000", "pulse history --json", "pulse trends"]


@pytest.mark.parametrize("command", EVERY, ids=" ".join)
def test_each_help_fits_80_columns_with_examples_a_line_each_and_named_placeholders(command: list[str]) -> None:
    text = help_of(*command)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    found = examples(text)
    assert found, f"no examples in pulse {' '.join(command)} --help"
    for example in found:
        words = shlex.split(example)
        runs = words[words.index("|") + 1:] if "|" in words else words
        assert runs[0] == "pulse", example
        group = [w for w in runs[1:3] if not w.startswith("-")]
        assert group[0] in COMMANDS, example
    assert not re.search(r"<[a-z ]+>|\{[A-Z]+\}|\[default: |<=x|x>=", text), text
    assert not any(line.rstrip().endswith("...") and "[ARGS]..." not in line for line in text.splitlines()), text


def test_a_command_without_subcommands_shows_none_in_its_usage() -> None:
    assert help_of("rejected").splitlines()[0] == "Usage: pulse rejected [OPTIONS]"
    assert help_of("delete").splitlines()[0] == "Usage: pulse delete [OPTIONS] DATE"
    assert help_of("import", "apple-health").splitlines()[0] == "Usage: pulse import apple-health [OPTIONS] FILE"


def test_the_import_examples_run_on_the_data_in_tests_data(pulse: object, tmp_path: Path) -> None:
    ran = 0
    for sub in GROUPS["import"]:
        for example in examples(help_of("import", sub)) + examples(help_of("import")):
            words = shlex.split(example)
            if not any(w.startswith("tests/data/") for w in words):
                continue
            args = [str(ROOT / w) if w.startswith("tests/data/") else w for w in words[1:]]
            home = tmp_path / f"home-{ran}"
            done = subprocess.run([str(PULSE), "--home", str(home), *args, "--json"], capture_output=True,
                                  text=True, timeout=120, cwd=ROOT)
            assert done.returncode == 0, (example, done.stderr)
            assert '"days_read": 0' not in done.stdout, example
            ran += 1
    assert ran >= 4
    assert (DATA / "welltory").is_dir()


def test_a_mistyped_command_is_answered_with_the_closest_names() -> None:
    done = subprocess.run([str(PULSE), "histroy"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "No such command 'histroy'. Did you mean 'history'?" in done.stderr


def test_a_command_loads_only_its_own_module_and_help_loads_none(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pulse_cli.main import app\n"
        "argv = sys.argv[1:]\n"
        "try:\n"
        "    app(argv)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('pulse_cli.commands.')))\n"
    )
    env = {"PULSE_HOME": str(tmp_path / "home"), "PATH": str(PULSE.parent)}

    def modules_after(*argv: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                              env=env)
        assert done.returncode == 0, done.stderr
        return eval(done.stdout.strip().splitlines()[-1])  # a printed list of names

    assert modules_after("--help") == []
    assert modules_after("log", "--steps", "8000", "--json") == ["entries", "options"]
    assert modules_after("status", "--json") == ["options", "syncing"]
    assert modules_after("import", "--help") == ["options", "transfer"]


def test_every_command_and_exit_code_is_documented() -> None:
    from pulse_cli import exits

    cli_md = (ROOT / "docs" / "cli.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"pulse {name}" in cli_md + readme, name
    table = cli_md.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {0, exits.FAILED, exits.USAGE, exits.OFFLINE, exits.KEPT_DATA, exits.INTERRUPTED}
    assert "4 when going on would lose data" in readme
