"""Coach reports in every format: the data (`model`), and one module per format.

    model     who is reported, their pulse_core.reports figures, the daily chart series
    text      labels and number formatting shared by the formats
    formats   render(report, fmt) -> str | bytes, the one entry point
    tabular   CSV in long format (athlete, date, metric, value)
    markdown  a Markdown document
    svg       line charts with a baseline band, as inline SVG
    html      a self-contained HTML page (inline CSS and SVG, no JavaScript, no network)
    pdf       a PDF made with reportlab, imported only when a PDF is asked for
    terminal  the rich summary shown when the report goes to a terminal

Imported lazily by `pulse report` and `pulse coach`, so `pulse log` never loads any of it.
"""
