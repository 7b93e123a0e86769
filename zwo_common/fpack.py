"""Tile-compressed FITS (``.fits.fz``, Rice), as fpack writes it and libindi's CCD_COMPRESSION sends it.

Layout (the FITS tiled-image convention, FITS standard 4.0 section 10, and what fpack 4.2 writes):

* a primary HDU without data: SIMPLE, BITPIX (the image's), NAXIS = 0, EXTEND;
* one BINTABLE extension, EXTNAME 'COMPRESSED_IMAGE', ZIMAGE = T: one row per tile, its only column
  COMPRESSED_DATA a variable-length byte array (TFORM1 '1PB(longest)': per row two big-endian
  32-bit integers, the tile's length and its offset in the heap that follows the table);
* tiles are image rows (ZTILE1 = NAXIS1, ZTILE2 = 1, and ZTILE3 = 1 for R, G, B planes), each
  Rice coded (ZCMPTYPE 'RICE_1', ZNAME1/ZVAL1 BLOCKSIZE = 32, ZNAME2/ZVAL2 BYTEPIX = 1 or 2) from
  the values the uncompressed file stores (16-bit pixels as int16 with BZERO = 32768);
* the image's own keywords follow as they were, its structural ones renamed ZSIMPLE, ZBITPIX,
  ZNAXIS, ZNAXISn, ZEXTEND; BZERO/BSCALE stay and apply after decompression.

Rice is lossless: funpack, astropy and every cfitsio reader give back the exact pixels and header
cards (tests/indi/test_indi_compression.py). The coder is the compiled `zwo_common._rice` (C,
GIL released, bands of rows on up to four threads); without it the numpy coder here writes the same
bytes, several times slower. Sizes and times: docs/performance.md, "Compressed images".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .fits import BLOCK, CARD, FitsImage, card, image_planes, primary_header

try:
    from . import _rice  # type: ignore[attr-defined]

    CODER = "c"
except ImportError:  # pragma: no cover - depends on the build
    _rice = None
    CODER = "numpy"

BLOCKSIZE = 32
FORMAT = ".fits.fz"
_RENAMED = {"SIMPLE": "ZSIMPLE", "BITPIX": "ZBITPIX", "NAXIS": "ZNAXIS", "NAXIS1": "ZNAXIS1",
            "NAXIS2": "ZNAXIS2", "NAXIS3": "ZNAXIS3", "EXTEND": "ZEXTEND"}
_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_MIN_BAND_ROWS = 256  # below this a second thread costs more than it saves


def _padded(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def worst_tile_bytes(cols: int, bytepix: int, blocksize: int = BLOCKSIZE) -> int:
    """An upper bound of one coded row: first pixel, a code per block, every difference raw."""
    blocks = (cols + blocksize - 1) // blocksize
    return bytepix + (blocks * 4 + 7) // 8 + cols * bytepix + 8


# ------------------------------------------------------------------------------------ numpy coder
def rice_rows_numpy(plane: np.ndarray, first_xor: int = 0, blocksize: int = BLOCKSIZE) -> list[bytes]:
    """Rice-code each row of a 2-D uint8/uint16 array as one tile (the same bytes as the C coder)."""
    bytepix = plane.dtype.itemsize
    if plane.ndim != 2 or bytepix not in (1, 2):
        raise ValueError("need a 2-D array of 8- or 16-bit pixels")
    bbits = 8 * bytepix
    fsbits, fsmax = (3, 6) if bytepix == 1 else (4, 14)
    modulus = 1 << bbits
    rows, cols = plane.shape
    out: list[bytes] = []
    step = max(1, (1 << 18) // max(cols, 1))  # rows per vectorised chunk: bounded memory
    starts = np.arange(0, cols, blocksize)
    counts = np.minimum(blocksize, cols - starts)
    block_of = np.repeat(np.arange(len(starts)), counts)
    for r0 in range(0, rows, step):
        v = plane[r0:r0 + step].astype(np.int64)
        n = v.shape[0]
        d = np.zeros_like(v)
        d[:, 1:] = v[:, 1:] - v[:, :-1]
        d %= modulus
        d[d >= modulus // 2] -= modulus  # the difference as a signed bbits-bit number
        m = np.where(d < 0, -2 * d - 1, 2 * d)
        sums = np.add.reduceat(m, starts, axis=1)
        half = counts // 2 + 1
        mean = np.where(sums >= half, (sums - half) // counts, 0) >> 1
        fs = np.zeros_like(mean)
        probe = mean.copy()
        while probe.any():
            fs += probe > 0
            probe >>= 1
        raw = fs >= fsmax
        zero = (fs == 0) & (sums == 0)
        pfs = fs[:, block_of]  # per pixel: its block's split
        praw = raw[:, block_of]
        pzero = zero[:, block_of]
        top = np.where(praw | pzero, 0, m >> np.minimum(pfs, 63))
        # Every field is (value, width) at a bit position: block codes, then per pixel the unary
        # zeros (implicit) followed by 1 and the low fs bits, or the raw difference.
        pix_width = np.where(praw, bbits, np.where(pzero, 0, pfs + 1))
        pix_value = np.where(praw, m, (np.int64(1) << pfs) | (m & ((np.int64(1) << pfs) - 1)))
        pix_value = np.where(pzero, 0, pix_value)
        code = np.where(raw, fsmax + 1, np.where(zero, 0, fs + 1))
        # bits each block takes: its code plus its pixels
        pix_bits = top + pix_width
        block_bits = fsbits + np.add.reduceat(pix_bits, starts, axis=1)
        row_bits = bbits + block_bits.sum(axis=1)
        row_bytes = (row_bits + 7) // 8
        row_base = np.concatenate(([0], np.cumsum(row_bytes)[:-1])) * 8
        block_start = row_base[:, None] + bbits + np.concatenate(
            (np.zeros((n, 1), np.int64), np.cumsum(block_bits, axis=1)[:, :-1]), axis=1)
        # a pixel's field starts after its block's code, the block's pixels before it, its zeros
        before = np.cumsum(pix_bits, axis=1) - pix_bits
        before -= before[:, starts][:, block_of]
        pix_pos = block_start[:, block_of] + fsbits + before + top
        first = (v[:, 0].astype(np.int64) ^ first_xor) % modulus
        values = np.concatenate([first, code.ravel(), pix_value.ravel()])
        widths = np.concatenate([np.full(n, bbits), np.full(code.size, fsbits), pix_width.ravel()])
        positions = np.concatenate([row_base, block_start.ravel(), pix_pos.ravel()])
        total_bits = int(row_base[-1] + row_bytes[-1] * 8)
        bits = np.zeros(total_bits, dtype=np.uint8)
        for k in range(int(widths.max(initial=0))):
            sel = widths > k
            bit = (values[sel] >> (widths[sel] - 1 - k)) & 1
            bits[positions[sel][bit.astype(bool)] + k] = 1
        packed = np.packbits(bits).tobytes()
        offsets = np.concatenate(([0], np.cumsum(row_bytes)))
        out.extend(packed[offsets[i]:offsets[i + 1]] for i in range(n))
    return out


# ------------------------------------------------------------------------------------ the file
def _code_plane(plane: np.ndarray, heap: np.ndarray, offset: int, sizes: np.ndarray, first_xor: int,
                coder: str) -> int:
    """Code every row of `plane` into heap[offset:]; sizes gets each tile's length. Returns bytes."""
    if coder == "numpy" or _rice is None:
        pos = offset
        for i, tile in enumerate(rice_rows_numpy(plane, first_xor)):
            heap[pos:pos + len(tile)] = np.frombuffer(tile, dtype=np.uint8)
            sizes[i] = len(tile)
            pos += len(tile)
        return pos - offset
    return int(_rice.rice_rows(plane, heap, offset, sizes, BLOCKSIZE, first_xor))


def _bands(rows: int, threads: int | None = None) -> list[tuple[int, int]]:
    n = max(1, min(threads or _THREADS, rows // _MIN_BAND_ROWS))
    edges = [rows * i // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n) if edges[i + 1] > edges[i]]


def build_fits_fz(data: np.ndarray, cards: Iterable[tuple[str, object, str]] = (), *,
                  coder: str | None = None, threads: int | None = None) -> FitsImage:
    """`data` and `cards` (as for `zwo_common.fits.build_fits`) as a Rice tile-compressed FITS file.

    The result's `buffer` holds the whole file (primary HDU + compressed-image extension);
    `header_len` is the length of both headers, `shape`/`bitpix` describe the image. `coder`
    forces "c" or "numpy" (tests and the bench compare them); by default the C coder when built.
    `threads` caps the bands coded in parallel (default: up to four, the machine's cores).
    """
    image_cards, naxes, bitpix = primary_header(data, cards)
    planes = image_planes(data)
    rows, cols = int(data.shape[0]), int(data.shape[1])
    bytepix = bitpix // 8
    ntiles = rows * len(planes)
    first_xor = 0x8000 if bitpix == 16 else 0
    use = coder or CODER

    primary = [card("SIMPLE", True, "file does conform to FITS standard"),
               card("BITPIX", bitpix, "number of bits per data pixel"),
               card("NAXIS", 0, "number of data axes"),
               card("EXTEND", True, "FITS dataset may contain extensions"),
               b"END".ljust(CARD)]
    primary_len = _padded(len(primary) * CARD)
    tail: list[bytes] = []
    for raw in image_cards:
        key = raw[:8].decode("ascii").rstrip()
        if key == "END":
            continue
        if key in _RENAMED:  # the image's structural keywords, kept under the convention's names
            raw = _RENAMED[key].ljust(8).encode("ascii") + raw[8:]
        tail.append(raw)
    tiles = [card(f"ZTILE{i}", n if i == 1 else 1, "size of tiles to be compressed")
             for i, n in enumerate(naxes, start=1)]

    def ext_header(pcount: int, longest: int) -> list[bytes]:
        return [card("XTENSION", "BINTABLE", "binary table extension"),
                card("BITPIX", 8, "8-bit bytes"),
                card("NAXIS", 2, "2-dimensional binary table"),
                card("NAXIS1", 8, "width of table in bytes"),
                card("NAXIS2", ntiles, "number of rows in table"),
                card("PCOUNT", pcount, "size of special data area"),
                card("GCOUNT", 1, "one data group (required keyword)"),
                card("TFIELDS", 1, "number of fields in each row"),
                card("TTYPE1", "COMPRESSED_DATA", "label for field   1"),
                card("TFORM1", f"1PB({longest})", "data format of field: variable length array"),
                card("ZIMAGE", True, "extension contains compressed image"),
                *tiles,
                card("ZCMPTYPE", "RICE_1", "compression algorithm"),
                card("ZNAME1", "BLOCKSIZE", "compression block size"),
                card("ZVAL1", BLOCKSIZE, "pixels per block"),
                card("ZNAME2", "BYTEPIX", "bytes per pixel (1, 2, 4, or 8)"),
                card("ZVAL2", bytepix, "bytes per pixel (1, 2, 4, or 8)"),
                card("EXTNAME", "COMPRESSED_IMAGE"),
                *tail,
                b"END".ljust(CARD)]

    # Every card has a fixed width, so the header's length is known before the heap is.
    ext_len = _padded(len(ext_header(0, 0)) * CARD)
    table_len = 8 * ntiles
    heap_at = primary_len + ext_len + table_len
    worst = worst_tile_bytes(cols, bytepix)
    buf = np.empty(heap_at + ntiles * worst + BLOCK, dtype=np.uint8)
    sizes = np.zeros(ntiles, dtype=np.int64)

    # Bands of rows on several threads (the C coder releases the GIL), each into its own region
    # sized for its worst case, then moved together.
    jobs: list[tuple[np.ndarray, int, np.ndarray]] = []
    for p, plane in enumerate(planes):
        for r0, r1 in _bands(rows, threads) if use == "c" else [(0, rows)]:
            first_tile = p * rows + r0
            jobs.append((plane[r0:r1], heap_at + first_tile * worst, sizes[first_tile:first_tile + (r1 - r0)]))
    if len(jobs) > 1 and use == "c":
        global _pool
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fpack")
        written = list(_pool.map(lambda j: _code_plane(j[0], buf, j[1], j[2], first_xor, use), jobs))
    else:
        written = [_code_plane(j[0], buf, j[1], j[2], first_xor, use) for j in jobs]
    pos = heap_at
    for (_, at, _), n in zip(jobs, written):
        if at != pos:
            buf[pos:pos + n] = buf[at:at + n]  # regions only ever move down: no overlap problem
        pos += n
    heap_len = pos - heap_at

    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    table = buf[heap_at - table_len:heap_at].view(">i4").reshape(ntiles, 2)
    table[:, 0] = sizes
    table[:, 1] = offsets
    total = _padded(heap_at + heap_len)
    buf[heap_at + heap_len:total] = 0  # binary table data is padded with zeros
    header = b"".join(primary).ljust(primary_len) + \
        b"".join(ext_header(heap_len, int(sizes.max(initial=0)))).ljust(ext_len)
    buf[:primary_len + ext_len] = np.frombuffer(header, dtype=np.uint8)
    return FitsImage(buffer=buf[:total], header_len=primary_len + ext_len, shape=naxes, bitpix=bitpix,
                     cards=image_cards)


def plain_size(image: FitsImage) -> int:
    """The length of the uncompressed FITS file `image` was made from (what INDI's BLOB ``size``
    attribute carries for a compressed image)."""
    count = 1
    for n in image.shape:
        count *= n
    return _padded(len(image.cards) * CARD) + _padded(count * image.bitpix // 8)
