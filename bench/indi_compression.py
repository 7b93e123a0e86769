#!/usr/bin/env python3
"""CCD_COMPRESSION benchmark: size and time per frame, Rice ``.fits.fz`` against plain FITS.

Frames: full sensors of the simulated ASI2600MM Pro (6248x4176, 16-bit) and ASI294MC Pro (4144x2822,
16-bit raw mosaic, and 8-bit) showing the simulator's star field (a 30 s light at unity-ish gain), and
a bias-like dark (shortest exposure, covered) of the ASI2600 - the two ends of what compresses.

Per frame: the plain FITS writer's time and size (`zwo_common.fits.build_fits`), the compressed
writer's (`zwo_common.fpack.build_fits_fz`) with the C coder (all threads and one thread) and, once,
the numpy fallback; each checked lossless by decoding with astropy. Then, unless ``--no-indi``, the
time per frame a client sees: ``zwo-alpaca serve`` over INDI, from CCD_EXPOSURE to the last byte of
the BLOB, compression off and on, with the bytes on the wire (a 0.001 s exposure, so the time is the
readout, the file, base64 and the transfer).

Usage:  .venv/bin/python bench/indi_compression.py [--reps 3] [--no-indi] [--no-numpy]
Prints a table and writes bench/results/indi_compression.json.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import Result, free_port, start_server, wait_port  # noqa: E402
from driver.simulator.catalog import MODELS  # noqa: E402
from driver.simulator.constants import ImgType  # noqa: E402
from driver.simulator.sensor import Conditions, Geometry, SensorSimulator  # noqa: E402
from zwo_common import fpack  # noqa: E402
from zwo_common.fits import build_fits, camera_cards  # noqa: E402


def sim_frame(model: str, img_type: ImgType, exposure_s: float, dark: bool) -> np.ndarray:
    m = MODELS[model]
    sim = SensorSimulator(m, seed=1, slot=0)
    geom = Geometry(m.max_width, m.max_height, 1, int(img_type))
    gain = m.gain_offset_presets[2] if hasattr(m, "gain_offset_presets") else 100
    cond = Conditions(exposure_s=exposure_s, gain=gain, offset=m.gain_offset_presets[1], temperature_c=-10.0,
                      is_dark=dark)
    return sim.prepare(geom, cond, 1).to_array()


def best(fn: Any, reps: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def writer_rows(res: Result, reps: int, numpy_too: bool) -> list[dict[str, Any]]:
    frames = [
        ("ASI2600MM Pro, 30 s light (star field)", "asi2600mm-pro", ImgType.RAW16, 30.0, False),
        ("ASI2600MM Pro, bias-like dark", "asi2600mm-pro", ImgType.RAW16, 0.000032, True),
        ("ASI294MC Pro, 30 s light (raw mosaic)", "asi294mc-pro", ImgType.RAW16, 30.0, False),
        ("ASI294MC Pro, 30 s light, 8-bit", "asi294mc-pro", ImgType.RAW8, 30.0, False),
    ]
    from astropy.io import fits as afits  # noqa: PLC0415 - a test dependency, needed only here

    rows: list[dict[str, Any]] = []
    for label, model, img, exp, dark in frames:
        data = sim_frame(model, img, exp, dark)
        cards = camera_cards(exptime=exp, start=None, instrume=f"ZWO CCD {model}",
                             frame_type="Dark" if dark else "Light", xbin=1, ybin=1, pixel_size_um=3.76,
                             ccd_temp=-10.0, gain=100, offset=50)
        t_plain, plain = best(lambda: build_fits(data, cards), reps)
        t_fz, fz = best(lambda: fpack.build_fits_fz(data, cards), reps)
        threads = min(4, os.cpu_count() or 1)
        t_fz1, _ = best(lambda: fpack.build_fits_fz(data, cards, threads=1), reps)
        with afits.open(io.BytesIO(fz.tobytes())) as h:
            lossless = bool(np.array_equal(h[1].data, data))
        row = {"frame": label, "shape": list(data.shape), "dtype": str(data.dtype), "plain_bytes": len(plain),
               "fz_bytes": len(fz), "ratio": len(plain) / len(fz), "plain_s": t_plain, "fz_s": t_fz,
               "fz_1thread_s": t_fz1, "threads": threads, "lossless": lossless, "coder": fpack.CODER}
        if numpy_too and not rows:
            t_np, _ = best(lambda: fpack.build_fits_fz(data, cards, coder="numpy"), 1)
            row["numpy_s"] = t_np
        rows.append(row)
        res.add(f"{label}: size", f"{len(fz) / 1e6:.1f} MB of {len(plain) / 1e6:.1f} MB (1 : {row['ratio']:.2f})",
                ok=lossless, note="lossless" if lossless else "NOT LOSSLESS")
        res.add(f"{label}: writer time", f"{t_fz * 1000:.0f} ms compressed ({threads} threads; "
                                         f"{t_fz1 * 1000:.0f} ms on one) vs {t_plain * 1000:.0f} ms plain"
                + (f"; numpy fallback {row['numpy_s']:.1f} s" if "numpy_s" in row else ""))
    res.tables.append(("FITS writer per full frame", ["frame", "plain MB", ".fits.fz MB", "ratio", "plain ms",
                                                      "fz ms", "fz ms (1 thread)"],
                       [[r["frame"], f"{r['plain_bytes'] / 1e6:.1f}", f"{r['fz_bytes'] / 1e6:.1f}", f"{r['ratio']:.2f}",
                         f"{r['plain_s'] * 1000:.0f}", f"{r['fz_s'] * 1000:.0f}", f"{r['fz_1thread_s'] * 1000:.0f}"]
                        for r in rows]))
    return rows


class _Wire:
    """A bare INDI client: send XML, read until a whole BLOB has arrived."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = bytearray()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def until(self, needle: bytes, start: int = 0, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(needle, start)
            if i >= 0:
                return i
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not received")
            chunk = self.sock.recv(8 << 20)
            if not chunk:
                raise ConnectionError("server closed")
            self.buf += chunk


def indi_rows(res: Result, reps: int) -> list[dict[str, Any]]:
    dev = "ZWO CCD ASI2600MM Pro"
    server = start_server("asi2600mm-pro", extra=["--indi-port", str(indi := free_port())])
    rows: list[dict[str, Any]] = []
    try:
        wait_port(indi)
        w = _Wire(indi)
        w.send(f'<getProperties version="1.7"/><enableBLOB device="{dev}">Also</enableBLOB>')
        w.send(f'<newSwitchVector device="{dev}" name="CONNECTION"><oneSwitch name="CONNECT">On</oneSwitch>'
               f'</newSwitchVector>')
        w.until(b'name="CCD_COMPRESSION"')
        for compress in (False, True):
            member = "INDI_ENABLED" if compress else "INDI_DISABLED"
            w.send(f'<newSwitchVector device="{dev}" name="CCD_COMPRESSION"><oneSwitch name="{member}">On'
                   f'</oneSwitch></newSwitchVector>')
            time.sleep(0.3)
            times, wire = [], 0
            for _ in range(reps + 1):  # the first is a warm-up (buffers, pools)
                start = len(w.buf)
                t0 = time.perf_counter()
                w.send(f'<newNumberVector device="{dev}" name="CCD_EXPOSURE"><oneNumber name="CCD_EXPOSURE_VALUE">'
                       f'0.001</oneNumber></newNumberVector>')
                i = w.until(b"<setBLOBVector", start)
                j = w.until(b"</setBLOBVector>", i)
                times.append(time.perf_counter() - t0)
                wire = j - i
            times = times[1:]
            row = {"compression": compress, "median_s": statistics.median(times), "min_s": min(times),
                   "wire_bytes": wire, "reps": reps}
            rows.append(row)
            res.add(f"INDI, full ASI2600MM frame, compression {'on' if compress else 'off'}",
                    f"{row['median_s']:.2f} s per frame (min {row['min_s']:.2f}), {wire / 1e6:.1f} MB on the wire")
        w.send(f'<newSwitchVector device="{dev}" name="CCD_COMPRESSION"><oneSwitch name="INDI_DISABLED">On'
               f'</oneSwitch></newSwitchVector>')
    finally:
        server.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-indi", action="store_true", help="only the writer, no server")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy fallback measurement")
    args = ap.parse_args()
    res = Result("indi_compression")
    res.data["writer"] = writer_rows(res, max(1, args.reps), not args.no_numpy)
    if not args.no_indi:
        res.data["indi"] = indi_rows(res, max(1, args.reps))
    print(f"results: {res.write()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
