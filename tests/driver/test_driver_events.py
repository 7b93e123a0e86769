"""The exposure lifecycle as the core publishes it: typed events, one outcome per exposure, time left.

Front ends translate these events and never reconstruct an outcome, so each outcome is checked
here from a listener's point of view: completed, stopped early, aborted, failed on an unplug, and
ended by a disconnect; plus the bias rule and the validation messages every front end passes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from driver import (
    CameraState,
    Connected,
    ConnectionLost,
    ExposureEnded,
    ExposureOutcome,
    ExposureStarted,
    FrameCaptured,
    InvalidValueError,
    ReconnectPolicy,
    StateChanged,
    ZWOCamera,
    sdk,
    simulator,
)

FAST = ReconnectPolicy(initial=0.05, factor=2.0, cap=0.2)


class Recorder:
    """A listener that keeps every event, and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self._cv = threading.Condition()

    def __call__(self, event: object) -> None:
        with self._cv:
            self.events.append(event)
            self._cv.notify_all()

    def wait(self, kind: type, timeout: float = 10.0) -> object:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                assert left > 0, f"no {kind.__name__} within {timeout} s; saw {[type(e).__name__ for e in self.events]}"
                self._cv.wait(left)

    def of(self, kind: type) -> list:
        with self._cv:
            return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def sim(tmp_path) -> Iterator[simulator.SimulatedSDK]:
    sdk.load(simulator=["asi294mc-pro", "asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
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


@pytest.fixture
def rec(cam) -> Recorder:
    r = Recorder()
    cam.add_listener(r)
    return r


def test_completed_exposure_is_started_then_ended_once_with_its_frame(cam, rec):
    token = object()
    exp = cam.start_exposure(0.2, True, owner=token)
    assert exp.owner is token and exp.duration == pytest.approx(0.2) and exp.frame_type == "light"
    ended = rec.wait(ExposureEnded)
    started = rec.of(ExposureStarted)
    assert [s.exposure for s in started] == [exp]
    assert ended.exposure == exp and ended.outcome is ExposureOutcome.COMPLETED and ended.frame is not None
    assert rec.events.index(started[0]) < rec.events.index(ended)
    frames = rec.of(FrameCaptured)
    assert frames and frames[-1].exposure == exp and frames[-1].frame is ended.frame
    assert cam.status().image_ready and cam.status().exposure == exp
    time.sleep(0.2)
    assert len(rec.of(ExposureEnded)) == 1, "an exposure ends exactly once"


def test_each_exposure_has_a_new_identity(cam, rec):
    first = cam.start_exposure(0.01)
    rec.wait(ExposureEnded)
    second = cam.start_exposure(0.01)
    assert second.id > first.id


def test_time_left_counts_down_during_the_exposure(cam):
    cam.start_exposure(1.5)
    first = cam.status().time_left
    time.sleep(0.5)
    later = cam.status().time_left
    assert first is not None and later is not None
    assert 1.2 < first <= 1.5 and 0.7 < later < first
    assert cam.wait_for(lambda s: s.image_ready, 10)
    assert cam.status().time_left is None


def test_stopped_exposure_keeps_a_shorter_frame(cam, rec):
    exp = cam.start_exposure(3.0)
    time.sleep(0.4)
    cam.stop_exposure()
    ended = rec.wait(ExposureEnded)
    assert ended.exposure == exp and ended.outcome is ExposureOutcome.STOPPED
    assert ended.frame is not None and ended.frame.duration < 3.0


def test_aborted_exposure_has_no_frame_and_no_reason(cam, rec):
    exp = cam.start_exposure(3.0)
    time.sleep(0.2)
    cam.abort_exposure()
    ended = rec.wait(ExposureEnded)
    assert ended.exposure == exp and ended.outcome is ExposureOutcome.ABORTED
    assert ended.frame is None and ended.reason is None
    assert not rec.of(FrameCaptured)


def test_disconnect_mid_exposure_ends_it_with_a_reason(cam, rec):
    cam.start_exposure(5.0)
    time.sleep(0.2)
    cam.disconnect_camera()
    ended = rec.wait(ExposureEnded)
    assert ended.outcome is ExposureOutcome.ABORTED and "disconnected" in (ended.reason or "")


def test_unplug_mid_exposure_fails_it_then_reconnects(cam, rec, sim):
    exp = cam.start_exposure(2.0)
    time.sleep(0.2)
    sim.unplug(0)
    ended = rec.wait(ExposureEnded)
    assert ended.exposure == exp and ended.outcome is ExposureOutcome.FAILED and ended.reason
    lost = rec.wait(ConnectionLost)
    assert lost.reason
    sim.replug(0)
    restored = rec.wait(Connected)
    assert restored.restored is True
    assert cam.wait_for(lambda s: s.state == CameraState.IDLE, 10)


def test_every_state_change_is_published(cam, rec):
    cam.start_exposure(0.05)
    rec.wait(ExposureEnded)
    news = [e.new for e in rec.of(StateChanged)]
    assert news[:3] == [CameraState.EXPOSING, CameraState.READING, CameraState.IMAGE_READY]


def test_bias_frame_exposes_for_the_camera_minimum_whatever_was_asked(cam, rec):
    minimum = cam.info.exposure_min_s
    for asked in (0.0, 0.5):
        exp = cam.start_exposure(asked, False, frame_type="bias")
        assert exp.duration == pytest.approx(minimum) and exp.light is False and exp.requested == asked
        ended = rec.wait(ExposureEnded)
        assert ended.frame is not None and ended.frame.duration == pytest.approx(minimum)
        assert not ended.frame.light
        rec.events.clear()


def test_unknown_frame_type_is_refused_with_the_valid_ones(cam):
    with pytest.raises(InvalidValueError, match="valid light, dark, bias, flat"):
        cam.start_exposure(1.0, frame_type="twilight")


@pytest.mark.parametrize("call, match", [
    (lambda c: c.start_exposure(-1), r"valid 0 to \d+ s"),
    (lambda c: c.start_exposure(float("nan")), r"valid 0 to"),
    (lambda c: c.configure(bin=5), r"valid 1, 2, 3, 4"),
    (lambda c: c.configure(gain=100000), r"valid 0 to \d+$"),
    (lambda c: c.configure(offset=-1), r"valid 0 to \d+$"),
    (lambda c: c.configure(width=0), r"valid 1 or more"),
    (lambda c: c.configure(start_x=-3), r"valid 0 or more"),
    (lambda c: c.configure(image_type="Y16"), r"valid RAW8, RGB24, RAW16"),
    (lambda c: c.configure(target_temperature=-200.0), r"valid -?\d+ to -?\d+ C"),
    (lambda c: c.set_subframe(0, 0, 99999, 10), r"valid StartX\+NumX <= 4144"),
])
def test_invalid_values_say_what_is_valid(cam, call, match):
    with pytest.raises(InvalidValueError, match=match):
        call(cam)


def test_guide_duration_range_on_a_camera_with_st4(sim):
    guide = ZWOCamera(1, reconnect=FAST)
    guide.connect()
    try:
        with pytest.raises(InvalidValueError, match="valid 0 to 3600000 ms"):
            guide.pulse_guide("N", 4_000_000)
        with pytest.raises(InvalidValueError, match="valid 0 to 3600000 ms"):
            guide.pulse_guide(0, -5)
        with pytest.raises(InvalidValueError, match="valid N, S, E, W"):
            guide.pulse_guide("X", 100)
    finally:
        guide.disconnect_camera()
