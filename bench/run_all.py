#!/usr/bin/env python3
"""Run every benchmark of issue 6 and print one combined table.

Each benchmark runs in its own process (one server at a time, so they do not disturb each other),
writes bench/results/<name>.json, and is then read back here:

  alpaca_image     (a) ImageBytes rate / raw TCP and time to first byte, (b) JSON / orjson bare and
                   memory, (c) memory during ImageBytes
  alpaca_poll      (d) polling latency, alone and while full frames download
  alpaca_exposure  (e) exposure overhead over the modelled readout, (f) teardown and connect cycles
  http_stacks      HTTP stack comparison on this workload (aiohttp vs a bare asyncio.Protocol, and
                   uvicorn+starlette / uvloop when installed)
  encoders         JSON, FITS and base64 encoders compared
  transpose        the per-frame transpose: compiled kernels vs numpy vs memcpy
  indi_blob        the INDI BLOB comparison with libindi (bench/indi_blob.py, owned by the INDI side;
                   run only if present)

Usage: .venv/bin/python bench/run_all.py [--quick] [--only NAME[,NAME...]] [--skip NAME[,NAME...]]
``--quick`` uses fewer repetitions (for a smoke run). Writes bench/results/run_all.json and
bench/results/run_all.md (the combined table, as pasted into docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, REPO, RESULTS, format_grid, machine

BENCH = REPO / "bench"

# name -> (script, full arguments, quick arguments, time limit in seconds)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], float]] = {
    "alpaca_image": ("alpaca_image.py", ["--reps", "7", "--json-reps", "3"], ["--reps", "3", "--json-reps", "1"], 900),
    "alpaca_poll": ("alpaca_poll.py", ["--downloads", "8"], ["--downloads", "4"], 600),
    "alpaca_exposure": ("alpaca_exposure.py", ["--reps", "10", "--cycles", "1000"], ["--reps", "5", "--cycles", "200"],
                        600),
    "http_stacks": ("http_stacks.py", ["--rounds", "3"], ["--rounds", "1"], 1200),
    "encoders": ("encoders.py", ["--reps", "3"], ["--reps", "1"], 600),
    "transpose": ("transpose.py", ["--reps", "7"], ["--reps", "2"], 300),
    "indi_blob": ("indi_blob.py", ["--reps", "5"], ["--reps", "2"], 1200),
}


def run_one(name: str, quick: bool) -> dict:
    script, full, fast, limit = BENCHMARKS[name]
    path = BENCH / script
    if not path.exists():
        return {"name": name, "status": "absent"}
    cmd = [PYTHON, str(path), *(fast if quick else full)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(REPO))
    rc: int | str
    try:
        rc = proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        rc = "timeout"
    elapsed = time.monotonic() - t0
    result_file = RESULTS / (f"{name}-latest.json" if name == "indi_blob" else f"{name}.json")
    doc = None
    if result_file.exists() and result_file.stat().st_mtime >= time.time() - elapsed - 5:
        doc = json.loads(result_file.read_text())
    return {"name": name, "status": "ok" if rc == 0 and doc else f"failed ({rc})", "seconds": elapsed,
            "command": ".venv/bin/python " + os.path.relpath(path, REPO) + " " + " ".join(fast if quick else full),
            "doc": doc}


def indi_rows(doc: dict) -> list[list[str]]:
    """Rows for the combined table from indi_blob's own JSON layout."""
    rows = []
    servers = doc.get("servers", {})
    ours = servers.get("zwo-alpaca", {})
    lib = servers.get("libindi", {})
    ratio = doc.get("ratio_vs_libindi")
    if ratio is not None:
        rows.append(["indi_blob", "INDI FITS BLOB rate / libindi indi_simulator_ccd",
                     f"{ratio:.2f}x ({ours.get('rate_MBps_median', 0):.0f} vs "
                     f"{lib.get('rate_MBps_median', 0):.0f} MB/s)",
                     ">= 1.0x", "PASS" if ratio >= 1.0 else "FAIL"])
    elif ours:
        rows.append(["indi_blob", "INDI FITS BLOB rate (libindi not measured)",
                     f"{ours.get('rate_MBps_median', 0):.0f} MB/s", ">= 1.0x libindi", ""])
    if "alpaca_poll_ms_p99" in ours:
        p99 = ours["alpaca_poll_ms_p99"]
        rows.append(["indi_blob", "Alpaca poll p99 during INDI BLOB transfers", f"{p99:.1f} ms", "< 20 ms",
                     "PASS" if p99 < 20 else "FAIL"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    names = [n for n in BENCHMARKS if (not args.only or n in args.only.split(",")) and n not in args.skip.split(",")]
    runs = [run_one(n, args.quick) for n in names]

    grid: list[list[str]] = []
    extra: list[str] = []
    for r in runs:
        doc = r.get("doc")
        if r["status"] == "absent":
            grid.append([r["name"], "(script not present)", "", "", ""])
            continue
        if not doc:
            grid.append([r["name"], f"benchmark {r['status']}", "", "", "FAIL"])
            continue
        if r["name"] == "indi_blob":
            grid += indi_rows(doc)
            continue
        for row in doc.get("rows", []):
            ok = row.get("ok")
            grid.append([r["name"], row["name"], row["value"], row.get("target", ""),
                         "" if ok is None else ("PASS" if ok else "FAIL")])
        for t in doc.get("tables", []):
            extra.append(format_grid(t["columns"], t["rows"], f"{r['name']}: {t['title']}"))
    cols = ["bench", "measurement", "value", "target", "ok"]
    head = (f"Measured {datetime.now().isoformat(timespec='minutes')} on {machine()['cpus']} CPUs, Python "
            f"{machine()['python']}, numpy {machine()['numpy']}: "
            f"`.venv/bin/python bench/run_all.py{' --quick' if args.quick else ''}` "
            f"(medians of repeated, interleaved measurements; references in the same run)")
    text = "\n\n".join([head, format_grid(cols, grid)] + extra)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run_all.md").write_text(text + "\n")
    summary = {"time": datetime.now().isoformat(timespec="seconds"), "machine": machine(), "quick": args.quick,
               "runs": [{k: v for k, v in r.items() if k != "doc"} for r in runs], "table": grid}
    (RESULTS / "run_all.json").write_text(json.dumps(summary, indent=2))
    failed = [r["name"] for r in runs if r["status"] not in ("ok", "absent")]
    if failed:
        print(f"\nbenchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
