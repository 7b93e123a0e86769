"""INDI parity with indi_asi_ccd through libindi's own client (pyindi-client): CCD_TEMP_RAMP and the
warm-up at disconnect, CCD_FAST_TOGGLE/CCD_FAST_COUNT, CCD_CONTROLS_MODE, and CCD_CFA following FLIP.

One ``serve`` in this process (INDI and Alpaca over the same simulated cameras: ASI294MC Pro colour
and cooled, ASI2600MM Pro mono and cooled, ASI120MM Mini mono with ST4), so a test can read the
simulated camera's own record (its cooler target, its control flags) beside what the client sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from alpaca.camera import Camera, SensorType

from driver import simulator
from driver.bayer import shifted
from support.indi_client import DEV120, DEV294, PyIndi, PyIndiClient, needs_pyindi
from support.inprocess import InProcessServer, serve_in_process
from support.servers import alpaca_get, alpaca_put, wait_port
from zwo_common.fits import read_fits

pytestmark = needs_pyindi
DEV2600 = "ZWO CCD ASI2600MM Pro"
COLOR, MONO_COOLED, MINI = 0, 1, 2  # Alpaca device numbers = simulator slots


@dataclass
class Rig:
    server: InProcessServer
    client: PyIndiClient


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with serve_in_process(tmp_path_factory.mktemp("parity"), simulator="asi294mc-pro,asi2600mm-pro,asi120mm-mini",
                          indi=True) as server:
        assert server.indi_port is not None
        wait_port(server.indi_port)
        client = PyIndiClient(server.indi_port)
        try:
            client.setBLOBMode(PyIndi.B_ALSO, DEV294, None)
            for dev in (DEV294, DEV2600, DEV120):
                client.connect_device(dev)
            yield Rig(server, client)
        finally:
            client.close()


def sim_state(slot: int) -> dict:
    sim = simulator.current()
    assert sim is not None
    return sim.camera_state(slot)


def last(c: PyIndiClient, device: str, name: str) -> dict:
    """The latest values of a property as the client last heard them."""
    evs = [e for e in c.events if e.device == device and e.name == name and e.kind in ("new", "update")]
    assert evs, f"{device}.{name} was never defined"
    return {"state": evs[-1].state, **evs[-1].values}


def wait_values(c: PyIndiClient, device: str, name: str, pred, timeout: float = 5.0, since: int = 0):
    return c.wait_event(lambda e: e.device == device and e.name == name and e.kind in ("new", "update")
                        and pred(e), timeout, since)


# ---------------------------------------------------------------- property sets as indi_asi defines them

def test_parity_properties_per_model(rig: Rig) -> None:
    c = rig.client
    for dev in (DEV294, DEV2600, DEV120):  # definitions arrive asynchronously: wait for each camera's last ones
        for name in ("CCD_FAST_TOGGLE", "CCD_FAST_COUNT", "CCD_CONTROLS_MODE"):
            wait_values(c, dev, name, lambda e: True, timeout=10.0)
    defs = {(e.device, e.name): e for e in c.events if e.kind == "new"}
    for dev in (DEV294, DEV2600):  # cooled: the ramp, as libindi's CCD defines it, and the warm-up switch
        ramp = defs[(dev, "CCD_TEMP_RAMP")]
        assert set(ramp.values) == {"RAMP_SLOPE", "RAMP_THRESHOLD"}
        assert ramp.values["RAMP_SLOPE"] == (0.0, 0.0, 60.0) and ramp.values["RAMP_THRESHOLD"] == (0.2, 0.1, 2.0)
        assert set(defs[(dev, "CCD_WARM_AT_DISCONNECT")].values) == {"INDI_ENABLED", "INDI_DISABLED"}
    assert (DEV120, "CCD_TEMP_RAMP") not in defs and (DEV120, "CCD_WARM_AT_DISCONNECT") not in defs
    for dev in (DEV294, DEV2600, DEV120):
        fast = defs[(dev, "CCD_FAST_TOGGLE")]
        assert fast.values == {"INDI_ENABLED": False, "INDI_DISABLED": True}
        assert defs[(dev, "CCD_FAST_COUNT")].values["FRAMES"][0] == 1
        mode = defs[(dev, "CCD_CONTROLS_MODE")]
        controls = set(defs[(dev, "CCD_CONTROLS")].values)
        assert "AUTO_Gain" in mode.values and "AUTO_Exposure" not in mode.values
        assert {m[len("AUTO_"):] for m in mode.values} <= controls  # one switch per auto-capable control
    assert {"AUTO_WB_R", "AUTO_WB_B"} <= set(defs[(DEV294, "CCD_CONTROLS_MODE")].values)
    assert "AUTO_WB_R" not in defs[(DEV2600, "CCD_CONTROLS_MODE")].values  # a mono sensor has no white balance
    assert (DEV2600, "CCD_CFA") not in defs and defs[(DEV294, "CCD_CFA")].values["CFA_TYPE"] == "RGGB"


# ---------------------------------------------------------------- temperature ramp

def test_temperature_ramp_steps_the_cooler_target_for_indi_and_alpaca(rig: Rig) -> None:
    c = rig.client
    mark = c.mark()
    c.set_numbers(DEV2600, "CCD_TEMP_RAMP", RAMP_SLOPE=60, RAMP_THRESHOLD=0.5)
    wait_values(c, DEV2600, "CCD_TEMP_RAMP", lambda e: e.state == "Ok" and e.values["RAMP_SLOPE"][0] == 60, 5, mark)
    start = sim_state(MONO_COOLED)["temperature_c"]
    c.set_numbers(DEV2600, "CCD_TEMPERATURE", CCD_TEMPERATURE_VALUE=start - 10)
    wait_values(c, DEV2600, "CCD_TEMPERATURE", lambda e: e.state == "Busy", 5, mark)
    time.sleep(1.0)
    target = sim_state(MONO_COOLED)["target_c"]
    assert start - 3 <= target < start, target  # about 1 C/s, not the whole 10 C at once
    cam = Camera(rig.server.address, MONO_COOLED)  # alpyca
    assert cam.SetCCDTemperature == pytest.approx(start - 10)  # the setpoint asked for, not the step
    # Alpaca's SetCCDTemperature goes through the same ramp in the core.
    cam.SetCCDTemperature = start + 5
    time.sleep(0.6)
    target = sim_state(MONO_COOLED)["target_c"]
    assert target < start + 3, target
    # An out-of-range slope is the core's refusal, with its range.
    mark = c.mark()
    c.set_numbers(DEV2600, "CCD_TEMP_RAMP", RAMP_SLOPE=100)
    ev = c.wait_event(lambda e: e.kind == "message" and "ramp slope" in e.values["text"], 5, mark)
    assert "valid 0 (off) to 60 C/min" in ev.values["text"]
    c.set_numbers(DEV2600, "CCD_TEMP_RAMP", RAMP_SLOPE=0, RAMP_THRESHOLD=0.2)


def test_warm_at_disconnect_returns_promptly_and_a_connect_takes_over(rig: Rig) -> None:
    c = rig.client
    c.set_numbers(DEV2600, "CCD_TEMP_RAMP", RAMP_SLOPE=30, RAMP_THRESHOLD=0.2)
    c.set_numbers(DEV2600, "CCD_TEMPERATURE", CCD_TEMPERATURE_VALUE=-5)
    mark = c.mark()
    c.set_switch(DEV2600, "CCD_WARM_AT_DISCONNECT", "INDI_ENABLED")
    wait_values(c, DEV2600, "CCD_WARM_AT_DISCONNECT", lambda e: e.values["INDI_ENABLED"], 5, mark)
    time.sleep(1.5)  # cooled a little: the warm-up then takes seconds, long enough to be seen
    mark = c.mark()
    t0 = time.monotonic()
    c.set_switch(DEV2600, "CONNECTION", "DISCONNECT")
    c.wait_event(lambda e: e.device == DEV2600 and e.name == "CONNECTION" and e.state == "Idle", 5, mark)
    assert time.monotonic() - t0 < 2.0
    assert sim_state(MONO_COOLED)["open"] and sim_state(MONO_COOLED)["cooler_on"]  # warming up, camera held
    assert alpaca_get(rig.server, MONO_COOLED, "connected")["Value"] is False
    c.connect_device(DEV2600)  # takes the camera over from the warm-up
    assert sim_state(MONO_COOLED)["open"] and sim_state(MONO_COOLED)["cooler_on"]
    assert last(c, DEV2600, "CCD_WARM_AT_DISCONNECT")["INDI_ENABLED"]  # the settings persisted
    assert last(c, DEV2600, "CCD_TEMP_RAMP")["RAMP_SLOPE"][0] == 30
    mark = c.mark()
    c.set_switch(DEV2600, "CCD_WARM_AT_DISCONNECT", "INDI_DISABLED")
    wait_values(c, DEV2600, "CCD_WARM_AT_DISCONNECT", lambda e: e.values["INDI_DISABLED"], 5, mark)
    c.set_switch(DEV2600, "CCD_COOLER", "COOLER_OFF")


# ---------------------------------------------------------------- fast exposure

def test_fast_exposure_delivers_a_series_from_one_request(rig: Rig) -> None:
    c = rig.client
    c.set_numbers(DEV294, "CCD_FRAME", X=0, Y=0, WIDTH=640, HEIGHT=480)
    c.set_switch(DEV294, "CCD_FAST_TOGGLE", "INDI_ENABLED")
    c.set_numbers(DEV294, "CCD_FAST_COUNT", FRAMES=3)
    wait_values(c, DEV294, "CCD_FAST_COUNT", lambda e: e.values["FRAMES"][0] == 3)
    mark = c.mark()
    c.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.3)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        blobs = [e for e in c.since(mark) if e.name == "CCD1" and e.device == DEV294]
        if len(blobs) >= 3:
            break
        time.sleep(0.05)
    events = c.since(mark)
    blobs = [e for e in events if e.name == "CCD1" and e.device == DEV294]
    assert len(blobs) == 3, [(e.name, e.state) for e in events]
    for b in blobs:
        hdr, data = read_fits(b.values["CCD1"][1])
        assert data.shape == (480, 640) and hdr["EXPTIME"] == pytest.approx(0.3)
    counts = [e.values["FRAMES"][0] for e in events if e.name == "CCD_FAST_COUNT" and e.device == DEV294]
    assert counts[:2] == [2, 1] and last(c, DEV294, "CCD_FAST_COUNT")["state"] == "Idle"
    busy = [e for e in events if e.name == "CCD_EXPOSURE" and e.device == DEV294 and e.state == "Busy"
            and e.values["CCD_EXPOSURE_VALUE"][0] == pytest.approx(0.3)]
    assert len(busy) == 3  # three exposures started, from one CCD_EXPOSURE request
    time.sleep(0.8)
    assert len([e for e in c.since(mark) if e.name == "CCD1" and e.device == DEV294]) == 3  # and no more
    c.set_switch(DEV294, "CCD_FAST_TOGGLE", "INDI_DISABLED")
    c.set_switch(DEV294, "CCD_FRAME_RESET", "RESET")


# ---------------------------------------------------------------- auto controls

def test_auto_switch_sets_the_sdk_flag_and_a_value_clears_it(rig: Rig) -> None:
    c = rig.client
    mark = c.mark()
    c.set_switch(DEV2600, "CCD_CONTROLS_MODE", "AUTO_Gain", extra_off=False)
    wait_values(c, DEV2600, "CCD_CONTROLS_MODE", lambda e: e.state == "Ok" and e.values["AUTO_Gain"], 5, mark)
    assert bool(sim_state(MONO_COOLED)["controls"]["Gain"][1])
    mark = c.mark()
    c.set_numbers(DEV2600, "CCD_CONTROLS", Gain=123)
    wait_values(c, DEV2600, "CCD_CONTROLS_MODE", lambda e: not e.values["AUTO_Gain"], 5, mark)
    assert not sim_state(MONO_COOLED)["controls"]["Gain"][1] and sim_state(MONO_COOLED)["gain"] == 123
    # A switch for a control without an auto mode does not exist: the framework refuses the member.
    mark = c.mark()
    raw = PyIndi.PropertySwitch(c.wait_prop(DEV2600, "CCD_CONTROLS_MODE"))
    assert "AUTO_Offset" not in [m.getName() for m in raw]


# ---------------------------------------------------------------- flip and CCD_CFA / BayerOffset

def test_flip_moves_ccd_cfa_and_alpaca_bayer_offsets_alike(rig: Rig) -> None:
    c = rig.client
    seen: list[str] = []
    for h, v, want in ((True, False, "GRBG"), (False, True, "GBRG"), (True, True, "BGGR"), (False, False, "RGGB")):
        mark = c.mark()
        fl = PyIndi.PropertySwitch(c.wait_prop(DEV294, "FLIP"))
        for m in fl:
            m.setState(PyIndi.ISS_ON if (m.getName() == "FLIP_HORIZONTAL" and h) or
                       (m.getName() == "FLIP_VERTICAL" and v) else PyIndi.ISS_OFF)
        c.sendNewSwitch(fl)
        wait_values(c, DEV294, "FLIP", lambda e: e.state == "Ok", 5, mark)
        if want != "RGGB" or seen:
            ev = wait_values(c, DEV294, "CCD_CFA", lambda e: True, 5, mark)
            cfa = ev.values
        else:
            cfa = last(c, DEV294, "CCD_CFA")
        got = shifted(cfa["CFA_TYPE"], int(cfa["CFA_OFFSET_X"]), int(cfa["CFA_OFFSET_Y"]))
        cam = Camera(rig.server.address, COLOR)  # alpyca
        assert cam.SensorType == SensorType.RGGB
        ox, oy = cam.BayerOffsetX, cam.BayerOffsetY
        assert got == want and shifted("RGGB", ox, oy) == want, (h, v, cfa, ox, oy)
        seen.append(got)
    # The FITS header of a delivered frame says the same as CCD_CFA.
    mark = c.mark()
    c.set_numbers(DEV294, "CCD_FRAME", X=101, Y=0, WIDTH=400, HEIGHT=300)
    c.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.1)
    c.wait_event(lambda e: e.device == DEV294 and e.name == "CCD_EXPOSURE" and e.state == "Ok", 10, mark)
    blob = [e for e in c.since(mark) if e.name == "CCD1"][-1]
    hdr, _ = read_fits(blob.values["CCD1"][1])
    cfa = last(c, DEV294, "CCD_CFA")
    assert (hdr["BAYERPAT"], hdr["XBAYROFF"], hdr["YBAYROFF"]) == ("RGGB", 1, 0)
    assert (cfa["CFA_TYPE"], cfa["CFA_OFFSET_X"], cfa["CFA_OFFSET_Y"]) == ("RGGB", "1", "0")
    c.set_switch(DEV294, "CCD_FRAME_RESET", "RESET")
    alpaca_put(rig.server, COLOR, "abortexposure")
