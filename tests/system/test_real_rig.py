"""A server on a rig with ZWO's SDK: real cameras only, honest state, and a wrong SDK path is an error.

* ``serve`` with the real SDK (pyzwoasi's bundled libASICamera2, which loads here and sees no camera)
  and a config that knows a camera serves that camera from the start, under its device number and
  UniqueID, as absent: the management API lists it, Connected reads false, a connect attempt fails
  with NotConnected naming the camera and saying it is not plugged in (Alpaca through alpyca, and
  an INDI Alert); no simulated camera is served;
* a first-ever start with the real SDK and an empty config serves no device and says so in the
  log and on the setup page;
* the composition of the real-SDK case over the simulated SDK (in-process, so a unit can be plugged
  in): the known camera comes in under its stored number and UniqueID, not as a new device, and
  the client that asked to connect gets connected;
* ``--sdk`` / ``ZWO_ASI_LIB`` naming a missing file or one that does not load stops the server
  (exit status 1) with the path and the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from alpaca.camera import Camera
from alpaca.exceptions import NotConnectedException

from driver import sdk
from support.indi_client import RawIndi
from support.servers import REPO, ServerProcess, free_port, start_server, wait_port

needs_real_sdk = pytest.mark.skipif(sdk._pyzwoasi_library() is None,
                                    reason="pyzwoasi's bundled SDK has no copy for this platform")

SERIAL = "1A2B3C4D5E6F7081"
KEY = f"ASI294MC Pro:{SERIAL}"
UID = "6f1c9d7e-0000-4000-8000-000000000294"
NUMBER = 2
MESSAGE = f"ZWO ASI294MC Pro (serial {SERIAL}) is not plugged in; it connects when it is"
NO_DEVICE = "no camera attached and none known from the config: serving no device; plug a camera in"
# The real SDK, found the way a user's machine finds it: no ZWO_ASI_LIB, the normal search.
REAL_SDK_ENV = {"ZWO_ASI_LIB": ""}


def _devices(server: ServerProcess) -> list[dict[str, Any]]:
    r = requests.get(server.url("/management/v1/configureddevices"), timeout=5)
    assert r.status_code == 200
    return r.json()["Value"]


def _write_config(path: Path, cameras: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "server": {}, "cameras": cameras}))


@needs_real_sdk
def test_a_known_camera_is_served_as_not_plugged_in_and_no_simulator(tmp_path: Path) -> None:
    work = tmp_path / "rig"
    _write_config(work / "config.json", {KEY: {"device_number": NUMBER, "unique_id": UID, "name": "ZWO ASI294MC Pro",
                                               "defaults": {}}})
    indi_port = free_port()
    server = start_server(work, "--indi-port", str(indi_port), simulator=None, env=REAL_SDK_ENV)
    try:
        log = server.log_text()
        assert "using ZWO SDK" in log and "libASICamera2" in log, log
        assert "SIMULATED" not in log and "simulated" not in log.lower(), log
        devices = _devices(server)
        assert [(d["DeviceNumber"], d["UniqueID"], d["DeviceType"]) for d in devices] == [(NUMBER, UID, "Camera")]
        assert "ASI294MC Pro" in devices[0]["DeviceName"] and "simulated" not in devices[0]["DeviceName"].lower()
        assert f"camera {NUMBER}: ZWO ASI294MC Pro (serial {SERIAL}" in log and "is not plugged in" in log

        cam = Camera(server.address, NUMBER)
        assert cam.Connected is False
        with pytest.raises(NotConnectedException) as err:
            cam.Connected = True
        assert err.value.number == 0x407
        assert MESSAGE in err.value.message
        assert cam.Connected is False  # honest state: it is not connected
        # Nothing else is there: no simulated stand-in under another number.
        assert requests.get(server.api(0, "name"), timeout=5).status_code == 400

        # INDI: the absent camera is a device too, and CONNECT gets an Alert with the same message.
        wait_port(indi_port)
        indi = RawIndi(indi_port)
        try:
            indi.send("<getProperties version='1.7'/>\n")
            indi.wait_for(b'name="CONNECTION"', 10)
            text = indi.text().decode("utf-8", "replace")
            device = text.split('name="CONNECTION"')[0].rsplit('device="', 1)[1].split('"', 1)[0]
            assert "ASI294MC Pro" in device, text[:2000]
            mark = indi.size()
            indi.send(f"<newSwitchVector device='{device}' name='CONNECTION'><oneSwitch name='CONNECT'>On"
                      "</oneSwitch><oneSwitch name='DISCONNECT'>Off</oneSwitch></newSwitchVector>\n")
            indi.wait_for(b"is not plugged in", 10, start=mark)
            reply = indi.text()[mark:].decode("utf-8", "replace")
            assert MESSAGE in reply, reply
            assert 'state="Alert"' in reply, reply
        finally:
            indi.close()
        assert cam.Connected is False
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


@needs_real_sdk
def test_a_first_start_with_the_real_sdk_and_no_camera_serves_no_device(tmp_path: Path) -> None:
    server = start_server(tmp_path / "first", simulator=None, env=REAL_SDK_ENV)
    try:
        assert _devices(server) == []
        log = server.log_text()
        assert NO_DEVICE in log, log
        assert "simulated" not in log.lower(), log
        page = requests.get(server.url("/setup"), timeout=5)
        assert page.status_code == 200
        assert "No camera attached and none known from the config: serving no device" in page.text
        # The config stays empty: nothing was invented.
        cameras = json.loads(server.config_path.read_text())["cameras"]
        assert cameras == {}
    finally:
        server.stop()


def test_the_known_camera_comes_in_under_its_number_and_a_waiting_client_connects(tmp_path: Path) -> None:
    """The real-SDK composition (SdkChoice "real", config-known cameras served absent) over the
    simulated SDK, in-process, so the unit can be plugged in: no new device, the same number and
    UniqueID, and the connect asked for while it was absent happens."""
    from driver import NotConnectedError, ReconnectPolicy
    from driver import simulator as simmod
    from zwo_common.config import Config
    from zwo_runtime import hotplug
    from zwo_runtime.cameras import CameraSet, SdkChoice

    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path), "unplugged": [1]})
    sim = simmod.current()
    assert sim is not None
    serial = sim.cameras[1].serial
    config = Config(tmp_path / "config.json", {"cameras": {
        f"ASI120MM Mini:{serial}": {"device_number": 3, "unique_id": "uid-of-the-120", "name": "ZWO ASI120MM Mini"}}})
    cameras = CameraSet(SdkChoice("real", "test", fallback=False), config, ReconnectPolicy(enabled=False))
    added: list[tuple[int, str]] = []

    class FrontEnd:
        title = "recording front end"

        def add_camera(self, number: int, cam: Any, *, key: str, unique_id: str) -> str:
            added.append((number, unique_id))
            return f"device {number}"

    watcher = None
    try:
        for info in sdk.enumerate_cameras():
            cameras.add(info)
        absent = cameras.add_absent()
        numbers = {c.number: (c.key, c.unique_id) for c in cameras}
        assert numbers[3] == (f"ASI120MM Mini:{serial}", "uid-of-the-120")
        assert sorted(numbers) == [0, 3]  # the 294 on the bus takes the lowest number no known camera holds
        assert [a.number for a in absent] == [3]
        cam = absent[0].cam
        assert cam.info is None and cam.status().connected is False
        with pytest.raises(NotConnectedError, match=rf"ZWO ASI120MM Mini \(serial {serial}\) is not plugged in"):
            cam.connect()
        assert cam.status().awaiting_plug and not cam.status().connected

        watcher = hotplug.start(cameras, [FrontEnd()], 0.1)  # type: ignore[list-item]
        time.sleep(0.3)
        assert not cam.status().connected  # still not plugged in
        sim.replug(1)
        deadline = time.monotonic() + 10
        while not (cam.status().connected and cam.status().state.value == "idle") and time.monotonic() < deadline:
            time.sleep(0.05)
        st = cam.status()
        assert st.connected and not st.awaiting_plug, st
        assert cam.info is not None and cam.info.serial == serial
        assert added == []  # the same device, not a new one
        assert {c.number: (c.key, c.unique_id) for c in cameras} == numbers
        assert config.snapshot()["cameras"][f"ASI120MM Mini:{serial}"]["device_number"] == 3
    finally:
        if watcher is not None:
            watcher.stop()
        cameras.release(2.0)
        simmod.uninstall()


def _serve_until_exit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "zwo_runtime", "serve", "--bind", "127.0.0.1", "--port", str(free_port()),
           "--indi-port", "0", "--no-discovery", "--config", str(tmp_path / "config.json"), *args]
    full_env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **(env or {}))
    return subprocess.run(cmd, cwd=str(REPO), env=full_env, capture_output=True, text=True, timeout=30)


def test_a_missing_sdk_path_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "libASICamera2.so"
    res = _serve_until_exit(tmp_path, "--sdk", str(missing))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "cannot start" in out and f"--sdk names {missing}, which does not exist" in out, out
    assert "simulated" not in out.lower() and "Traceback" not in out, out

    res = _serve_until_exit(tmp_path, env={"ZWO_ASI_LIB": str(missing)})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"$ZWO_ASI_LIB names {missing}, which does not exist" in out, out
    assert "simulated" not in out.lower(), out


def test_an_sdk_path_that_does_not_load_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "libASICamera2.so"
    broken.write_bytes(b"this is not a shared library\n")
    res = _serve_until_exit(tmp_path, "--sdk", str(broken))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"cannot load {broken}" in out, out
    assert "simulated" not in out.lower() and "Traceback" not in out, out
