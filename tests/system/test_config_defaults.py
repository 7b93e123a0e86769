"""Config defaults the camera cannot take are not applied, and what clients read is what the SDK holds.

A server is started once to learn its camera's config key, the key's defaults are then set by hand
to a gain above the camera's range and a valid offset, and the server is started again: the log
names the key, the value and the range once; Alpaca's Gain is the SDK's value (read through the
simulator's own record), the offset is applied, and an image is taken with them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from alpaca.camera import Camera

from support.servers import start_server, wait_until


def _sdk_state(cam: Camera) -> dict:
    return json.loads(cam.Action("sim.camera_state", ""))


def test_out_of_range_default_is_logged_not_applied_and_reported_as_held(tmp_path: Path) -> None:
    first = start_server(tmp_path, simulator="asi294mc-pro")
    try:
        Camera(first.address, 0).Connected = True
        Camera(first.address, 0).Connected = False
    finally:
        first.stop()
    config_path = tmp_path / "config.json"
    data = json.loads(config_path.read_text())
    (key,) = data["cameras"]
    data["cameras"][key]["defaults"] = {"gain": 999, "offset": 12}
    config_path.write_text(json.dumps(data))

    srv = start_server(tmp_path, simulator="asi294mc-pro")
    try:
        cam = Camera(srv.address, 0)
        cam.Connected = True
        held = _sdk_state(cam)
        assert cam.Gain == held["gain"] != 999
        assert cam.Offset == held["offset"] == 12
        gain_max = cam.GainMax
        wait_until(lambda: "gain=999" in srv.log_tail(200), 5, "the warning about gain=999")
        log = srv.log_tail(400)
        warnings = [line for line in log.splitlines() if "gain=999" in line]
        assert len(warnings) == 1 and f"valid {cam.GainMin} to {gain_max}" in warnings[0], warnings
        cam.StartExposure(0.01, True)
        wait_until(lambda: cam.ImageReady, 10, "image")
        assert cam.Gain == held["gain"]
        cam.Connected = False
        cam.Connected = True  # a reconnect does not warn again: the value was put back
        time.sleep(0.3)
        assert sum("gain=999" in line for line in srv.log_tail(400).splitlines()) == 1
    finally:
        srv.stop()
