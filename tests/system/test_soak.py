"""The short soak (about 60 s, part of the default run): ``bench/soak.py --seconds 55``.

Eight pollers, two ImageBytes and one JSON downloader of full ASI294MC Pro frames, an INDI client
exposing, connect/disconnect cycles over Alpaca and INDI, and seeded random unplug/replug, against
one ``zwo-alpaca serve``. Asserts what the issue asks of it: no unexpected error kinds, no
unanswered request, RSS growth under 50 MB (lowest at-rest RSS of the last stretch of cycles
against the first, after the warm-up), threads back to their baseline, no camera handle left after
the server's exit. The long version and its latest figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from support.servers import REPO

SECONDS = 55


def test_short_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--seconds", str(SECONDS), "--seed", "7",
                           "--json", str(out), "--quiet"], cwd=str(REPO), capture_output=True, text=True, timeout=150)
    took = time.monotonic() - t0
    assert out.exists(), proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    report = proc.stdout + json.dumps({k: res[k] for k in ("errors", "error_examples", "verdict")}, indent=1)
    assert took < SECONDS + 15, f"the soak took {took:.0f} s"
    assert not res["unexpected_errors"], report
    assert not [k for k in res["errors"] if k.startswith("unanswered")], report
    assert res["rss_mb"]["growth"] < 50, report
    assert sum(res["threads"]["non_pool_end"].values()) == sum(res["threads"]["non_pool_after_warmup"].values()), \
        res["threads"]
    assert res["open_handles"]["after_shutdown"] == 0
    assert res["shutdown"] == {"exit_status": 0, "seconds": res["shutdown"]["seconds"]}
    assert res["shutdown"]["seconds"] < 2.0
    assert res["server_log"]["tracebacks"] == 0, res["server_log"]["first_problems"]
    ex = res["exposures"]
    assert min(ex["alpaca_imaging"], ex["indi_imaging"], ex["connect_cycles_alpaca"], ex["connect_cycles_indi"]) > 5, ex
    assert res["downloads"]["imagebytes"] > 10 and res["downloads"]["json"] > 5, res["downloads"]
    assert sum(res["unplugs"].values()) >= 3, res["unplugs"]  # the faults really happened
    assert res["poll_latency_ms"]["n"] > 1000 and res["poll_latency_ms"]["p99"] < 500, res["poll_latency_ms"]
    assert res["verdict"]["ok"], report
    assert proc.returncode == 0, report
