#!/usr/bin/env python3
"""ImageArray benchmark: a full ASI6200MM Pro frame (9576x6388, RAW16, 122 MB) from the product server.

Measured against references taken in the same run, interleaved rep by rep (the machine is shared):

* raw loopback TCP: a separate process ``sendall``s a 122 MB buffer, we ``recv_into`` a preallocated one;
* memcpy: numpy copy of the same bytes;
* orjson bare: ``orjson.dumps(frame_T, OPT_SERIALIZE_NUMPY)`` of the very array the server served
  (width-major, C-contiguous), in this process.

Per rep: a 0.001 s exposure, then
  (a) ImageBytes right after ImageReady (time to first byte includes finishing the per-frame transpose)
      and again (cached), as a rate relative to raw TCP;
  (c) server peak RSS growth during each ImageBytes download;
  (b) the same frame as JSON (time request -> last byte, relative to orjson bare) and the server's
      peak RSS growth relative to (JSON text + one frame).

Usage: .venv/bin/python bench/alpaca_image.py [--reps 5] [--json-reps 3]
Writes bench/results/alpaca_image.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    FRAME_BYTES,
    Alpaca,
    H,
    Http,
    PeakRss,
    Result,
    TcpReference,
    W,
    median,
    memcpy_rate,
    start_server,
)

IMAGE = "/api/v1/camera/0/imagearray"
IB = {"Accept": "application/imagebytes"}


def run(reps: int, json_reps: int) -> Result:
    res = Result("alpaca_image")
    mem = memcpy_rate()
    tcp = TcpReference(FRAME_BYTES)
    server = start_server()
    ib_buf = memoryview(bytearray(FRAME_BYTES + 4096))
    json_buf = memoryview(bytearray(W * H * 7 + 4096))
    reps_data = []
    try:
        cam = Alpaca(server.port)
        cam.put("connected", Connected="true")
        cam.put("readoutmode", ReadoutMode=0)  # RAW16
        http = Http(server.port)
        # Warm-up: the first frame in a process builds the simulator's noise pools and allocates the
        # prepared-image buffer; not what a session of exposures sees.
        cam.expose_and_wait()
        http.download_into(IMAGE, ib_buf, headers=IB)
        for i in range(reps):
            rep: dict = {}
            rep["tcp_s"] = tcp.transfer()
            rep["ready_s"] = cam.expose_and_wait()
            with PeakRss(server.pid) as pk:
                r = http.download_into(IMAGE, ib_buf, headers=IB)
            assert r["status"] == 200 and r["content_type"] == "application/imagebytes", r
            rep["ib_first"] = {"ttfb_s": r["t_first"], "first_mb_s": r["t_first_mb"], "total_s": r["t_total"],
                               "bytes": r["nbytes"],
                               "rss_growth": pk.growth, "hwm_reset": pk.hwm_reset}
            with PeakRss(server.pid) as pk:
                r = http.download_into(IMAGE, ib_buf, headers=IB)
            rep["ib_cached"] = {"ttfb_s": r["t_first"], "first_mb_s": r["t_first_mb"], "total_s": r["t_total"],
                                "bytes": r["nbytes"],
                                "rss_growth": pk.growth}
            rep["tcp2_s"] = tcp.transfer()
            meta = np.frombuffer(ib_buf[:44], dtype="<i4")
            assert (meta[8], meta[9]) == (W, H), meta
            if i < json_reps:
                with PeakRss(server.pid) as pk:
                    r = http.download_into(IMAGE, json_buf)
                assert r["status"] == 200 and r["content_type"].startswith("application/json"), r
                arr = np.frombuffer(ib_buf, dtype="<u2", count=W * H, offset=44).reshape(W, H)
                t0 = time.perf_counter()
                bare = orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)
                bare_s = time.perf_counter() - t0
                text_len = len(bare)
                del bare
                rep["json"] = {"ttfb_s": r["t_first"], "total_s": r["t_total"], "bytes": r["nbytes"],
                               "rss_growth": pk.growth, "orjson_bare_s": bare_s, "value_text_bytes": text_len}
            reps_data.append(rep)
            print(f"rep {i + 1}/{reps}: tcp {rep['tcp_s'] * 1e3:.0f} ms, ImageBytes first "
                  f"{rep['ib_first']['total_s'] * 1e3:.0f} ms (ttfb {rep['ib_first']['ttfb_s'] * 1e3:.1f}), cached "
                  f"{rep['ib_cached']['total_s'] * 1e3:.0f} ms"
                  + (f", JSON {rep['json']['total_s'] * 1e3:.0f} ms vs bare {rep['json']['orjson_bare_s'] * 1e3:.0f} ms"
                     if "json" in rep else ""), flush=True)
        cam.close()
        http.close()
    finally:
        server.stop()
        tcp.close()

    # Ratios per rep (each against the TCP transfers around it), then medians.
    def tcp_of(rep: dict) -> float:
        return (rep["tcp_s"] + rep["tcp2_s"]) / 2

    tcp_rate = median(FRAME_BYTES / tcp_of(r) / 1e6 for r in reps_data)
    first_ratio = median(tcp_of(r) / r["ib_first"]["total_s"] for r in reps_data)
    cached_ratio = median(tcp_of(r) / r["ib_cached"]["total_s"] for r in reps_data)
    first_rate = median(FRAME_BYTES / r["ib_first"]["total_s"] / 1e6 for r in reps_data)
    cached_rate = median(FRAME_BYTES / r["ib_cached"]["total_s"] / 1e6 for r in reps_data)
    ttfb_first = median(r["ib_first"]["ttfb_s"] for r in reps_data)
    ttfb_first_max = max(r["ib_first"]["ttfb_s"] for r in reps_data)
    mb_first = median(r["ib_first"]["first_mb_s"] for r in reps_data)
    mb_first_max = max(r["ib_first"]["first_mb_s"] for r in reps_data)
    ttfb_cached = median(r["ib_cached"]["ttfb_s"] for r in reps_data)
    ib_growth = max(max(r["ib_first"]["rss_growth"], r["ib_cached"]["rss_growth"]) for r in reps_data)
    js = [r["json"] for r in reps_data if "json" in r]
    json_ratio = median(j["total_s"] / j["orjson_bare_s"] for j in js)
    json_s = median(j["total_s"] for j in js)
    bare_s = median(j["orjson_bare_s"] for j in js)
    json_ttfb = median(j["ttfb_s"] for j in js)
    json_growth = max(j["rss_growth"] for j in js)
    json_budget = max(j["bytes"] for j in js) + FRAME_BYTES

    res.add("raw loopback TCP, 122 MB", f"{tcp_rate:.0f} MB/s", note="reference, same run")
    res.add("memcpy (numpy copy), 122 MB", f"{mem['MBps']:.0f} MB/s", note="reference, same run")
    res.add("orjson bare, transposed frame", f"{bare_s * 1e3:.0f} ms",
            note=f"reference; {js[0]['value_text_bytes'] / 1e6:.0f} MB text")
    res.add("(a) ImageBytes first download / raw TCP", f"{first_ratio:.2f}x ({first_rate:.0f} MB/s)", ">= 0.6x",
            first_ratio >= 0.6, "request right after ImageReady")
    res.add("(a) ImageBytes cached download / raw TCP", f"{cached_ratio:.2f}x ({cached_rate:.0f} MB/s)", ">= 0.6x",
            cached_ratio >= 0.6, "second client, same frame")
    res.add("(a) ImageBytes TTFB, right after ImageReady",
            f"{ttfb_first * 1e3:.1f} ms (max {ttfb_first_max * 1e3:.1f})",
            "< 50 ms", ttfb_first < 0.05, "median (max) over reps")
    res.add("(a) ImageBytes first MiB of pixels, right after ImageReady",
            f"{mb_first * 1e3:.1f} ms (max {mb_first_max * 1e3:.1f})", "< 50 ms", mb_first < 0.05,
            "the stricter reading of TTFB")
    res.add("(a) ImageBytes TTFB, cached", f"{ttfb_cached * 1e3:.1f} ms", "< 50 ms", ttfb_cached < 0.05)
    res.add("(b) JSON ImageArray / orjson bare", f"{json_ratio:.2f}x ({json_s * 1e3:.0f} vs {bare_s * 1e3:.0f} ms)",
            "<= 2x", json_ratio <= 2.0, f"ttfb {json_ttfb * 1e3:.0f} ms; {js[0]['bytes'] / 1e6:.0f} MB")
    res.add("(b) JSON server peak RSS growth", f"{json_growth / 1e6:.0f} MB",
            f"<= {json_budget / 1e6:.0f} MB (text+frame)",
            json_growth <= json_budget)
    res.add("(c) ImageBytes server peak RSS growth", f"{ib_growth / 1e6:.0f} MB ({ib_growth / FRAME_BYTES:.2f}x frame)",
            "<= 1.5x frame", ib_growth <= 1.5 * FRAME_BYTES, "max over reps")
    res.data = {"frame": f"{W}x{H} uint16", "frame_bytes": FRAME_BYTES, "reps": reps_data, "memcpy": mem,
                "summary": {"tcp_MBps": tcp_rate, "imagebytes_first_ratio": first_ratio,
                            "imagebytes_cached_ratio": cached_ratio, "ttfb_first_s": ttfb_first,
                            "ttfb_cached_s": ttfb_cached, "first_mb_first_s": mb_first, "json_ratio": json_ratio,
                            "json_s": json_s,
                            "orjson_bare_s": bare_s, "json_rss_growth": json_growth,
                            "imagebytes_rss_growth": ib_growth}}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json-reps", type=int, default=3)
    args = ap.parse_args()
    res = run(max(1, min(args.reps, 50)), max(1, min(args.json_reps, args.reps, 20)))
    path = res.write()
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
