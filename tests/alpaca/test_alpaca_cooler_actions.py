"""The Actions for core settings ASCOM has no member for, through alpyca: ``cooler.ramp``,
``cooler.warmup`` (cooled models only) and ``controls.auto``.

Device 0 is the simulated ASI294MC Pro (cooled, Gain auto-capable), device 1 the ASI120MM Mini
(uncooled). The shared server is left as it was found: ramp off, warm-up off, no auto control.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alpaca.camera import Camera
from alpaca.exceptions import ActionNotImplementedException, InvalidValueException, NotImplementedException

from support.servers import ServerProcess, reset_camera

pytestmark = pytest.mark.timeout(60)

COLOR, MONO = 0, 1


@pytest.fixture
def color(alpaca_server: ServerProcess) -> Iterator[Camera]:
    reset_camera(alpaca_server, COLOR)
    cam = Camera(alpaca_server.address, COLOR)
    gain, setpoint = cam.Gain, cam.SetCCDTemperature
    yield cam
    cam.Gain = gain  # the shared server's other tests expect what they found
    cam.SetCCDTemperature = setpoint
    cam.Action("cooler.ramp", json.dumps({"slope": 0, "threshold": 0.2}))
    cam.Action("cooler.warmup", json.dumps({"enabled": False}))
    cam.Action("controls.auto", json.dumps({"Gain": False}))
    cam.CoolerOn = False
    reset_camera(alpaca_server, COLOR)


@pytest.fixture
def mono(alpaca_server: ServerProcess) -> Iterator[Camera]:
    reset_camera(alpaca_server, MONO)
    yield Camera(alpaca_server.address, MONO)
    reset_camera(alpaca_server, MONO)


def _sim_gain(cam: Camera) -> list:
    """The simulated SDK's own (value, auto) of Gain: what the camera was really told."""
    return json.loads(cam.Action("sim.camera_state", ""))["controls"]["Gain"]


def test_ramp_and_warmup_set_read_and_ramp_the_setpoint(color: Camera) -> None:
    assert {"cooler.ramp", "cooler.warmup", "controls.auto"} <= set(color.SupportedActions)
    before = json.loads(color.Action("cooler.ramp", ""))
    assert (before["slope"], before["threshold"]) == (0.0, 0.2)
    reply = json.loads(color.Action("cooler.ramp", json.dumps({"slope": 30, "threshold": 0.5})))
    assert (reply["slope"], reply["threshold"]) == (30.0, 0.5)
    # SetCCDTemperature now ramps: the SDK's target starts at the sensor's temperature, not -10.
    color.CoolerOn = True
    color.SetCCDTemperature = -10.0
    state = json.loads(color.Action("cooler.ramp", ""))
    assert state["target"] == -10.0
    assert state["setpoint"] is not None and state["setpoint"] > -5.0, state
    assert state["reached"] is False
    assert json.loads(color.Action("cooler.warmup", json.dumps({"enabled": True}))) == {"enabled": True}
    assert json.loads(color.Action("COOLER.WARMUP", "")) == {"enabled": True}  # names in any case


def test_ramp_refusals_are_the_cores_messages(color: Camera) -> None:
    with pytest.raises(InvalidValueException, match=r"cooler\.ramp: ramp slope 99 C/min is out of range: "
                                                    r"valid 0 \(off\) to 60 C/min"):
        color.Action("cooler.ramp", json.dumps({"slope": 99}))
    with pytest.raises(InvalidValueException, match=r"ramp threshold 5 C is out of range: valid 0.1 to 2 C"):
        color.Action("cooler.ramp", json.dumps({"threshold": 5}))
    with pytest.raises(InvalidValueException, match=r"unknown Parameters key\(s\) rate: valid slope, threshold"):
        color.Action("cooler.ramp", json.dumps({"rate": 1}))
    with pytest.raises(InvalidValueException, match="Parameters must be a JSON object"):
        color.Action("cooler.warmup", "on")
    with pytest.raises(InvalidValueException, match="warm_at_disconnect 'yes' is not true or false"):
        color.Action("cooler.warmup", json.dumps({"enabled": "yes"}))
    assert json.loads(color.Action("cooler.ramp", ""))["slope"] == 0.0  # nothing was changed


def test_auto_controls_reach_the_sdk(color: Camera) -> None:
    first = json.loads(color.Action("controls.auto", ""))
    assert "Gain" in first["available"] and first["auto"] == {}
    assert json.loads(color.Action("controls.auto", json.dumps({"Gain": True})))["auto"] == {"Gain": True}
    assert _sim_gain(color)[1] is True
    color.Gain = 100  # a value takes the control back to manual, as in the SDK
    assert json.loads(color.Action("controls.auto", ""))["auto"] == {}
    assert _sim_gain(color) == [100, False]
    with pytest.raises(NotImplementedException, match="Exposure has no automatic mode"):
        color.Action("controls.auto", json.dumps({"Exposure": True}))


def test_uncooled_camera_has_no_cooler_actions(mono: Camera) -> None:
    actions = set(mono.SupportedActions)
    assert "controls.auto" in actions and not {"cooler.ramp", "cooler.warmup"} & actions
    with pytest.raises(ActionNotImplementedException, match="'cooler.ramp' is not supported"):
        mono.Action("cooler.ramp", json.dumps({"slope": 5}))
