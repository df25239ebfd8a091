"""Line charts: one metric over the range, with its baseline band (mean ± SD of the 28 days before each day).

`geometry` lays a chart out once (y grows downwards, as in SVG); `chart_svg` draws it as inline SVG
and the PDF module draws the same geometry with reportlab. Missing days are gaps, never zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from pulse_cli.reports_render.axes import date_ticks, value_ticks
from pulse_cli.reports_render.model import Series
from pulse_cli.reports_render.text import label, number

Point = tuple[float, float]
Anchor = Literal["start", "middle", "end"]

WIDTH, HEIGHT = 560.0, 160.0
LEFT_FONTS, RIGHT, TOP, BOTTOM = 5.2, 14.0, 22.0, 24.0  # left: room for 6-digit labels (15,000)
INSET = 6.0  # the frame stands this far outside the first and last day and the outer ticks: no point sits on it
FONT = 10.0
CHAR_WIDTH = 0.62  # of the font size: a digit of the sans-serif fonts used, for fitting labels
LINE = "#1d4ed8"
BAND = "#93c5fd"
MEAN = "#60a5fa"
INK = "#374151"
GRID = "#e5e7eb"
FRAME = "#d1d5db"
MARKERS_UP_TO_DAYS = 62
Y_INTERVALS = 4  # at most 4 steps up the side (5 or 6 round values): 18 pt apart in the PDF
COUNTED = ("steps", "score")  # whole numbers: no tick between two of them


@dataclass
class Geometry:
    width: float
    height: float
    title: str
    bands: list[list[Point]] = field(default_factory=list)  # closed polygons
    means: list[list[Point]] = field(default_factory=list)
    lines: list[list[Point]] = field(default_factory=list)
    markers: list[Point] = field(default_factory=list)
    y_labels: list[tuple[float, str]] = field(default_factory=list)  # y of a round value, its text
    x_ticks: list[float] = field(default_factory=list)  # x of each Monday (each day of a short range)
    x_labels: list[tuple[float, str, Anchor]] = field(default_factory=list)  # x, text, anchor
    plot: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the frame: left, top, right, bottom
    font: float = FONT


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


def _spread(series: Series) -> list[float]:
    """Every value and band edge drawn. Every metric is a non-negative amount: a band reaching below zero
    is drawn down to zero."""
    spread = [v for v in series.values if v is not None]
    for band in series.bands:
        if band is not None:
            spread += [max(0.0, band.mean - band.sd), band.mean + band.sd]
    return spread


def geometry(series: Series, width: float = WIDTH, height: float = HEIGHT, font: float = FONT) -> Geometry:
    geo = Geometry(width, height, label(series.metric), font=font)
    left, top, right, bottom = font * LEFT_FONTS, TOP, width - RIGHT, height - BOTTOM
    geo.plot = (left, top, right, bottom)
    n = len(series.days)
    spread = _spread(series)
    if not spread or n == 0:
        return geo
    ticks = value_ticks(min(spread), max(spread), Y_INTERVALS, series.metric in COUNTED)
    low, high = ticks[0], ticks[-1]
    x0, x1, y0, y1 = left + INSET, right - INSET, top + INSET, bottom - INSET

    def x(i: int) -> float:
        return (x0 + x1) / 2 if n == 1 else x0 + (x1 - x0) * i / (n - 1)

    def y(v: float) -> float:
        return y1 - (y1 - y0) * (v - low) / (high - low)

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
    geo.y_labels = [(y(v), number(series.metric, v)) for v in ticks]
    _date_axis(geo, series, x)
    return geo


def _date_axis(geo: Geometry, series: Series, x: Callable[[int], float]) -> None:
    """Ticks on the Mondays, labels as many as fit, each kept inside the chart (not cut by its edge)."""
    left, _, right, _ = geo.plot
    label_width = len("2016-04-18") * geo.font * CHAR_WIDTH
    fit = max(1, int((right - left) // (label_width + geo.font)))
    for tick in date_ticks(series.days, fit):
        px = x(tick.index)
        geo.x_ticks.append(px)
        if tick.label is not None:
            half = len(tick.label) * geo.font * CHAR_WIDTH / 2
            geo.x_labels.append((min(max(px, half + 2), geo.width - half - 2), tick.label, "middle"))


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
    for py, _ in geo.y_labels:
        parts.append(f'<line class="grid" x1="{left:.1f}" x2="{right:.1f}" y1="{py:.1f}" y2="{py:.1f}"'
                     f' stroke="{GRID}"/>')
    if geo.x_ticks:  # one path for them all: a year is 52 ticks a chart
        marks = "".join(f"M{px:.1f} {bottom:.1f}v4" for px in geo.x_ticks)
        parts.append(f'<path class="ticks" d="{marks}" stroke="{FRAME}"/>')
    parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}"'
                 f' fill="none" stroke="{FRAME}"/>')
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
        parts.append(f'<text class="y" x="{left - 4:.1f}" y="{py + 3.5:.1f}" font-size="{geo.font:g}"'
                     f' text-anchor="end" fill="{INK}">{escape(text)}</text>')
    for px, text, anchor in geo.x_labels:
        parts.append(f'<text class="x" x="{px:.1f}" y="{bottom + 15:.1f}" font-size="{geo.font:g}"'
                     f' text-anchor="{anchor}" fill="{INK}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
