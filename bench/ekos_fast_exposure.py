#!/usr/bin/env python3
"""The time between frames when the real KStars/Ekos 3.6 captures a sequence from our server, with
INDI's *fast exposure* (``CCD_FAST_TOGGLE``) off and on, for a mono and a colour camera.

What Ekos 3.6.2 does (read in its source, ``kstars/indi/indicamera.cpp`` and
``kstars/ekos/capture/capture.cpp``): Ekos has no fast-exposure option of its own; it follows the
camera's ``CCD_FAST_TOGGLE`` (``Camera::m_FastExposureEnabled`` is set from every definition and
update of that switch), and when it is on, ``Capture::captureOne`` sets ``CCD_FAST_COUNT`` to the
frames left in the job before its one ``CCD_EXPOSURE``; after each image it only counts, saves and
waits for the next one the driver sends (``setCaptureComplete``: "Continue capturing seamlessly").
The user switches it on in the INDI Control Panel (camera, Options tab, "Fast Exposure"); here that
is libindi's ``indi_setprop`` on our INDI port.

Per model (default ``asi2600mm-pro`` mono 6248x4176, ``asi294mc-pro`` colour 4144x2822): our server
``zwo-alpaca serve --simulator MODEL``; one headless KStars (tests/support/kstars.py) with a *Mode:
Remote* profile; for each round, fast exposure off, then on (the order alternates between rounds),
Ekos' Capture runs one job of ``--frames`` full-frame ``--exposure`` s lights (FITS, Upload: Client).
Measured per job:

* ``ekos_gap_s``: between Ekos' own "Received image k out of N." lines, timed to the millisecond in
  KStars' log (Qt's ``QT_MESSAGE_PATTERN`` with ``%{time process}``);
* ``dateobs_gap_s``: between the distinct ``DATE-OBS`` (exposure start, written by our server) of
  the FITS files Ekos saved, in order (a frame Ekos lost shows as a gap of two periods);
* ``repeats``: files that repeat another's ``DATE-OBS`` (see ``run_job``);
* ``download_s``: Ekos' "Download Time" lines;
* ``fast_count_max``: the largest ``CCD_FAST_COUNT`` our server published during the job (a raw INDI
  socket watching), so "on" is shown to be Ekos' series and "off" one exposure at a time.

Usage:  .venv/bin/python bench/ekos_fast_exposure.py [--frames 8] [--rounds 2] [--exposure 0.5] [--models a,b]
        [--frame WxH] [--server libindi]   (libindi: the same jobs from indi_simulator_ccd, as a control)
Needs scripts/bootstrap-kstars and Debian's indi-bin (indi_setprop). Not a pass/fail test: prints a
table and writes bench/results/ekos_fast_exposure.json (``-WxH`` appended with ``--frame WxH``, a
subframe). KStars is heavy: it runs niced, one instance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ekos_download
from astropy.io import fits

from _common import REPO, Result, free_port, median
from support.indi_client import RawIndi
from support.kstars import CAPTURE, DEBUG_LOG_RULES, TIMED_LOG_PATTERN, KStars, missing_tools, sequence_file
from support.servers import start_server, stop_process

DOWNLOAD = re.compile(r"Download Time: ([0-9.]+) s")
FAST_COUNT = re.compile(rb"<(?:set|def)NumberVector[^>]*name=[\"']CCD_FAST_COUNT[\"'][^>]*>\s*"
                        rb"<(?:one|def)Number[^>]*name=[\"']FRAMES[\"'][^>]*>\s*([0-9.eE+-]+)")


@dataclass(frozen=True)
class Model:
    key: str
    device: str
    width: int
    height: int


MODELS = {
    "asi2600mm-pro": Model("asi2600mm-pro", "ZWO CCD ASI2600MM Pro", 6248, 4176),
    "asi294mc-pro": Model("asi294mc-pro", "ZWO CCD ASI294MC Pro", 4144, 2822),
    "asi120mm-mini": Model("asi120mm-mini", "ZWO CCD ASI120MM Mini", 1280, 960),
}


def set_fast_exposure(port: int, device: str, on: bool) -> None:
    """Switch ``CCD_FAST_TOGGLE`` as the INDI Control Panel would (libindi's indi_setprop)."""
    member = "INDI_ENABLED" if on else "INDI_DISABLED"
    subprocess.run(["indi_setprop", "-p", str(port), "-t", "5", f"{device}.CCD_FAST_TOGGLE.{member}=On"],
                   check=True, timeout=20, capture_output=True)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


def run_job(ks: KStars, port: int, model: Model, fast: bool, frames: int, exposure: float,
            work: Path, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """One Capture job of ``frames`` frames with fast exposure ``fast``; the times between frames."""
    set_fast_exposure(port, model.device, fast)
    time.sleep(1.0)  # Ekos reads the toggle from the switch's update; let it arrive before the job
    frames_dir = Path(tempfile.mkdtemp(prefix=f"frames-{'on' if fast else 'off'}-", dir=work))
    seq = sequence_file(work / "job.esq", frames_dir, exposure=exposure, count=frames,
                        width=(size or (model.width, model.height))[0], height=(size or (model.width, model.height))[1])
    watch = RawIndi(port)
    watch.send('<getProperties version="1.7"/>')
    seen_before = len(ks.timed_log("Received image "))
    downloads_before = len(DOWNLOAD.findall(ks.module_log("Capture")))
    t0 = time.monotonic()
    error = ""
    try:
        ks.run_sequence(seq, frames, 60 + frames * (exposure + 15))
    except RuntimeError as e:  # e.g. libindi refusing the series: "Rapid exposure not possible ..."
        error = str(e)
        driver_errors = [line for _, line in ks.timed_log("[ERROR]") if "Rapid exposure" in line
                         or "fast exposure" in line]
        error += "; " + " | ".join(driver_errors[-1:])
        ks.qdbus(CAPTURE, "abort", check=False)
    finally:
        watch.close()
    elapsed = time.monotonic() - t0
    received = [t for t, _ in ks.timed_log("Received image ")[seen_before:]]
    counts = [float(v) for v in FAST_COUNT.findall(watch.text())]
    log = ks.module_log("Capture")
    # Newest first in Ekos' log; with fast exposure Ekos times only the frames it asked for itself.
    downloads = [float(v) for v in reversed(DOWNLOAD.findall(log))][downloads_before:]
    starts = []
    for f in sorted(frames_dir.rglob("*.fits")):
        with fits.open(f) as hdul:
            starts.append(dt.datetime.fromisoformat(hdul[0].header["DATE-OBS"]))
        if os.environ.get("EKOS_FAST_KEEP") is None:
            f.unlink()  # tens of MB each
    starts.sort()
    # KStars 3.6.2 hands each BLOB from its BLOB thread to its main thread as a pointer into the one
    # buffer libindi's client reuses: when Ekos is slower than the frame period, several "received"
    # images are the same (the latest) one and the frames in between are lost. Count them.
    repeats = len(starts) - len(set(starts))
    return {"fast": fast, "frames": frames, "job_s": round(elapsed, 2), "files": len(starts), "repeats": repeats,
            "ekos_gap_s": gaps(received),
            "dateobs_gap_s": gaps([(s - starts[0]).total_seconds() for s in sorted(set(starts))]),
            "download_s": downloads, "fast_count_max": max(counts, default=None), "error": error}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="asi2600mm-pro,asi294mc-pro")
    ap.add_argument("--frames", type=int, default=8, help="frames per job (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of off+on; the order alternates (default 2)")
    ap.add_argument("--exposure", type=float, default=0.5)
    ap.add_argument("--frame", default="", help="WxH subframe (default: the full sensor)")
    ap.add_argument("--server", choices=("zwo-alpaca", "libindi"), default="zwo-alpaca",
                    help="libindi: indiserver indi_simulator_ccd set to the model's frame, the control")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.frame.lower().split("x")) if args.frame else None
    missing = missing_tools() + [t for t in ("indi_setprop",) if not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} (run scripts/bootstrap-kstars; indi-bin)", file=sys.stderr)
        return 2
    os.nice(5)  # KStars and its children inherit it

    res = Result("ekos_fast_exposure" + (f"-{args.frame}" if args.frame else "")
                 + ("-libindi" if args.server == "libindi" else ""))
    rows: list[list[str]] = []
    for key in args.models.split(","):
        model = MODELS[key]
        work = Path(tempfile.mkdtemp(prefix=f"ekos-fast-{key}-"))
        sim: subprocess.Popen | None = None
        if args.server == "libindi":
            sim, port = ekos_download.start_libindi(ekos_download.MODELS[key], work)
            model = Model(key, ekos_download.SIM_DEVICE, model.width, model.height)
        else:
            port = free_port()
            server = start_server(work / "server", "--indi-port", str(port), simulator=key, log_level=None)
        ks = KStars(work / "kstars", extra_env={"QT_LOGGING_RULES": DEBUG_LOG_RULES,
                                                "QT_MESSAGE_PATTERN": TIMED_LOG_PATTERN})
        (work / "kstars").mkdir()
        jobs: list[dict[str, Any]] = []
        try:
            ks.start()
            ks.add_remote_profile("bench", "127.0.0.1", port, ccd_label="ZWO CCD" if sim is None else model.device)
            ks.open_ekos("bench")
            ks.start_ekos("bench", "127.0.0.1", port)
            ks.wait_for(lambda: ks.module_property("Capture", "camera") == model.device, 60,
                        f"Capture selecting {model.device!r}")
            if sim is not None:  # again once connected: the connect may load the driver's saved config
                ekos_download.set_simulator(port, ekos_download.MODELS[key])
            for rnd in range(args.rounds):
                for fast in ((False, True) if rnd % 2 == 0 else (True, False)):
                    r = run_job(ks, port, model, fast, args.frames, args.exposure, work, size)  # type: ignore[arg-type]
                    print(f"{key} round {rnd + 1} fast={'on' if fast else 'off'}: {r}", flush=True)
                    jobs.append(r)
            set_fast_exposure(port, model.device, False)
            ks.stop_ekos()
        except BaseException:
            print(ks.diagnostics())
            print("--- Capture log\n" + ks.module_log("Capture"))
            if sim is None:
                print("--- server log (tail)\n" + "\n".join(server.log_text().splitlines()[-30:]))
            raise
        finally:
            ks.stop()
            if sim is not None:
                stop_process(sim)
            else:
                server.stop()
        for fast in (False, True):
            js = [j for j in jobs if j["fast"] is fast]
            ekos = [g for j in js for g in j["ekos_gap_s"]]
            obs = [g for j in js for g in j["dateobs_gap_s"]]
            rows.append([key, "on" if fast else "off", str(len(ekos)), _f(min(ekos, default=float("nan"))),
                         _f(median(ekos)), _f(max(ekos, default=float("nan"))), _f(median(obs)),
                         _f(median([j["job_s"] for j in js])),
                         str(max((j["fast_count_max"] or 0 for j in js), default=0)),
                         str(sum(j["repeats"] for j in js)), str(sum(bool(j["error"]) for j in js))])
        res.data[key] = {"model": model.__dict__, "jobs": jobs}
    res.tables.append(("Time between frames in Ekos (s)",
                       ["model", "fast", "gaps", "Ekos min", "Ekos median", "Ekos max", "DATE-OBS median",
                        "job s (median)", "max CCD_FAST_COUNT", "repeated frames", "jobs failed"], rows))
    res.data["settings"] = {"frames": args.frames, "rounds": args.rounds, "exposure": args.exposure,
                            "frame": args.frame or "full"}
    path = res.write()
    print(f"\nJSON: {os.path.relpath(path, REPO)}")
    return 0


def _f(v: float) -> str:
    return f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
