#!/usr/bin/env python3
"""Fast exposure over INDI (libindi's CCD_FAST_TOGGLE / CCD_FAST_COUNT): the time between frames with
it on and off, measured with libindi's own client library (pyindi-client), as Ekos sees it.

One ``zwo-alpaca serve --simulator <model> --indi-port P`` (a subprocess). Per mode, a series of
``--frames`` exposures of ``--exposure`` seconds (default 10 x 0.5 s, full frame, FITS BLOBs):

* off: the client sends CCD_EXPOSURE, waits for the BLOB, and sends the next one (what a client does
  without fast exposure: the camera idles while the image is encoded, sent and parsed);
* on:  CCD_FAST_TOGGLE on, CCD_FAST_COUNT = frames, one CCD_EXPOSURE; the core starts each next frame
  as soon as the one before is read out, while the image is still being sent.

Measured per gap between consecutive frames: BLOB to BLOB (the client has parsed one image to it has
parsed the next: the period a capture sequence sees) and exposure start to exposure start
(CCD_EXPOSURE turning Busy with the full duration). The floor is the exposure plus the simulated
readout (reported beside the numbers).

Usage:  .venv/bin/python bench/indi_fast_exposure.py [--model asi294mc-pro] [--frames 10] [--exposure 0.5]
Prints a table and writes JSON to bench/results/indi_fast_exposure-<time>.json (and -latest.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import RESULTS, free_port, machine, median, percentile, start_server, wait_port  # noqa: E402
from support.indi_client import PyIndi, PyIndiClient  # noqa: E402

SERIES_TIMEOUT_S = 120.0


def device_name(model: str) -> str:
    """The INDI device name our server gives a simulated model (as indi_asi names it)."""
    from driver.simulator.catalog import MODELS  # noqa: PLC0415 - only to name the device
    name = MODELS[model].name
    return "ZWO CCD " + (name[4:] if name.startswith("ZWO ") else name)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median_s": median(values), "p90_s": percentile(values, 90),
            "min_s": min(values) if values else float("nan"), "max_s": max(values) if values else float("nan")}


def run_series(c: PyIndiClient, dev: str, frames: int, exposure: float, fast: bool) -> dict[str, Any]:
    """One series; returns the BLOB arrival times and the exposure start times (monotonic)."""
    c.set_switch(dev, "CCD_FAST_TOGGLE", "INDI_ENABLED" if fast else "INDI_DISABLED")
    c.set_numbers(dev, "CCD_FAST_COUNT", FRAMES=frames if fast else 1)
    time.sleep(0.3)
    mark = c.mark()
    blob_times: list[float] = []
    sizes: list[int] = []
    t0 = time.monotonic()
    c.set_numbers(dev, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=exposure)
    seen = mark
    deadline = t0 + SERIES_TIMEOUT_S
    while len(blob_times) < frames and time.monotonic() < deadline:
        ev = c.wait_event(lambda e: e.device == dev and e.name == "CCD1" and e.kind == "update",
                          max(0.1, deadline - time.monotonic()), seen)
        seen = c.events.index(ev, seen) + 1
        blob_times.append(ev.t)
        sizes.append(len(ev.values["CCD1"][1]))
        if not fast and len(blob_times) < frames:
            c.set_numbers(dev, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=exposure)  # the next one, as a client would
    events = c.since(mark)
    starts = [e.t for e in events if e.device == dev and e.name == "CCD_EXPOSURE" and e.state == "Busy"
              and abs(e.values["CCD_EXPOSURE_VALUE"][0] - exposure) < 1e-6]
    return {"fast": fast, "frames": len(blob_times), "blob_bytes": sizes[0] if sizes else 0,
            "total_s": (blob_times[-1] - t0) if blob_times else float("nan"),
            "blob_to_blob": stats(gaps(blob_times)), "start_to_start": stats(gaps(starts[:frames]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="asi294mc-pro")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--exposure", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if PyIndi is None:
        print("pyindi-client is not installed (it is a test dependency: pip install --no-deps pyindi-client)")
        return 2
    frames = max(2, min(args.frames, 100))
    indi_port = free_port()
    server = start_server(args.model, extra=("--indi-port", str(indi_port)))
    results: dict[str, Any] = {"when": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                               "model": args.model, "exposure_s": args.exposure, "frames": frames}
    client = None
    try:
        wait_port(indi_port)
        dev = device_name(args.model)
        client = PyIndiClient(indi_port)
        client.setBLOBMode(PyIndi.B_ALSO, dev, None)
        client.connect_device(dev)
        info = client.wait_prop(dev, "CCD_INFO")
        values = {m.getName(): m.getValue() for m in PyIndi.PropertyNumber(info)}
        results["frame"] = f"{int(values['CCD_MAX_X'])}x{int(values['CCD_MAX_Y'])} RAW16 FITS"
        run_series(client, dev, 2, args.exposure, False)  # warm-up: pools, buffers, connections
        results["off"] = run_series(client, dev, frames, args.exposure, False)
        results["on"] = run_series(client, dev, frames, args.exposure, True)
    finally:
        if client is not None:
            client.close()
        server.stop()
    rows = [("mode", "BLOB to BLOB median (p90)", "exposure start to start median (p90)", "series total")]
    for key in ("off", "on"):
        r = results[key]
        b, s = r["blob_to_blob"], r["start_to_start"]
        rows.append((f"fast exposure {key}", f"{b['median_s']:.3f} s ({b['p90_s']:.3f})",
                     f"{s['median_s']:.3f} s ({s['p90_s']:.3f})", f"{r['total_s']:.2f} s for {r['frames']}"))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"{args.model}, {results.get('frame')}, {frames} x {args.exposure} s, BLOB "
          f"{results['off']['blob_bytes'] / 1e6:.1f} MB, pyindi-client")
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, width, strict=True)))
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.out / f"indi_fast_exposure-{stamp}.json").write_text(text)
    (args.out / "indi_fast_exposure-latest.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
