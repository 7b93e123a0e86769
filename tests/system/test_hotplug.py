"""Cameras plugged in after the server started (driver/hotplug.py, serve --hotplug-interval).

* a new camera becomes the next Alpaca device and a new INDI device without a restart, and works
  (connect, expose, download); an INDI client already connected is told about it;
* a served camera that is unplugged and plugged back in is not added twice (its core reconnects);
* a served camera unplugged while not connected keeps its device number and UniqueID when it is
  plugged back in; a connect asked for while it was out says it is not plugged in, and happens
  when it is (the real-SDK case of a camera known from the config: tests/system/test_real_rig.py);
* ``--hotplug-interval 0`` switches watching off.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from alpaca.camera import Camera
from alpaca.exceptions import NotConnectedException

from support.servers import ServerProcess, free_port, start_server

SIMS = "asi294mc-pro,asi120mm-mini"


def _devices(server: ServerProcess) -> list[dict]:
    return requests.get(server.url("/management/v1/configureddevices"), timeout=5).json()["Value"]


def _wait(predicate: Callable[[], object], timeout: float, what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s; log:\n{server.log_text()[-3000:]}"
        time.sleep(0.1)


def _action(server: ServerProcess, n: int, action: str, params: str = "") -> str:
    r = requests.put(server.api(n, "action"), data={"Action": action, "Parameters": params}, timeout=10).json()
    assert r["ErrorNumber"] == 0, r
    return r["Value"]


class _IndiWatcher:
    """A raw INDI client that asked for every device and keeps what it hears."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"<getProperties version='1.7'/>\n")
        self.text = ""

    def read_until(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.text and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            if not chunk:
                break
            self.text += chunk.decode("utf-8", "replace")
        return needle in self.text

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    indi_port = free_port()
    server = start_server(tmp_path / "hot", "--simulator", SIMS, "--indi-port", str(indi_port),
                          "--hotplug-interval", "0.5", simulator=None, env={"ZWO_ALPACA_SIM_UNPLUGGED": "1"})
    yield server, indi_port
    server.stop()
    assert "Traceback" not in server.log_text()


def test_a_camera_plugged_in_later_is_served_by_alpaca_and_indi(hot: tuple[ServerProcess, int]) -> None:
    server, indi_port = hot
    _wait(lambda: "hotplug: looking for new cameras every 0.5 s" in server.log_text(), 10, "the watcher", server)
    assert [d["DeviceNumber"] for d in _devices(server)] == [0]
    watcher = _IndiWatcher(indi_port)
    try:
        assert watcher.read_until('device="ZWO CCD ASI294MC Pro"', 10)
        assert 'device="ZWO CCD ASI120MM Mini"' not in watcher.text
        assert _action(server, 0, "sim.replug", '{"slot": 1}') == "replugged"
        _wait(lambda: len(_devices(server)) == 2, 10, "the new camera as Alpaca device 1", server)
        # The INDI client that was already connected hears about the new device without asking again.
        assert watcher.read_until('device="ZWO CCD ASI120MM Mini"', 10), watcher.text[-2000:]
    finally:
        watcher.close()
    new = [d for d in _devices(server) if d["DeviceNumber"] == 1][0]
    assert new["DeviceName"].startswith("ZWO ASI120MM Mini")
    cam = Camera(server.address, 1)
    cam.Connected = True
    try:
        assert (cam.CameraXSize, cam.CameraYSize) == (1280, 960)
        cam.StartExposure(0.01, True)
        _wait(lambda: cam.ImageReady, 15, "an image from the new camera", server)
        image = requests.get(server.api(1, "imagearray"), headers={"Accept": "application/imagebytes"}, timeout=30)
        assert image.status_code == 200 and len(image.content) == 44 + 1280 * 960 * 2
    finally:
        cam.Connected = False
    out = subprocess.run(["indi_getprop", "-p", str(indi_port), "-t", "3", "ZWO CCD ASI120MM Mini.CONNECTION.*"],
                         capture_output=True, text=True, timeout=15) if shutil.which("indi_getprop") else None
    if out is not None:
        assert "ZWO CCD ASI120MM Mini.CONNECTION.CONNECT" in out.stdout, out.stdout + out.stderr
    # A served camera that is unplugged and plugged back in is the same device, not a new one.
    cam0 = Camera(server.address, 0)
    cam0.Connected = True
    _action(server, 0, "sim.unplug")
    time.sleep(1.2)  # two looks at the bus without it
    _action(server, 0, "sim.replug")
    _wait(lambda: cam0.Connected and cam0.CameraState == 0, 15, "camera 0 reconnected", server)
    time.sleep(1.2)
    assert [d["DeviceNumber"] for d in _devices(server)] == [0, 1]
    assert server.log_text().count("hotplug: new camera") == 1
    cam0.Connected = False


def test_hotplug_can_be_switched_off(tmp_path: Path) -> None:
    server = start_server(tmp_path / "off", "--simulator", SIMS, "--hotplug-interval", "0", simulator=None,
                          env={"ZWO_ALPACA_SIM_UNPLUGGED": "1"})
    try:
        _action(server, 0, "sim.replug", '{"slot": 1}')
        time.sleep(3.5)  # longer than the default interval, which would have found it
        assert [d["DeviceNumber"] for d in _devices(server)] == [0]
        assert "looking for new cameras" not in server.log_text()
        bad = requests.put(server.api(0, "action"), data={"Action": "sim.replug", "Parameters": '{"slot": 9}'},
                           timeout=5).json()
        assert bad["ErrorNumber"] == 0x401 and "0..1" in bad["ErrorMessage"]
    finally:
        server.stop()


def test_a_camera_unplugged_and_plugged_back_keeps_its_number_and_unique_id(tmp_path: Path) -> None:
    server = start_server(tmp_path / "replug", "--simulator", SIMS, "--hotplug-interval", "0.5", simulator=None)
    try:
        _wait(lambda: "hotplug: looking for new cameras" in server.log_text(), 10, "the watcher", server)
        before = [(d["DeviceNumber"], d["UniqueID"], d["DeviceName"]) for d in _devices(server)]
        assert [n for n, _, _ in before] == [0, 1]
        assert _action(server, 1, "sim.unplug") == "unplugged"
        time.sleep(1.2)  # two looks at the bus without it
        assert [(d["DeviceNumber"], d["UniqueID"], d["DeviceName"]) for d in _devices(server)] == before
        cam = Camera(server.address, 1)
        assert cam.Connected is False
        with pytest.raises(NotConnectedException) as err:
            cam.Connected = True
        assert err.value.number == 0x407
        assert "ASI120MM Mini (serial " in err.value.message and "is not plugged in" in err.value.message
        assert cam.Connected is False
        _action(server, 0, "sim.replug", '{"slot": 1}')
        # The connect the client asked for happens once the camera is back, under the same device.
        _wait(lambda: cam.Connected and cam.CameraState == 0, 15, "camera 1 connected after the replug", server)
        assert [(d["DeviceNumber"], d["UniqueID"], d["DeviceName"]) for d in _devices(server)] == before
        assert "hotplug: new camera" not in server.log_text()
        assert "hotplug: camera 1, ZWO ASI120MM Mini" in server.log_text()
        assert (cam.CameraXSize, cam.CameraYSize) == (1280, 960)
        cam.StartExposure(0.01, True)
        _wait(lambda: cam.ImageReady, 15, "an image after the replug", server)
        cam.Connected = False
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


def test_the_watcher_leaves_the_bus_alone_while_a_camera_is_busy(tmp_path: Path) -> None:
    from driver import hotplug, sdk
    from driver import simulator as simmod

    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path), "unplugged": [1]})
    sim = simmod.current()
    assert sim is not None
    try:
        served = sdk.enumerate_cameras()
        assert [c.model for c in served] == ["ASI294MC Pro"]
        busy = [True]
        offered: list = []
        watcher = hotplug.CameraWatcher(lambda: served, offered.append, interval=60, busy=lambda: busy[0])
        watcher.start()  # the baseline: camera 0 only
        try:
            sim.replug(1)
            watcher._tick()
            assert offered == [] and watcher.skipped == 1
            busy[0] = False
            watcher._tick()
            assert [c.model for c in offered] == ["ASI120MM Mini"] and offered[0].serial
            watcher._tick()
            assert len(offered) == 1
        finally:
            watcher.stop()
    finally:
        simmod.uninstall()
