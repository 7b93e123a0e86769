"""The device core's parity features with INDI's own ZWO driver, over the simulated SDK: the cooler
ramp and the warm-up at disconnect, fast exposure series, automatic controls, and the mosaic phase
that the subframe start and the SDK's flip give the delivered images.

Everything is observed from the outside: the core's status and events, and the simulator's own
record of the camera (its cooler target, its open handles, its control flags, its pixels).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from driver import InvalidValueError, NotSupportedError, ReconnectPolicy, ZWOCamera, sdk, simulator
from driver.bayer import shifted
from driver.events import ExposureEnded, ExposureOutcome, ExposureStarted
from driver.state import CameraState

S = CameraState
FAST = ReconnectPolicy(initial=0.05, factor=2.0, cap=0.2)
#: The simulator's cooler time constant is 60 s; this runs it 60 times faster (a 1 s constant), so a
#: ramp at 60 C/min (1 C/s) is followed closely and a test takes seconds.
TIME_SCALE = 60.0


@pytest.fixture
def sim(tmp_path) -> Iterator[simulator.SimulatedSDK]:
    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"],
             sim_options={"lock_dir": str(tmp_path / "locks"), "time_scale": TIME_SCALE})
    current = simulator.current()
    assert current is not None
    yield current
    simulator.uninstall()


@pytest.fixture
def cam(sim) -> Iterator[ZWOCamera]:
    camera = ZWOCamera(0, reconnect=FAST, health_interval=0.1)
    camera.connect()
    yield camera
    camera.disconnect_camera()


def sample_targets(sim: simulator.SimulatedSDK, seconds: float) -> list[tuple[float, float, float]]:
    """(time, SDK cooler target, sensor temperature) every 0.1 s for `seconds`."""
    out = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s = sim.camera_state(0)
        out.append((time.monotonic() - t0, float(s["target_c"]), float(s["temperature_c"])))
        time.sleep(0.1)
    return out


# ---------------------------------------------------------------- cooler ramp

def test_ramp_moves_the_sdk_target_at_the_slope_and_reports_reached(cam, sim):
    cam.configure(ramp_slope=60.0, ramp_threshold=0.5)  # 1 C per second
    start = sim.camera_state(0)["temperature_c"]
    cam.set_cooler(True, start - 3)
    samples = sample_targets(sim, 1.5)
    # Gently: after 1.5 s the SDK target is not at the setpoint yet, and it never jumped ahead of the slope.
    assert samples[-1][1] > start - 3
    for t, target, _ in samples:
        assert target >= start - 1.0 * t - 1.0, (t, target)  # 1 C/s, plus the SDK's whole-degree rounding
    assert cam.status().target_temperature == pytest.approx(start - 3)  # what was asked stays what is shown
    assert cam.wait_for(lambda s: bool(s.temperature_reached), 8.0), cam.status()
    assert sim.camera_state(0)["target_c"] == pytest.approx(start - 3)
    assert abs(cam.status().ccd_temperature - (start - 3)) <= 0.5


def test_without_a_ramp_the_setpoint_goes_to_the_sdk_at_once(cam, sim):
    cam.set_cooler(True, 5.0)
    assert sim.camera_state(0)["target_c"] == 5.0
    assert cam.status().ramp_setpoint == 5.0


def test_ramp_settings_are_checked_by_the_core(cam, sim):
    with pytest.raises(InvalidValueError, match=r"valid 0 \(off\) to 60 C/min"):
        cam.configure(ramp_slope=61)
    with pytest.raises(InvalidValueError, match="valid 0.1 to 2 C"):
        cam.configure(ramp_threshold=0.0)
    mini = ZWOCamera(1)
    mini.connect()
    try:
        with pytest.raises(NotSupportedError, match="no cooler"):
            mini.configure(warm_at_disconnect=True)
    finally:
        mini.disconnect_camera()
    # They persist with the other settings, across a reconnection.
    cam.configure(ramp_slope=12, ramp_threshold=0.3, warm_at_disconnect=True)
    cam.disconnect_camera()  # cooler off: nothing to warm up
    assert cam.state == S.DISCONNECTED
    cam.connect()
    st = cam.settings
    assert (st.ramp_slope, st.ramp_threshold, st.warm_at_disconnect) == (12, 0.3, True)


# ---------------------------------------------------------------- warm-up at disconnect

def cool_to(cam: ZWOCamera, setpoint: float) -> None:
    cam.configure(ramp_slope=0.0, ramp_threshold=0.5)
    cam.set_cooler(True, setpoint)
    assert cam.wait_for(lambda s: bool(s.temperature_reached), 8.0), cam.status()


def test_warm_up_at_disconnect_returns_at_once_then_releases_the_camera(cam, sim):
    cool_to(cam, 17.0)
    cam.configure(ramp_slope=60.0, warm_at_disconnect=True)
    events: list[str] = []
    cam.add_listener(lambda e: events.append(e.kind))
    t0 = time.monotonic()
    cam.disconnect_camera()
    assert time.monotonic() - t0 < 1.0  # bounded: clients see the disconnect at once
    st = cam.status()
    assert st.state == S.WARMING and not st.connected and not st.connecting
    assert "disconnected" in events
    assert sim.record().open_handles  # the core still holds the camera while it warms it up
    samples = []
    deadline = time.monotonic() + 10.0
    while cam.state == S.WARMING and time.monotonic() < deadline:
        s = sim.camera_state(0)
        samples.append((time.monotonic() - t0, float(s["target_c"]), bool(s["cooler_on"])))
        time.sleep(0.1)
    assert cam.state == S.DISCONNECTED
    assert not sim.record().open_handles
    targets = [tg for _, tg, _ in samples]
    assert targets == sorted(targets) and targets[-1] > 17.0  # raised step by step, never lowered
    for t, target, _ in samples:
        assert target <= 17.0 + 1.0 * t + 1.0, (t, target)  # at the slope (1 C/s), not at once
    assert all(on for _, _, on in samples)  # the cooler stayed on while warming
    assert sim.camera_state(0)["temperature_c"] > 18.5  # near the 20 C ambient when released


def test_connect_during_warm_up_takes_the_camera_over(cam, sim):
    cool_to(cam, 17.0)
    cam.configure(ramp_slope=6.0, warm_at_disconnect=True)  # slow: still warming when we reconnect
    cam.disconnect_camera()
    assert cam.state == S.WARMING
    t0 = time.monotonic()
    cam.connect()
    assert time.monotonic() - t0 < 3.0
    st = cam.status()
    assert st.state == S.IDLE and st.connected and sim.record().open_handles == {cam.info.camera_id}
    s = sim.camera_state(0)
    assert s["cooler_on"] and st.target_temperature == 17.0  # cooling again toward the stored setpoint
    cam.disconnect_camera()  # still asked to warm up: a second disconnect ends it now, cooler off
    assert cam.state == S.WARMING
    cam.disconnect_camera()
    assert cam.state == S.DISCONNECTED and not sim.record().open_handles


def test_warm_up_is_bounded_by_its_time_limit(cam, sim, monkeypatch):
    cool_to(cam, 17.0)
    monkeypatch.setattr(ZWOCamera, "WARMUP_MAX_S", 0.5)
    cam.configure(ramp_slope=1.0, warm_at_disconnect=True)
    cam.disconnect_camera()
    assert cam.wait_for(lambda s: s.state == S.DISCONNECTED, 3.0)
    assert not sim.record().open_handles and not sim.camera_state(0)["open"]


# ---------------------------------------------------------------- fast exposure

def test_fast_exposure_series_starts_each_frame_when_the_last_is_read_out(cam, sim):
    cam.set_subframe(0, 0, 512, 512)
    events: list[object] = []
    done = threading.Event()

    def on(e: object) -> None:
        events.append(e)
        if isinstance(e, ExposureEnded) and e.exposure.remaining == 0:
            done.set()

    cam.add_listener(on)
    first = cam.start_exposure(0.2, repeat=3, owner="me")
    assert first.remaining == 3
    assert done.wait(10.0)
    started = [e.exposure for e in events if isinstance(e, ExposureStarted)]
    ended = [e for e in events if isinstance(e, ExposureEnded)]
    assert [x.remaining for x in started] == [3, 2, 1, 0]
    assert all(e.outcome == ExposureOutcome.COMPLETED and e.frame is not None for e in ended)
    assert all(x.owner == "me" and x.duration == 0.2 for x in started)
    seqs = [e.frame.seq for e in ended]
    assert seqs == sorted(set(seqs))


def test_abort_ends_a_fast_series(cam, sim):
    events: list[object] = []
    cam.add_listener(events.append)
    cam.start_exposure(0.3, repeat=5)
    time.sleep(0.1)
    cam.abort_exposure()
    time.sleep(0.8)
    assert cam.state in (S.IDLE, S.IMAGE_READY)
    assert sum(isinstance(e, ExposureStarted) for e in events) == 1
    with pytest.raises(InvalidValueError, match="valid 0 or more"):
        cam.start_exposure(0.1, repeat=-1)


# ---------------------------------------------------------------- automatic controls

def test_auto_controls_go_to_the_sdk_and_survive_a_reconnect(cam, sim):
    controls = sim.camera_state(0)["controls"]
    assert controls["Gain"][1] is False or controls["Gain"][1] == 0
    cam.set_auto("Gain", True)
    assert bool(sim.camera_state(0)["controls"]["Gain"][1]) and cam.control_auto("Gain")
    assert cam.settings.auto_controls == {"Gain": True}
    cam.disconnect_camera()
    cam.connect()
    assert bool(sim.camera_state(0)["controls"]["Gain"][1])  # reapplied after the reconnect
    cam.configure(gain=150)  # a value makes it manual again, as in the SDK
    assert not sim.camera_state(0)["controls"]["Gain"][1] and not cam.settings.auto_controls
    cam.set_auto("WB_R", True)
    cam.set_control("WB_R", 60)
    assert not cam.control_auto("WB_R")
    with pytest.raises(NotSupportedError, match="no automatic mode.*valid .*Gain"):
        cam.set_auto("Offset", True)


# ---------------------------------------------------------------- flip and the mosaic phase

PHASE_OF_BLUE = {(1, 1): "RGGB", (0, 0): "BGGR", (1, 0): "GRBG", (0, 1): "GBRG"}


def measured_pattern(data: np.ndarray) -> str:
    """The pattern the pixels show: blue passes least sky, and sits diagonally from red."""
    means = {}
    for oy in (0, 1):
        for ox in (0, 1):
            v = data[oy::2, ox::2].astype(np.float64).ravel()
            means[(oy, ox)] = v[v < np.percentile(v, 99)].mean()  # stars and hot pixels left out
    return PHASE_OF_BLUE[min(means, key=lambda k: means[k])]


def expose(cam: ZWOCamera, seconds: float = 0.2):
    cam.start_exposure(seconds)
    assert cam.wait_for(lambda s: s.image_ready, 10.0)
    return cam.last_frame()


@pytest.mark.parametrize("flip,want", [(0, "RGGB"), (1, "GRBG"), (2, "GBRG"), (3, "BGGR")])
def test_flip_changes_the_mosaic_the_pixels_show_and_the_core_reports(cam, flip, want):
    cam.configure(gain=300, flip=flip)
    cam.set_subframe(0, 0, 600, 400)
    frame = expose(cam)
    assert measured_pattern(frame.data) == want
    assert shifted(frame.bayer_pattern, frame.bayer_offset_x, frame.bayer_offset_y) == want
    assert shifted(*cam.bayer_phase()) == want
    # An odd start moves the phase once more; the report follows the pixels.
    cam.set_subframe(101, 51, 400, 300)
    frame = expose(cam)
    assert shifted(frame.bayer_pattern, frame.bayer_offset_x, frame.bayer_offset_y) == measured_pattern(frame.data)


def test_a_flipped_odd_subframe_is_the_mirror_of_the_same_region(cam):
    cam.configure(gain=300)
    cam.set_subframe(333, 211, 301, 199)  # neither start nor size aligned: the core crops an SDK region
    plain = expose(cam, 0.5).data.astype(np.int64)
    cam.configure(flip=3)
    flipped = expose(cam, 0.5).data.astype(np.int64)
    assert flipped.shape == plain.shape == (199, 301)
    # Stars stay where the sensor sees them: the brightest pixel lands mirrored (noise differs per frame).
    y, x = np.unravel_index(np.argmax(plain), plain.shape)
    fy, fx = np.unravel_index(np.argmax(flipped), flipped.shape)
    assert (fy, fx) == (plain.shape[0] - 1 - y, plain.shape[1] - 1 - x)
