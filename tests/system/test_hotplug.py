"""Cameras plugged in after the server started (driver/hotplug.py, serve --hotplug-interval).

* a new camera becomes the next Alpaca device and a new INDI device without a restart, and works
  (connect, expose, download); an INDI client already connected is told about it;
* a served camera that is unplugged and plugged back in is not added twice (its core reconnects);
* ``--hotplug-interval 0`` switches watching off;
* when the simulator stands in because the real SDK saw no camera, a camera appearing on that SDK
  restarts the server in place (same PID, same port) - checked with a stand-in libASICamera2
  compiled here whose camera count the test controls.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from alpaca.camera import Camera

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


# ------------------------------------------------------------------- the simulator standing in

def _fake_sdk(tmp_path: Path) -> Path:
    """A libASICamera2 stand-in: every function zwoasi binds, returning 0; the camera count is read
    from $FAKE_ASI_COUNT_FILE (0 when absent)."""
    import zwoasi

    names = sorted(set(re.findall(r"zwolib\.(ASI\w+)", Path(zwoasi.__file__).read_text())))
    assert "ASIGetNumOfConnectedCameras" in names
    lines = ["#include <stdio.h>", "#include <stdlib.h>",
             "int ASIGetNumOfConnectedCameras(void) {",
             '  const char *p = getenv("FAKE_ASI_COUNT_FILE"); int n = 0; FILE *f = p ? fopen(p, "r") : NULL;',
             '  if (f) { if (fscanf(f, "%d", &n) != 1) n = 0; fclose(f); } return n; }']
    lines += [f"int {name}(void) {{ return 0; }}" for name in names if name != "ASIGetNumOfConnectedCameras"]
    src = tmp_path / "fake_asi.c"
    src.write_text("\n".join(lines) + "\n")
    lib = tmp_path / "libASICamera2.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    return lib


def test_attach_probe_counts_on_the_real_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from driver.hotplug import AttachProbe

    lib = _fake_sdk(tmp_path)
    count = tmp_path / "count"
    count.write_text("0")
    monkeypatch.setenv("FAKE_ASI_COUNT_FILE", str(count))
    seen: list[int] = []
    probe = AttachProbe(str(lib), seen.append, interval=0.1).start()
    try:
        time.sleep(0.4)
        assert seen == [] and probe.count() == 0
        count.write_text("2")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [2] and probe.fired
    finally:
        probe.stop()


def test_a_real_camera_appearing_restarts_the_simulated_stand_in(tmp_path: Path) -> None:
    lib = _fake_sdk(tmp_path)
    count = tmp_path / "count"
    count.write_text("0")
    server = start_server(tmp_path / "fallback", "--sdk", str(lib), "--hotplug-interval", "0.5", simulator=None,
                          env={"FAKE_ASI_COUNT_FILE": str(count)})
    try:
        assert "no camera attached to the ZWO SDK" in server.log_text()
        assert "will restart on a real camera" in server.log_text()
        pid = server.proc.pid
        count.write_text("1")
        _wait(lambda: "restarting to serve it" in server.log_text(), 10, "the restart", server)
        # The stand-in reports no camera again, so the restarted server falls back once more (a
        # zeroed camera description is all this library could give).
        count.write_text("0")
        _wait(lambda: server.log_text().count("no camera attached to the ZWO SDK") >= 2, 20,
              "the restarted server", server)
        _wait(lambda: _answers(server), 20, "HTTP from the restarted server", server)
        assert server.alive() and server.proc.pid == pid
        assert server.log_text().count("restarting to serve it") == 1
    finally:
        server.stop()


def _answers(server: ServerProcess) -> bool:
    try:
        return requests.get(server.url("/management/apiversions"), timeout=1).status_code == 200
    except requests.RequestException:
        return False


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
