"""Process-level faults: a signal in the middle of everything, and a second server on the same ports.

SIGTERM or SIGINT while an Alpaca exposure, an INDI exposure and a stalled image download are all
under way: exit status 0 within 2 s, and every camera is released (another program can open each
one at once). A second ``serve`` on ports that are taken: exit status 1, one clear line, no
traceback, and the first server is undisturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from support.faults import Indi, lock_is_free, note, raw_get, read_head, write_report
from support.indi_client import DEV120
from support.servers import REPO, alpaca_get, alpaca_put, free_port, start_server

MODELS = "asi294mc-pro,asi120mm-mini"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    write_report()


def _serve(tmp_path: Path, name: str):
    indi_port = free_port()
    server = start_server(tmp_path / name, "--indi-port", str(indi_port), simulator=MODELS)
    deadline = time.monotonic() + 15
    while True:
        try:
            Indi(indi_port).close()
            return server, indi_port
        except OSError:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_everything_exits_fast_and_releases_every_camera(tmp_path: Path, sig: int) -> None:
    server, indi_port = _serve(tmp_path, "sig")
    lock_dir = server.workdir / "sim-locks"
    indi = Indi(indi_port)
    stalled = None
    try:
        alpaca_put(server, 0, "connected", Connected=True)
        alpaca_put(server, 0, "startexposure", Duration=0.05, Light=True)
        deadline = time.monotonic() + 10
        while not alpaca_get(server, 0, "imageready")["Value"] and time.monotonic() < deadline:
            time.sleep(0.02)
        # A client that starts downloading the full frame and stops reading.
        stalled = raw_get(server.port, "/api/v1/camera/0/imagearray", "application/imagebytes", rcvbuf=4096)
        assert read_head(stalled)[0] == 200
        alpaca_put(server, 0, "startexposure", Duration=30, Light=True)  # a long Alpaca exposure
        indi.send(f'<getProperties version="1.7" device="{DEV120}"/>')
        mark = indi.size()
        indi.send(f'<newSwitchVector device="{DEV120}" name="CONNECTION"><oneSwitch name="CONNECT">On</oneSwitch>'
                  f'</newSwitchVector>')
        indi.wait_for(b'name="CCD_EXPOSURE"', 10, mark)
        mark = indi.size()
        indi.send(f'<newNumberVector device="{DEV120}" name="CCD_EXPOSURE"><oneNumber name="CCD_EXPOSURE_VALUE">30'
                  f'</oneNumber></newNumberVector>')  # and a long INDI exposure on the other camera
        indi.wait_for(b'state="Busy"', 5, mark)
        assert not any(lock_is_free(p) for p in lock_dir.glob("*.lock"))  # both cameras are held
        t0 = time.monotonic()
        server.proc.send_signal(sig)
        code = server.proc.wait(5)
        took = time.monotonic() - t0
    finally:
        indi.close()
        if stalled is not None:
            stalled.close()
        server.stop()
    log = server.log_text()
    assert code == 0, log
    assert took < 2.0, f"exit took {took:.2f} s"
    assert "Traceback" not in log
    locks = sorted(lock_dir.glob("*.lock"))
    assert len(locks) == 2 and all(lock_is_free(p) for p in locks)  # released: nobody holds either camera
    probe = subprocess.run([sys.executable, "-m", "driver.simulator", "hold", MODELS, "--camera", "1", "--seconds",
                            "0", "--lock-dir", str(lock_dir)], cwd=str(REPO), capture_output=True, text=True,
                           timeout=20)
    assert probe.returncode == 0 and probe.stdout.startswith("holding"), probe.stderr
    note(f"{signal.Signals(sig).name} mid-exposure (Alpaca + INDI exposures, a stalled download)", "process",
         exit_s=took, outcome="exit 0; every camera released (another program opens them at once)")


def test_second_instance_on_the_same_ports_fails_cleanly(tmp_path: Path) -> None:
    first, indi_port = _serve(tmp_path, "first")
    try:
        alpaca_put(first, 0, "connected", Connected=True)
        env = dict(os.environ, ZWO_ALPACA_SIM_LOCK_DIR=str(first.workdir / "sim-locks"),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("JOURNAL_STREAM", None)
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "zwo_runtime", "serve", "--bind", "127.0.0.1", "--port", str(first.port),
             "--indi-port", str(indi_port), "--no-discovery", "--simulator", MODELS,
             "--config", str(tmp_path / "second.json")],
            cwd=str(REPO), env=env, capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
        out = second.stdout + second.stderr
        assert second.returncode == 1, out
        assert "Traceback" not in out
        errors = [line for line in out.splitlines() if "ERROR" in line]
        assert len(errors) == 1, out
        assert f"cannot listen on 127.0.0.1:{first.port}" in errors[0] and "in use" in errors[0], errors[0]
        # The first server, its camera and its INDI port are undisturbed.
        assert alpaca_get(first, 0, "connected")["Value"] is True
        alpaca_put(first, 0, "startexposure", Duration=0.05, Light=True)
        deadline = time.monotonic() + 10
        while not alpaca_get(first, 0, "imageready")["Value"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        Indi(indi_port).close()
        assert requests.get(first.url("/management/apiversions"), timeout=2).status_code == 200
        note("second instance on the same ports", "process", exit_s=took,
             message=errors[0].split("ERROR", 1)[1].strip(),
             outcome="exit 1, one line, no traceback; the first server undisturbed")
    finally:
        assert first.stop() == 0
