"""A night's history through a real server: alpyca's ``Action("telemetry")`` after exposures and an
unplug/replug of a simulated camera, the history surviving a server restart, and ``doctor`` reading it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from alpaca.camera import Camera, CameraStates
from alpaca.exceptions import InvalidValueException

from support.servers import REPO, ServerProcess, start_server, wait_until

pytestmark = pytest.mark.timeout(120)

# Quick keep-alive, sampling and reconnection, so the test sees a drop, samples and a recovery in seconds.
CONFIG = {"version": 1, "server": {"health_interval": 0.2, "history": {"sample_interval": 0.2},
                                   "reconnect": {"initial": 0.2, "factor": 2.0, "cap": 0.4}}, "cameras": {}}


def _telemetry(cam: Camera, *params: str) -> dict:
    return json.loads(cam.Action("telemetry", *params))


def _types(data: dict) -> list[str]:
    return [e["type"] for e in data["events"]]


def _start(workdir: Path) -> ServerProcess:
    return start_server(workdir, simulator="asi294mc-pro")


def test_telemetry_action_history_across_a_restart_and_doctor(tmp_path: Path) -> None:
    workdir = tmp_path / "srv"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(CONFIG))
    srv = _start(workdir)
    try:
        cam = Camera(srv.address, 0)
        assert "telemetry" in cam.SupportedActions
        cam.Connected = True
        for _ in range(2):
            cam.StartExposure(0.1, True)
            wait_until(lambda: cam.ImageReady, 10, "image ready")
        cam.Action("sim.unplug")
        wait_until(lambda: cam.CameraState == CameraStates.cameraError, 10, "CameraState Error after the unplug")
        time.sleep(0.8)  # a couple of reconnect attempts fail while the cable is out
        cam.Action("sim.replug")
        wait_until(lambda: cam.CameraState == CameraStates.cameraIdle, 10, "Idle again after the replug")
        data = wait_until(lambda: (d := _telemetry(cam, "")) and "reconnected" in _types(d) and d, 10,
                          "the recovery in the telemetry")
        assert isinstance(data, dict)
        kinds = _types(data)
        assert kinds[0] == "server_start" and "connected" in kinds and "connection_lost" in kinds
        assert kinds.count("exposure_ended") == 2 and "reconnect_failed" in kinds
        lost = next(e for e in data["events"] if e["type"] == "connection_lost")
        back = next(e for e in data["events"] if e["type"] == "reconnected")
        assert lost["cause"] == "usb" and 0.5 < back["recovery_s"] < 10 and back["attempts"] >= 2
        print(f"\nrecovery through the server: {back['recovery_s']} s after {back['attempts']} attempt(s)")
        assert data["summary"]["drops"] == 1 and data["summary"]["exposures"] == {"completed": 2}
        # Sampling is never faster than the keep-alive: 0.2 s only if server.health_interval was applied.
        assert data["sample_interval"] == 0.2
        wait_until(lambda: len(_telemetry(cam)["samples"]) >= 3, 10, "telemetry samples")
        sample = _telemetry(cam)["samples"][-1]
        assert isinstance(sample["temp"], float) and sample["t"].endswith("Z")
        assert _telemetry(cam, '{"hours": 0.001}')["hours"] == 0.001
        with pytest.raises(InvalidValueException, match="valid 0 to 720"):
            cam.Action("telemetry", '{"hours": -1}')
        # The web page's JSON is the same record.
        page = requests.get(srv.url("/setup/v1/camera/0/history.json?hours=1"), timeout=10).json()
        assert "connection_lost" in _types(page)
        assert requests.get(srv.url("/setup/v1/camera/0/history.json?hours=-1"), timeout=10).status_code == 400
        cam.Connected = False
    finally:
        assert srv.stop() == 0

    files = sorted(p.name for p in (workdir / "history").iterdir())
    assert len(files) == 2 and files[0].endswith(".jsonl") and files[1].endswith(".samples.jsonl"), files
    srv = _start(workdir)  # the same config: the same history files
    try:
        cam = Camera(srv.address, 0)
        data = _telemetry(cam)
        kinds = _types(data)
        assert kinds.count("server_start") == 2 and "server_stop" in kinds and "connection_lost" in kinds
        assert kinds.index("connection_lost") < kinds.index("server_stop") < len(kinds) - 1
        assert data["summary"]["drops"] == 1 and len(data["samples"]) >= 3
    finally:
        srv.stop()

    out = subprocess.run([sys.executable, "-m", "zwo_runtime", "doctor", "--config", str(workdir / "config.json"),
                          "--port", "0", "--indi-port", "0", "--discovery-port", "0"], cwd=str(REPO),
                         capture_output=True, text=True, timeout=60)
    line = next(ln for ln in out.stdout.splitlines() if ln.split()[1:2] == ["history"])
    assert "ASI294MC Pro" in line and "1 USB drop, recovered in" in line and "2 exposures (2 completed)" in line, line
