"""Line charts: one metric over the range, with its baseline band (mean ± SD of the 28 days before each day).

`geometry` lays a chart out once (y grows downwards, as in SVG); `chart_svg` draws it as inline SVG
and the PDF module draws the same geometry with reportlab. Missing days are gaps, never zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Literal

from pulse_cli.reports_render.model import Series
from pulse_cli.reports_render.text import label, number

Point = tuple[float, float]
Anchor = Literal["start", "middle", "end"]

WIDTH, HEIGHT = 560.0, 150.0
LEFT, RIGHT, TOP, BOTTOM = 52.0, 10.0, 22.0, 22.0
LINE = "#1d4ed8"
BAND = "#93c5fd"
MEAN = "#60a5fa"
INK = "#374151"
GRID = "#e5e7eb"
MARKERS_UP_TO_DAYS = 62


@dataclass
class Geometry:
    width: float
    height: float
    title: str
    bands: list[list[Point]] = field(default_factory=list)  # closed polygons
    means: list[list[Point]] = field(default_factory=list)
    lines: list[list[Point]] = field(default_factory=list)
    markers: list[Point] = field(default_factory=list)
    y_labels: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str, Anchor]] = field(default_factory=list)  # x, text, anchor
    plot: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # left, top, right, bottom


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive True."""
    runs, start = [], None
    for i, on in enumerate([*flags, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def geometry(series: Series, width: float = WIDTH, height: float = HEIGHT) -> Geometry:
    geo = Geometry(width, height, label(series.metric))
    left, top, right, bottom = LEFT, TOP, width - RIGHT, height - BOTTOM
    geo.plot = (left, top, right, bottom)
    n = len(series.days)
    # Every metric is a non-negative amount: a band reaching below zero is drawn down to zero.
    spread = [v for v in series.values if v is not None]
    for band in series.bands:
        if band is not None:
            spread += [max(0.0, band.mean - band.sd), band.mean + band.sd]
    if not spread or n == 0:
        return geo
    low, high = min(spread), max(spread)
    if high - low < 1e-9:
        low, high = max(0.0, low - 1.0), high + 1.0
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad

    def x(i: int) -> float:
        return (left + right) / 2 if n == 1 else left + (right - left) * i / (n - 1)

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    for first, last in _runs([b is not None for b in series.bands]):
        upper, lower, mean = [], [], []
        for i in range(first, last + 1):
            b = series.bands[i]
            assert b is not None
            upper.append((x(i), y(b.mean + b.sd)))
            lower.append((x(i), y(max(0.0, b.mean - b.sd))))
            mean.append((x(i), y(b.mean)))
        geo.bands.append(upper + lower[::-1])
        geo.means.append(mean)
    for first, last in _runs([v is not None for v in series.values]):
        points = [(x(i), y(v)) for i in range(first, last + 1) if (v := series.values[i]) is not None]
        if len(points) == 1 or n <= MARKERS_UP_TO_DAYS:
            geo.markers.extend(points)
        if len(points) > 1:
            geo.lines.append(points)
    geo.y_labels = [(y(v), number(series.metric, v)) for v in (high - pad, (high + low) / 2, low + pad)]
    geo.x_labels = [(left, series.days[0].isoformat(), "start")]
    if n > 1:
        geo.x_labels.append((right, series.days[-1].isoformat(), "end"))
    return geo


def _points(points: list[Point]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def chart_svg(series: Series, athlete: str) -> str:
    geo = geometry(series)
    title = f"{athlete}: {geo.title} per day, with the baseline band (mean ± SD of the 28 days before)"
    w, h = geo.width, geo.height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}"'
        f' height="{h:.0f}" role="img" aria-label="{escape(title)}" data-metric="{series.metric}">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="14" font-size="12" font-weight="bold" fill="{INK}">{escape(geo.title)}</text>',
    ]
    left, top, right, bottom = geo.plot
    parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}"'
                 f' fill="none" stroke="{GRID}"/>')
    if not series.has_values:
        parts.append(f'<text x="{(left + right) / 2:.1f}" y="{(top + bottom) / 2:.1f}" font-size="11"'
                     f' text-anchor="middle" fill="{INK}">no values in this range</text>')
    for polygon in geo.bands:
        parts.append(f'<polygon class="band" points="{_points(polygon)}" fill="{BAND}" fill-opacity="0.35"'
                     ' stroke="none"/>')
    for mean in geo.means:
        parts.append(f'<polyline class="mean" points="{_points(mean)}" fill="none" stroke="{MEAN}"'
                     ' stroke-width="1" stroke-dasharray="3 3"/>')
    for line in geo.lines:
        parts.append(f'<polyline class="value" points="{_points(line)}" fill="none" stroke="{LINE}"'
                     ' stroke-width="1.6"/>')
    parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.2" fill="{LINE}"/>' for px, py in geo.markers)
    for py, text in geo.y_labels:
        parts.append(f'<text x="{left - 4:.1f}" y="{py + 4:.1f}" font-size="10" text-anchor="end"'
                     f' fill="{INK}">{escape(text)}</text>')
    for px, text, anchor in geo.x_labels:
        parts.append(f'<text x="{px:.1f}" y="{h - 6:.1f}" font-size="10" text-anchor="{anchor}"'
                     f' fill="{INK}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
