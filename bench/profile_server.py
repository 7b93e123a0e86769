#!/usr/bin/env python3
"""Profile the product server under one workload with py-spy (sampling, native frames included).

Workloads (each bounded): ``first`` (0.001 s exposure -> ImageReady -> ImageBytes, the first
download overlapping the transpose), ``cached`` (ImageBytes of the same frame again and again),
``json`` (JSON ImageArray), ``poll`` (camerastate/imageready/devicestate back to back),
``connect`` (Connected true/false cycles).

Needs py-spy (``.venv/bin/pip install py-spy``; not a dependency of the product) and permission to
ptrace the child server (it is our own child). Prints the hottest frames by self time and by total
time per thread, and writes the collapsed stacks to bench/results/profile-<workload>.txt (open them
with any flame-graph tool, e.g. speedscope).

Usage: .venv/bin/python bench/profile_server.py first [--cycles 8] [--rate 400]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import FRAME_BYTES, RESULTS, Alpaca, H, Http, W, start_server

IMAGE = "/api/v1/camera/0/imagearray"
# A stack with one of these frames is a thread waiting, not working.
IDLE_MARKERS = ("PyThread_acquire_lock_timed", "epoll_wait", "SimpleQueue_get", "Condition.wait", "Event.wait",
                "time_sleep", "select_epoll_poll", "pysleep")


def workload(port: int, kind: str, cycles: int) -> None:
    cam = Alpaca(port)
    http = Http(port)
    buf = memoryview(bytearray(W * H * 7 + 4096 if kind == "json" else FRAME_BYTES + 4096))
    ib = {"Accept": "application/imagebytes"}
    deadline = time.monotonic() + 120
    for _ in range(cycles):
        if time.monotonic() > deadline:
            break
        if kind == "first":
            cam.expose_and_wait()
            http.download_into(IMAGE, buf, headers=ib)
        elif kind == "cached":
            http.download_into(IMAGE, buf, headers=ib)
        elif kind == "json":
            http.download_into(IMAGE, buf)
        elif kind == "poll":
            for j in range(500):
                cam.get(("camerastate", "imageready", "devicestate")[j % 3])
        elif kind == "connect":
            for _ in range(20):
                cam.put("connected", Connected="false")
                cam.put("connected", Connected="true")
    cam.close()
    http.close()


def summarise(collapsed: Path, top: int = 25) -> str:
    """Self and total sample counts per frame from py-spy's collapsed output (busy stacks only)."""
    self_counts: collections.Counter = collections.Counter()
    total_counts: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    n = idle = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        frames = stack.split(";")
        if any(m in f for f in frames for m in IDLE_MARKERS):
            idle += c
            continue
        n += c
        threads[frames[0]] += c
        self_counts[frames[-1]] += c
        for f in set(frames[1:]):
            total_counts[f] += c
    n = max(n, 1)
    out = [f"{n} busy samples ({idle} idle samples left out: waiting on a lock, queue, epoll or sleep)",
           "", "by thread:"]
    out += [f"  {c:6d} {100 * c / n:5.1f}%  {t}" for t, c in threads.most_common(10)]
    out += ["", "self time (top):"]
    out += [f"  {c:6d} {100 * c / n:5.1f}%  {f}" for f, c in self_counts.most_common(top)]
    out += ["", "total time (top):"]
    out += [f"  {c:6d} {100 * c / n:5.1f}%  {f}" for f, c in total_counts.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", choices=("first", "cached", "json", "poll", "connect"))
    ap.add_argument("--cycles", type=int, default=8)
    ap.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    server = start_server()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile-{args.workload}.txt"
    try:
        cam = Alpaca(server.port)
        cam.put("connected", Connected="true")
        cam.put("readoutmode", ReadoutMode=0)
        cam.expose_and_wait()
        Http(server.port).download_into(IMAGE, memoryview(bytearray(FRAME_BYTES + 4096)),
                                        headers={"Accept": "application/imagebytes"})
        cam.close()
        spy = subprocess.Popen([pyspy, "record", "--pid", str(server.pid), "--rate", str(args.rate), "--native",
                                "--threads", "--format", "raw", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        workload(server.port, args.workload, max(1, min(args.cycles, 100)))
        time.sleep(0.3)
        spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not out.exists():
            print(f"py-spy wrote nothing:\n{err}", file=sys.stderr)
            return 1
    finally:
        server.stop()
    print(summarise(out))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
