"""The preview renderer (``alpaca_server/preview.py``): debayering, binning, stretch and PNG encoding."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from alpaca_server import preview


@dataclass
class FakeFrame:
    data: np.ndarray
    seq: int = 1
    bayer_pattern: str | None = None
    bayer_offset_x: int = 0
    bayer_offset_y: int = 0
    width: int = 0
    height: int = 0
    duration: float = 1.0
    image_type: str = "RAW16"


def mosaic(pattern: str, rows: int, cols: int, values: dict[str, int], ox: int = 0, oy: int = 0) -> np.ndarray:
    """A raw frame whose pixel (r, c) holds the value of its filter colour (sensor phase shifted by ox, oy)."""
    out = np.zeros((rows, cols), dtype=np.uint16)
    for dy in (0, 1):
        for dx in (0, 1):
            colour = pattern[((dy + oy) % 2) * 2 + (dx + ox) % 2]
            out[dy::2, dx::2] = values[colour]
    return out


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what encode_png writes (8-bit grey/RGB, filters 0 and 2, one IDAT)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "no IHDR chunk"
    cols, rows, depth, ctype = header[:4]
    ch = 3 if ctype == 2 else 1
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(rows, cols * ch + 1)
    out = np.empty((rows, cols * ch), dtype=np.uint8)
    for r in range(rows):
        line = raw[r, 1:]
        if raw[r, 0] == 2 and r > 0:
            line = (line + out[r - 1]).astype(np.uint8)
        else:
            assert raw[r, 0] in (0, 2)
        out[r] = line
    return out.reshape(rows, cols, ch) if ch == 3 else out


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("ox, oy", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_superpixel_debayer_honours_pattern_and_offsets(pattern: str, ox: int, oy: int) -> None:
    values = {"R": 1000, "G": 2000, "B": 3000}
    frame = FakeFrame(mosaic(pattern, 40, 60, values, ox, oy), bayer_pattern=pattern, bayer_offset_x=ox,
                      bayer_offset_y=oy)
    rgb = preview.downsample(frame, width=1000)
    assert rgb.shape == (20, 30, 3)
    assert np.allclose(rgb[..., 0], 1000) and np.allclose(rgb[..., 1], 2000) and np.allclose(rgb[..., 2], 3000)


def test_binning_averages_blocks_and_drops_ragged_edges() -> None:
    data = np.arange(10 * 13, dtype=np.uint16).reshape(10, 13)
    mono = preview.downsample(FakeFrame(data), width=6)  # factor 3
    assert mono.shape == (3, 4)
    assert mono[0, 0] == pytest.approx(data[:3, :3].mean()) and mono[2, 3] == pytest.approx(data[6:9, 9:12].mean())
    big = FakeFrame(np.zeros((2822, 4144), np.uint16), bayer_pattern="RGGB")
    assert preview.downsample(big).shape == (470, 690, 3)  # 4144 / 2 / 3: about 800 px wide, whole cells
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0], bgr[..., 2] = 200, 10  # blue, red in the SDK's BGR order
    rgb = preview.downsample(FakeFrame(bgr, image_type="RGB24"), width=6)
    assert rgb.shape == (4, 6, 3) and rgb[0, 0, 0] == 10 and rgb[0, 0, 2] == 200
    for tiny in ((1, 1), (1, 5), (3, 1), (2, 2)):
        out = preview.render(FakeFrame(np.full(tiny, 7, np.uint16), bayer_pattern="RGGB"))
        assert decode_png(out).size > 0


def test_stretch_puts_background_in_midtones_and_keeps_stars() -> None:
    rng = np.random.default_rng(3)
    sky = rng.normal(1200, 30, (300, 400)).clip(0, 65535).astype(np.uint16) << 2  # 14-bit, left-aligned
    sky[150, 200] = 65535
    out = preview.stretch(preview.downsample(FakeFrame(sky), 400), 65535.0)
    assert out.dtype == np.uint8
    assert 50 <= np.median(out) <= 80  # background at ~25 % grey
    assert out[150, 200] == 255
    assert (out == 0).mean() < 0.01  # shadows clipped only a little below the noise
    flat = preview.stretch(np.zeros((10, 10), np.float32), 65535.0)
    assert (flat == 0).all()
    white = preview.stretch(np.full((10, 10), 65535.0, np.float32), 65535.0)
    assert (white == 255).all()
    quantised = np.zeros((50, 50), np.uint8)
    quantised[10, 10] = 200  # RAW8 at a short exposure: all zeros but a star
    q = preview.stretch(quantised.astype(np.float32), 255.0)
    assert q[10, 10] == 255 and q[0, 0] == 0


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (1, 1), (64, 800, 3)])
def test_png_round_trip(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    smooth = np.add.outer(np.arange(shape[0]), np.arange(shape[1])).astype(np.uint8)
    img = smooth if len(shape) == 2 else np.stack([smooth, smooth // 2, 255 - smooth], axis=-1)
    for candidate in (img, rng.integers(0, 256, shape, dtype=np.uint8)):  # "Up" and "none" filters
        decoded = decode_png(preview.encode_png(candidate))
        assert np.array_equal(decoded, candidate)
    with pytest.raises(ValueError):
        preview.encode_png(np.zeros((2, 2, 4), np.uint8))


def test_cache_renders_once_per_frame_off_the_caller_thread() -> None:
    frame = FakeFrame(np.full((64, 64), 1000, np.uint16), seq=5, width=64, height=64)
    calls: list[str] = []
    gate = threading.Event()

    def get_frame() -> FakeFrame:
        calls.append(threading.current_thread().name)
        gate.wait(5)
        return frame

    cache = preview.PreviewCache(get_frame)
    futures = [cache.get(5, 800) for _ in range(5)]
    assert len({id(f) for f in futures}) == 1  # concurrent requests share one render
    others = [cache.get(5, w) for w in (100, 200, 300)]
    with pytest.raises(preview.PreviewBusy):  # at most MAX_PENDING render threads per camera
        cache.get(5, 400)
    gate.set()
    assert all(f.result(5).width == w for f, w in zip(others, (100, 200, 300)))
    result = futures[0].result(5)
    assert result.seq == 5 and result.png.startswith(b"\x89PNG")
    assert (result.frame_width, result.frame_height) == (64, 64)
    assert calls == ["preview-render"] * 4  # one render per width, none on the caller's thread
    latest = next(w for w in (100, 200, 300, 800) if cache.cached(5, w) is not None)
    done = cache.get(5, latest)
    assert done.done() and done.result().width == latest  # cached: answered at once, no render
    assert len(calls) == 4
    empty = preview.PreviewCache(lambda: None)
    assert empty.get(1, 800).result(5) is None
    boom = preview.PreviewCache(lambda: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        boom.get(1, 800).result(5)
    assert preview.clamp_width("abc") == 800 and preview.clamp_width(10) == 64 and preview.clamp_width(10**9) == 2048


def test_full_frame_render_time() -> None:
    """A 4144 x 2822 RAW16 colour frame renders in well under a second (here; a Pi 4 is ~5x slower)."""
    data = np.random.default_rng(0).integers(4000, 6000, (2822, 4144), dtype=np.uint16)
    frame = FakeFrame(data, bayer_pattern="RGGB")
    preview.render(frame)
    t0 = time.perf_counter()
    png = preview.render(frame)
    took = time.perf_counter() - t0
    assert took < 0.6, f"{took:.2f} s"
    assert len(png) < 2_000_000
