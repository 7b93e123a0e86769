"""What the core reports is what the camera holds; a forgotten camera is released; an absent one waits.

Stored settings (config defaults) are checked against the camera when it connects, frame metadata
is read back from the SDK, the finaliser releases a camera nothing references, and a camera the
config knows but the bus does not says it is not plugged in and connects when it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from driver import NotConnectedError, ReconnectPolicy, ZWOCamera, sdk, simulator

FAST = ReconnectPolicy(initial=0.05, factor=2.0, cap=0.2)


@pytest.fixture
def sim(tmp_path) -> Iterator[simulator.SimulatedSDK]:
    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
    current = simulator.current()
    assert current is not None
    yield current
    simulator.uninstall()


def open_ids(sim: simulator.SimulatedSDK) -> list[int]:
    return sorted(sim.record().open_handles)


def test_out_of_range_defaults_are_not_applied_and_warned_once(sim, caplog) -> None:
    cam = ZWOCamera(0, reconnect=FAST)
    cam.configure(gain=999, offset=5, bin=3, target_temperature=-80.0)  # type-checked only: no camera yet
    with caplog.at_level(logging.WARNING, logger="zwo_alpaca.camera"):
        cam.connect()
    try:
        gain = cam.controls()["Gain"]
        warnings = [r.getMessage() for r in caplog.records if "is not applied" in r.getMessage()]
        assert any("gain=999" in w and f"valid {gain.min} to {gain.max}" in w for w in warnings), warnings
        assert any("target_temperature=-80.0" in w and "valid" in w for w in warnings), warnings
        assert sum("gain=999" in w for w in warnings) == 1
        st = cam.settings
        assert st.gain is None and st.offset == 5 and st.bin == 3  # the valid ones stay
        assert cam.reported("gain") == cam.control_value("Gain") != 999
        assert cam.reported("offset") == cam.control_value("Offset") == 5
        cam.start_exposure(0.01)
        assert cam.wait_for(lambda s: s.image_ready, 10)
        frame = cam.last_frame()
        assert frame is not None
        assert frame.gain == cam.control_value("Gain") and frame.offset == 5
    finally:
        cam.disconnect_camera()


def test_frame_metadata_is_what_the_sdk_holds(sim) -> None:
    cam = ZWOCamera(0, reconnect=FAST)
    cam.connect()
    try:
        cam.configure(gain=120)
        assert cam.held("gain") == cam.control_value("Gain") == 120
        cam.start_exposure(0.01)
        assert cam.wait_for(lambda s: s.image_ready, 10)
        frame = cam.last_frame()
        assert frame is not None and frame.gain == 120
    finally:
        cam.disconnect_camera()


def test_a_forgotten_connected_camera_is_released(sim) -> None:
    cam = ZWOCamera(1, reconnect=FAST)
    cam.connect()
    assert open_ids(sim)
    del cam  # no gc.collect(): with no reference cycle the finaliser runs at once
    deadline = time.monotonic() + 3
    while open_ids(sim) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_ids(sim) == [], "the finaliser did not release the camera (a reference cycle?)"


def test_absent_camera_says_not_plugged_in_and_connects_when_it_is(sim) -> None:
    info = sdk.enumerate_cameras()[1]
    assert info.serial
    sim.unplug(1)
    cam = ZWOCamera.for_absent(info.name, info.serial, reconnect=FAST)
    try:
        assert cam.model_name == info.name and cam.serial == info.serial
        with pytest.raises(NotConnectedError, match=rf"{info.name} \(serial {info.serial}\) is not plugged in"):
            cam.connect()
        st = cam.status()
        assert st.awaiting_plug and not st.connected
        sim.replug(1)
        assert cam.plugged_in(info) is True
        assert cam.status().connected and not cam.status().awaiting_plug
        assert cam.info is not None and cam.info.serial == info.serial
    finally:
        cam.disconnect_camera()


def test_plugged_in_without_a_request_does_not_connect(sim) -> None:
    info = sdk.enumerate_cameras()[0]
    cam = ZWOCamera.for_absent(info.name, info.serial, reconnect=FAST)
    try:
        assert cam.plugged_in(info) is False
        assert not cam.status().connected
        cam.connect()  # present now: connects as any camera
        assert cam.status().connected
    finally:
        cam.disconnect_camera()


def test_disconnect_withdraws_the_wish_to_connect(sim) -> None:
    info = sdk.enumerate_cameras()[1]
    sim.unplug(1)
    cam = ZWOCamera.for_absent(info.name, info.serial, reconnect=FAST)
    with pytest.raises(NotConnectedError):
        cam.connect()
    cam.disconnect_camera()
    assert not cam.status().awaiting_plug
    sim.replug(1)
    assert cam.plugged_in(info) is False
    assert not cam.status().connected
