#!/usr/bin/env python3
"""Polling benchmark: how long CameraState / ImageReady / DeviceState take while full frames download.

(d) of issue 6. Scenarios, each on the product server with a simulated ASI6200MM Pro:

* ``idle``: one client polling back to back (target: p50 < 2 ms);
* ``imagebytes``: 8 poller threads (each its own keep-alive connection, one poll every
  ``--interval`` ms, round robin over the three members) while a child process downloads the full
  122 MB frame as ImageBytes back to back (target: p99 < 20 ms);
* ``expose+imagebytes``: the same while the child runs exposure -> ImageReady -> ImageBytes cycles
  (includes readout, the per-frame transpose and the first download);
* ``json``: the same during JSON ImageArray downloads (for information).

Only polls sent while a download was in flight count for the loaded scenarios (the child reports
its download windows; perf_counter is CLOCK_MONOTONIC, shared between processes).

Usage: .venv/bin/python bench/alpaca_poll.py [--threads 8] [--interval 5] [--downloads 8]
Writes bench/results/alpaca_poll.json.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Alpaca, Result, median, percentile, start_downloader, start_server

MEMBERS = ("camerastate", "imageready", "devicestate")


def poll_loop(port: int, stop: threading.Event, interval: float, out: list, max_polls: int, deadline: float) -> None:
    """Poll round robin until ``stop`` (bounded by ``max_polls`` and ``deadline``); append (t_send, latency)."""
    cam = Alpaca(port)
    try:
        for i in range(max_polls):
            if stop.is_set() or time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            cam.get(MEMBERS[i % len(MEMBERS)])
            out.append((t0, time.perf_counter() - t0))
            if interval:
                time.sleep(interval)
    finally:
        cam.close()


def loaded(port: int, mode: str, downloads: int, threads: int, interval: float, max_seconds: float) -> dict:
    """Pollers while a child downloads; latencies of polls sent during a download window."""
    samples: list[list] = [[] for _ in range(threads)]
    stop = threading.Event()
    deadline = time.monotonic() + max_seconds + 10
    workers = [threading.Thread(target=poll_loop, args=(port, stop, interval, samples[i], 1_000_000, deadline),
                                daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    time.sleep(0.2)
    child = start_downloader(port, mode, downloads, max_seconds)
    windows = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            _, t0, dt, nbytes = line.split()
            windows.append((float(t0), float(t0) + float(dt), int(nbytes)))
        child.wait(max_seconds + 10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        stop.set()
        for w in workers:
            w.join(5)
    during = []
    everything = []
    for s in samples:
        for t0, lat in s:
            everything.append(lat)
            if any(a <= t0 <= b for a, b, _ in windows):
                during.append(lat)
    return {
        "mode": mode, "threads": threads, "interval_s": interval, "downloads": len(windows),
        "download_s_median": median(b - a for a, b, _ in windows),
        "polls_during": len(during), "polls_total": len(everything),
        "p50_ms": percentile(during, 50) * 1e3, "p99_ms": percentile(during, 99) * 1e3,
        "max_ms": (max(during) if during else float("nan")) * 1e3,
    }


def idle(port: int, n: int) -> dict:
    """One client, back to back."""
    out: list = []
    poll_loop(port, threading.Event(), 0.0, out, n, time.monotonic() + 60)
    lat = [x[1] for x in out[50:]]  # skip connection warm-up
    return {"polls": len(lat), "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
            "max_ms": max(lat) * 1e3}


def run(threads: int, interval_ms: float, downloads: int) -> Result:
    res = Result("alpaca_poll")
    server = start_server()
    data: dict = {}
    try:
        cam = Alpaca(server.port)
        cam.put("connected", Connected="true")
        cam.put("readoutmode", ReadoutMode=0)
        cam.expose_and_wait()
        cam.close()
        iv = interval_ms / 1000.0
        data["idle"] = idle(server.port, 2000)
        data["imagebytes"] = loaded(server.port, "cached", downloads, threads, iv, 60)
        data["expose+imagebytes"] = loaded(server.port, "expose", max(2, downloads // 2), threads, iv, 60)
        data["json"] = loaded(server.port, "json", 2, threads, iv, 60)
        data["idle_after"] = idle(server.port, 1000)
    finally:
        server.stop()
    d = data["idle"]
    res.add("(d) single client, idle: p50", f"{d['p50_ms']:.2f} ms", "< 2 ms", d["p50_ms"] < 2.0,
            f"p99 {d['p99_ms']:.2f} ms, {d['polls']} polls")
    for key, label, target in (("imagebytes", "ImageBytes downloads", True),
                               ("expose+imagebytes", "exposure + ImageBytes cycles", True),
                               ("json", "JSON downloads", False)):
        d = data[key]
        res.add(f"(d) {threads} pollers during {label}: p99", f"{d['p99_ms']:.1f} ms",
                "< 20 ms" if target else "(info)", (d["p99_ms"] < 20.0) if target else None,
                f"p50 {d['p50_ms']:.2f}, max {d['max_ms']:.0f} ms; {d['polls_during']} polls in {d['downloads']} "
                f"downloads of {d['download_s_median'] * 1e3:.0f} ms")
    data["config"] = {"threads": threads, "interval_ms": interval_ms, "members": MEMBERS}
    res.data = data
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--interval", type=float, default=5.0, help="ms between one thread's polls (default 5)")
    ap.add_argument("--downloads", type=int, default=8)
    args = ap.parse_args()
    res = run(max(1, min(args.threads, 64)), max(0.0, args.interval), max(2, min(args.downloads, 100)))
    path = res.write()
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
