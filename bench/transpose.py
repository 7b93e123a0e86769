#!/usr/bin/env python3
"""Transpose comparison: the per-frame (rows, cols) -> (cols, rows) copy that ImageBytes needs.

On the full ASI6200MM Pro frame (9576x6388 uint16, 122 MB) and a RAW8 frame of the same size, in this
process, interleaved rep by rep, into a preallocated (page-faulted) output like the server's recycled
arrays:

  * ``memcpy`` - numpy copy of the same bytes: the floor;
  * ``numpy .T copy`` - ``out[...] = frame.T``: numpy's plain strided copy;
  * ``numpy 512x512 tiles`` - imagecodec's fallback when the extension is not built;
  * ``compiled, portable`` - alpaca_server._transpose with ``simd=False`` (what a CPU without
    SSE2/NEON gets);
  * ``compiled, SIMD`` - the same with the 8x8 SSE2/NEON kernel (what the server uses);
  * ``server prepare, N threads`` - imagecodec.start_prepare + wait: the bands split between
    TRANSPOSE_THREADS threads, as on a real download.

Reported as milliseconds (median) and as a multiple of memcpy's time in the same run.

Usage: .venv/bin/python bench/transpose.py [--reps 7]
Writes bench/results/transpose.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import H, Result, W, median, sample_frame
from alpaca_server import imagecodec


def _numpy_tiles(src: np.ndarray, out: np.ndarray) -> None:
    tile = imagecodec._TILE  # noqa: SLF001 - the benchmark measures the codec's own tiling
    for x0 in range(0, src.shape[1], tile):
        imagecodec.numpy_band(src, out, x0, min(x0 + tile, src.shape[1]))


def run(reps: int) -> Result:
    res = Result("transpose")
    fast = imagecodec._fast  # noqa: SLF001 - the compiled kernel, timed directly
    table: list[list[str]] = []
    data: dict[str, dict[str, float]] = {}
    for label, frame in (("RAW16", sample_frame()), ("RAW8", (sample_frame() >> 8).astype(np.uint8))):
        out = np.empty((W, H), dtype=frame.dtype)
        out.fill(0)  # fault the pages in, as a recycled array is
        flat_src, flat_out = frame.reshape(-1), out.reshape(-1)
        prepared = [imagecodec.prepare_image(frame, 0, out=out)]

        def prepare() -> None:
            image = imagecodec.start_prepare(frame, 1, out=prepared[0].array)
            image.wait()
            prepared[0] = image

        methods: dict[str, Callable[[], None]] = {
            "memcpy": lambda: np.copyto(flat_out, flat_src),
            "numpy .T copy": lambda: np.copyto(out, frame.T),
            "numpy 512x512 tiles": lambda: _numpy_tiles(frame, out),
        }
        if fast is not None:
            methods["compiled, portable"] = lambda: fast.swap_axes(frame, out, 0, W, simd=False)
            methods[f"compiled, {fast.KERNEL}"] = lambda: fast.swap_axes(frame, out, 0, W)
        methods[f"server prepare, {imagecodec.TRANSPOSE_THREADS} threads"] = prepare
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(reps):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        assert np.array_equal(prepared[0].array, frame.T), "the prepared image is not the transpose"
        base = median(times["memcpy"])
        data[label] = {name: median(t) for name, t in times.items()}
        for name, t in times.items():
            table.append([label, name, f"{median(t) * 1e3:.1f}", f"{median(t) / base:.2f}x"])
    res.tables.append((f"{W}x{H}, median of {reps}", ["frame", "method", "ms", "vs memcpy"], table))
    kernel = imagecodec.compiled_kernel()
    res.add("compiled kernel", kernel or "not built (numpy fallback)")
    if kernel is not None:
        speedup = data["RAW16"]["numpy 512x512 tiles"] / data["RAW16"][f"compiled, {kernel}"]
        res.add("RAW16: compiled / numpy tiles, one thread", f"{speedup:.2f}x faster")
    res.data = {"frame": f"{W}x{H}", "reps": reps, "median_s": data}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    run(max(1, min(args.reps, 50))).write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
