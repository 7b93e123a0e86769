"""A minimal, fast FITS writer for camera frames (one primary HDU, no extensions).

Why our own: astropy is far too heavy to import in the server and cfitsio is not available from
Python here; a primary HDU for an integer image is a few header cards plus the pixels in big-endian
order, and the only costly step is that byte-order conversion. We do it once per frame with one
numpy ufunc pass straight into the final file buffer (no intermediate copies), and the resulting
buffer is shared by every INDI client and by the local-upload writer.

Layout rules followed (FITS standard 4.0):
* 80-character ASCII cards, keyword in columns 1-8, "= " in columns 9-10, fixed-format values
  (numbers and logicals right-justified to column 30, strings quoted from column 11, at least
  8 characters inside the quotes), comments after " / ".
* SIMPLE, BITPIX, NAXIS, NAXISn come first in that order; END last; the header and the data are
  each padded to a multiple of 2880 bytes (header with spaces, data with zeros).
* uint16 pixels are stored as signed 16-bit with BZERO = 32768 (value - 32768, which for 16 bits is
  value XOR 0x8000), as cfitsio's USHORT_IMG does; uint8 pixels are BITPIX 8 with no scaling.
* RGB frames (rows, cols, 3) become NAXIS = 3 with planes R, G, B, as libindi writes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

BLOCK = 2880
CARD = 80

_KEY_RE = re.compile(r"^[A-Z0-9_-]{1,8}$")

FrameKind = str  # "Light" | "Dark" | "Flat" | "Bias"

#: FRAME / IMAGETYP values as libindi writes them, per INDI frame type.
IMAGETYP = {"Light": "Light Frame", "Dark": "Dark Frame", "Flat": "Flat Frame", "Bias": "Bias Frame"}


class FitsError(ValueError):
    """A header card or an image cannot be represented in FITS (bad keyword, dtype, shape)."""


def valid_keyword(key: str) -> bool:
    """Whether `key` is a legal FITS keyword (upper-case letters, digits, '-' and '_', 1-8 characters)."""
    return bool(_KEY_RE.match(key))


def _clean_text(text: str) -> str:
    """FITS headers are printable ASCII only; anything else is replaced so a client can't inject cards."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))


def _format_value(value: object) -> str:
    """Fixed-format value field: 20 characters right-justified for numbers/logicals, quoted strings."""
    if isinstance(value, bool):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise FitsError(f"FITS cannot store the non-finite number {v!r}")
        text = f"{v:.10G}"
        if "." not in text and "E" not in text:
            text += "."  # a float must look like one, or readers take it for an integer
        return f"{text:>20}"
    text = _clean_text(str(value)).replace("'", "''")
    # Inside the quotes the string is padded to at least 8 characters; it may not run past col 80.
    text = text[:68]
    return f"'{text:<8}'"


def card(key: str, value: object = None, comment: str = "") -> bytes:
    """One 80-byte header card. `value=None` makes a COMMENT/HISTORY-style card (`key` + text)."""
    if not valid_keyword(key):
        raise FitsError(f"{key!r} is not a valid FITS keyword (1-8 of A-Z, 0-9, '-', '_')")
    if value is None:
        text = f"{key:<8}{_clean_text(comment)}"
    else:
        text = f"{key:<8}= {_format_value(value)}"
        if comment:
            text += f" / {_clean_text(comment)}"
    return text[:CARD].ljust(CARD).encode("ascii")


@dataclass
class FitsImage:
    """A complete FITS file in memory.

    `buffer` is a numpy uint8 array holding header + data + padding; use `memoryview()` for
    zero-copy access (sending, base64 encoding in slices, writing to disk).
    """

    buffer: np.ndarray
    header_len: int
    shape: tuple[int, ...]
    bitpix: int
    cards: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.buffer.size)

    def memoryview(self) -> memoryview:
        return self.buffer.data.cast("B")

    def tobytes(self) -> bytes:
        return self.buffer.tobytes()


def _padded(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def primary_header(data: np.ndarray, cards: Iterable[tuple[str, object, str]] = ()
                   ) -> tuple[list[bytes], tuple[int, ...], int]:
    """The primary header of `data` (see `build_fits`) as 80-byte cards ending with END, with the
    axes (NAXIS1, NAXIS2[, NAXIS3]) and BITPIX: one place for the image layout, which the
    tile-compressed writer (`zwo_common.fpack`) shares."""
    if data.ndim == 3:
        if data.shape[2] != 3 or data.dtype != np.uint8:
            raise FitsError(f"colour frames must be (rows, cols, 3) uint8, got {data.shape} {data.dtype}")
        naxes: tuple[int, ...] = (int(data.shape[1]), int(data.shape[0]), 3)
    elif data.ndim == 2:
        naxes = (int(data.shape[1]), int(data.shape[0]))
    else:
        raise FitsError(f"cannot write a {data.ndim}-dimensional image")
    if data.dtype == np.uint16:
        bitpix, bzero = 16, 32768
    elif data.dtype == np.uint8:
        bitpix, bzero = 8, None
    else:
        raise FitsError(f"unsupported pixel type {data.dtype}; expected uint8 or uint16")

    structural = [card("SIMPLE", True, "file conforms to FITS standard"),
                  card("BITPIX", bitpix, "number of bits per data pixel"),
                  card("NAXIS", len(naxes), "number of data axes")]
    for i, n in enumerate(naxes, start=1):
        structural.append(card(f"NAXIS{i}", n, f"length of data axis {i}"))
    structural.append(card("EXTEND", True, "FITS dataset may contain extensions"))
    if bzero is not None:
        structural.append(card("BZERO", bzero, "offset data range to that of unsigned short"))
        structural.append(card("BSCALE", 1, "default scaling factor"))
    reserved = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE", "END"}
    extra: list[bytes] = []
    for key, value, comment in cards:
        if key in reserved:
            raise FitsError(f"{key} is generated by the writer and cannot be set")
        extra.append(card(key, value, comment))
    return structural + extra + [b"END".ljust(CARD)], naxes, bitpix


def image_planes(data: np.ndarray) -> list[np.ndarray]:
    """The 2-D planes of `data` in the order FITS stores them: the frame itself, or R, G, B of an
    SDK colour frame (which is B, G, R interleaved). Views, never copies."""
    if data.ndim == 3:
        return [data[:, :, 2], data[:, :, 1], data[:, :, 0]]
    return [data]


def build_fits(data: np.ndarray, cards: Iterable[tuple[str, object, str]] = ()) -> FitsImage:
    """Encode `data` as a FITS primary HDU with the given extra header cards.

    data: (rows, cols) uint16 or uint8, or (rows, cols, 3) uint8 in BGR order (the ZWO SDK's RGB24
    layout), written as planes R, G, B. The array may be non-contiguous (a crop view); it is never
    modified. Structural keywords (SIMPLE, BITPIX, NAXIS*, BZERO, BSCALE, EXTEND) are generated
    here and must not be passed in `cards`.
    """
    all_cards, naxes, bitpix = primary_header(data, cards)
    rows, cols = int(data.shape[0]), int(data.shape[1])
    itemsize = bitpix // 8
    header = b"".join(all_cards)
    header_len = _padded(len(header))
    data_len = rows * cols * itemsize * (3 if len(naxes) == 3 else 1)
    total = header_len + _padded(data_len)

    # np.empty: no zero-fill of 100+ MB that is about to be overwritten anyway.
    buf = np.empty(total, dtype=np.uint8)
    buf[: len(header)] = np.frombuffer(header, dtype=np.uint8)
    buf[len(header):header_len] = 0x20  # header padding is ASCII spaces
    buf[header_len + data_len:] = 0  # data padding is zeros
    region = buf[header_len:header_len + data_len]
    if bitpix == 16:
        out = region.view(">u2").reshape(rows, cols)
        # One pass: flip the sign bit (value - 32768 for BZERO) while numpy writes big-endian.
        np.bitwise_xor(data, np.uint16(0x8000), out=out)
    elif len(naxes) == 2:
        region.reshape(rows, cols)[...] = data
    else:
        planes = region.reshape(3, rows, cols)
        planes[0] = data[:, :, 2]  # R  (SDK delivers B, G, R)
        planes[1] = data[:, :, 1]  # G
        planes[2] = data[:, :, 0]  # B
    return FitsImage(buffer=buf, header_len=header_len, shape=naxes, bitpix=bitpix, cards=all_cards)


def date_obs(when: datetime | None) -> str:
    """DATE-OBS as libindi writes it: UTC, ISO 8601, milliseconds, no zone suffix."""
    if when is None:
        when = datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="milliseconds")


def camera_cards(*, exptime: float, start: datetime | None, instrume: str, frame_type: FrameKind,
                 xbin: int, ybin: int, pixel_size_um: float | None, ccd_temp: float | None,
                 gain: int | float | None, offset: int | float | None,
                 bayer: tuple[str, int, int] | None = None, subframe: tuple[int, int] | None = None,
                 extra: Sequence[tuple[str, object, str]] = (),
                 observation: Observation | None = None) -> list[tuple[str, object, str]]:
    """The standard INDI camera keywords, in libindi's order, as (key, value, comment) tuples.

    `bayer` is (pattern, x offset, y offset) for raw colour mosaics, omitted for mono and RGB.
    `extra` (e.g. the client's FITS_HEADER keywords) replaces same-named standard cards.
    `observation`: what the telescope, filter wheel, focuser, rotator and sky-quality meter said
    (INDI snooping), as libindi's CCD writes it (`observation_cards`).
    """
    seen = observation_cards(observation, pixel_size_um=pixel_size_um, xbin=xbin,
                             light=frame_type == "Light") if observation is not None else {}
    cards: list[tuple[str, object, str]] = [
        ("ROWORDER", "TOP-DOWN", "Row Order"),
        ("INSTRUME", instrume, "CCD Name"),
        *seen.get("telescope", []),
        ("EXPTIME", float(exptime), "Total Exposure Time (s)"),
    ]
    if frame_type == "Dark":
        cards.append(("DARKTIME", float(exptime), "Total Dark Exposure Time (s)"))
    if ccd_temp is not None:
        cards.append(("CCD-TEMP", round(float(ccd_temp), 3), "CCD Temperature (Celsius)"))
    if pixel_size_um is not None:
        cards += [("PIXSIZE1", float(pixel_size_um), "Pixel Size 1 (microns)"),
                  ("PIXSIZE2", float(pixel_size_um), "Pixel Size 2 (microns)")]
    cards += [("XBINNING", int(xbin), "Binning factor in width"),
              ("YBINNING", int(ybin), "Binning factor in height")]
    if pixel_size_um is not None:
        cards += [("XPIXSZ", float(pixel_size_um) * xbin, "X binned pixel size in microns"),
                  ("YPIXSZ", float(pixel_size_um) * ybin, "Y binned pixel size in microns")]
    cards += [("FRAME", frame_type, "Frame Type"),
              ("IMAGETYP", IMAGETYP.get(frame_type, f"{frame_type} Frame"), "Frame Type")]
    cards += seen.get("filter", [])
    if subframe is not None:
        cards += [("XORGSUBF", int(subframe[0]), "Subframe X position in binned pixels"),
                  ("YORGSUBF", int(subframe[1]), "Subframe Y position in binned pixels")]
    if bayer is not None:
        pattern, xoff, yoff = bayer
        cards += [("XBAYROFF", int(xoff), "X offset of Bayer array"),
                  ("YBAYROFF", int(yoff), "Y offset of Bayer array"),
                  ("BAYERPAT", pattern, "Bayer color pattern")]
    cards += seen.get("optics", [])
    if gain is not None:
        cards.append(("GAIN", gain, "Gain"))
    if offset is not None:
        cards.append(("OFFSET", offset, "Offset"))
    cards.append(("DATE-OBS", date_obs(start), "UTC start date of observation"))
    if extra:
        override = {k for k, _, _ in extra}
        cards = [c for c in cards if c[0] not in override] + list(extra)
    return cards


@dataclass(frozen=True)
class Observation:
    """What the devices around the camera reported when an exposure started (INDI snooping).

    Every field is optional: None means that device said nothing (or none is configured). The
    pointing is already J2000 (`zwo_common.sky` converts a mount's JNow); altitude, azimuth and
    airmass are for the site at the exposure's start. `pier_side` is "EAST" or "WEST".
    """

    telescope: str | None = None
    focal_length_mm: float | None = None
    aperture_mm: float | None = None
    filter_name: str | None = None
    focus_position: int | None = None
    focus_temperature: float | None = None
    rotator_angle: float | None = None
    sky_quality: float | None = None
    ra_hours: float | None = None
    dec_deg: float | None = None
    site_lat: float | None = None
    site_long: float | None = None
    azimuth: float | None = None
    altitude: float | None = None
    airmass: float | None = None
    pier_side: str | None = None


def observation_cards(obs: Observation, *, pixel_size_um: float | None, xbin: int,
                      light: bool) -> dict[str, list[tuple[str, object, str]]]:
    """The one mapping from what the other devices said to header cards, keyed by where
    `camera_cards` puts them ("telescope" after INSTRUME, "filter" after IMAGETYP, "optics" after
    the Bayer cards), with libindi's keywords and comments. Pointing, site and airmass are written
    for light frames only, as libindi does."""
    from .sky import sexagesimal  # noqa: PLC0415 - only when there is something to write

    out: dict[str, list[tuple[str, object, str]]] = {"telescope": [], "filter": [], "optics": []}
    if obs.telescope:
        out["telescope"].append(("TELESCOP", obs.telescope, "Telescope name"))
    if obs.filter_name:
        out["filter"].append(("FILTER", obs.filter_name, "Filter"))
    optics = out["optics"]
    if obs.focal_length_mm is not None:
        optics.append(("FOCALLEN", round(float(obs.focal_length_mm), 3), "Focal Length (mm)"))
    if obs.aperture_mm is not None:
        optics.append(("APTDIA", round(float(obs.aperture_mm), 3), "Telescope diameter (mm)"))
    if obs.sky_quality is not None:
        optics.append(("MPSAS", round(float(obs.sky_quality), 6), "Sky Quality (mag per arcsec^2)"))
    if obs.rotator_angle is not None:
        optics.append(("ROTATANG", round(float(obs.rotator_angle), 3), "Rotator angle in degrees"))
    if obs.focus_position is not None:
        optics.append(("FOCUSPOS", int(obs.focus_position), "Focus position in steps"))
    if obs.focus_temperature is not None:
        optics.append(("FOCUSTEM", round(float(obs.focus_temperature), 3), "Focuser temperature in degrees C"))
    if obs.focal_length_mm and pixel_size_um is not None:
        scale = float(pixel_size_um) / float(obs.focal_length_mm) * 206.3 * xbin
        optics.append(("SCALE", round(scale, 6), "arcsecs per pixel"))
    if light and obs.ra_hours is not None and obs.dec_deg is not None:
        if obs.site_lat is not None and obs.site_long is not None:
            optics += [("SITELAT", round(float(obs.site_lat), 6), "Latitude of the imaging site in degrees"),
                       ("SITELONG", round(float(obs.site_long), 6), "Longitude of the imaging site in degrees")]
        if obs.airmass is not None and obs.azimuth is not None and obs.altitude is not None:
            optics += [("AIRMASS", round(float(obs.airmass), 6), "Airmass"),
                       ("OBJCTAZ", round(float(obs.azimuth), 6), "Azimuth of center of image in Degrees"),
                       ("OBJCTALT", round(float(obs.altitude), 6), "Altitude of center of image in Degrees")]
        optics += [("OBJCTRA", sexagesimal(obs.ra_hours), "Object J2000 RA in Hours"),
                   ("OBJCTDEC", sexagesimal(obs.dec_deg), "Object J2000 DEC in Degrees"),
                   ("RA", round(float(obs.ra_hours) * 15.0, 6), "Object J2000 RA in Degrees"),
                   ("DEC", round(float(obs.dec_deg), 6), "Object J2000 DEC in Degrees")]
        if obs.pier_side == "WEST":
            optics.append(("PIERSIDE", "WEST", "West, looking East"))
        elif obs.pier_side == "EAST":
            optics.append(("PIERSIDE", "EAST", "East, looking West"))
        optics.append(("EQUINOX", 2000, "Equinox"))
    return out


# ---------------------------------------------------------------------------------------------
# A strict reader, used by the tests and the bench to check what we (and libindi) produce.
# ---------------------------------------------------------------------------------------------

def parse_header(blob: bytes | memoryview) -> tuple[dict[str, object], int]:
    """Parse the primary header strictly; returns (keywords, data offset). Raises FitsError."""
    mv = memoryview(blob)
    out: dict[str, object] = {}
    pos = 0
    first = True
    while True:
        if pos + CARD > len(mv):
            raise FitsError("header has no END card")
        raw = bytes(mv[pos:pos + CARD])
        pos += CARD
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FitsError(f"non-ASCII header card at byte {pos - CARD}") from exc
        key = text[:8].rstrip()
        if first and key != "SIMPLE":
            raise FitsError("first card is not SIMPLE")
        first = False
        if key == "END":
            if text[3:].strip():
                raise FitsError("END card has trailing text")
            break
        if text[8:10] != "= ":
            continue  # COMMENT / HISTORY / blank
        val = text[10:]
        if val.lstrip().startswith("'"):
            s = val.lstrip()[1:]
            chars = []
            i = 0
            while i < len(s):
                if s[i] == "'":
                    if i + 1 < len(s) and s[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    break
                chars.append(s[i])
                i += 1
            else:
                raise FitsError(f"unterminated string in card {key}")
            out[key] = "".join(chars).rstrip()
            continue
        v = val.split("/", 1)[0].strip()
        if v in ("T", "F"):
            out[key] = v == "T"
        elif re.fullmatch(r"[+-]?\d+", v):
            out[key] = int(v)
        else:
            try:
                out[key] = float(v.replace("D", "E"))
            except ValueError as exc:
                raise FitsError(f"cannot parse value {v!r} of {key}") from exc
    if pos % BLOCK:
        pos = _padded(pos)
    return out, pos


def read_fits(blob: bytes | memoryview) -> tuple[dict[str, object], np.ndarray]:
    """Header and pixel data (physical values: uint16/uint8, planes first for NAXIS 3)."""
    hdr, off = parse_header(blob)
    naxis = int(hdr["NAXIS"])  # type: ignore[call-overload]
    shape = tuple(int(hdr[f"NAXIS{i}"]) for i in range(naxis, 0, -1))  # type: ignore[call-overload]
    count = int(np.prod(shape))
    bitpix = int(hdr["BITPIX"])  # type: ignore[call-overload]
    if bitpix == 16:
        raw = np.frombuffer(blob, dtype=">i2", count=count, offset=off).reshape(shape)
        bzero = int(hdr.get("BZERO", 0))  # type: ignore[call-overload]
        data = (raw.astype(np.int32) + bzero).astype(np.uint16 if bzero == 32768 else np.int32)
    elif bitpix == 8:
        data = np.frombuffer(blob, dtype=np.uint8, count=count, offset=off).reshape(shape).copy()
    else:
        raise FitsError(f"BITPIX {bitpix} not supported by this reader")
    need = off + _padded(count * abs(bitpix) // 8)
    if len(blob) < need:
        raise FitsError(f"file is truncated: {len(blob)} bytes, need {need}")
    return hdr, data
