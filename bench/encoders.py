#!/usr/bin/env python3
"""Encoder comparison for the image paths: JSON ImageArray encoders, FITS writers and base64.

All on the same 9576x6388 uint16 frame (values like the simulator's: a bias near 1000 ADU plus
noise, 4-digit numbers; a darker frame makes shorter JSON), in this process, in one run:

JSON (the ``Value`` text of the transposed, width-major array):
  * ``orjson, one call`` - orjson.dumps(array, OPT_SERIALIZE_NUMPY): the reference of issue 6;
  * ``orjson, in parts`` - alpaca_server.imagecodec.json_value_parts (what the server does);
  * ``stdlib json + tolist`` - json.dumps(array.tolist()), ``ujson + tolist`` if installed;
  * ``numpy tofile`` - numpy's own text formatting, one ``tofile(sep=",")`` per column into a file.
  The slow ones run on a 1/16 slice (the same width-major rows) and are scaled up (marked "est.").
  For each: time, and the longest time another thread had to wait for the GIL meanwhile (a 1 ms
  ticker thread's worst gap): what an event loop serving polls would suffer.

FITS (what INDI sends; indi_shim owns the code, measured here only):
  * ``zwo_common.fits.build_fits`` - one numpy XOR pass into the big-endian file buffer;
  * ``astropy.io.fits`` - PrimaryHDU(uint16).writeto(BytesIO), if astropy is installed;
  * ``naive numpy`` - (data ^ 0x8000).astype('>u2').tobytes() and a header concatenation.
Base64 of the FITS bytes: binascii (stdlib) and pybase64 if installed.

Usage: .venv/bin/python bench/encoders.py [--reps 3]
Writes bench/results/encoders.json.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from _common import FRAME_BYTES, Result, W, median, sample_frame


class GilTicker:
    """A thread that wakes every 1 ms; its longest gap is how long the GIL (or CPU) was not given up."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self) -> GilTicker:
        self._t.start()
        time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(2)


def measure(fn: Callable[[], object], reps: int) -> dict:
    """Median seconds of ``fn`` and the worst GIL gap seen by a ticker thread; output size."""
    times, gaps, size = [], [], 0
    for _ in range(reps):
        with GilTicker() as tick:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        gaps.append(tick.max_gap)
        size = out if isinstance(out, int) else len(out)  # type: ignore[arg-type]
        del out
    return {"s": median(times), "gil_gap_s": max(gaps), "bytes": size}


def tofile_text(arr: np.ndarray, path: str) -> int:
    """numpy's own formatting: ``[[a,b,...],[...]]`` written with one tofile per column of the frame."""
    with open(path, "wb") as f:
        f.write(b"[")
        for i, row in enumerate(arr):
            f.write(b"[" if i == 0 else b"],[")
            row.tofile(f, sep=",")
        f.write(b"]]")
    return os.path.getsize(path)


def run(reps: int) -> Result:
    from alpaca_server import imagecodec  # noqa: PLC0415

    res = Result("encoders")
    frame = sample_frame()  # (rows, cols)
    image = imagecodec.prepare_image(frame, 1)
    arr = image.array  # (W, H) width-major
    part = arr[: W // 16]
    scale = W / (W // 16)
    data: dict = {}
    tmp = tempfile.mkdtemp(prefix="zwo-enc-")
    json_rows = []

    def add_json(name: str, fn: Callable[[], object], slice_: bool, reps_: int) -> None:
        m = measure(fn, reps_)
        if slice_:
            m = {"s": m["s"] * scale, "gil_gap_s": m["gil_gap_s"], "bytes": int(m["bytes"] * scale), "estimated": True}
        data[name] = m
        json_rows.append(name)
        print(f"{name}: {m}", flush=True)

    add_json("orjson, one call", lambda: orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY), False, reps)
    add_json("orjson, in parts (server)", lambda: sum(len(p) for p in imagecodec.json_value_parts(image)), False, reps)
    add_json("stdlib json + tolist", lambda: json.dumps(part.tolist(), separators=(",", ":")), True, 1)
    try:
        import ujson  # noqa: PLC0415

        add_json("ujson + tolist", lambda: ujson.dumps(part.tolist()), True, 1)
    except ImportError:
        pass
    add_json("numpy tofile (text)", lambda: tofile_text(part, os.path.join(tmp, "t.json")), True, 1)

    ref = data["orjson, one call"]["s"]
    json_grid = [[n, f"{data[n]['s'] * 1e3:.0f} ms" + (" (est.)" if data[n].get("estimated") else ""),
                  f"{data[n]['s'] / ref:.2f}x", f"{data[n]['gil_gap_s'] * 1e3:.0f} ms",
                  f"{data[n]['bytes'] / 1e6:.0f} MB"] for n in json_rows]
    res.tables.append(("JSON ImageArray Value, full frame", ["encoder", "time", "vs orjson one call",
                                                             "longest GIL hold (1 ms ticker)", "text"], json_grid))

    # FITS
    fits_rows = []
    try:
        from zwo_common.fits import build_fits  # noqa: PLC0415

        data["fits: indi_shim build_fits"] = measure(lambda: len(build_fits(frame, [("EXPTIME", 1.0, "s")])), reps)
        fits_rows.append("fits: indi_shim build_fits")
    except ImportError:
        pass
    try:
        from astropy.io import fits as afits  # noqa: PLC0415

        def astropy_fits() -> int:
            bio = io.BytesIO()
            hdu = afits.PrimaryHDU(frame)
            hdu.header["EXPTIME"] = 1.0
            hdu.writeto(bio)
            return len(bio.getbuffer())

        data["fits: astropy.io.fits"] = measure(astropy_fits, max(1, reps - 1))
        fits_rows.append("fits: astropy.io.fits")
    except ImportError:
        pass

    def naive() -> int:
        header = b"SIMPLE  =                    T".ljust(80) + b"END".ljust(80)
        body = (frame ^ np.uint16(0x8000)).astype(">u2").tobytes()
        return len(header.ljust(2880) + body)

    data["fits: naive numpy"] = measure(naive, reps)
    fits_rows.append("fits: naive numpy")
    raw = np.frombuffer(frame.tobytes(), dtype=np.uint8).data
    data["base64: binascii"] = measure(lambda: binascii.b2a_base64(raw, newline=False), reps)
    fits_rows.append("base64: binascii")
    data["base64: stdlib base64"] = measure(lambda: base64.b64encode(raw), 1)
    fits_rows.append("base64: stdlib base64")
    try:
        import pybase64  # noqa: PLC0415

        data["base64: pybase64"] = measure(lambda: pybase64.b64encode(raw), reps)
        fits_rows.append("base64: pybase64")
    except ImportError:
        pass
    dst = np.empty_like(raw)
    np.copyto(dst, raw)  # first touch
    t0 = time.perf_counter()
    np.copyto(dst, raw)
    memcpy = time.perf_counter() - t0
    del dst
    data["memcpy"] = {"s": memcpy}
    fits_grid = [[n, f"{data[n]['s'] * 1e3:.0f} ms", f"{data[n]['gil_gap_s'] * 1e3:.0f} ms",
                  f"{data[n]['bytes'] / 1e6:.0f} MB"] for n in fits_rows]
    res.tables.append((f"FITS and base64, full frame ({FRAME_BYTES / 1e6:.0f} MB raw; memcpy {memcpy * 1e3:.0f} ms)",
                       ["encoder", "time", "longest GIL hold", "output"], fits_grid))
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    res.data = data
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    res = run(max(1, min(args.reps, 20)))
    path = res.write()
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
