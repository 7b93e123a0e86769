"""The web page's cooler ramp, "setpoint reached", warm-up at disconnect and auto controls.

In a real headless browser (playwright + Debian's chromium) on the cooled simulated ASI294MC Pro
(device 0) and the uncooled ASI120MM Mini (device 1), plus the JSON API: every value goes through
the core, whose refusals come back unchanged as HTTP 400, and the cooler settings persist in the
config file across a restart.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.servers import ServerProcess, start_server

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T = 15_000  # ms: a generous bound for one UI step

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="chromium is not installed (scripts/bootstrap test)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("web-cooler"))
    yield srv
    srv.stop()


def _post(srv: ServerProcess, n: int, action: str, body: dict) -> requests.Response:
    token = requests.get(srv.url(f"/setup/v1/camera/{n}/status.json"), timeout=5).json()["csrf"]
    return requests.post(srv.url(f"/setup/v1/camera/{n}/action/{action}"), json=body,
                         headers={"X-CSRF-Token": token}, timeout=10)


def _status(srv: ServerProcess, n: int) -> dict:
    return requests.get(srv.url(f"/setup/v1/camera/{n}/status.json"), timeout=5).json()


def test_page_ramp_reached_auto_and_warm_up(server: ServerProcess, tmp_path: Path) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "chromium"), executable_path=CHROMIUM, args=ARGS,
                                                    headless=True, viewport={"width": 1280, "height": 900},
                                                    bypass_csp=True)
        try:
            page = ctx.new_page()
            page.set_default_timeout(T)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

            # The uncooled camera has none of the cooler fields.
            page.goto(server.url("/setup/v1/camera/1/setup"))
            page.wait_for_selector("#badge[data-state]")
            for field in ("#f-ramp_slope", "#f-ramp_threshold", "#f-warm_at_disconnect", "#f-cooler_on"):
                assert page.locator(field).count() == 0, field

            page.goto(server.url("/setup/v1/camera/0/setup"))
            page.click("#connect")
            page.wait_for_selector("#badge[data-state=idle]")
            assert page.input_value("#f-ramp_slope") == "0" and page.input_value("#f-ramp_threshold") == "0.2"

            # Cooling at once (no ramp): the sensor leaves ambient (20 C) at once.
            page.check("#f-cooler_on")
            page.fill("#f-target_temperature", "-10")
            page.click("#apply")
            page.wait_for_selector("#msg.ok:has-text('Settings applied and saved')")
            assert "ramping" not in page.inner_text("#s-cooler")
            page.wait_for_function("parseFloat(document.getElementById('s-temp').textContent) < 19.3")

            # Within the threshold of the setpoint: "reached".
            page.fill("#f-target_temperature", "18")
            page.fill("#f-ramp_threshold", "2")
            page.click("#apply")
            page.wait_for_selector("#s-cooler:has-text('reached')")

            # A ramp: the status shows the ramp's own setpoint on its way down to -10.
            page.fill("#f-target_temperature", "-10")
            page.fill("#f-ramp_slope", "60")
            page.check("#f-warm_at_disconnect")
            page.click("#apply")
            page.wait_for_selector("#s-cooler:has-text('ramping, now')")
            assert "reached" not in page.inner_text("#s-cooler")

            # A bad value: the core's message, and nothing changed.
            page.fill("#f-ramp_slope", "99")
            page.click("#apply")
            page.wait_for_selector("#msg.err:not([hidden])")
            assert page.inner_text("#msg-text") == "ramp slope 99 C/min is out of range: valid 0 (off) to 60 C/min"
            assert _status(server, 0)["settings"]["ramp_slope"] == 60.0
            page.click("#revert")

            # Auto gain: applied at once; the gain field is then left to the SDK.
            page.check("#auto-Gain")
            page.wait_for_selector("#msg.ok:has-text('Gain: automatic')")
            page.wait_for_selector("#f-gain:disabled")
            assert _status(server, 0)["settings"]["auto_controls"] == {"Gain": True}
            assert page.locator("#auto-Exposure").count() == 0  # not auto-capable here: no box
            page.uncheck("#auto-Gain")
            page.wait_for_selector("#msg.ok:has-text('Gain: manual')")
            page.wait_for_selector("#f-gain:enabled")

            # Warm-up at disconnect (slow: 1 C/min): released for clients, and the page says what the
            # camera is doing; a connect takes the camera over from the warm-up.
            page.fill("#f-ramp_slope", "1")
            page.click("#apply")
            page.wait_for_selector("#msg.ok:has-text('Settings applied and saved')")
            page.click("#disconnect")
            page.wait_for_selector("#badge[data-state=warming]")
            assert page.inner_text("#badge") == "Warming up before releasing the camera"
            assert "warming up before releasing the camera" in page.inner_text("#s-cooler")
            assert page.inner_text("#conn-state") == "Disconnected"
            page.click("#connect")
            page.wait_for_selector("#badge[data-state=idle]")
            assert _status(server, 0)["status"]["cooler_on"] is True
            page.close()
        finally:
            ctx.close()
    assert errors == []


def test_api_refusals_uncooled_and_restart(tmp_path: Path) -> None:
    work = tmp_path / "srv"
    srv = start_server(work)
    try:
        # The core's messages come back as the API's 400s, exactly as for the other fields.
        r = _post(srv, 0, "settings", {"ramp_threshold": "5"})
        assert (r.status_code, r.json()) == (400, {"ok": False,
                                                   "error": "ramp threshold 5 C is out of range: valid 0.1 to 2 C"})
        r = _post(srv, 0, "settings", {"ramp_slope": "fast"})
        assert r.status_code == 400 and r.json()["error"] == "ramp_slope: 'fast' is not a number"
        r = _post(srv, 1, "settings", {"ramp_slope": "5"})
        assert (r.status_code, r.json()["error"]) == (400, "ZWO ASI120MM Mini has no cooler"), r.json()
        r = _post(srv, 1, "settings", {"warm_at_disconnect": True})
        assert r.status_code == 400 and "has no cooler" in r.json()["error"]
        r = _post(srv, 0, "auto", {"control": "Gain", "on": True})  # controls are known once connected
        assert r.status_code == 409 and "once the camera has been connected" in r.json()["error"]
        assert _post(srv, 0, "connect", {}).ok
        _wait(lambda: _status(srv, 0)["status"]["state"] == "idle")
        r = _post(srv, 0, "auto", {"control": "Exposure", "on": True})
        assert r.status_code == 400 and r.json()["error"].startswith("Exposure has no automatic mode")
        r = _post(srv, 0, "auto", {"control": "Gain", "on": "yes"})
        assert (r.status_code, r.json()["error"]) == (400, "on: 'yes' is not true or false")
        assert _status(srv, 1)["info"].get("auto_controls") is not None

        assert _post(srv, 0, "auto", {"control": "Gain", "on": True}).json() == {"ok": True,
                                                                                 "message": "Gain: automatic"}
        r = _post(srv, 0, "settings", {"ramp_slope": "2.5", "ramp_threshold": "0.5", "warm_at_disconnect": True})
        assert r.json() == {"ok": True, "message": "Settings applied and saved"}
        assert _post(srv, 1, "connect", {}).ok
        _wait(lambda: _status(srv, 1)["status"]["state"] == "idle")
        assert _post(srv, 1, "auto", {"control": "Gain", "on": True}).ok
        assert _post(srv, 1, "auto", {"control": "Gain", "on": False}).ok  # off again: the key goes
    finally:
        assert srv.stop() == 0
    stored = json.loads(srv.config_path.read_text())
    saved = [e["defaults"] for e in stored["cameras"].values() if "ramp_slope" in e.get("defaults", {})]
    assert saved == [{"ramp_slope": 2.5, "ramp_threshold": 0.5, "warm_at_disconnect": True,
                      "auto_controls": ["Gain"]}]
    assert not [e for e in stored["cameras"].values() if "auto_controls" in e.get("defaults", {})
                and "ramp_slope" not in e["defaults"]]

    again = start_server(work, port=srv.port)
    try:
        s = _status(again, 0)["settings"]
        assert (s["ramp_slope"], s["ramp_threshold"], s["warm_at_disconnect"]) == (2.5, 0.5, True)
        # The saved auto control reaches the SDK once the camera's controls are known (its first connect).
        assert _post(again, 0, "connect", {}).ok
        _wait(lambda: _status(again, 0)["settings"]["auto_controls"] == {"Gain": True})
        sim = requests.put(again.api(0, "action"), data={"Action": "sim.camera_state", "Parameters": ""}, timeout=10)
        assert json.loads(sim.json()["Value"])["controls"]["Gain"][1] is True
    finally:
        again.stop()


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
