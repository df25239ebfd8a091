"""The docs cannot drift from the code: every command and option is in docs/cli.md, every error code the
server answers is in docs/api.md, every file a comment or a doc cites exists, the exit codes and the JSON
schemas that `--help` points to are documented."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click.core import Context

from pulse_cli.exits import RefusedToLoseData, exit_code
from pulse_cli.main import app
from pulse_core.errors import PulseError, ValidationError
from pulse_core.rules import MESSAGES
from pulse_server.errors import CODES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CLI_MD = (DOCS / "cli.md").read_text()
API_MD = (DOCS / "api.md").read_text()


# -- the command tree ------------------------------------------------------------------------------
def _commands() -> Iterator[tuple[str, Any, Context]]:
    """(`pulse sub command`, the click command, its context) for the root and every command under it."""
    root = typer.main.get_command(app)

    def walk(command: Any, path: str, ctx: Context) -> Iterator[tuple[str, Any, Context]]:
        yield path, command, ctx
        if hasattr(command, "list_commands"):  # a group: lazy ones load their commands here
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                yield from walk(sub, f"{path} {name}", Context(sub, parent=ctx, info_name=name))

    yield from walk(root, "pulse", Context(root, info_name="pulse"))


COMMANDS = list(_commands())


def _options(command: Any) -> list[str]:
    return [o for p in command.params if p.param_type_name == "option" for o in p.opts
            if o.startswith("--") and o != "--help"]


def _arguments(command: Any, ctx: Context) -> list[str]:
    return [p.make_metavar(ctx).strip("[]").split()[0].rstrip(".") for p in command.params
            if p.param_type_name == "argument"]


def _listed(path: str) -> str:
    """The command's entry in docs/cli.md's "Every command": from its `pulse ...` to the next one."""
    section = CLI_MD.split("## Every command", 1)[1].split("\n## ", 1)[0]
    starts = [m.start() for m in re.finditer(rf"`{re.escape(path)}(?= |`)", section)]
    assert starts, f"docs/cli.md, 'Every command': no entry for `{path}`"
    return section[starts[0]:].split("`pulse", 2)[1]


def test_the_command_tree_is_walked_whole() -> None:
    paths = {path for path, _, _ in COMMANDS}
    assert {"pulse log", "pulse import fitbit", "pulse coach athletes", "pulse rejected"} <= paths


@pytest.mark.parametrize(("path", "command", "ctx"), [c for c in COMMANDS if not hasattr(c[1], "list_commands")
                                                      or c[0] in ("pulse", "pulse rejected")],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_command_and_its_options_and_arguments_are_in_the_cli_reference(path: str, command: Any,
                                                                              ctx: Context) -> None:
    listed = _listed(path)
    missing = [o for o in _options(command) if not re.search(rf"{re.escape(o)}\b", listed)]
    missing += [a for a in _arguments(command, ctx) if a not in listed]
    assert missing == [], f"docs/cli.md, `{path}`: {missing} missing from: {listed!r}"


def test_every_json_output_that_help_points_to_is_documented() -> None:
    """`--json` says "schema in docs/cli.md": each command that has it is shown there with its JSON (an
    object's keys), or with a link to the page that has them."""
    with_json = [path for path, command, _ in COMMANDS if "--json" in _options(command)]
    assert "pulse sync" in with_json
    paragraphs = re.split(r"\n(?=- |\S)", CLI_MD)
    for path in with_json:
        about = [p for p in paragraphs if re.search(rf"`{re.escape(path)}[ `]", p) and "--json" in p]
        documented = any('{"' in p for p in about) or any(
            (DOCS / link).exists() and path in (DOCS / link).read_text() and '{"' in (DOCS / link).read_text()
            for p in about for link in re.findall(r"\]\(([\w-]+\.md)\)", p))
        assert documented, f"docs/cli.md shows no JSON for `{path} --json`"


def test_the_exit_code_table_has_every_code_pulse_exits_with() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", CLI_MD.split("## Exit codes", 1)[1].split("\n## ", 1)[0],
                            re.MULTILINE))
    offline = PulseError("offline: 1 change queued")
    offline.code = "offline"
    exits = {exit_code(ValidationError("steps", "x", "0-100000", "steps: x")), exit_code(offline),
             exit_code(PulseError("anything else")), exit_code(RefusedToLoseData("pending: 1 change")), 0, 130}
    assert exits == {0, 1, 2, 3, 4, 130}
    assert sorted(int(code) for code in table) == sorted(exits)
    assert "offline" in table["3"] and "lose data" in table["4"]


# -- error codes ------------------------------------------------------------------------------------
def _api_errors_in_source() -> set[tuple[int, str]]:
    """Every (status, code) an `ApiError(...)` in pulse_server is raised with, read from the source."""
    found = set()
    for path in (ROOT / "pulse_server").rglob("*.py"):
        for status, code in re.findall(r"ApiError\(\s*(\d{3}),\s*\"([a-z_]+)\"", path.read_text()):
            found.add((int(status), code))
    return found


def test_every_error_code_the_server_raises_is_in_the_one_table() -> None:
    raised = _api_errors_in_source()
    assert (404, "not_found") in raised and (409, "not_a_coach") in raised
    assert raised - {(status, code) for code, status in CODES.items()} == set()


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_error_code_is_documented_under_its_status(code: str) -> None:
    row = re.search(rf"^\| {CODES[code]} \| (.+) \|$", API_MD, re.MULTILINE)
    assert row is not None and f"`{code}`" in row.group(1), f"docs/api.md: `{code}` not in the {CODES[code]} row"


def test_every_code_of_a_refused_value_or_mutation_is_documented() -> None:
    value_codes = {code for code in MESSAGES if not code.startswith("warn_")} | {"invalid_value"}
    wire = (ROOT / "sync" / "wire.py").read_text()
    mutation_codes = set(re.findall(r"_bad\(\"([a-z_]+)\"", wire)) | set(re.findall(r"\"code\": \"([a-z_]+)\"", wire))
    assert {"invalid_seq", "client_id_reused"} <= mutation_codes
    missing = sorted(c for c in value_codes | mutation_codes if f"`{c}`" not in API_MD)
    assert missing == [], f"docs/api.md lacks {missing}"


# -- cited files ------------------------------------------------------------------------------------
SKIP_DIRS = {".venv", ".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
             ".hypothesis", "build", "dist"}
TEXT = {".py", ".md", ".js", ".mjs", ".html", ".css", ".toml", ".conf", ".service", ".sh", ".env", ".mako"}
CITED = re.compile(r"(?<![\w./$@{-])((?:\.\./)*(?:[A-Za-z_][\w.-]*/)+[\w.-]*\w\.(?:md|py|js|mjs|json|toml|conf"
                   r"|service|sh|html|css|mako|csv))(?![\w/])")
CITED_DOC = re.compile(r"(?<![\w./-])([A-Za-z][\w-]*\.md)\b")
# Folders a citation may be relative to, besides the repository and the citing file's own folder.
BASES = ("docs", "pulse_server", "pulse_server/web/static", "pulse_cli", "tests")
# Documents of others, cited by name: not in this repository.
ELSEWHERE = {"datatypes.md"}  # the Welltory dataset's own field list (pulse_core/importers/welltory.py)


def _texts() -> Iterator[Path]:
    """The repository's text files: those git tracks or would (what .gitignore leaves out, such as the
    benches' bench/out, is not the repository's); every file below the root outside a git checkout."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode == 0:
        for name in listed.stdout.decode().split("\0"):
            path = ROOT / name
            skipped = any(part in SKIP_DIRS or part.endswith(".egg-info") for part in Path(name).parts[:-1])
            if (name and not skipped and path.is_file() and not path.is_relative_to(ROOT / "tests" / "data")
                    and not path.is_relative_to(ROOT / "tests" / "artefacts")
                    and (path.suffix in TEXT or path.parent.name == ".ci")):
                yield path
        return
    for folder, dirs, names in os.walk(ROOT):
        here = Path(folder)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                   and (here / d) not in (ROOT / "tests" / "data", ROOT / "tests" / "artefacts")]
        for name in names:
            path = here / name
            if path.suffix in TEXT or here.name == ".ci":
                yield path


def _prose(path: Path) -> str:
    """What a file says to people: a Python file's comments and docstrings (and strings naming a doc,
    such as help texts), every other file whole."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return text
    kept = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and (
                token.string.lstrip("rbuRBU").startswith(('"""', "'''")) or "docs/" in token.string)):
            kept.append(token.string)
    return "\n".join(kept)


def _exists(cited: str, by: Path) -> bool:
    return any(base.joinpath(cited).exists() for base in (ROOT, by.parent, *(ROOT / b for b in BASES)))


def test_every_file_a_comment_or_a_doc_cites_exists() -> None:
    missing = []
    for path in _texts():
        prose = _prose(path)
        cited = set(CITED.findall(prose)) | (set(CITED_DOC.findall(prose)) - ELSEWHERE)
        missing += [f"{path.relative_to(ROOT)}: {c}" for c in sorted(cited) if not _exists(c, path)]
    assert missing == []


def test_nothing_cites_the_design_notes_outside_the_repository() -> None:
    outside = [str(p.relative_to(ROOT)) for p in _texts()
               if re.search(r"\.\./shared|(?<![\w/-])(sync-protocol|architecture-notes)\.md", _prose(p))]
    assert outside == []


def test_the_citation_check_would_see_a_missing_file() -> None:
    page, design = "docs" + "/no-such-page.md", "sync" + "-protocol.md"  # not citations of this file
    prose = f"# see {page} and the push protocol ({design})"
    cited = set(CITED.findall(prose)) | set(CITED_DOC.findall(prose))
    assert cited == {page, design}
    assert not any(_exists(c, ROOT / "sync" / "wire.py") for c in cited)


def test_the_architecture_page_describes_the_score_as_built() -> None:
    text = (DOCS / "architecture.md").read_text()
    assert "Fraction" not in text
    assert "integer numerators and denominators" in text
