"""SER video files (the planetary/lucky-imaging format of FireCapture, SharpCap, libindi, PIPP, AutoStakkert).

One job: write a SER file frame by frame. Layout (SER v3, as libindi's ``SER_Recorder`` writes it):

* a 178-byte little-endian header: ``FileID`` (14 bytes), ``LuID``, ``ColorID``, ``LittleEndian``,
  ``ImageWidth``, ``ImageHeight``, ``PixelDepthPerPlane``, ``FrameCount`` (uint32 each), ``Observer``,
  ``Instrument``, ``Telescope`` (40 bytes each), ``DateTime`` (local) and ``DateTime_UTC`` (int64
  .NET ticks: 100 ns units since 0001-01-01);
* the frames, row-major, top row first; 1 byte per sample up to 8 bits, else 2 bytes; colour
  (RGB/BGR) frames interleave their 3 planes per pixel;
* a trailer of one int64 UTC tick count per frame.

The ``LittleEndian`` field: the SER specification names 1 for little-endian data, but the capture
programs and the readers (PIPP, AutoStakkert, Siril) treat 0 as little-endian; libindi writes 0 with
little-endian data for that reason (serrecorder.cpp, "LITTLE_ENDIAN appears to be ignored by them
leading to garbled data"). So does this writer: 16-bit samples are little-endian, the flag is 0.

The header is written with frame count 0 when the file is opened and rewritten on `close`, so a
file whose writer died still parses (as zero frames); a failed frame write is cut off again so the
file never ends in half a frame.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from typing import BinaryIO

import numpy as np

HEADER = struct.Struct("<14s7I40s40s40sqq")
HEADER_SIZE = HEADER.size  # 178
FILE_ID = b"LUCAM-RECORDER"
LITTLE_ENDIAN_FLAG = 0  # see the module docstring

MONO = 0
BAYER_IDS = {"RGGB": 8, "GRBG": 9, "GBRG": 10, "BGGR": 11}
RGB = 100
BGR = 101

_EPOCH = _dt.datetime(1, 1, 1, tzinfo=_dt.UTC)


def ticks(t: _dt.datetime) -> int:
    """`t` as .NET ticks (100 ns since 0001-01-01); naive datetimes are taken as they read (wall time)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def ticks_from_unix_ns(ns: int) -> int:
    """A `time.time_ns()` value as UTC .NET ticks."""
    return 621_355_968_000_000_000 + ns // 100  # ticks of 1970-01-01


class SerError(ValueError):
    """A frame does not fit the file (shape or sample type)."""


class SerWriter:
    """Writes one SER file: `append` frames, then `close` (frame count and timestamp trailer fixed up).

    Not thread-safe: one writer thread owns it. `fh` must be a seekable, *unbuffered* binary file
    (``open(..., buffering=0)`` / ``os.fdopen(fd, "wb", buffering=0)``) so a failed write leaves no
    buffered bytes behind to fail again; the writer closes it.
    """

    def __init__(self, fh: BinaryIO, width: int, height: int, depth: int, color_id: int = MONO, *,
                 observer: str = "", instrument: str = "", telescope: str = "",
                 start: _dt.datetime | None = None) -> None:
        if not (1 <= depth <= 16):
            raise SerError(f"pixel depth must be 1..16 bits, got {depth}")
        if width < 1 or height < 1:
            raise SerError(f"frame size must be at least 1x1, got {width}x{height}")
        self.fh = fh
        self.width, self.height, self.depth, self.color_id = width, height, depth, color_id
        self.planes = 3 if color_id in (RGB, BGR) else 1
        self.dtype = np.dtype("<u2") if depth > 8 else np.dtype("u1")
        self.frame_bytes = width * height * self.planes * self.dtype.itemsize
        self.frame_count = 0
        self.closed = False
        self._stamps: list[int] = []
        now = start or _dt.datetime.now(_dt.UTC)
        self._utc = ticks(now.astimezone(_dt.UTC))
        self._local = ticks(now.astimezone().replace(tzinfo=None))  # local wall time, as the spec wants
        self._texts = tuple(s.encode("utf-8", "replace")[:40] for s in (observer, instrument, telescope))
        self._write_header()

    @classmethod
    def create(cls, path: str | os.PathLike[str], width: int, height: int, depth: int, color_id: int = MONO,
               **kw: object) -> SerWriter:
        """Create a new file at `path` (refusing to overwrite one) and write its header."""
        return cls(open(path, "xb", buffering=0), width, height, depth, color_id, **kw)  # type: ignore[arg-type]

    def _header(self) -> bytes:
        obs, ins, tel = self._texts
        return HEADER.pack(FILE_ID, 0, self.color_id, LITTLE_ENDIAN_FLAG, self.width, self.height, self.depth,
                           self.frame_count, obs, ins, tel, self._local, self._utc)

    def _write_header(self) -> None:
        self.fh.seek(0)
        self._write_all(self._header())

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):  # a raw write may be short; each pass writes at least one byte
            n = self.fh.write(view[done:done + (64 << 20)])
            if not n:
                raise OSError("write returned 0 bytes")
            done += n

    def append(self, frame: np.ndarray, utc_ticks: int | None = None) -> None:
        """Write one frame ((h, w) or (h, w, 3) for RGB/BGR files) stamped `utc_ticks` (default: now).

        Raises SerError for a frame that does not fit and OSError when the write fails; after an
        OSError the file holds exactly the frames written before (a partial frame is cut off).
        """
        if self.closed:
            raise SerError("the SER file is closed")
        shape = (self.height, self.width, 3) if self.planes == 3 else (self.height, self.width)
        if frame.shape != shape:
            raise SerError(f"frame shape {frame.shape} does not match the file's {shape}")
        if frame.dtype.itemsize != self.dtype.itemsize or frame.dtype.kind != "u":
            raise SerError(f"frame samples are {frame.dtype}, the file holds {self.depth}-bit samples")
        data = np.ascontiguousarray(frame, dtype=self.dtype)  # no copy when already little-endian contiguous
        pos = HEADER_SIZE + self.frame_count * self.frame_bytes
        try:
            self._write_all(data.data)
        except OSError:
            self._cut(pos)
            raise
        self.frame_count += 1
        if utc_ticks is None:
            utc_ticks = ticks(_dt.datetime.now(_dt.UTC))
        self._stamps.append(int(utc_ticks))

    def _cut(self, pos: int) -> None:
        """Drop whatever follows `pos` (a partial frame or trailer), best effort."""
        try:
            self.fh.seek(pos)
            self.fh.truncate(pos)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Write the timestamp trailer and the final header, then close the file.

        If the trailer cannot be written (disk full) it is left out (it is optional) and the header
        is still fixed up: that rewrite needs no new disk space. Raises OSError only if even that fails.
        """
        if self.closed:
            return
        self.closed = True
        try:
            end = HEADER_SIZE + self.frame_count * self.frame_bytes
            try:
                self.fh.seek(end)
                self._write_all(np.asarray(self._stamps, dtype="<i8").tobytes())
            except OSError:
                self._cut(end)
            self._write_header()
        finally:
            self.fh.close()
