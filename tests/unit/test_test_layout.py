"""The suite's own layout: test folders are not packages, so pytest imports each test module by its
file name alone; two modules with one name in two folders stop the whole run at collection."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_file_name() -> None:
    folders: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "node_modules" not in path.parts and path.name != "__init__.py":
            folders[path.name].append(str(path.parent.relative_to(TESTS)))
    assert len(folders) > 50  # the walk found the suite
    assert {name: where for name, where in folders.items() if len(where) > 1 and name != "conftest.py"} == {}
