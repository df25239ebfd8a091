"""A coach's report as one FHIR R4 Bundle: a Patient per athlete and their Observations over the range."""

from __future__ import annotations

import datetime as dt
import json

from pulse_cli.fhir import Person, bundle
from pulse_cli.reports_render.model import TeamReport


def render_fhir(report: TeamReport) -> str:
    """The same days as the CSV report (each athlete's live entries from --from to --to)."""
    people = [Person(a.athlete, report.server, report.rows(a.athlete)) for a in report.athletes]
    generated = dt.datetime.fromisoformat(report.generated_at.replace("Z", "+00:00"))
    return json.dumps(bundle(people, generated), indent=2, ensure_ascii=False) + "\n"
