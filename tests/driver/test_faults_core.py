"""Faults during continuous and video capture, through the device core directly.

Neither front end offers continuous capture (ASCOM Alpaca has no video, and the INDI shim does not
stream), so these cases of the fault matrix (docs/reliability.md) drive ``ZWOCamera.start_capture``
over the simulated SDK in this process. tests/driver/test_driver_camera.py already covers an unplug during
video capture and a couple of video timeouts; these add the exposure-mode loop, settings restored
in the SDK after a capture-time unplug, timeouts beyond the in-a-row limit, and that ``status()``
never waits while any of it happens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from driver import CameraState, NotConnectedError, ReconnectPolicy, ZWOCamera, sdk, simulator
from support.faults import note, write_report

S = CameraState


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    write_report()


@pytest.fixture
def sim(tmp_path) -> Iterator[simulator.SimulatedSDK]:
    info = sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(tmp_path / "locks")})
    assert info.kind == "simulator"
    current = simulator.current()
    assert current is not None
    yield current
    simulator.uninstall()


@pytest.fixture
def cam(sim) -> Iterator[ZWOCamera]:
    camera = ZWOCamera(0, health_interval=0.2)  # the default reconnect policy (0.5 s doubling to 5 s)
    yield camera
    camera.disconnect_camera()


class StatusProbe(threading.Thread):
    """Calls ``status()`` every 10 ms and keeps the slowest answer."""

    def __init__(self, camera: ZWOCamera) -> None:
        super().__init__(daemon=True)
        self.camera = camera
        self.stop = threading.Event()
        self.slowest = 0.0
        self.states: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            st = self.camera.status()
            self.slowest = max(self.slowest, time.perf_counter() - t0)
            self.states.add(st.state.value)
            self.stop.wait(0.01)

    def finish(self) -> float:
        self.stop.set()
        self.join(5)
        return self.slowest


def wait_state(camera: ZWOCamera, state: CameraState, timeout: float) -> float:
    t0 = time.monotonic()
    assert camera.wait_for(lambda s: s.state == state, timeout), f"{camera.state.value}, not {state.value}"
    return time.monotonic() - t0


def test_unplug_during_exposure_mode_capture_restores_settings_and_resumes(cam, sim) -> None:
    cam.connect()
    cam.configure(gain=222, offset=33, bin=2, start_x=10, start_y=20, width=1000, height=800, image_type="RAW8")
    cam.set_cooler(True, -7)
    frames: list = []
    cam.start_capture(frames.append, exposure=0.05, mode="exposure")
    assert cam.wait_for(lambda s: len(frames) >= 2, 10)
    roi = sim.camera_state(0)["roi"]
    probe = StatusProbe(cam)
    probe.start()
    sim.unplug(0)
    noticed = wait_state(cam, S.ERROR, 3)
    assert cam.status().connected and cam.status().capturing  # the intent survives
    assert not sim.record().open_handles
    n = len(frames)
    sim.replug(0)
    recovery = wait_state(cam, S.CAPTURING, 8)
    assert cam.wait_for(lambda s: len(frames) >= n + 2, 10)
    slowest = probe.finish()
    st = sim.camera_state(0)
    assert (st["gain"], st["offset"], st["target_c"], st["cooler_on"], st["roi"]) == (222, 33, -7, True, roi)
    assert (frames[-1].width, frames[-1].height, frames[-1].image_type) == (1000, 800, "RAW8")
    assert slowest < 0.05, f"status() waited {slowest * 1000:.0f} ms"
    cam.stop_capture()
    assert cam.state == S.IDLE and not sim.record().exposures_running
    note("unplug during continuous capture (exposure loop)", "core", noticed_s=noticed, recovery_s=recovery,
         slowest_status_s=slowest, outcome="ERROR, handle closed; capture resumes by itself; settings restored")


def test_unplug_during_video_capture(cam, sim) -> None:
    cam.connect()
    cam.configure(bin=4, gain=150)
    frames: list = []
    cam.start_capture(frames.append, exposure=0.01, mode="video")
    assert cam.wait_for(lambda s: len(frames) >= 3, 10)
    probe = StatusProbe(cam)
    probe.start()
    sim.unplug(0)
    noticed = wait_state(cam, S.ERROR, 3)
    assert not sim.record().video_running
    n = len(frames)
    sim.replug(0)
    recovery = wait_state(cam, S.CAPTURING, 8)
    assert cam.wait_for(lambda s: len(frames) >= n + 3, 10)
    slowest = probe.finish()
    assert sim.camera_state(0)["gain"] == 150 and sim.record().video_running
    cam.stop_capture()
    assert not sim.record().video_running
    note("unplug during video capture", "core", noticed_s=noticed, recovery_s=recovery, slowest_status_s=slowest,
         outcome="waiting ASIGetVideoData wakes with CAMERA_REMOVED; video resumes after the replug")


def test_video_frame_timeouts_then_frames_again(cam, sim) -> None:
    cam.connect()
    cam.configure(bin=4)
    frames: list = []
    cam.start_capture(frames.append, exposure=0.001, mode="video")
    assert cam.wait_for(lambda s: len(frames) >= 2, 10)
    probe = StatusProbe(cam)
    probe.start()
    n = len(frames)
    t0 = time.monotonic()
    sim.video_timeouts(0, 3)
    assert cam.wait_for(lambda s: len(frames) >= n + 3, 10)
    took = time.monotonic() - t0
    slowest = probe.finish()
    assert cam.counters().get("video_timeouts") == 3
    assert probe.states == {"capturing"}  # never an error: three timeouts are weather, not a fault
    assert slowest < 0.05
    cam.stop_capture()
    note("video-frame timeout (3 in a row)", "core", frames_again_after_s=took, slowest_status_s=slowest,
         outcome="counted (video_timeouts), capture goes on, state stays Capturing")


def test_video_timeouts_beyond_the_limit_reconnect(sim) -> None:
    camera = ZWOCamera(0, reconnect=ReconnectPolicy(initial=0.2, factor=2.0, cap=1.0), health_interval=0.2)
    try:
        camera.connect()
        camera.configure(bin=4)
        frames: list = []
        camera.start_capture(frames.append, exposure=0.001, mode="video")
        assert camera.wait_for(lambda s: len(frames) >= 2, 10)
        sim.video_timeouts(0, 6)  # more than five in a row: the camera is not answering
        t0 = time.monotonic()
        assert camera.wait_for(lambda s: s.state == S.ERROR, 8)
        failed_after = time.monotonic() - t0
        wait_state(camera, S.CAPTURING, 8)
        n = len(frames)
        assert camera.wait_for(lambda s: len(frames) >= n + 2, 10)
        c = camera.counters()
        assert c.get("video_timeouts") == 5 and c.get("reconnects") == 1, c
        camera.stop_capture()
        note("video-frame timeouts beyond the limit (6 in a row)", "core", error_after_s=failed_after,
             outcome="treated as a camera that stopped answering: reconnect, video resumes")
    finally:
        camera.disconnect_camera()


def test_connecting_a_second_camera_of_the_same_model_leaves_the_first_alone(tmp_path) -> None:
    """Two ASI120MM Minis: connecting (and reconnecting) one must not close the other's SDK handle.

    Finding the right unit among cameras of one model means reading serial numbers, which needs the
    camera open; opening and closing a camera this process already has open closed its owner's
    handle (ASICloseCamera does not count opens), so every connect of one broke the other.
    """
    sdk.load(simulator=["asi120mm-mini", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
    sim = simulator.current()
    assert sim is not None
    first = ZWOCamera(sdk.enumerate_cameras()[0], health_interval=0.1)
    second = ZWOCamera(sdk.enumerate_cameras()[1], health_interval=0.1)
    try:
        first.connect()
        frames: list = []
        first.start_capture(frames.append, exposure=0.01, mode="exposure")
        for _ in range(5):
            second.connect()
            second.start_exposure(0.01)
            assert second.wait_for(lambda s: s.image_ready, 5)
            second.disconnect_camera()
        sim.unplug(1)  # connecting the unplugged one must not take its twin instead
        with pytest.raises(NotConnectedError, match="is not plugged in"):  # a known unit: NotConnected
            second.connect()
        assert not second.status().connected
        sim.replug(1)
        second.connect()
        second.configure(gain=77)
        sim.unplug(1)  # and while it is unplugged, its reconnect attempts must not take the twin either
        assert second.wait_for(lambda s: s.state == S.ERROR, 3)
        time.sleep(1.8)  # reconnect attempts at 0.5 s and 1.5 s
        assert second.counters().get("reconnect_failures", 0) >= 1 and second.state != S.IDLE
        sim.replug(1)
        assert second.wait_for(lambda s: s.state == S.IDLE, 8)
        assert sim.camera_state(1)["gain"] == 77 and sim.camera_state(0)["gain"] != 77
        n = len(frames)
        assert first.wait_for(lambda s: len(frames) >= n + 3, 5)
        c = first.counters()
        assert not any(k.startswith("failure") for k in c) and not c.get("reconnects"), c
        assert first.state == S.CAPTURING and sim.record().open_handles == {0, 1}
        first.stop_capture()
    finally:
        second.disconnect_camera()
        first.disconnect_camera()
        simulator.uninstall()


def test_another_camera_unplugged_does_not_break_roi_changes(tmp_path) -> None:
    """SDK camera IDs and enumeration indices differ once a camera is unplugged: an ROI change must
    still work on the others (zwoasi's set_roi_format looked the ID up as an index)."""
    sdk.load(simulator=["asi120mm-mini", "asi294mc-pro", "asi120mm-mini"],
             sim_options={"lock_dir": str(tmp_path / "locks")})
    sim = simulator.current()
    assert sim is not None
    infos = sdk.enumerate_cameras()
    big, small = ZWOCamera(infos[1], health_interval=0.2), ZWOCamera(infos[2], health_interval=0.2)
    try:
        big.connect()
        small.connect()
        sim.unplug(0)  # indices are now 0 = the ASI294 (ID 1), 1 = the second Mini (ID 2)
        for camera, width in ((big, 4144), (small, 1280)):
            camera.configure(bin=1, width=None, height=None)
            camera.start_exposure(0.01)
            assert camera.wait_for(lambda s: s.image_ready or s.error is not None, 5), camera.status()
            assert camera.status().image_ready, camera.status().error
            assert (frame := camera.last_frame()) is not None and frame.width == width
            camera.configure(bin=2, width=320, height=240)
            camera.start_exposure(0.01)
            assert camera.wait_for(lambda s: s.image_ready, 5), camera.status().error
            assert (frame := camera.last_frame()) is not None and (frame.width, frame.bin) == (320, 2)
        assert not any(k.startswith("failure") for c in (big, small) for k in c.counters())
    finally:
        small.disconnect_camera()
        big.disconnect_camera()
        simulator.uninstall()


def test_replug_of_a_twin_while_connecting_does_not_take_the_twin(tmp_path, monkeypatch) -> None:
    """Camera B of two of one model connects just as its unplugged twin A is plugged back: the SDK's
    indices shift between finding B and opening it, and B used to open A's camera (believing it its own)."""
    import driver.sdk as driver_sdk

    sdk.load(simulator=["asi120mm-mini", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
    sim = simulator.current()
    assert sim is not None
    infos = sdk.enumerate_cameras()
    a = ZWOCamera(infos[0], reconnect=ReconnectPolicy(enabled=False))
    b = ZWOCamera(infos[1], reconnect=ReconnectPolicy(enabled=False))
    original = driver_sdk.camera_info
    calls: list[int] = []

    def replug_first(index: int, serial: str | None = None):
        if not calls:
            sim.replug(0)  # A is back: the index B found now belongs to A
        calls.append(index)
        return original(index, serial)

    try:
        a.connect()
        sim.unplug(0)
        assert a.wait_for(lambda s: s.state == S.ERROR, 3)
        monkeypatch.setattr(driver_sdk, "camera_info", replug_first)
        b.connect()
        monkeypatch.setattr(driver_sdk, "camera_info", original)
        assert sim.record().open_handles == {1}  # B's own camera, not A's
        assert b.info is not None and b.info.camera_id == 1 and len(calls) == 2
    finally:
        b.disconnect_camera()
        a.disconnect_camera()
        simulator.uninstall()


def test_unplug_of_another_camera_while_connecting(tmp_path, monkeypatch) -> None:
    """Another camera leaves the bus between finding ours and reading its properties: the index found
    is out of range by then (ASI_ERROR_INVALID_INDEX); connecting must try again, not fail."""
    import driver.sdk as driver_sdk

    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini", "asi120mm-mini"],
             sim_options={"lock_dir": str(tmp_path / "locks")})
    sim = simulator.current()
    assert sim is not None
    cam = ZWOCamera(sdk.enumerate_cameras()[2])
    original = driver_sdk.camera_info
    calls: list[int] = []

    def unplug_first(index: int, serial: str | None = None):
        if not calls:
            sim.unplug(0)
        calls.append(index)
        return original(index, serial)

    try:
        monkeypatch.setattr(driver_sdk, "camera_info", unplug_first)
        cam.connect()
        assert calls == [2, 1] and cam.info is not None and cam.info.camera_id == 2
        assert sim.record().open_handles == {2}
    finally:
        monkeypatch.setattr(driver_sdk, "camera_info", original)
        cam.disconnect_camera()
        simulator.uninstall()
