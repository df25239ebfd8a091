"""The shared validation cases (tests/data/validation_cases.json) against the PWA's own modules in Chromium.

The page's js/values.js and js/score.js are imported as the app imports them, from the server, with
the rules the server publishes at GET /v1/rules; tests/unit/test_validation_cases.py runs the same
file against pulse_core.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from sync_support import PulseServer

CASES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "validation_cases.json").read_text(encoding="utf-8"))

RUN_CASES = """
async (cases) => {
  const { parseFields, parseDate } = await import('./js/values.js');
  const { dayScore, fieldWarnings } = await import('./js/score.js');
  const rules = await (await fetch('../v1/rules')).json();
  const outcome = (work) => {
    try { return { accepted: work() }; }
    catch (error) { if (!error.code) throw error; return { error: error.message }; }
  };
  return {
    fields: cases.fields.map((c) => outcome(() => parseFields(rules, c.input))),
    dates: cases.dates.map((c) => outcome(() => parseDate(rules, c.input, c.today))),
    scores: cases.scores.map((c) => {
      const f = parseFields(rules, c.input);
      return dayScore(rules, f.sleep_hours, f.hrv_ms, f.steps);
    }),
    warnings: cases.warnings.map((c) =>
      fieldWarnings(rules, parseFields(rules, c.input), c.previous, c.date).map((w) => w.message)),
  };
}
"""


@pytest.fixture(scope="module")
def results(browser: Browser, cloud_server: PulseServer) -> Iterator[dict[str, list[Any]]]:
    """Every case run once, in one page of the app (no account needed: /v1/rules is public)."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{cloud_server.url}/app/")
    got: dict[str, list[Any]] = page.evaluate(RUN_CASES, CASES)
    yield got
    context.close()
    assert errors == []


def expected(case: dict[str, Any]) -> dict[str, Any]:
    return {"error": case["error"]} if "error" in case else {"accepted": case["accepted"]}


def test_the_browser_accepts_and_refuses_typed_fields_with_the_cli_messages(results: dict[str, list[Any]]) -> None:
    mismatches = [(case["input"], got, expected(case))
                  for case, got in zip(CASES["fields"], results["fields"], strict=True) if got != expected(case)]
    assert mismatches == []
    assert len(results["fields"]) == len(CASES["fields"]) > 40


def test_the_browser_reads_dates_like_the_cli(results: dict[str, list[Any]]) -> None:
    mismatches = [(case, got) for case, got in zip(CASES["dates"], results["dates"], strict=True)
                  if got != expected(case)]
    assert mismatches == []


def test_the_browser_scores_a_day_like_the_server(results: dict[str, list[Any]]) -> None:
    assert results["scores"] == [case["score"] for case in CASES["scores"]]


def test_the_browser_warns_like_the_cli(results: dict[str, list[Any]]) -> None:
    assert results["warnings"] == [case["warnings"] for case in CASES["warnings"]]
