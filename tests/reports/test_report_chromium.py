"""The HTML team report opens in headless Chromium with no errors, renders its SVG charts, and is screenshot.

Needs Debian's chromium (`apt-get install -y chromium`); skipped, saying so, where it is missing.
The browser runs with networking and background services off: the page must need nothing but itself.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from artefacts import artefact_dir

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           "--disable-default-apps", "--hide-scrollbars"]
PAGE_ERRORS = re.compile(r"Uncaught|CONSOLE\(|ERR_(?!.*dbus)|Refused to|Failed to load resource", re.IGNORECASE)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *OFFLINE, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_html_report_renders_in_headless_chromium_and_a_screenshot_is_taken(
    team_files: dict[str, Path], tmp_path: Path
) -> None:
    shot = tmp_path / "team.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", team_files["html"].as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 50_000  # a rendered page of tables and charts, not a blank one
    problems = [line for line in done.stderr.splitlines() if PAGE_ERRORS.search(line)]
    assert problems == [], problems
    shutil.copyfile(shot, artefact_dir("reports") / "team-chromium-cli.png")  # kept for a person to look at


def test_the_rendered_dom_holds_every_chart_and_table(team_files: dict[str, Path], tmp_path: Path) -> None:
    done = chromium(tmp_path, "--dump-dom", team_files["html"].as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<svg ") == 33 * 5
    assert len(re.findall(r'<polygon class="band"', dom)) > 33  # baseline bands drawn
    assert dom.count('<section class="athlete"') == 33
    assert "fitbit-1503960366" in dom and "short_sleep" in dom
    problems = [line for line in done.stderr.splitlines() if PAGE_ERRORS.search(line)]
    assert problems == [], problems
