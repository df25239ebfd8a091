"""CSV in long format: one row per athlete, date and metric that has a value (missing days have no row)."""

from __future__ import annotations

import csv
import io

from pulse_cli.reports_render.model import TeamReport
from pulse_core.insights import TREND_METRICS

COLUMNS = ("athlete", "date", "metric", "value")


def render_csv(report: TeamReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for athlete in report.athletes:
        for entry in report.rows(athlete.athlete):  # the live entries of the range, in date order
            day = entry.date.isoformat()
            for metric in TREND_METRICS:
                value = getattr(entry, metric)
                if value is not None:
                    writer.writerow((athlete.athlete, day, metric, str(value)))
    return out.getvalue()
