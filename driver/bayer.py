"""The colour-filter phase of an image as the camera delivers it: the sensor's pattern, where the
image starts on the sensor, and the SDK's flip.

The mosaic is fixed to the sensor. A subframe starting on an odd column, or a horizontal flip (the
SDK reverses the columns it reads, so the image's first column is the region's last), puts a
different filter at the image's top-left pixel: RGGB read flipped horizontally is GRBG,
vertically GBRG, both ways BGGR. The phase is expressed as the sensor's own pattern plus x/y
offsets of 0 or 1 (FITS BAYERPAT with XBAYROFF/YBAYROFF, INDI CCD_CFA, ASCOM BayerOffsetX/Y);
`shifted` names the pattern those offsets amount to.
"""

from __future__ import annotations

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def phase(pattern: str, x: int, y: int, width: int, height: int, flip: int) -> tuple[str, int, int]:
    """(pattern, offset_x, offset_y) of an image of `width` x `height` sensor pixels starting at
    sensor column `x`, row `y`, read with the SDK's `flip` (bit 0 horizontal, bit 1 vertical)."""
    first_x = x + width - 1 if flip & 1 else x
    first_y = y + height - 1 if flip & 2 else y
    return pattern, first_x % 2, first_y % 2


def shifted(pattern: str, offset_x: int, offset_y: int) -> str:
    """The pattern seen from the pixel `offset_x`, `offset_y` into a `pattern` mosaic ("RGGB", 1, 0 -> "GRBG")."""
    cells = (pattern[0:2], pattern[2:4])
    ox, oy = offset_x % 2, offset_y % 2
    return "".join(cells[(oy + r) % 2][(ox + c) % 2] for r in (0, 1) for c in (0, 1))
