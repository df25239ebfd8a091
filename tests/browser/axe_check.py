"""axe-core (Deque's accessibility engine, npm `axe-core`, pinned in tests/browser/axe/package.json) run
on a page of the app: the rules it runs by default (WCAG 2.0-2.2 A and AA, and its best practices).

The package is installed beside its package.json (`npm ci`) when missing, as the Electric client tests
do (tests/server/test_electric_client.py): node and npm are required, not optional.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

AXE_DIR = Path(__file__).resolve().parent / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def _pinned() -> str:
    version: str = json.loads((AXE_DIR / "package.json").read_text())["dependencies"]["axe-core"]
    return version


def _installed() -> str | None:
    manifest = AXE_DIR / "node_modules" / "axe-core" / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else None


def axe_script() -> Path:
    """axe.min.js of the pinned version, installed first if it is missing."""
    with open(Path(tempfile.gettempdir()) / "pulse-axe-npm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once must not both install
        if _installed() != _pinned():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is required to install axe-core for the accessibility checks: "
                            "apt-get install nodejs npm, and re-run")
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AXE_DIR, capture_output=True,
                                  text=True, timeout=300, check=False)
            if done.returncode != 0:
                pytest.fail(f"`npm ci` in {AXE_DIR} failed:\n{done.stdout}\n{done.stderr}")
    assert _installed() == _pinned()
    return AXE_JS


def violations(page: Page) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now: rule, impact, help, and each node's selector and summary."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script()))
    found: list[dict[str, Any]] = page.evaluate("""async () => {
      const result = await axe.run(document, { resultTypes: ['violations'] });
      return result.violations.map((v) => ({ rule: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })) }));
    }""")
    return found


def assert_accessible(page: Page, screen: str) -> None:
    found = violations(page)
    assert found == [], f"axe-core on {screen}:\n" + json.dumps(found, indent=1)
