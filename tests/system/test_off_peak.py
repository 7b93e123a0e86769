"""Off-peak release seen by Alpaca and INDI clients (issue 14, "Off-peak release is visible to clients").

One ``zwo-alpaca serve`` (a simulated ASI294MC Pro, Alpaca + INDI). The camera is connected over
Alpaca (alpyca) and INDI (pyindi-client), then the web API sets a capture window that excludes
now (``POST action/schedule``): the core releases the camera until the window's start. Then:

* Alpaca: CameraState reads cameraError (5) (ASCOM has no off-peak state; no exposure can start),
  DeviceState says the same, Connected stays true (the intent is kept), and StartExposure fails
  with InvalidOperation (0x40B) whose message says the camera is released off-peak until HH:MM;
* INDI: the device says so in a message, CONNECTION stays On (checked with libindi's own
  indi_getprop too), and CCD_EXPOSURE is refused in Alert with the same message.

Clearing the schedule brings the camera back: CameraState idle, and an exposure works over both.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import requests
from alpaca.camera import Camera, CameraStates
from alpaca.exceptions import InvalidOperationException

from support.indi_client import DEV294, IndiServer, PyIndiClient, needs_pyindi, start_indi_server
from support.servers import alpaca_get, wait_until

pytestmark = [needs_pyindi, pytest.mark.skipif(shutil.which("indi_getprop") is None,
                                              reason="Debian's indi-bin is not installed (scripts/bootstrap test)")]


def _window_excluding_now() -> tuple[str, str]:
    """A daily window (local time, like the server's) that opens 2 h from now: (window, its start)."""
    now = dt.datetime.now()
    start, end = now + dt.timedelta(hours=2), now + dt.timedelta(hours=3)
    return f"{start:%H:%M}-{end:%H:%M}", f"{start:%H:%M}"


def _schedule(srv: IndiServer, window: str) -> dict:
    base = srv.server
    token = requests.get(base.url("/setup/v1/camera/0/status.json"), timeout=5).json()["csrf"]
    r = requests.post(base.url("/setup/v1/camera/0/action/schedule"), json={"window": window},
                      headers={"X-CSRF-Token": token}, timeout=10)
    assert r.status_code == 200 and r.json()["ok"], r.text
    return r.json()


def _getprop(port: int, spec: str) -> dict[str, str]:
    out = subprocess.run(["indi_getprop", "-p", str(port), "-t", "3", spec], capture_output=True, text=True,
                         timeout=20).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _released_text(text: str, until: str) -> bool:
    """The core's off-peak refusal: released, off-peak, and until when (the wording may grow)."""
    low = text.lower()
    return "released" in low and "off-peak" in low and f"until {until}" in low


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("off-peak"), simulator="asi294mc-pro")
    yield s
    s.server.stop()


def test_off_peak_is_visible_over_alpaca_and_indi_and_clears(srv: IndiServer) -> None:
    cam = Camera(srv.server.address, 0)
    cam.Connected = True
    wait_until(lambda: cam.CameraState == CameraStates.cameraIdle, 10, "the camera idle after connecting")
    indi = PyIndiClient(srv.port)
    try:
        indi.connect_device(DEV294)
        window, until = _window_excluding_now()
        mark = indi.mark()
        _schedule(srv, window)

        # ---- Alpaca
        wait_until(lambda: cam.CameraState == CameraStates.cameraError, 10, "CameraState cameraError while off-peak")
        assert cam.Connected is True, "Connected is the intent: it stays true while released off-peak"
        state = {item["Name"]: item["Value"] for item in alpaca_get(srv.server, 0, "devicestate")["Value"]}
        assert state["CameraState"] == 5, state
        with pytest.raises(InvalidOperationException) as refused:
            cam.StartExposure(0.01, True)
        assert _released_text(str(refused.value), until), str(refused.value)
        raw = requests.put(srv.server.api(0, "startexposure"), data={"Duration": "0.01", "Light": "true"},
                           timeout=10).json()
        assert raw["ErrorNumber"] == 0x40B and _released_text(raw["ErrorMessage"], until), raw
        page = requests.get(srv.server.url("/setup/v1/camera/0/status.json"), timeout=5).json()
        assert page["status"]["off_peak_until"] == until and page["status"]["ascom_state"] == "Error", page["status"]

        # ---- INDI: a message when released, CONNECTION stays On, CCD_EXPOSURE refused in Alert
        note = indi.wait_event(lambda e: e.kind == "message" and e.device == DEV294
                               and f"released for the off-peak window until {until}" in e.values["text"], 10, mark)
        assert "[INFO]" in note.values["text"], note
        conn = _getprop(srv.port, f"{DEV294}.CONNECTION.*")
        assert conn.get(f"{DEV294}.CONNECTION.CONNECT") == "On", conn
        assert not any(e.kind == "remove" and e.device == DEV294 for e in indi.since(mark)), \
            "the connected properties stay defined while off-peak"
        mark = indi.mark()
        indi.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.01)
        alert = indi.wait_event(lambda e: e.device == DEV294 and e.name == "CCD_EXPOSURE" and e.state == "Alert",
                                10, mark)
        assert alert.kind == "update", alert
        said = indi.wait_event(lambda e: e.kind == "message" and e.device == DEV294
                               and _released_text(e.values["text"], until), 10, mark)
        assert "[ERROR]" in said.values["text"], said

        # ---- clear the schedule: the camera comes back by itself, on both protocols
        mark = indi.mark()
        _schedule(srv, "")
        wait_until(lambda: cam.CameraState == CameraStates.cameraIdle, 15, "CameraState idle after clearing")
        indi.wait_event(lambda e: e.kind == "message" and e.device == DEV294
                        and "capture window open" in e.values["text"], 10, mark)
        cam.StartExposure(0.01, True)
        wait_until(lambda: cam.ImageReady, 15, "an Alpaca image after the schedule was cleared")
        mark = indi.mark()
        indi.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.01)
        indi.wait_event(lambda e: e.device == DEV294 and e.name == "CCD_EXPOSURE" and e.state == "Ok", 20, mark)
        assert not any(e.device == DEV294 and e.name == "CCD_EXPOSURE" and e.state == "Alert"
                       for e in indi.since(mark))
        log = srv.server.log_text()
        assert re.search(rf"off-peak: releasing the camera until {until}", log), srv.server.log_tail()
    finally:
        indi.close()
        cam.Connected = False
