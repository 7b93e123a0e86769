"""ImageArray encoders: Alpaca ImageBytes (binary) and JSON, straight from the numpy frame.

ASCOM image arrays are indexed ``[x][y]`` (width outermost), while numpy frames from the core are
``(rows, columns)``. The transpose to width-outermost is done once per frame (cache-blocked, by
background threads, band by band in payload order) into a :class:`PreparedImage` that every client
then shares: ImageBytes sends its buffer as is after a 44-byte header - each band as soon as it is
final, so the first download overlaps the transpose - and JSON is produced from it by orjson in
parts, without Python lists. Measurements: docs/performance.md.

ImageBytes metadata version 1 (little-endian int32 fields; ASCOM "Alpaca ImageBytes" document and
alpyca's decoder):

=====  ========================  =============================================
bytes  field                     value here
=====  ========================  =============================================
0-3    MetadataVersion           1
4-7    ErrorNumber               0, or the ASCOM error number
8-11   ClientTransactionID       uint32, echoed
12-15  ServerTransactionID       uint32
16-19  DataStart                 44 (offset of the pixel data)
20-23  ImageElementType          2 (Int32: the type the JSON/COM array has)
24-27  TransmissionElementType   8 (UInt16) for 16-bit data, 6 (Byte) for 8-bit
28-31  Rank                      2, or 3 for colour (RGB) frames
32-35  Dimension1                width (NumX)
36-39  Dimension2                height (NumY)
40-43  Dimension3                0 for rank 2, 3 for rank 3
=====  ========================  =============================================
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import orjson

try:  # the compiled transpose (setup.py); numpy's tiled copy when it was not built
    from alpaca_server import _transpose as _fast
except ImportError:  # pragma: no cover - exercised on installs without a C compiler
    _fast = None  # type: ignore[assignment]  # the module, or None when it was not built

IMAGEBYTES_CONTENT_TYPE = "application/imagebytes"
METADATA_VERSION = 1
HEADER_SIZE = 44
_HEADER = struct.Struct("<iiIIiiiiiii")
assert _HEADER.size == HEADER_SIZE

# ImageArrayElementTypes (ASCOM): the codes alpyca and the ASCOM library decode.
ELEMENT_UNKNOWN = 0
ELEMENT_INT16 = 1
ELEMENT_INT32 = 2
ELEMENT_DOUBLE = 3
ELEMENT_BYTE = 6
ELEMENT_UINT16 = 8

# Tile edge for numpy's blocked transpose (the fallback): 512x512 tiles keep both the source rows and
# the destination columns of one tile in cache; measured ~8x faster than numpy's plain strided copy on
# 61 MP frames, and 2.5x slower than the compiled kernel (_transpose.c).
_TILE = 512
# Below this many pixels the plain copy is as fast and simpler.
_SMALL = 1 << 16


def transpose_to_width_major(data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A C-contiguous copy of ``data`` with the first two axes swapped: (rows, cols, ...) -> (cols, rows, ...).

    ``out``: where to write it (shape (cols, rows, ...), same dtype); a new array when None.
    """
    rows, cols = data.shape[:2]
    if out is None:
        out = np.empty((cols, rows) + data.shape[2:], dtype=data.dtype)
    if _swap_columns(data, out, 0, cols):
        return out
    if rows * cols <= _SMALL:
        out[...] = data.swapaxes(0, 1)
        return out
    for x0 in range(0, cols, _TILE):
        numpy_band(data, out, x0, min(x0 + _TILE, cols))
    return out


@dataclass(frozen=True)
class PreparedImage:
    """One frame in ASCOM order, ready to send: shared by every client that downloads it.

    ``array`` is C-contiguous with shape (width, height) or (width, height, 3), dtype uint8 or
    little-endian uint16; its buffer is exactly the ImageBytes payload.
    """

    seq: int
    array: np.ndarray
    rank: int
    width: int
    height: int
    planes: int
    transmission_type: int
    # Progress of the transpose (see start_prepare): band k is ``array[k * band_rows:(k + 1) * band_rows]``
    # and is final once ``bands[k]`` is done. No bands: the whole array is final.
    bands: tuple[concurrent.futures.Future, ...] = ()
    band_rows: int = 0

    @property
    def payload(self) -> memoryview:
        """The pixel bytes (no copy). Only final once :attr:`complete` (or after :meth:`wait`)."""
        return self.array.reshape(-1).data.cast("B")

    @property
    def complete(self) -> bool:
        """Whether every band has been transposed."""
        return all(f.done() for f in self.bands)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the whole array is final (re-raises a failure of the transpose)."""
        for fut in self.bands:
            fut.result(timeout)

    def parts(self) -> list[tuple[concurrent.futures.Future | None, memoryview]]:
        """The payload in band order as (future to wait for or None, bytes of the band) - no copies.

        A sender writes band k as soon as its future is done, so a download starts while the rest of
        the frame is still being transposed.
        """
        if not self.bands:
            return [(None, self.payload)]
        rows = self.band_rows
        return [(fut, self.array[k * rows:(k + 1) * rows].reshape(-1).data.cast("B"))
                for k, fut in enumerate(self.bands)]

    @property
    def nbytes(self) -> int:
        """Size of the pixel payload in bytes."""
        return int(self.array.nbytes)


# Frames above this many pixels are transposed progressively, in bands, by background threads.
_PARALLEL_MIN = 4_000_000
TRANSPOSE_THREADS = max(1, min(4, os.cpu_count() or 1))
# Frame columns per band (= rows of the prepared array). A band of a full ASI6200 frame is 512 x 6388
# pixels (6.5 MB, about 2 ms of work), transposed in 512 x 512 tiles: as fast as the row-band order
# (measured 38 ms vs 47 ms on one core for 61 MP), and the output is produced in payload order.
BAND = 512


def compiled_kernel() -> str | None:
    """Which compiled transpose kernel is in use ("sse2", "neon", "scalar"), or None for numpy's."""
    return None if _fast is None else str(_fast.KERNEL)


def _swap_columns(data: np.ndarray, out: np.ndarray, x0: int, x1: int) -> bool:
    """Columns [x0, x1) of a 2-D ``data`` into rows [x0, x1) of ``out`` with the compiled kernel.

    False (nothing written) when that kernel cannot do it: not built, colour, another item size, or
    rows that are not contiguous (a BGR view); the caller then uses numpy. Cropped views are fine.
    """
    if (_fast is None or data.ndim != 2 or data.dtype.itemsize not in (1, 2) or out.dtype != data.dtype
            or not out.flags.c_contiguous or (data.shape[1] > 1 and data.strides[1] != data.dtype.itemsize)
            or data.strides[0] < data.shape[1] * data.dtype.itemsize):
        return False
    _fast.swap_axes(data, out, x0, x1)
    return True


def numpy_band(data: np.ndarray, out: np.ndarray, x0: int, x1: int) -> None:
    """numpy's way (the fallback): columns [x0, x1) of ``data`` into rows [x0, x1) of ``out``, in
    _TILE-row tiles so both sides of each tile stay in cache."""
    src = data[:, x0:x1]
    dst = out[x0:x1]
    for y0 in range(0, data.shape[0], _TILE):
        dst[:, y0:y0 + _TILE] = src[y0:y0 + _TILE].swapaxes(0, 1)


def _transpose_bands(data: np.ndarray, out: np.ndarray, futures: tuple[concurrent.futures.Future, ...],
                     first: int, step: int) -> None:
    """Transpose bands ``first, first + step, ...`` of ``data`` into ``out``; finish each band's future."""
    for k in range(first, len(futures), step):
        x0 = k * BAND
        try:
            x1 = min(x0 + BAND, data.shape[1])
            if not _swap_columns(data, out, x0, x1):
                numpy_band(data, out, x0, x1)
        except BaseException as exc:  # noqa: BLE001 - delivered to whoever waits for this band
            futures[k].set_exception(exc)
        else:
            futures[k].set_result(None)


def prepare_image(data: np.ndarray, seq: int, *, bgr: bool = False, out: np.ndarray | None = None) -> PreparedImage:
    """Turn a core frame (rows, cols[, 3]) into a complete :class:`PreparedImage` (blocking).

    ``bgr``: the third axis is ZWO's B,G,R order; ASCOM colour planes are R,G,B, so it is reversed.
    16-bit values are sent as the SDK delivers them (left-aligned, 0..65535); 8-bit as bytes.
    ``out``: a recycled array to write into when its shape and dtype fit (a fresh 100+ MB array
    costs more in page faults than the transpose itself).
    """
    image = start_prepare(data, seq, bgr=bgr, out=out)
    image.wait()
    return image


def start_prepare(data: np.ndarray, seq: int, *, bgr: bool = False, out: np.ndarray | None = None,
                  threads: int | None = None) -> PreparedImage:
    """Like :func:`prepare_image`, but large frames are returned at once while ``threads`` background
    threads (default TRANSPOSE_THREADS) transpose them band by band, in payload order (bands
    interleaved between the threads; the compiled kernel and numpy both release the GIL while copying).
    ``data`` must not change until :attr:`PreparedImage.complete`; small frames are transposed before returning.
    """
    if data.ndim == 3 and bgr:
        data = data[:, :, ::-1]
    if data.dtype == np.uint16 or data.dtype == np.int16 or data.dtype.itemsize == 2:
        if data.dtype != np.uint16:
            data = data.astype(np.uint16)
        transmission = ELEMENT_UINT16
    elif data.dtype == np.uint8:
        transmission = ELEMENT_BYTE
    else:
        raise TypeError(f"unsupported frame dtype {data.dtype}")
    wire = data.dtype.newbyteorder("<") if data.dtype.itemsize > 1 and sys.byteorder != "little" else data.dtype
    shape = (data.shape[1], data.shape[0]) + data.shape[2:]
    if out is None or out.shape != shape or out.dtype != wire or not out.flags.c_contiguous:
        out = np.empty(shape, dtype=wire)
    rank = 3 if out.ndim == 3 else 2
    planes = int(out.shape[2]) if rank == 3 else 0
    bands: tuple[concurrent.futures.Future, ...] = ()
    if data.shape[0] * data.shape[1] >= _PARALLEL_MIN:
        n = -(-shape[0] // BAND)
        bands = tuple(concurrent.futures.Future() for _ in range(n))
        for fut in bands:
            fut.set_running_or_notify_cancel()  # running futures cannot be cancelled by a waiter
        workers = max(1, min(threads or TRANSPOSE_THREADS, n))
        for i in range(workers):
            try:
                threading.Thread(target=_transpose_bands, args=(data, out, bands, i, workers),
                                 name=f"transpose-{seq}-{i}", daemon=True).start()
            except RuntimeError:  # no thread to be had: do this share here, or its bands never finish
                _transpose_bands(data, out, bands, i, workers)
    else:
        transpose_to_width_major(data, out)
    return PreparedImage(
        seq=seq,
        array=out,
        rank=rank,
        width=int(out.shape[0]),
        height=int(out.shape[1]),
        planes=planes,
        transmission_type=transmission,
        bands=bands,
        band_rows=BAND if bands else 0,
    )


def imagebytes_header(image: PreparedImage, client_transaction_id: int, server_transaction_id: int) -> bytes:
    """The 44-byte metadata header of a successful ImageBytes reply."""
    return _HEADER.pack(
        METADATA_VERSION,
        0,
        client_transaction_id,
        server_transaction_id,
        HEADER_SIZE,
        ELEMENT_INT32,
        image.transmission_type,
        image.rank,
        image.width,
        image.height,
        image.planes,
    )


def imagebytes_error(number: int, message: str, client_transaction_id: int, server_transaction_id: int) -> bytes:
    """A whole ImageBytes error reply: header with ErrorNumber set, then the UTF-8 message."""
    header = _HEADER.pack(
        METADATA_VERSION,
        number,
        client_transaction_id,
        server_transaction_id,
        HEADER_SIZE,
        ELEMENT_UNKNOWN,
        ELEMENT_UNKNOWN,
        0,
        0,
        0,
        0,
    )
    return header + message.encode("utf-8")


def json_prefix(image: PreparedImage) -> bytes:
    """The start of a JSON ImageArray envelope; ``Type`` and ``Rank`` come first, as clients' regexes expect."""
    return b'{"Type":2,"Rank":%d,"Value":' % image.rank


def json_value(image: PreparedImage) -> bytes:
    """The ``Value`` text ``[[...],[...]]`` (width outermost), encoded by orjson from the numpy buffer."""
    image.wait()
    return orjson.dumps(image.array, option=orjson.OPT_SERIALIZE_NUMPY)


# Values per orjson call when the JSON is made in parts: 1-2 ms of encoding each. orjson holds the
# GIL for a whole call, so one call for a 61 MP frame (350 ms) stalled every poll for that long.
JSON_PART_VALUES = 1 << 18


def json_value_parts(image: PreparedImage) -> list[bytes | memoryview]:
    """The same text as :func:`json_value`, as parts whose concatenation is that text (no joins).

    Each part is one orjson call on a slice of the prepared array (``[[a],[b]]`` minus its outer
    brackets). After each call the GIL is handed over (``time.sleep(0)``): a thread that merely stops
    holding it keeps winning it back, and the event loop would wait the 5 ms switch interval for every
    reacquisition (several per poll). Waits for the transpose first.
    """
    image.wait()
    arr = image.array
    per_row = max(1, arr[0].size) if arr.shape[0] else 1
    step = max(1, JSON_PART_VALUES // per_row)
    if arr.shape[0] <= step:
        return [orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)]
    parts: list[bytes | memoryview] = [b"["]
    for x0 in range(0, arr.shape[0], step):
        text = orjson.dumps(arr[x0:x0 + step], option=orjson.OPT_SERIALIZE_NUMPY)
        if x0:
            parts.append(b",")
        parts.append(memoryview(text)[1:-1])
        time.sleep(0)
    parts.append(b"]")
    return parts


def decode_imagebytes(body: bytes) -> tuple[dict[str, int], np.ndarray | str]:
    """Parse an ImageBytes reply (for tests and tools): (metadata, array in [x][y] order or error text)."""
    fields = _HEADER.unpack_from(body, 0)
    names = (
        "MetadataVersion",
        "ErrorNumber",
        "ClientTransactionID",
        "ServerTransactionID",
        "DataStart",
        "ImageElementType",
        "TransmissionElementType",
        "Rank",
        "Dimension1",
        "Dimension2",
        "Dimension3",
    )
    meta = dict(zip(names, fields))
    start = meta["DataStart"]
    if meta["ErrorNumber"] != 0:
        return meta, body[start:].decode("utf-8", "replace")
    dtype = {ELEMENT_UINT16: "<u2", ELEMENT_BYTE: "u1", ELEMENT_INT32: "<i4", ELEMENT_INT16: "<i2"}[
        meta["TransmissionElementType"]
    ]
    shape: tuple[int, ...] = (meta["Dimension1"], meta["Dimension2"])
    if meta["Rank"] == 3:
        shape += (meta["Dimension3"],)
    return meta, np.frombuffer(body, dtype=dtype, offset=start).reshape(shape)
