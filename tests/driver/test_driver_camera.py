"""The device core over the simulated SDK: lifecycle, exposures, capture, faults and recovery.

Each test asserts from the outside: the camera's status, the frames it delivers, the simulator's
record of open handles, and the process's threads.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as hst

from driver import (
    CameraGoneError,
    CameraState,
    CaptureWindow,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotSupportedError,
    ReconnectPolicy,
    ZWOCamera,
    sdk,
    simulator,
)

S = CameraState
FAST = ReconnectPolicy(initial=0.05, factor=2.0, cap=0.2)


@pytest.fixture
def sim(tmp_path) -> Iterator[simulator.SimulatedSDK]:
    """A fresh simulator with a private lock directory, so no other test or server shares its cameras."""
    info = sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
    assert info.kind == "simulator"
    current = simulator.current()
    assert current is not None
    yield current
    simulator.uninstall()


@pytest.fixture
def cam(sim) -> Iterator[ZWOCamera]:
    camera = ZWOCamera(0, reconnect=FAST, health_interval=0.1)
    yield camera
    camera.disconnect_camera()


@pytest.fixture
def mini(sim) -> Iterator[ZWOCamera]:
    camera = ZWOCamera(1, reconnect=FAST, health_interval=0.1)
    yield camera
    camera.disconnect_camera()


def wait_state(camera: ZWOCamera, *states: CameraState, timeout: float = 5.0) -> CameraState:
    assert camera.wait_for(lambda s: s.state in states, timeout), \
        f"state {camera.state.value} never became one of {[s.value for s in states]}"
    return camera.state


def expose(camera: ZWOCamera, seconds: float = 0.01, light: bool = True):
    camera.start_exposure(seconds, light)
    assert camera.wait_for(lambda s: s.image_ready, seconds + 10.0), camera.status()
    return camera.last_frame()


# ---------------------------------------------------------------- construction and connection

def test_construction_touches_no_hardware(sim):
    before = sim.record().calls.copy()
    ZWOCamera(0)
    assert sim.record().calls == before
    assert not sim.record().open_handles


def test_connect_and_disconnect_release_the_handle(cam, sim):
    cam.connect()
    assert cam.state == S.IDLE
    assert sim.record().open_handles == {cam.info.camera_id}
    assert cam.info.controls and "Gain" in cam.info.controls
    assert cam.info.serial
    cam.disconnect_camera()
    assert cam.state == S.DISCONNECTED
    assert not sim.record().open_handles
    cam.disconnect_camera()  # idempotent
    assert cam.counters()["disconnects"] == 1


def test_context_manager_tears_down_even_on_exception(sim):
    with pytest.raises(RuntimeError, match="boom"):
        with ZWOCamera(0) as camera:
            camera.start_exposure(30.0)
            raise RuntimeError("boom")
    assert camera.state == S.DISCONNECTED
    rec = sim.record()
    assert not rec.open_handles and not rec.exposures_running


def test_concurrent_disconnects_are_safe(cam, sim):
    cam.connect()
    cam.start_exposure(60.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            cam.disconnect_camera()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not errors
    assert cam.state == S.DISCONNECTED
    assert not sim.record().open_handles


def test_calls_need_a_connection(cam):
    with pytest.raises(NotConnectedError):
        cam.start_exposure(1.0)
    with pytest.raises(NotConnectedError):
        cam.control_value("Gain")


def test_busy_camera_reports_clearly(cam, sim):
    """A camera opened by another process (the simulator's `hold` command) cannot be opened here."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-m", "driver.simulator", "hold", "asi294mc-pro,asi120mm-mini",
                               "--lock-dir", sim.lock_dir, "--seconds", "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("holding")
        with pytest.raises(Exception, match="another program"):
            cam.connect()
        assert cam.state == S.DISCONNECTED
        assert not cam.status().connected
    finally:
        holder.kill()
        holder.wait()
    cam.connect()  # the OS released the dead holder's claim at once
    assert cam.state == S.IDLE


def test_async_connect_reports_connecting_until_done(cam):
    cam.begin_connect()
    assert cam.wait_for(lambda s: s.connected and not s.connecting and s.state == S.IDLE, 5)
    cam.begin_disconnect()
    assert cam.wait_for(lambda s: not s.connecting and s.state == S.DISCONNECTED, 5)


# ---------------------------------------------------------------- exposures

def test_exposure_state_sequence_and_frame(cam):
    seen: list[CameraState] = []
    cam.add_listener(lambda ev: seen.append(ev.data["new"]) if ev.kind == "state" else None)
    cam.connect()
    cam.configure(gain=120, offset=10)
    frame = expose(cam, 0.2)
    assert seen[:5] == [S.CONNECTING, S.IDLE, S.EXPOSING, S.READING, S.IMAGE_READY]
    assert frame.data.shape == (2822, 4144) and frame.data.dtype == np.uint16
    assert frame.gain == 120 and frame.offset == 10 and frame.light
    assert frame.bayer_pattern == "RGGB"
    st = cam.status()
    assert st.image_ready and st.percent_completed == 100
    assert st.last_exposure_duration == pytest.approx(0.2)
    assert abs((dt.datetime.now(dt.UTC) - st.last_exposure_start).total_seconds()) < 10


def test_subframe_binning_and_8bit(cam):
    cam.connect()
    cam.configure(bin=2, start_x=5, start_y=3, width=13, height=7, image_type="RAW8")
    frame = expose(cam)
    assert frame.data.shape == (7, 13) and frame.data.dtype == np.uint8
    assert (frame.bin, frame.start_x, frame.start_y) == (2, 5, 3)


def test_subframe_outside_binned_sensor_is_rejected_with_range(cam):
    cam.connect()
    cam.configure(bin=4, width=2000)
    with pytest.raises(InvalidValueError, match="StartX\\+NumX <= 1036"):
        cam.start_exposure(0.01)
    assert cam.state == S.IDLE


def test_invalid_values_name_the_range(cam):
    cam.connect()
    gain = cam.controls()["Gain"]
    with pytest.raises(InvalidValueError, match=f"valid {gain.min} to {gain.max}"):
        cam.configure(gain=gain.max + 1)
    with pytest.raises(InvalidValueError, match="valid 1, 2"):
        cam.configure(bin=7)
    with pytest.raises(InvalidValueError, match="out of range"):
        cam.start_exposure(1e9)
    with pytest.raises(InvalidValueError):
        cam.start_exposure(-1)


def test_dark_frame_has_no_stars(cam):
    cam.connect()
    cam.configure(bin=2, image_type="RAW16")
    light = expose(cam, 0.5, light=True).data.astype(np.int32)
    dark = expose(cam, 0.5, light=False).data.astype(np.int32)
    dark2 = expose(cam, 0.5, light=False).data.astype(np.int32)
    # hot pixels are in both; only stars make light minus dark large
    assert (light - dark).max() > 4 * np.abs(dark2 - dark).max()


def test_second_exposure_while_exposing_is_invalid_operation(cam):
    cam.connect()
    cam.start_exposure(5.0)
    with pytest.raises(InvalidOperationError):
        cam.start_exposure(1.0)
    cam.abort_exposure()
    assert cam.state == S.IDLE


def test_abort_discards_and_stop_keeps(cam):
    cam.connect()
    cam.configure(bin=4)
    cam.start_exposure(30.0)
    wait_state(cam, S.EXPOSING)
    t0 = time.monotonic()
    cam.abort_exposure()
    assert time.monotonic() - t0 < 1.0
    assert cam.state == S.IDLE and not cam.status().image_ready
    cam.abort_exposure()  # harmless when idle
    cam.stop_exposure()
    cam.start_exposure(30.0)
    time.sleep(0.3)
    cam.stop_exposure()
    assert cam.wait_for(lambda s: s.image_ready, 5)
    assert cam.last_frame().duration < 5


def test_exposure_overhead_is_readout_plus_little(cam):
    cam.connect()
    cam.configure(bin=4)
    expose(cam, 0.001)  # warm caches
    t0 = time.monotonic()
    expose(cam, 0.001)
    assert time.monotonic() - t0 < 1.0


def test_buffers_are_reused_between_frames(cam):
    cam.connect()
    cam.configure(width=800, height=600)  # a subframe the SDK reads as is (no edge padding)
    bases = set()
    for _ in range(4):
        frame = expose(cam)
        base = frame.data.base
        while getattr(base, "base", None) is not None:
            base = base.base
        base = getattr(base, "obj", base)  # numpy may hold a memoryview: the buffer is behind it
        assert isinstance(base, bytearray), type(base)
        bases.add(id(base))
    assert len(bases) == 2  # double-buffered: the previous frame stays valid during the next


# ---------------------------------------------------------------- teardown under load

def test_disconnect_mid_long_exposure_returns_within_a_second(cam, sim):
    cam.connect()
    cam.start_exposure(300.0)
    wait_state(cam, S.EXPOSING)
    time.sleep(0.2)
    t0 = time.monotonic()
    cam.disconnect_camera()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, elapsed
    rec = sim.record()
    assert not rec.open_handles and not rec.exposures_running
    cam.connect()  # reconnect works at once
    assert cam.state == S.IDLE


def test_teardown_continues_when_steps_fail(cam, sim):
    cam.connect()
    cam.start_capture(lambda f: None, exposure=0.01, mode="video")
    wait_state(cam, S.CAPTURING)
    sim.inject("ASIStopVideoCapture", 16, count=5)
    sim.inject("ASICloseCamera", 16, count=1)
    cam.disconnect_camera()
    assert cam.state == S.DISCONNECTED
    assert cam._handle is None
    failures = [k for k in cam.counters() if k.startswith("teardown_failure")]
    assert failures
    cam.connect()
    assert cam.state == S.IDLE


def test_rapid_cycles_leak_nothing(cam, sim):
    import tracemalloc

    def cycle(i: int) -> None:
        cam.connect()
        if i % 2:
            cam.start_capture(lambda f: None, exposure=0.001, mode="video" if i % 4 == 1 else "exposure")
            cam.stop_capture()
        else:
            cam.start_exposure(1.0)
        cam.disconnect_camera()

    cam.configure(bin=4)
    for i in range(10):
        cycle(i)
    threads_before = threading.active_count()
    tracemalloc.start()
    t0 = time.monotonic()
    for i in range(100):  # warm-up: the simulator's bounded caches fill here
        cycle(i)
    snap0 = tracemalloc.take_snapshot()
    for i in range(100, 200):
        cycle(i)
    rate = 200 / (time.monotonic() - t0)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # Steady memory: the second hundred cycles must not keep growing. The simulator's own bounded
    # caches (noise pools keyed by sensor temperature) are the simulated hardware, not the core.
    only_core = [tracemalloc.Filter(False, "*/driver/simulator/*")]
    snap0, snap1 = snap0.filter_traces(only_core), snap1.filter_traces(only_core)
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    time.sleep(0.2)
    assert threading.active_count() <= threads_before
    assert not sim.record().open_handles
    assert growth < 2_000_000, growth
    assert rate > 5, rate


# ---------------------------------------------------------------- continuous capture

def test_continuous_capture_delivers_frames_and_survives_a_bad_callback(cam, sim):
    cam.connect()
    cam.configure(bin=4)
    frames = []

    def on_frame(frame):
        frames.append(frame.seq)
        if len(frames) == 2:
            raise ValueError("callback bug")

    cam.start_capture(on_frame, exposure=0.01, mode="video")
    assert cam.wait_for(lambda s: len(frames) >= 5, 10)
    cam.stop_capture()
    assert cam.state == S.IDLE
    assert not sim.record().video_running
    assert cam.counters()["callback_errors"] == 1
    assert frames == sorted(frames)


def test_stop_capture_mid_long_exposure_is_quick(cam, sim):
    cam.connect()
    cam.start_capture(lambda f: None, exposure=20.0, mode="exposure")
    time.sleep(0.3)
    t0 = time.monotonic()
    cam.stop_capture()
    assert time.monotonic() - t0 < 1.0
    assert cam.state == S.IDLE
    assert not sim.record().exposures_running


def test_video_timeouts_are_counted_and_capture_continues(cam, sim):
    cam.connect()
    cam.configure(bin=4)
    frames = []
    sim.video_timeouts(cam.sim_slot, 2)
    cam.start_capture(lambda f: frames.append(f), exposure=0.001, mode="video")
    assert cam.wait_for(lambda s: len(frames) >= 3, 15)
    cam.stop_capture()
    assert cam.counters().get("video_timeouts") == 2


# ---------------------------------------------------------------- faults and recovery

def test_unplug_while_idle_is_noticed_and_recovered_with_settings(cam, sim):
    cam.connect()
    cam.configure(gain=200, offset=30, bin=2)
    sim.unplug(cam.sim_slot)
    wait_state(cam, S.ERROR)
    st = cam.status()
    assert st.connected and "reconnect" in st.status_text
    with pytest.raises(CameraGoneError):
        cam.start_exposure(0.1)
    sim.replug(cam.sim_slot)
    wait_state(cam, S.IDLE)
    assert cam.control_value("Gain") == 200 and cam.control_value("Offset") == 30
    frame = expose(cam)
    assert frame.bin == 2
    c = cam.counters()
    assert c["reconnects"] == 1 and c.get("failure:removed", 0) >= 1


@pytest.mark.parametrize("phase", ["exposure", "readout"])
def test_unplug_mid_exposure_loses_that_frame_and_recovers(cam, sim, phase):
    cam.connect()
    cam.configure(bin=2)
    first = expose(cam)
    sim.unplug_after(cam.sim_slot, phase=phase, delay=0.05)
    cam.start_exposure(0.3)
    wait_state(cam, S.ERROR, timeout=5)
    assert cam.last_frame().seq == first.seq  # the lost exposure never becomes ready
    assert cam.status().connected
    sim.replug(cam.sim_slot)
    wait_state(cam, S.IDLE, timeout=5)
    assert expose(cam).seq == first.seq + 1


def test_unplug_during_continuous_capture_resumes_capture(cam, sim):
    cam.connect()
    cam.configure(bin=4)
    frames = []
    cam.start_capture(lambda f: frames.append(f.seq), exposure=0.01, mode="video")
    assert cam.wait_for(lambda s: len(frames) >= 2, 10)
    sim.unplug(cam.sim_slot)
    wait_state(cam, S.ERROR)
    assert not sim.record().open_handles
    n = len(frames)
    sim.replug(cam.sim_slot)
    wait_state(cam, S.CAPTURING)
    assert cam.wait_for(lambda s: len(frames) >= n + 2, 10)
    cam.stop_capture()


def test_backoff_is_bounded_and_failures_counted(sim):
    camera = ZWOCamera(0, reconnect=ReconnectPolicy(initial=0.05, factor=2.0, cap=0.1), health_interval=0.05)
    try:
        camera.connect()
        sim.unplug(camera.sim_slot)
        wait_state(camera, S.ERROR)
        time.sleep(1.0)
        fails = camera.counters().get("reconnect_failures", 0)
        assert 5 <= fails <= 25, fails  # ~10 attempts a second at the 0.1 s cap
    finally:
        sim.replug(camera.sim_slot)
        camera.disconnect_camera()
    assert not sim.record().open_handles


# ---------------------------------------------------------------- schedule

def test_off_peak_releases_the_camera_and_resumes_capture(sim):
    now = [dt.datetime(2026, 11, 24, 19, 0)]
    camera = ZWOCamera(0, reconnect=FAST, health_interval=0.1, clock=lambda: now[0])
    try:
        camera.connect()
        camera.configure(bin=4)
        camera.set_schedule(CaptureWindow.parse("20:00-06:00"))
        frames = []
        camera.start_capture(lambda f: frames.append(f), exposure=0.01)
        wait_state(camera, S.OFF_PEAK)
        assert camera.status().status_text == "Idle (off-peak until 20:00)"
        assert camera.status().connected and camera.status().capturing
        assert not sim.record().open_handles  # another program may use it now
        now[0] = dt.datetime(2026, 11, 24, 20, 0, 5)
        wait_state(camera, S.CAPTURING)
        assert camera.wait_for(lambda s: len(frames) >= 2, 10)
        now[0] = dt.datetime(2026, 11, 25, 6, 0, 1)
        wait_state(camera, S.OFF_PEAK)
        assert not sim.record().open_handles
    finally:
        camera.disconnect_camera()
    assert camera.state == S.DISCONNECTED


def test_capture_window_parsing():
    w = CaptureWindow.parse("20:00-06:00")
    assert w.contains(dt.datetime(2026, 1, 1, 23, 0)) and w.contains(dt.datetime(2026, 1, 1, 5, 59))
    assert not w.contains(dt.datetime(2026, 1, 1, 12, 0))
    for bad in ("20:00", "25:00-06:00", "20:00-20:00", "8pm-6am"):
        with pytest.raises(InvalidValueError, match="HH:MM|empty"):
            CaptureWindow.parse(bad)


# ---------------------------------------------------------------- cooling and guiding

def test_cooler_and_temperature(cam):
    cam.connect()
    cam.set_cooler(True, -10)
    assert cam.wait_for(lambda s: s.cooler_on and s.ccd_temperature is not None and s.cooler_power is not None, 5)
    with pytest.raises(InvalidValueError, match="out of range"):
        cam.set_cooler(True, -100)


def test_uncooled_and_st4(mini, cam, sim):
    mini.connect()
    with pytest.raises(NotSupportedError):
        mini.set_cooler(True, -10)
    mini.pulse_guide("N", 200)
    assert mini.status().is_pulse_guiding
    assert 0 in sim.record().pulse_guiding.get(mini.sim_slot, set())
    assert mini.wait_for(lambda s: not s.is_pulse_guiding, 2)
    with pytest.raises(InvalidValueError):
        mini.pulse_guide("X", 100)
    cam.connect()
    with pytest.raises(NotSupportedError):
        cam.pulse_guide("N", 100)


def test_settings_survive_disconnect(cam):
    cam.connect()
    cam.configure(gain=150, offset=20, bin=2, image_type="RAW8", high_speed=True)
    cam.disconnect_camera()
    cam.connect()
    assert cam.control_value("Gain") == 150
    assert cam.control_value("HighSpeedMode") == 1
    assert expose(cam).data.dtype == np.uint8


# ---------------------------------------------------------------- subframes the SDK can read


@hsettings(max_examples=400, deadline=None)
@given(model=hst.sampled_from([(4144, 2822, "ZWO ASI294MC Pro", 4), (1280, 960, "ZWO ASI120MM Mini", 2),
                               (9576, 6388, "ZWO ASI6200MM Pro", 4)]), data=hst.data())
def test_any_subframe_maps_to_a_readable_sdk_roi(model, data):
    from driver.models import CameraInfo, CameraSettings

    width, height, name, max_bin = model
    b = data.draw(hst.integers(1, max_bin))
    info = CameraInfo(index=0, camera_id=0, name=name, model=name[4:], serial=None, max_width=width,
                      max_height=height, pixel_size_um=3.76, is_color=False, bayer_pattern=None, bit_depth=16,
                      e_per_adu=1.0, supported_bins=(1, 2, 3, 4), image_types=("RAW16",), has_st4=False,
                      has_cooler=False, has_shutter=False, usb3=True)
    max_w, max_h = width // b, height // b
    x = data.draw(hst.integers(0, max_w - 1))
    y = data.draw(hst.integers(0, max_h - 1))
    w = data.draw(hst.integers(1, max_w - x))
    h = data.draw(hst.integers(1, max_h - y))
    st = CameraSettings(bin=b, start_x=x, start_y=y, width=w, height=h)
    from driver import roi as roi_mod
    from driver.model_facts import facts

    r = roi_mod.plan(st, info, facts(info.model).area_multiple)
    sx, sy, sw, sh, cx, cy, rw, rh, cw, ch = (r.sdk_x, r.sdk_y, r.sdk_w, r.sdk_h, r.crop_x, r.crop_y, r.width,
                                              r.height, r.cut_w, r.cut_h)
    read_w, read_h = max_w - max_w % 8, max_h - max_h % 2
    assert sw % 8 == 0 and sh % 2 == 0 and sx % 2 == 0 and sy % 2 == 0
    assert 0 <= sx and sx + sw <= read_w and 0 <= sy and sy + sh <= read_h
    if "ASI120" in name:
        assert (sw * sh) % 1024 == 0
    assert (rw, rh) == (w, h)
    assert 0 <= cx and cx + cw <= sw and 0 <= cy and cy + ch <= sh
    if x + w <= read_w:
        assert sx + cx == x and cw == w  # the requested columns, exactly
    else:
        assert w - cw <= 7
    if y + h <= read_h:
        assert sy + cy == y and ch == h
    else:
        assert h - ch <= 1


def test_subframe_shows_the_same_sky_as_the_full_frame(mini):
    mini.connect()
    full = expose(mini, 1.0).data.astype(np.float64).copy()
    # centre the subframe on the brightest star (a PSF, unlike a single hot pixel)
    score = sum(np.roll(full, k, axis=a) for k in (-1, 0, 1) for a in (0, 1))
    cy, cx = np.unravel_index(np.argmax(score), score.shape)
    x0 = int(min(max(cx - 150, 0), 1280 - 333)) | 1  # odd start: exercises the crop
    y0 = int(min(max(cy - 100, 0), 960 - 211)) | 1
    mini.configure(start_x=x0, start_y=y0, width=333, height=211)
    sub = expose(mini, 1.0).data.astype(np.float64)
    assert sub.shape == (211, 333)
    corr = np.corrcoef(sub.ravel(), full[y0:y0 + 211, x0:x0 + 333].ravel())[0, 1]
    dx = 3 if x0 < 600 else -3
    shifted = np.corrcoef(sub.ravel(), full[y0:y0 + 211, x0 + dx:x0 + dx + 333].ravel())[0, 1]
    assert corr > 0.3 and corr > shifted + 0.1, (corr, shifted)


def test_other_controls_by_name_persist_across_reconnect(cam):
    cam.connect()
    wb = cam.controls()["WB_R"]
    value = min(wb.max, wb.default + 5)
    cam.set_control("WB_R", value)
    assert cam.control_value("WB_R") == value
    with pytest.raises(InvalidValueError, match=f"valid {wb.min} to {wb.max}"):
        cam.set_control("WB_R", wb.max + 1)
    with pytest.raises(NotSupportedError, match="no control 'Nope'"):
        cam.set_control("Nope", 1)
    with pytest.raises(InvalidValueError, match="read-only"):
        cam.set_control("Temperature", 100)
    cam.set_control("Gain", 77)  # a control with its own setting goes through it
    assert cam.settings.gain == 77
    cam.disconnect_camera()
    cam.connect()
    assert cam.control_value("WB_R") == value and cam.control_value("Gain") == 77


def test_disconnect_while_connecting_wins_and_leaves_nothing_open(cam, sim):
    """Connect and disconnect requested back to back from two threads (a web page's two buttons)."""
    for _ in range(30):
        cam.begin_connect()
        cam.begin_disconnect()
        assert cam.wait_for(lambda s: not s.connecting, 5)
        cam.disconnect_camera()
        assert cam.state == S.DISCONNECTED
        assert not sim.record().open_handles
    cam.connect()
    assert cam.state == S.IDLE
