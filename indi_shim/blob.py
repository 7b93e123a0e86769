"""Base64 encoding of image BLOBs, once per image, shared by every client that receives it.

An image is encoded once, by a worker thread, into one preallocated buffer holding exactly the
bytes that go on the wire; every client's sender then writes slices of that same buffer (no
per-client copy, no per-client encoding).

Encoding completes before the first byte is sent. Measured on a full ASI6200MM frame (122 MB raw,
165 MB on the wire; see docs/performance.md "## INDI"): with the standard library encoder, which
holds the GIL, overlapping encoding with sending gained nothing end to end (the two threads take
turns on the GIL) but stretched the transfer itself to 0.3-0.45 s; encoding first and then
streaming the finished buffer moves it in about 0.1-0.15 s at the same end-to-end time.

Why slices with a yield in between: `binascii.b2a_base64` holds the GIL for the whole call
(about 0.25 s for 122 MB here), which would stall the Alpaca server's event loop; 885 KB slices
hold it for about 1.5 ms each, and `time.sleep(0)` after each hands the GIL straight to any thread
waiting for it. `pybase64`, when installed, is SIMD-accelerated (several times faster) and releases
the GIL, so it is used when present.

Wire layout: exactly libindi's own (IUUserIOBLOBContextOne): the ``enclen`` attribute gives the
base64 length and the payload is broken into lines of 72 characters, each followed by a newline.
This is not cosmetic: libindi clients built with INDI_FAST_BLOB (KStars, PyIndi) size their receive
buffer from ``enclen`` plus one newline per 72 characters and copy raw bytes into it until it is
full; a payload without those newlines leaves room that swallows the closing tags and every message
after them. With the layout matched, those clients take their fast memcpy path (and libindi's
decoder skips exactly one newline per 4-character group, so the newlines must sit every 72).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np

log = logging.getLogger("zwo_alpaca.indi")

try:  # optional accelerator; see module docstring
    import pybase64 as _pybase64  # type: ignore[import-not-found, unused-ignore]

    def _b64(view: memoryview) -> bytes:
        return _pybase64.b64encode(view)

    ENCODER = "pybase64"
except Exception:  # noqa: BLE001 - pybase64 missing or broken: fall back  # pragma: no cover
    def _b64(view: memoryview) -> bytes:
        return binascii.b2a_base64(view, newline=False)

    ENCODER = "binascii"

LINE = 72  # base64 characters per line, as libindi writes them
SLICE = 54 << 14  # 885 KB raw -> 16384 lines of 72 characters per encoding step
SEND_PIECE = 8 << 20  # bytes handed to the transport per write once encoded


def encoded_length(n: int) -> int:
    """Base64 characters for n bytes (what the ``enclen`` attribute carries: no newlines)."""
    return 4 * ((n + 2) // 3)


def wire_length(n: int) -> int:
    """Bytes on the wire for n raw bytes: base64 plus a newline after each (possibly partial) line."""
    enc = encoded_length(n)
    return enc + (enc + LINE - 1) // LINE


def _place(b64: bytes, out: np.ndarray) -> int:
    """Copy base64 text into `out` with a newline after every 72 characters (and after a final
    partial line); returns the bytes written. `out` must have room for wire_length-style output."""
    n = len(b64)
    full, rem = divmod(n, LINE)
    src = np.frombuffer(b64, dtype=np.uint8)
    if full:
        grid = out[: full * (LINE + 1)].reshape(full, LINE + 1)
        grid[:, :LINE] = src[: full * LINE].reshape(full, LINE)
        grid[:, LINE] = 10
    written = full * (LINE + 1)
    if rem:
        out[written:written + rem] = src[full * LINE:]
        out[written + rem] = 10
        written += rem + 1
    return written


def with_newlines(b64: bytes) -> memoryview:
    """`b64` with a newline after every 72 characters (and after a final partial line)."""
    n = len(b64)
    out = np.empty(n + (n + LINE - 1) // LINE, dtype=np.uint8)
    _place(b64, out)
    return out.data.cast("B")


class EncodedBlob:
    """The wire form (base64 in 72-character lines) of one binary payload, encoded once.

    `start(executor)` encodes in a worker thread; `await wait()` returns when it is complete;
    `view` is then the whole payload, to be sent in slices. The raw buffer is dropped as soon as
    encoding completes (the owner may keep its own reference, e.g. for saving the file).
    """

    def __init__(self, raw: memoryview, fmt: str, loop: asyncio.AbstractEventLoop, *, slice_size: int = SLICE,
                 on_done: Callable[[EncodedBlob], None] | None = None, size: int | None = None) -> None:
        if slice_size % 54:
            raise ValueError("slice size must be a multiple of 54 bytes (whole 72-character lines)")
        self.fmt = fmt
        # The ``size`` attribute clients see: the payload's length, or for a compressed payload the
        # length before compression (the INDI protocol's rule; libindi's CCD sends it so).
        self.size = len(raw) if size is None else int(size)
        self.enclen = encoded_length(len(raw))
        self.wire_len = wire_length(len(raw))
        self._raw: memoryview | None = raw
        self._loop = loop
        self._slice = slice_size
        self._out = np.empty(self.wire_len, dtype=np.uint8)
        self.view = self._out.data.cast("B")
        self.done = False
        self.error: BaseException | None = None
        self.encode_seconds = 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self._on_done = on_done
        self._started = False

    # ---- producer side (worker thread)
    def start(self, executor: Executor) -> None:
        if not self._started:
            self._started = True
            executor.submit(self._encode)

    def encode_now(self) -> None:
        """Encode synchronously in the calling thread (tests, small payloads)."""
        self._started = True
        self._encode()

    def _encode(self) -> None:
        raw = self._raw
        t0 = time.perf_counter()
        try:
            assert raw is not None
            pos = 0
            for start in range(0, len(raw), self._slice):
                pos += _place(_b64(raw[start:start + self._slice]), self._out[pos:])
                if ENCODER == "binascii":
                    time.sleep(0)  # hand the GIL to whoever waits for it (the Alpaca loop, the INDI loop)
            if pos != self.wire_len:  # pragma: no cover - arithmetic guard
                raise RuntimeError(f"base64 layout error: wrote {pos} of {self.wire_len} bytes")
        except BaseException as exc:  # noqa: BLE001 - delivered to waiters; never kills the worker
            self._finish_threadsafe(exc)
            return
        finally:
            self._raw = None
            self.encode_seconds = time.perf_counter() - t0
        self._finish_threadsafe(None)

    def _finish_threadsafe(self, exc: BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._finish, exc)
        except RuntimeError:  # loop closed (server stopping)
            pass

    # ---- event-loop side
    def _finish(self, exc: BaseException | None) -> None:
        self.done = True
        self.error = exc
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        if self._on_done is not None:
            try:
                self._on_done(self)
            except Exception:  # pragma: no cover - defensive
                log.exception("BLOB completion callback failed")

    async def wait(self) -> bool:
        """Wait until encoding has finished; True if it succeeded."""
        while not self.done:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(fut)
            await fut
        return self.error is None

    def pieces(self, size: int = SEND_PIECE) -> Iterator[memoryview]:
        """The finished payload in write-sized slices (zero-copy memoryviews)."""
        for off in range(0, self.wire_len, size):
            yield self.view[off:off + size]

    @property
    def complete(self) -> bool:
        """Fully and successfully encoded."""
        return self.done and self.error is None
