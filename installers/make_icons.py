"""Draws Bitsmith's icon (a dark tile holding a 3x3 grid of bits, a few lit) as SVG, PNG and ICO.

Stdlib only, so it runs anywhere; the outputs are committed in resources/ and this script is run by hand
when the design changes: `python installers/make_icons.py`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "resources"
BG = (31, 42, 68)
LIT = (255, 138, 61)
DIM = (86, 104, 140)
# (column, row) of the lit bits: reads as a low-bit pattern, and still as a shape at 16 px.
LIT_CELLS = {(0, 0), (1, 1), (2, 1), (0, 2), (2, 2)}
TILE_RADIUS = 0.18  # of the side
CELL = 0.2  # of the side
GAP = 0.06


def _cells() -> list[tuple[float, float, float, tuple[int, int, int]]]:
    """Squares (x, y, side, colour) in unit coordinates."""
    start = (1 - 3 * CELL - 2 * GAP) / 2
    out = []
    for row in range(3):
        for col in range(3):
            x = start + col * (CELL + GAP)
            y = start + row * (CELL + GAP)
            out.append((x, y, CELL, LIT if (col, row) in LIT_CELLS else DIM))
    return out


def _hex(colour: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def svg() -> str:
    """The icon as a 256x256 SVG."""
    s = 256
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{s}" height="{s}" viewBox="0 0 {s} {s}">',
        f'  <rect width="{s}" height="{s}" rx="{TILE_RADIUS * s:g}" fill="{_hex(BG)}"/>',
    ]
    for x, y, side, colour in _cells():
        parts.append(
            f'  <rect x="{x * s:.1f}" y="{y * s:.1f}" width="{side * s:.1f}" height="{side * s:.1f}" '
            f'rx="{0.03 * s:.1f}" fill="{_hex(colour)}"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _inside_rounded(px: float, py: float, x: float, y: float, side: float, r: float) -> bool:
    if not (x <= px <= x + side and y <= py <= y + side):
        return False
    cx = min(max(px, x + r), x + side - r)
    cy = min(max(py, y + r), y + side - r)
    return (px - cx) ** 2 + (py - cy) ** 2 <= r * r


def rgba(size: int, samples: int = 4) -> bytes:
    """The icon rasterised to size x size RGBA, supersampled for smooth edges."""
    cells = _cells()
    rows = []
    for j in range(size):
        row = bytearray()
        for i in range(size):
            acc = [0.0, 0.0, 0.0, 0.0]
            for sj in range(samples):
                for si in range(samples):
                    px = (i + (si + 0.5) / samples) / size
                    py = (j + (sj + 0.5) / samples) / size
                    if not _inside_rounded(px, py, 0, 0, 1, TILE_RADIUS):
                        continue
                    colour = BG
                    for x, y, side, c in cells:
                        if _inside_rounded(px, py, x, y, side, 0.03):
                            colour = c
                            break
                    acc[0] += colour[0]
                    acc[1] += colour[1]
                    acc[2] += colour[2]
                    acc[3] += 255
            n = samples * samples
            alpha = acc[3] / n
            scale = 255 / acc[3] if acc[3] else 0
            row += bytes([round(acc[0] * scale), round(acc[1] * scale), round(acc[2] * scale), round(alpha)])
        rows.append(bytes(row))
    return b"".join(rows)


def png(size: int) -> bytes:
    """A PNG file of the icon at one size."""
    data = rgba(size)
    raw = b"".join(b"\x00" + data[r * size * 4 : (r + 1) * size * 4] for r in range(size))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _dib(size: int) -> bytes:
    """A 32-bit BMP entry for an ICO file (bottom-up BGRA plus an all-zero AND mask)."""
    data = rgba(size)
    header = struct.pack("<IiiHHIIiiII", 40, size, size * 2, 1, 32, 0, 0, 0, 0, 0, 0)
    pixels = bytearray()
    for r in reversed(range(size)):
        line = data[r * size * 4 : (r + 1) * size * 4]
        for k in range(0, len(line), 4):
            red, green, blue, alpha = line[k : k + 4]
            pixels += bytes([blue, green, red, alpha])
    mask_row = ((size + 31) // 32) * 4
    return header + bytes(pixels) + bytes(mask_row * size)


def ico(sizes: tuple[int, ...] = (16, 32, 48, 256)) -> bytes:
    """A Windows .ico: BMP entries for small sizes (every loader reads them), PNG for 256."""
    images = [png(s) if s >= 256 else _dib(s) for s in sizes]
    out = struct.pack("<HHH", 0, 1, len(sizes))
    offset = 6 + 16 * len(sizes)
    for s, img in zip(sizes, images):
        out += struct.pack("<BBBBHHII", s % 256, s % 256, 0, 0, 1, 32, len(img), offset)
        offset += len(img)
    return out + b"".join(images)


def main() -> None:
    """Write resources/bitsmith.svg, bitsmith.png (256 px) and bitsmith.ico."""
    (OUT / "bitsmith.svg").write_text(svg())
    (OUT / "bitsmith.png").write_bytes(png(256))
    (OUT / "bitsmith.ico").write_bytes(ico())


if __name__ == "__main__":
    main()
