"""The one entry point: a report in a format, as text (or bytes for a PDF)."""

from __future__ import annotations

import json

from pulse_cli.reports_render.model import TeamReport
from pulse_core.errors import UsageError

FORMATS = ("md", "csv", "json", "html", "pdf", "fhir")
BINARY = ("pdf",)


def render(report: TeamReport, fmt: str) -> str | bytes:
    if fmt == "json":
        return json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        from pulse_cli.reports_render.tabular import render_csv

        return render_csv(report)
    if fmt == "md":
        from pulse_cli.reports_render.markdown import render_markdown

        return render_markdown(report)
    if fmt == "html":
        from pulse_cli.reports_render.html import render_html

        return render_html(report)
    if fmt == "fhir":
        from pulse_cli.reports_render.fhir import render_fhir

        return render_fhir(report)
    if fmt == "pdf":
        try:
            from pulse_cli.reports_render.pdf import render_pdf  # reportlab: only ever loaded here
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "reportlab":
                raise
            raise UsageError("format", fmt, "md, csv, json or html, or install reportlab",
                             "format: a PDF needs reportlab (pip install 'reportlab>=4')") from exc
        return render_pdf(report)
    raise ValueError(f"unknown report format {fmt!r}")
