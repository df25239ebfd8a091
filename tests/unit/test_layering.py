"""The import rules between packages, checked mechanically on the source (AST), not by convention.

- pulse_core imports only the standard library (and itself);
- sync never imports pulse_cli or pulse_server;
- pulse_server never imports pulse_cli;
- pulse_cli imports pulse_server only inside functions (or under `if TYPE_CHECKING:`, which never runs),
  never at module level;
- the modules of each package import each other with no cycle, counting imports inside functions (a
  cycle hidden in a function is still one), not counting those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names)


@dataclass(frozen=True)
class Import:
    module: str  # the absolute dotted name ("" for a bare relative import)
    line: int
    in_function: bool
    type_only: bool = False  # under `if TYPE_CHECKING:`: never runs
    names: tuple[str, ...] = ()  # what `from module import ...` takes (a name may be a submodule)

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _resolve_relative(package: str, level: int, module: str | None) -> str:
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, module] if module else base)


def imports_of(source: str, package: str) -> list[Import]:
    """Every import in `source` (a module of `package`), with whether it sits inside a function.

    Calls to `importlib.import_module("...")` and `__import__("...")` with a literal name count too.
    """
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            checking = type_only or (isinstance(child, ast.If) and _is_type_checking(child.test))
            inside = in_function or checking or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, in_function, type_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                name = (
                    _resolve_relative(package, child.level, child.module)
                    if child.level
                    else child.module or ""
                )
                found.append(Import(name, child.lineno, in_function, type_only, tuple(a.name for a in child.names)))
            elif isinstance(child, ast.Call) and _dynamic_import_name(child) is not None:
                found.append(Import(_dynamic_import_name(child) or "", child.lineno, in_function, type_only))
            visit(child, inside, checking)

    visit(tree, False, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports under it are for the type checker only."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dynamic_import_name(call: ast.Call) -> str | None:
    func = call.func
    is_import_module = isinstance(func, ast.Attribute) and func.attr == "import_module"
    is_dunder = isinstance(func, ast.Name) and func.id == "__import__"
    if (is_import_module or is_dunder) and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        return value if isinstance(value, str) else None
    return None


def modules_of(package: str) -> list[tuple[Path, str]]:
    """(path, dotted package of the module) for every .py file under ROOT/package."""
    base = ROOT / package
    out = []
    for path in sorted(base.rglob("*.py")):
        # a module's package is its dotted path minus its own name; an __init__ is its package's module
        out.append((path, ".".join(path.relative_to(ROOT).parts[:-1])))
    return out


def violations(package: str, rule: str) -> list[str]:
    bad = []
    for path, pkg in modules_of(package):
        for imp in imports_of(path.read_text(encoding="utf-8"), pkg):
            if _breaks(rule, imp):
                where = "inside a function" if imp.in_function else "at module level"
                bad.append(f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module} {where}")
    return bad


def _breaks(rule: str, imp: Import) -> bool:
    if rule == "core":
        return imp.top not in STDLIB and imp.top != "pulse_core"
    if rule == "sync":
        return imp.top in ("pulse_cli", "pulse_server")
    if rule == "server":
        return imp.top == "pulse_cli"
    if rule == "cli":
        return imp.top == "pulse_server" and not imp.in_function
    raise AssertionError(rule)


# --- the checker itself, on made-up sources, so a passing rule cannot be a vacuous one ---------------


def test_the_checker_sees_plain_from_relative_and_dynamic_imports() -> None:
    source = (
        "import os.path\n"
        "from decimal import Decimal\n"
        "from . import entry\n"
        "from ..sibling import thing\n"
        "import importlib\n"
        "mod = importlib.import_module('typer')\n"
    )
    found = {imp.module for imp in imports_of(source, "pulse_core.sub")}
    assert found == {"os.path", "decimal", "pulse_core.sub", "pulse_core.sibling", "importlib", "typer"}


def test_the_checker_tells_function_level_imports_from_module_level_ones() -> None:
    source = (
        "import pulse_server.app\n"
        "if True:\n"
        "    from pulse_server import routes\n"
        "class C:\n"
        "    import pulse_server.models\n"
        "def serve():\n"
        "    from pulse_server.app import create_app\n"
        "    return create_app\n"
        "if TYPE_CHECKING:\n"
        "    from pulse_server.ports import Port\n"
        "if typing.TYPE_CHECKING:\n"
        "    import pulse_server.errors\n"
    )
    found = [(imp.module, imp.in_function) for imp in imports_of(source, "pulse_cli")]
    assert found == [
        ("pulse_server.app", False),
        ("pulse_server", False),
        ("pulse_server.models", False),
        ("pulse_server.app", True),
        ("pulse_server.ports", True),
        ("pulse_server.errors", True),
    ]


def test_a_third_party_import_in_core_code_counts_as_a_violation() -> None:
    assert _breaks("core", Import("pydantic", 1, False))
    assert _breaks("core", Import("pulse_cli.store", 1, True))
    assert not _breaks("core", Import("fractions", 1, False))
    assert not _breaks("core", Import("pulse_core.rules", 1, False))


def test_the_cli_rule_allows_server_imports_only_inside_functions() -> None:
    assert _breaks("cli", Import("pulse_server.app", 1, False))
    assert not _breaks("cli", Import("pulse_server.app", 1, True))


# --- the rules, on the real code -----------------------------------------------------------------


def test_pulse_core_exists_and_has_modules_to_check() -> None:
    assert len(modules_of("pulse_core")) >= 5


def test_pulse_core_imports_only_the_standard_library() -> None:
    assert violations("pulse_core", "core") == []


def test_sync_never_imports_the_cli_or_the_server() -> None:
    assert violations("sync", "sync") == []


def test_the_server_never_imports_the_cli() -> None:
    if not (ROOT / "pulse_server").is_dir():
        pytest.skip("pulse_server does not exist yet")
    assert violations("pulse_server", "server") == []


def test_the_cli_imports_the_server_only_inside_functions() -> None:
    assert violations("pulse_cli", "cli") == []


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of `package` it imports (at any level, types aside)."""
    graph: dict[str, set[str]] = {}
    for path, pkg in modules_of(package):
        name = pkg if path.name == "__init__.py" else f"{pkg}.{path.stem}"
        # `from pulse_cli.agent import outbox` imports the module `pulse_cli.agent.outbox` too
        graph[name] = {target for imp in imports_of(path.read_text(encoding="utf-8"), pkg) if not imp.type_only
                       for target in (imp.module, *(f"{imp.module}.{n}" for n in imp.names))}
    for name in graph:
        graph[name] &= set(graph) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of an import graph, each found once, from its smallest module."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.append([*path, start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source_a = "from pkg import b\n"
    source_b = "def late():\n    from pkg.a import thing\n"
    assert [(i.module, i.names) for i in imports_of(source_a, "pkg")] == [("pkg", ("b",))]
    assert [(i.module, i.in_function) for i in imports_of(source_b, "pkg")] == [("pkg.a", True)]
    typed = imports_of("if TYPE_CHECKING:\n    from pkg.a import A\n", "pkg")
    assert [(i.module, i.type_only) for i in typed] == [("pkg.a", True)]


def test_the_cli_modules_import_each_other_with_no_cycle() -> None:
    graph = import_graph("pulse_cli")
    assert "pulse_cli.agent.pull" in graph["pulse_cli.agent.daemon"]
    assert cycles(graph) == []


def test_the_sync_modules_import_each_other_with_no_cycle() -> None:
    assert cycles(import_graph("sync")) == []
