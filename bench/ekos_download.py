#!/usr/bin/env python3
"""Ekos' own "Download Time" for our server and for libindi's ``indi_simulator_ccd``, measured by
the real KStars/Ekos 3.6 in the same run, with frames of the same size, for a mono and a colour camera.

Per model (default: ``asi2600mm-pro`` mono 6248x4176 and ``asi294mc-pro`` colour 4144x2822):

* ``zwo-alpaca``: ``zwo-alpaca serve --simulator MODEL`` with INDI on a free port;
* ``libindi``:    ``indiserver indi_simulator_ccd`` on a free port, its SIMULATOR_SETTINGS set (with
                  libindi's ``indi_setprop``, before Ekos connects) to the model's resolution and pixel
                  size, and SIMULATE_BAYER on for a colour model.

One headless KStars (tests/support/kstars.py: Xvfb, private D-Bus and HOME) gets a *Mode: Remote*
profile for each server. For each round, each server in turn (the order alternates between rounds):
Ekos starts with that profile, Capture runs one job of ``--frames`` full-frame ``--exposure`` s lights
(FITS, Upload: Client), and the "Download Time: X s" lines Capture logs are collected. Ekos starts that
timer when CCD_EXPOSURE turns Ok and stops it when it has the image loaded, so it covers whatever of
the transfer follows the Ok plus Ekos' own loading. The FITS files Ekos wrote are checked for the
frame size, so both servers really sent the same size.

Usage:  .venv/bin/python bench/ekos_download.py [--frames 6] [--rounds 2] [--exposure 0.5] [--models a,b]
Needs scripts/bootstrap-kstars (KStars, Xvfb, D-Bus tools) and Debian's indi-bin. Not a pass/fail test:
prints a table and writes bench/results/ekos_download.json. KStars is heavy: it runs niced, one instance.
"""

from __future__ import annotations

import argparse
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

from astropy.io import fits

from _common import REPO, Result, free_port, median, wait_port
from support.indi_client import indiserver_command
from support.kstars import DEBUG_LOG_RULES, KStars, missing_tools, sequence_file
from support.servers import start_server

DOWNLOAD = re.compile(r"Download Time: ([0-9.]+) s")


@dataclass(frozen=True)
class Model:
    key: str
    device: str
    width: int
    height: int
    pixel_um: float
    colour: bool


MODELS = {
    "asi2600mm-pro": Model("asi2600mm-pro", "ZWO CCD ASI2600MM Pro", 6248, 4176, 3.76, False),
    "asi294mc-pro": Model("asi294mc-pro", "ZWO CCD ASI294MC Pro", 4144, 2822, 4.63, True),
    "asi120mm-mini": Model("asi120mm-mini", "ZWO CCD ASI120MM Mini", 1280, 960, 3.75, False),
}
SIM_DEVICE = "CCD Simulator"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_libindi(model: Model, work: Path) -> tuple[subprocess.Popen, int]:
    """indi_simulator_ccd under indiserver, set to the model's frame (before any client connects it)."""
    port = free_port()
    home = work / "indi-home"  # its own HOME: no saved simulator config loads over these settings
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    with open(work / "indiserver.log", "wb") as log:
        proc = subprocess.Popen(indiserver_command(port, "indi_simulator_ccd"), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=work, env=env, start_new_session=True)
    wait_port(port)
    set_simulator(port, model)
    return proc, port


def set_simulator(port: int, model: Model) -> None:
    """The simulator's frame size, pixel size and Bayer mode (libindi's indi_setprop)."""
    settings = (f"{SIM_DEVICE}.SIMULATOR_SETTINGS.SIM_XRES;SIM_YRES;SIM_XSIZE;SIM_YSIZE="
                f"{model.width};{model.height};{model.pixel_um};{model.pixel_um}")
    bayer = f"{SIM_DEVICE}.SIMULATE_BAYER.{'INDI_ENABLED' if model.colour else 'INDI_DISABLED'}=On"
    for spec in (settings, bayer):
        subprocess.run(["indi_setprop", "-p", str(port), "-t", "5", spec], check=True, timeout=20,
                       capture_output=True)


def run_session(ks: KStars, profile: str, port: int, device: str, model: Model, frames: int,
                exposure: float, work: Path) -> dict[str, Any]:
    """One Ekos session: connect, capture ``frames`` frames, return Ekos' download times."""
    ks.start_ekos(profile, "127.0.0.1", port)
    ks.wait_for(lambda: ks.module_property("Capture", "camera") == device, 60, f"Capture selecting {device!r}")
    if device == SIM_DEVICE:
        set_simulator(port, model)  # again once connected: Ekos' connect may load the driver's saved config
    frames_dir = Path(tempfile.mkdtemp(prefix="frames-", dir=work))
    seq = sequence_file(work / f"{profile}.esq", frames_dir, exposure=exposure, count=frames,
                        width=model.width, height=model.height)
    t0 = time.monotonic()
    ks.run_sequence(seq, frames, 60 + frames * (exposure + 15))
    elapsed = time.monotonic() - t0
    log = ks.module_log("Capture")
    times = [float(v) for v in reversed(DOWNLOAD.findall(log))]  # Ekos' log is newest first
    sizes = set()
    for f in sorted(frames_dir.rglob("*.fits")):
        with fits.open(f) as hdul:
            sizes.add((hdul[0].header["NAXIS1"], hdul[0].header["NAXIS2"], hdul[0].header.get("BAYERPAT")))
        if os.environ.get("EKOS_DOWNLOAD_KEEP") is None:
            f.unlink()  # tens of MB each
    ks.stop_ekos()
    return {"download_s": times, "job_s": round(elapsed, 2), "frames": frames, "fits": sorted(sizes, key=str)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="asi2600mm-pro,asi294mc-pro")
    ap.add_argument("--frames", type=int, default=6, help="frames per server per round (default 6)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the server order alternates (default 2)")
    ap.add_argument("--exposure", type=float, default=0.5)
    args = ap.parse_args()
    missing = missing_tools() + [t for t in ("indiserver", "indi_simulator_ccd", "indi_setprop") if not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} (run scripts/bootstrap-kstars; indi-bin)", file=sys.stderr)
        return 2
    os.nice(5)  # KStars and its children inherit it

    res = Result("ekos_download")
    rows: list[list[str]] = []
    for key in args.models.split(","):
        model = MODELS[key]
        work = Path(tempfile.mkdtemp(prefix=f"ekos-download-{key}-"))
        our_port = free_port()
        ours = start_server(work / "server", "--indi-port", str(our_port), simulator=key, log_level=None)
        sim, sim_port = start_libindi(model, work)
        ks = KStars(work / "kstars", extra_env={"QT_LOGGING_RULES": DEBUG_LOG_RULES})
        (work / "kstars").mkdir()
        runs: dict[str, list[dict[str, Any]]] = {"zwo-alpaca": [], "libindi": []}
        try:
            ks.start()
            ks.add_remote_profile("zwo-alpaca", "127.0.0.1", our_port)
            ks.add_remote_profile("libindi", "127.0.0.1", sim_port, ccd_label="CCD Simulator")
            ks.open_ekos("libindi")
            servers = [("zwo-alpaca", our_port, model.device), ("libindi", sim_port, SIM_DEVICE)]
            for rnd in range(args.rounds):
                for name, port, device in (servers if rnd % 2 == 0 else servers[::-1]):
                    r = run_session(ks, name, port, device, model, args.frames, args.exposure, work)
                    print(f"{key} round {rnd + 1} {name}: {r}", flush=True)
                    runs[name].append(r)
        except BaseException:
            print(ks.diagnostics())
            print("--- Capture log\n" + ks.module_log("Capture"))
            raise
        finally:
            ks.stop()
            _stop(sim)
            ours.stop()
        for name, rs in runs.items():
            times = [t for r in rs for t in r["download_s"]]
            fits_sizes = sorted({tuple(s) for r in rs for s in r["fits"]}, key=str)
            rows.append([key, name, str(len(times)), _f(min(times, default=float("nan"))), _f(median(times)),
                         _f(max(times, default=float("nan"))), str(fits_sizes)])
        res.data[key] = {"model": model.__dict__, "runs": runs}
    res.tables.append(("Ekos 'Download Time' (s) per frame", ["model", "server", "frames", "min", "median", "max",
                                                                  "FITS (w, h, BAYERPAT)"], rows))
    res.data["settings"] = {"frames": args.frames, "rounds": args.rounds, "exposure": args.exposure}
    path = res.write()
    print(f"\nJSON: {os.path.relpath(path, REPO)}")
    return 0


def _f(v: float) -> str:
    return f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
