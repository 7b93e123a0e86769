"""The web page's preview: the camera's last frame as a small, stretched PNG.

Pure functions of a ``driver.Frame`` (no camera logic, nothing that touches the SDK):

1. **Bin down** to about ``width`` pixels across by averaging whole blocks. For colour sensors (a
   ``bayer_pattern`` on the frame) each 2x2 Bayer cell becomes one RGB pixel first (a *superpixel*
   debayer), honouring the pattern and the subframe's ``bayer_offset_x/y``; RGB24 frames (BGR from
   the SDK) are averaged per channel.
2. **Stretch** with a midtone transfer function, the "screen transfer function" astro software uses
   for previews: black point a little below the background (median - 2.8 x MAD), midtones balanced
   so the background lands at 25 % grey, highlights at the sensor's white. Colour channels are
   stretched independently (unlinked), which neutralises the green cast of a raw OSC frame.
3. **Encode** an 8-bit PNG with :mod:`zlib` and :mod:`struct` (no imaging library), 0.5-1 MB for a
   noisy 800-pixel colour frame.

:class:`PreviewCache` keeps the latest PNG per (frame seq, width) and renders in a daemon thread,
one render at a time per camera; concurrent requests for the same frame share one render.
"""

from __future__ import annotations

import concurrent.futures
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_WIDTH = 800
MIN_WIDTH = 64
MAX_WIDTH = 2048
TARGET_BACKGROUND = 0.25
SHADOWS_CLIP_MAD = 2.8
# Colour of each position of a 2x2 Bayer cell for each pattern name (0 = R, 1 = G, 2 = B).
_CELL = {"R": 0, "G": 1, "B": 2}


def _sum_axis(v: np.ndarray, axis: int) -> np.ndarray:
    """Sum over ``axis`` of a (possibly strided) view by adding its slices: much faster than
    ``ndarray.sum`` over an inner, strided axis of a large image, and it never copies the frame."""
    index: list[Any] = [slice(None)] * v.ndim
    index[axis] = 0
    acc = v[tuple(index)].astype(np.float32)
    for k in range(1, v.shape[axis]):
        index[axis] = k
        acc += v[tuple(index)]
    return acc


def _bin_cells(a: np.ndarray, f: int, cell: int) -> np.ndarray:
    """Mean of f x f blocks of ``cell`` x ``cell`` cells: (rows', cell, cols', cell) float32.

    ``a`` is 2-D; the ragged right/bottom edge is dropped.
    """
    step = f * cell
    h, w = a.shape[0] // step * step, a.shape[1] // step * step
    v = a[:h, :w].reshape(h // step, f, cell, w // step, f, cell)  # a view: splitting axes never copies
    out = _sum_axis(_sum_axis(v, 1), 3)  # -> (rows', cell, cols', cell)
    out *= 1.0 / (f * f)
    return out


def _factor(width: int, target: int) -> int:
    return max(1, -(-width // max(1, target)))


def downsample(frame: Any, width: int = DEFAULT_WIDTH) -> np.ndarray:
    """The frame as float32, (rows, cols) for mono or (rows, cols, 3) RGB, about ``width`` wide."""
    data = np.asarray(frame.data)
    pattern = (getattr(frame, "bayer_pattern", None) or "").upper()
    if data.ndim == 3:  # RGB24: BGR from the SDK
        f = _factor(data.shape[1], width)
        chans = [_bin_cells(data[..., c], f, 1)[:, 0, :, 0] for c in (2, 1, 0)]
        return np.stack(chans, axis=-1)
    if len(pattern) == 4 and set(pattern) <= set("RGB") and data.shape[0] >= 2 and data.shape[1] >= 2:
        # Superpixel debayer: each 2x2 cell -> one RGB pixel; f x f cells averaged on top.
        f = min(_factor(data.shape[1] // 2, width), max(1, data.shape[0] // 2))
        cells = _bin_cells(data, f, 2)  # cells[row, dy, col, dx]: mean of the (dy, dx) pixels of the cells
        ox = int(getattr(frame, "bayer_offset_x", 0) or 0) % 2
        oy = int(getattr(frame, "bayer_offset_y", 0) or 0) % 2
        out = np.zeros((cells.shape[0], cells.shape[2], 3), dtype=np.float32)
        count = [0, 0, 0]
        for dy in (0, 1):
            for dx in (0, 1):
                # Pixel (dy, dx) of the frame sits at (dy + oy, dx + ox) of the sensor's pattern.
                colour = _CELL[pattern[((dy + oy) % 2) * 2 + (dx + ox) % 2]]
                out[..., colour] += cells[:, dy, :, dx]
                count[colour] += 1
        for c in range(3):
            if count[c]:
                out[..., c] /= count[c]
        return out
    f = min(_factor(data.shape[1], width), max(1, data.shape[0]))
    return _bin_cells(data, f, 1)[:, 0, :, 0]


def _mtf(m: np.ndarray | float, x: np.ndarray | float) -> Any:
    """Midtone transfer function: 0 -> 0, m -> 0.5, 1 -> 1."""
    return ((m - 1.0) * x) / ((2.0 * m - 1.0) * x - m)


def _stretch_channel(ch: np.ndarray, white: float) -> np.ndarray:
    x = np.clip(ch * (1.0 / white), 0.0, 1.0)
    sample = x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)]
    median = float(np.median(sample))
    dev = np.abs(sample - median)
    mad = float(np.median(dev)) * 1.4826
    if mad <= 0.0:  # coarsely quantised data (RAW8, short exposures): use the mean deviation
        mad = float(dev.mean()) * 1.2533
    if median >= 0.999:  # saturated: show it as it is
        return x
    lo = max(0.0, median - SHADOWS_CLIP_MAD * mad)
    x = np.clip((x - lo) * (1.0 / (1.0 - lo)), 0.0, 1.0)
    bg = (median - lo) / (1.0 - lo)
    if bg <= 0.0:  # a flat frame with nothing to measure: linear from black to its brightest pixel
        top = float(x.max())
        return x * (1.0 / top) if top > 0 else x
    return _mtf(_mtf(TARGET_BACKGROUND, bg), x)


def stretch(img: np.ndarray, white: float) -> np.ndarray:
    """Auto-stretch to uint8 (channels unlinked)."""
    if img.ndim == 3:
        out = np.stack([_stretch_channel(img[..., c], white) for c in range(img.shape[2])], axis=-1)
    else:
        out = _stretch_channel(img, white)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def white_level(frame: Any) -> float:
    """The value of a saturated pixel: 65535 for RAW16 (ZWO left-aligns), 255 for 8-bit."""
    return 65535.0 if np.asarray(frame.data).dtype == np.uint16 else 255.0


def encode_png(img: np.ndarray, level: int = 6) -> bytes:
    """An 8-bit greyscale (2-D) or RGB (rows, cols, 3) PNG, deflated with zlib."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        rows, cols = img.shape
        colour_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        rows, cols = img.shape[:2]
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"cannot encode an image of shape {img.shape}")
    flat = img.reshape(rows, cols * channels)
    # Filter type 2 ("Up": each byte minus the byte above, modulo 256) suits smooth images; type 0
    # (none) suits noise-dominated ones such as a sky background. Pick by trying a band of rows.
    up = np.empty_like(flat)
    up[0] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=up[1:])
    band = slice(rows // 2, min(rows, rows // 2 + 32))
    use_up = len(zlib.compress(up[band].tobytes(), 1)) < len(zlib.compress(flat[band].tobytes(), 1))
    raw = np.empty((rows, cols * channels + 1), dtype=np.uint8)
    raw[:, 0] = 2 if use_up else 0
    raw[:, 1:] = up if use_up else flat
    body = zlib.compress(raw.tobytes(), level)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", cols, rows, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def render(frame: Any, width: int = DEFAULT_WIDTH) -> bytes:
    """The whole pipeline: downsample (debayer), stretch, PNG."""
    return encode_png(stretch(downsample(frame, width), white_level(frame)))


def clamp_width(value: Any) -> int:
    """A requested preview width, bounded to MIN_WIDTH..MAX_WIDTH (default DEFAULT_WIDTH)."""
    try:
        w = int(value)
    except (TypeError, ValueError):
        return DEFAULT_WIDTH
    return max(MIN_WIDTH, min(MAX_WIDTH, w))


@dataclass(frozen=True)
class Preview:
    """One rendered preview."""

    seq: int
    width: int
    png: bytes
    rows: int
    cols: int
    frame_width: int
    frame_height: int
    duration: float
    image_type: str


MAX_PENDING = 4


class PreviewBusy(Exception):
    """Too many different previews are waiting to be rendered; try again shortly."""


class PreviewCache:
    """The latest preview of one camera, rendered off the event loop, one render at a time."""

    def __init__(self, get_frame: Callable[[], Any]) -> None:
        self._get_frame = get_frame
        self._lock = threading.Lock()
        self._latest: Preview | None = None
        self._pending: dict[tuple[int, int], concurrent.futures.Future] = {}
        self._render_lock = threading.Lock()  # one render per camera at a time (CPU on a Pi)

    def cached(self, seq: int, width: int) -> Preview | None:
        """The cached preview when it is of frame ``seq`` at ``width``."""
        with self._lock:
            p = self._latest
            return p if p is not None and p.seq == seq and p.width == width else None

    def get(self, seq: int, width: int) -> concurrent.futures.Future:
        """A future of the preview of the last frame (expected to be ``seq``); None result: no frame.

        Raises PreviewBusy when MAX_PENDING other renders are already waiting (each one is a thread).
        """
        with self._lock:
            p = self._latest
            if p is not None and p.seq == seq and p.width == width:
                fut: concurrent.futures.Future = concurrent.futures.Future()
                fut.set_result(p)
                return fut
            key = (seq, width)
            waiting = self._pending.get(key)
            if waiting is not None:
                return waiting
            if len(self._pending) >= MAX_PENDING:
                raise PreviewBusy("the server is busy rendering previews; try again in a moment")
            fut = concurrent.futures.Future()
            self._pending[key] = fut
        threading.Thread(target=self._run, args=(key, fut), name="preview-render", daemon=True).start()
        return fut

    def _run(self, key: tuple[int, int], fut: concurrent.futures.Future) -> None:
        try:
            with self._render_lock:
                frame = self._get_frame()
                result: Preview | None = None
                if frame is not None:
                    with self._lock:
                        p = self._latest
                    if p is not None and p.seq == frame.seq and p.width == key[1]:
                        result = p
                    else:
                        small = stretch(downsample(frame, key[1]), white_level(frame))
                        result = Preview(frame.seq, key[1], encode_png(small), small.shape[0], small.shape[1],
                                         int(frame.width), int(frame.height), float(frame.duration),
                                         str(frame.image_type))
                        with self._lock:
                            if self._latest is None or self._latest.seq <= result.seq:
                                self._latest = result
            fut.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiting request
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._pending.pop(key, None)
