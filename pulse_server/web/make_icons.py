"""Draw the PWA's PNG icons (192 and 512 px) with the standard library: `python -m pulse_server.web.make_icons`.

The same picture as static/icons/icon.svg: a pulse line on a teal square. Full-bleed, with the line
inside the central 80 %, so the icons also serve as maskable ones. The PNGs are committed; run this
again only when the picture changes.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from pathlib import Path

ICONS = Path(__file__).parent / "static" / "icons"
BACKGROUND = (15, 94, 87)
LINE = (255, 255, 255)
# The pulse line on a 100 x 100 canvas (the SVG's viewBox).
POINTS = [(14, 54), (34, 54), (42, 36), (52, 72), (60, 28), (68, 54), (86, 54)]
WIDTH = 7.0


def _distance(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def draw(size: int) -> bytes:
    scale = size / 100
    points = [(x * scale, y * scale) for x, y in POINTS]
    half = WIDTH * scale / 2
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter type: none
        for x in range(size):
            d = min(_distance(x + 0.5, y + 0.5, a, b) for a, b in itertools.pairwise(points))
            cover = max(0.0, min(1.0, half + 0.5 - d))  # about one pixel of anti-aliasing
            row += bytes(round(bg + (fg - bg) * cover) for bg, fg in zip(BACKGROUND, LINE, strict=True))
        rows.append(bytes(row))
    return png(size, size, b"".join(rows))


def png(width: int, height: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (ICONS / f"icon-{size}.png").write_bytes(draw(size))


if __name__ == "__main__":
    main()
