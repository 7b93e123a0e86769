"""ImageArray encoders: Alpaca ImageBytes (binary) and JSON, straight from the numpy frame.

ASCOM image arrays are indexed ``[x][y]`` (width outermost), while numpy frames from the core are
``(rows, columns)``. The transpose to width-outermost is done once per frame (cache-blocked, in a
worker thread) into a :class:`PreparedImage` that every client then shares: ImageBytes sends its
buffer as is after a 44-byte header, and JSON is produced from it by orjson without Python lists.

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

import os
import struct
import sys
import threading
from dataclasses import dataclass

import numpy as np
import orjson

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

# Tile edge for the blocked transpose: 512x512 tiles keep both the source rows and the destination
# columns of one tile in cache; measured ~8x faster than numpy's plain strided copy on 61 MP frames.
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
    if rows * cols <= _SMALL:
        out[...] = data.swapaxes(0, 1)
        return out
    for y0 in range(0, rows, _TILE):
        band = data[y0 : y0 + _TILE]
        for x0 in range(0, cols, _TILE):
            out[x0 : x0 + _TILE, y0 : y0 + _TILE] = band[:, x0 : x0 + _TILE].swapaxes(0, 1)
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

    @property
    def payload(self) -> memoryview:
        """The pixel bytes (no copy)."""
        return memoryview(self.array.reshape(-1)).cast("B")

    @property
    def nbytes(self) -> int:
        """Size of the pixel payload in bytes."""
        return int(self.array.nbytes)


def _parallel_transpose(data: np.ndarray, out: np.ndarray, threads: int) -> None:
    """Blocked transpose split into row bands, one per thread (numpy copies release the GIL)."""
    rows = data.shape[0]
    step = -(-rows // threads)
    step = -(-step // _TILE) * _TILE  # band edges on tile boundaries
    bands = [(y0, min(rows, y0 + step)) for y0 in range(0, rows, step)]
    workers = [
        threading.Thread(target=transpose_to_width_major, args=(data[y0:y1], out[:, y0:y1]), daemon=True)
        for y0, y1 in bands[1:]
    ]
    for w in workers:
        w.start()
    y0, y1 = bands[0]
    transpose_to_width_major(data[y0:y1], out[:, y0:y1])
    for w in workers:
        w.join()


# Frames above this many pixels are transposed by several threads.
_PARALLEL_MIN = 4_000_000
TRANSPOSE_THREADS = max(1, min(4, os.cpu_count() or 1))


def prepare_image(data: np.ndarray, seq: int, *, bgr: bool = False, out: np.ndarray | None = None) -> PreparedImage:
    """Turn a core frame (rows, cols[, 3]) into a :class:`PreparedImage` (runs in a worker thread).

    ``bgr``: the third axis is ZWO's B,G,R order; ASCOM colour planes are R,G,B, so it is reversed.
    16-bit values are sent as the SDK delivers them (left-aligned, 0..65535); 8-bit as bytes.
    ``out``: a recycled array to write into when its shape and dtype fit (a fresh 100+ MB array
    costs more in page faults than the transpose itself).
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
    if data.shape[0] * data.shape[1] >= _PARALLEL_MIN and TRANSPOSE_THREADS > 1:
        _parallel_transpose(data, out, TRANSPOSE_THREADS)
        array = out
    else:
        array = transpose_to_width_major(data, out)
    rank = 3 if array.ndim == 3 else 2
    planes = int(array.shape[2]) if rank == 3 else 0
    return PreparedImage(
        seq=seq,
        array=array,
        rank=rank,
        width=int(array.shape[0]),
        height=int(array.shape[1]),
        planes=planes,
        transmission_type=transmission,
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
    return orjson.dumps(image.array, option=orjson.OPT_SERIALIZE_NUMPY)


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
