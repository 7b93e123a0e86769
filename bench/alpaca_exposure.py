#!/usr/bin/env python3
"""Exposure overhead and teardown: (e) and (f) of issue 6, on the product server with a simulated
ASI6200MM Pro (full frame, RAW16).

(e) A 0.001 s exposure: time from sending StartExposure to the first ImageReady=true (polled every
    ``--poll-ms``), minus the simulator's modelled readout for that frame (docs/simulator.md, "Timing
    model": bytes / (380 MB/s x BandWidth/100 x (2 if HighSpeedMode)); computed here by the
    simulator's own ``readout_time`` at the server's settings) and minus the exposure time.
    Target: overhead <= 50 ms. The polling interval is part of what is measured (half of it on average).
(f) Connected=false during an exposure (5 s, and during readout) returns in < 1 s; then ``--cycles``
    Connected true/false cycles: the rate (target >= 20 cycles/s) and leaks - server RSS, threads and
    open file descriptors before and after, and the simulator's open handles (``sim.record`` action).

Usage: .venv/bin/python bench/alpaca_exposure.py [--reps 10] [--cycles 1000]
Writes bench/results/alpaca_exposure.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import FRAME_BYTES, MODEL, Alpaca, Result, median, proc_status, start_server


def modelled_readout(bandwidth: int | None = None, high_speed: bool = False) -> dict:
    """The simulator's modelled readout of a full RAW16 frame of MODEL, from its own code.

    ``bandwidth`` None: the control's default (what the server uses unless configured otherwise).
    """
    from driver.simulator import camera as simcam  # noqa: PLC0415
    from driver.simulator import catalog  # noqa: PLC0415

    model = catalog.lookup(MODEL)
    bw_default = None
    for spec in getattr(model, "controls", ()) or ():
        if getattr(spec, "name", "") == "BandWidth":
            bw_default = int(getattr(spec, "default", 50))
    if bw_default is None:  # catalog shape changed: docs/simulator.md says BandWidth 40-100, default 50
        bw_default = 50
    bw = bandwidth if bandwidth is not None else bw_default
    peak = simcam.USB3_PEAK_BYTES_S if getattr(model, "usb3", True) else simcam.USB2_PEAK_BYTES_S
    rate = peak * bw / 100.0 * (getattr(simcam, "HIGH_SPEED_FACTOR", 2.0) if high_speed else 1.0)
    return {"bytes": FRAME_BYTES, "bandwidth": bw, "high_speed": high_speed, "rate_Bps": rate,
            "readout_s": FRAME_BYTES / rate}


def server_readout(cam: Alpaca) -> float | None:
    """The readout time the server's simulated camera reports (``sim.camera_state``), if available."""
    try:
        state = json.loads(cam.put("action", Action="sim.camera_state", Parameters=""))
        return float(state["readout_s"])
    except Exception:  # noqa: BLE001 - older servers only have sim.record
        return None


def sim_record(cam: Alpaca) -> dict:
    """The simulator's record for this camera (``sim.record`` action)."""
    return json.loads(cam.put("action", Action="sim.record", Parameters=""))


# Thread-pool workers are named <pool>_<n> and start lazily up to their pool's fixed maximum, so a
# worker first needed during the cycles is not a leak; every other thread must be back to its count.
POOL_RE = re.compile(r"^(.*)_\d+$")


def non_pool_threads(cam: Alpaca) -> list[str]:
    """The server's thread names that are not thread-pool workers (``sim.threads`` action)."""
    names = json.loads(cam.put("action", Action="sim.threads", Parameters=""))
    return sorted(re.sub(r"Thread-\d+", "Thread-N", n) for n in names if not POOL_RE.match(n))


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def exposure_overhead(cam: Alpaca, reps: int, poll_s: float, readout: float) -> dict:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        cam.put("startexposure", Duration=0.001, Light="true")
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline:
            if cam.get("imageready"):
                ready = time.perf_counter() - t0
                break
            time.sleep(poll_s)
        if ready is None:
            raise TimeoutError("ImageReady never became true")
        out.append(ready)
        time.sleep(0.05)
    over = [t - readout - 0.001 for t in out]
    return {"ready_s": out, "overhead_s": over, "overhead_median_s": median(over), "overhead_max_s": max(over)}


def disconnect_mid(cam: Alpaca, duration: float, after: float, reps: int) -> list[float]:
    """Connected=false ``after`` s into a ``duration`` s exposure; seconds the PUT took."""
    times = []
    for _ in range(reps):
        cam.put("connected", Connected="true")
        cam.put("startexposure", Duration=duration, Light="true")
        time.sleep(after)
        t0 = time.perf_counter()
        cam.put("connected", Connected="false")
        times.append(time.perf_counter() - t0)
    cam.put("connected", Connected="true")
    return times


def cycles(cam: Alpaca, pid: int, n: int, max_seconds: float) -> dict:
    cam.put("connected", Connected="false")
    for _ in range(20):  # warm-up: first-use allocations are not leaks
        cam.put("connected", Connected="true")
        cam.put("connected", Connected="false")
    time.sleep(0.5)
    before = {**proc_status(pid), "fds": fd_count(pid), "open_handles": sim_record(cam).get("open_handles"),
              "non_pool_threads": non_pool_threads(cam)}
    t0 = time.perf_counter()
    done = 0
    deadline = time.monotonic() + max_seconds
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        cam.put("connected", Connected="true")
        cam.put("connected", Connected="false")
        done += 1
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # let daemon threads finish exiting
    after = {**proc_status(pid), "fds": fd_count(pid), "open_handles": sim_record(cam).get("open_handles"),
             "non_pool_threads": non_pool_threads(cam)}
    cam.put("connected", Connected="true")
    return {"cycles": done, "seconds": elapsed, "rate": done / elapsed, "before": before, "after": after}


def run(reps: int, n_cycles: int, poll_ms: float) -> Result:
    res = Result("alpaca_exposure")
    model = modelled_readout()
    server = start_server()
    data: dict = {"model": model}
    try:
        cam = Alpaca(server.port)
        cam.put("connected", Connected="true")
        cam.put("readoutmode", ReadoutMode=0)
        cam.expose_and_wait()  # warm-up (noise pools, buffers)
        reported = server_readout(cam)
        data["server_readout_s"] = reported
        readout = reported if reported is not None else model["readout_s"]
        data["readout_used_s"] = readout
        data["exposure"] = exposure_overhead(cam, reps, poll_ms / 1000.0, readout)
        data["disconnect_exposing_s"] = disconnect_mid(cam, 5.0, 0.3, 5)
        data["disconnect_reading_s"] = disconnect_mid(cam, 0.001, readout / 2, 5)
        data["cycles"] = cycles(cam, server.pid, n_cycles, 120.0)
        cam.close()
    finally:
        server.stop()
    e = data["exposure"]
    res.add("modelled readout, full RAW16 frame", f"{readout * 1e3:.0f} ms",
            note=f"BandWidth {model['bandwidth']}" + ("; reported by sim.camera_state" if reported is not None
                                                       else "; from the simulator's model"))
    res.add("(e) 0.001 s exposure -> ImageReady, minus modelled readout",
            f"{e['overhead_median_s'] * 1e3:.0f} ms (max {e['overhead_max_s'] * 1e3:.0f})", "<= 50 ms",
            e["overhead_median_s"] <= 0.05, f"median of {reps}; ImageReady polled every {poll_ms:g} ms")
    d1, d2 = data["disconnect_exposing_s"], data["disconnect_reading_s"]
    res.add("(f) Connected=false mid-exposure", f"{max(d1) * 1e3:.0f} ms max (median {median(d1) * 1e3:.0f})",
            "< 1 s", max(d1) < 1.0, "5 s exposure, 0.3 s in")
    res.add("(f) Connected=false during readout", f"{max(d2) * 1e3:.0f} ms max (median {median(d2) * 1e3:.0f})",
            "< 1 s", max(d2) < 1.0)
    c = data["cycles"]
    b, a = c["before"], c["after"]
    res.add(f"(f) connect/disconnect cycles ({c['cycles']})", f"{c['rate']:.1f} /s", ">= 20 /s", c["rate"] >= 20.0)
    leak_ok = len(a["non_pool_threads"]) <= len(b["non_pool_threads"]) and a["fds"] <= b["fds"] \
        and not a["open_handles"] and a["VmRSS"] - b["VmRSS"] < 16 * 1024 * 1024
    res.add("(f) leak check after the cycles",
            f"RSS {(a['VmRSS'] - b['VmRSS']) / 1e6:+.1f} MB, non-pool threads {len(b['non_pool_threads'])}->"
            f"{len(a['non_pool_threads'])} (all {b['Threads']}->{a['Threads']}), "
            f"fds {b['fds']}->{a['fds']}, open handles {a['open_handles']}", "no growth", leak_ok,
            "RSS allowance 16 MB (allocator noise); pool workers start lazily up to a fixed cap")
    res.data = data
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--poll-ms", type=float, default=1.0)
    args = ap.parse_args()
    res = run(max(1, min(args.reps, 100)), max(1, min(args.cycles, 10000)), max(0.0, args.poll_ms))
    path = res.write()
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
