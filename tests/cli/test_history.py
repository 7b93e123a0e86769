"""The per-camera history (``zwo_common/history.py``) over the simulated SDK in this process, and
``zwo-alpaca doctor``'s summary of it.

Exposures and their outcomes, an unplug and replug with the recovery time and each failed reconnect
attempt, persistence across a restart (a new history over the same files), the size bounds,
telemetry samples, the Action's Parameters, the config keys, and that a history never keeps its
camera alive.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from driver import CameraState, InvalidValueError, ReconnectPolicy, ZWOCamera, sdk, simulator
from support.servers import REPO, wait_until
from zwo_common import history
from zwo_common.config import Config
from zwo_runtime import cmd_doctor

pytestmark = pytest.mark.timeout(60)

FAST = ReconnectPolicy(initial=0.1, factor=2.0, cap=0.2)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[simulator.SimulatedSDK]:
    info = sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(tmp_path / "locks")})
    assert info.kind == "simulator"
    current = simulator.current()
    assert current is not None
    yield current
    simulator.uninstall()


@pytest.fixture
def cam(sim: simulator.SimulatedSDK) -> Iterator[ZWOCamera]:
    camera = ZWOCamera(sdk.enumerate_cameras()[0], reconnect=FAST, health_interval=0.1)
    yield camera
    camera.disconnect_camera()


def _types(hist: history.CameraHistory) -> list[str]:
    return [e["type"] for e in hist.events()]


def _wait_event(hist: history.CameraHistory, kind: str, timeout: float = 10.0) -> dict:
    return wait_until(lambda: next((e for e in hist.events() if e["type"] == kind), None), timeout,
                      f"a {kind} event in {_types(hist)}")  # type: ignore[return-value]


def test_an_exposure_and_its_outcome_are_recorded_with_utc_times(cam: ZWOCamera, tmp_path: Path) -> None:
    hist = history.CameraHistory(cam, tmp_path, "sim:ASI294MC Pro:TEST")
    cam.connect()
    exp = cam.start_exposure(0.05)
    assert cam.wait_for(lambda s: s.state == CameraState.IMAGE_READY, 10)
    cam.start_exposure(5.0)
    cam.abort_exposure()
    assert cam.wait_for(lambda s: s.state in (CameraState.IDLE, CameraState.IMAGE_READY), 5)
    hist.close()

    recorded = history.load_records(hist.events_path)
    kinds = [e["type"] for e in recorded]
    assert kinds[0] == "server_start" and "connected" in kinds and kinds[-1] == "server_stop"
    ended = [e for e in recorded if e["type"] == "exposure_ended"]
    assert [(e["outcome"], e["duration"]) for e in ended] == [("completed", 0.05), ("aborted", 5.0)]
    assert ended[0]["id"] == exp.id and kinds.count("exposure_started") == 2
    for e in recorded:  # UTC ISO 8601, milliseconds, Z
        stamp = dt.datetime.strptime(e["t"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert recorded[0]["camera"] == "ZWO ASI294MC Pro"


def test_unplug_and_replug_records_the_drop_each_failed_attempt_and_the_recovery_time(
        cam: ZWOCamera, sim: simulator.SimulatedSDK, tmp_path: Path) -> None:
    hist = history.CameraHistory(cam, tmp_path, "sim:drop")
    cam.connect()
    sim.unplug(0)
    unplugged = time.monotonic()
    lost = _wait_event(hist, "connection_lost", 5)
    assert lost["cause"] == "usb" and "removed" in lost["reason"].lower()
    # Reconnect attempts fail while the cable is out (backoff 0.1 s doubling to 0.2 s).
    wait_until(lambda: sum(e["type"] == "reconnect_failed" for e in hist.events()) >= 2, 10, "two failed attempts")
    sim.replug(0)
    back = _wait_event(hist, "reconnected", 10)
    outage = time.monotonic() - unplugged
    failed = [e for e in hist.events() if e["type"] == "reconnect_failed"]
    assert [e["attempt"] for e in failed] == list(range(1, len(failed) + 1))
    assert back["attempts"] == len(failed) + 1 and len(failed) == cam.counters().get("reconnect_failures")
    # Measured from ConnectionLost (the health read that noticed it) to Connected(restored=True).
    assert 0.2 < back["recovery_s"] <= outage + 0.05
    print(f"\nrecovery after an unplug of {outage:.2f} s: {back['recovery_s']} s, "
          f"{len(failed)} failed attempt(s)")
    summary = history.summarise(hist.events())
    assert summary["drops"] == 1 and summary["recoveries_s"] == [back["recovery_s"]] and summary["unrecovered"] == 0
    assert "connection_lost" not in [e.get("message") for e in hist.events() if e["type"] == "error"]
    hist.close()


def test_off_peak_release_and_resumption_are_recorded(sim: simulator.SimulatedSDK, tmp_path: Path) -> None:
    from driver import CaptureWindow

    now = [dt.datetime(2026, 11, 24, 19, 0)]
    camera = ZWOCamera(0, reconnect=FAST, health_interval=0.1, clock=lambda: now[0])
    hist = history.CameraHistory(camera, tmp_path, "sim:offpeak")
    try:
        camera.connect()
        camera.set_schedule(CaptureWindow.parse("20:00-06:00"))
        camera.start_capture(lambda f: None, exposure=0.01)
        released = _wait_event(hist, "off_peak")
        assert released["until"] == "20:00"
        now[0] = dt.datetime(2026, 11, 24, 20, 0, 5)
        _wait_event(hist, "resumed")
        assert _types(hist).index("off_peak") < _types(hist).index("off_peak_end") < _types(hist).index("resumed")
        assert history.summarise(hist.events())["off_peak_releases"] == 1
    finally:
        camera.disconnect_camera()
        hist.close()
    assert "disconnected" in [e["type"] for e in history.load_records(hist.events_path)]


def test_history_survives_a_restart(cam: ZWOCamera, tmp_path: Path) -> None:
    first = history.CameraHistory(cam, tmp_path, "sim:restart")
    cam.connect()
    cam.start_exposure(0.02)
    assert cam.wait_for(lambda s: s.state == CameraState.IMAGE_READY, 10)
    first.close()
    before = history.load_records(first.events_path)

    second = history.CameraHistory(cam, tmp_path, "sim:restart")  # the next start of the server
    events = second.events()
    assert events[:len(before)] == before
    assert [e["type"] for e in events[len(before):]] == ["server_start"]
    assert second.telemetry(1.0)["summary"]["exposures"] == {"completed": 1}
    second.close()
    assert [e["type"] for e in history.load_records(first.events_path)].count("server_start") == 2


def test_the_files_are_bounded_in_records_and_bytes(cam: ZWOCamera, tmp_path: Path) -> None:
    opts = history.HistoryOptions(max_events=50, max_samples=20)
    hist = history.CameraHistory(cam, tmp_path, "sim:bounded", options=opts, start=False)
    for i in range(500):
        hist.record("error", message=f"event {i}")
        if i % 10 == 0:
            hist.flush()
    hist.flush()
    lines = hist.events_path.read_text().splitlines()
    assert len(lines) <= 55 and len(hist.events()) == 50
    assert json.loads(lines[-1])["message"] == "event 499"
    reopened = history.CameraHistory(cam, tmp_path, "sim:bounded", options=opts, start=False)
    assert len(reopened.events()) == 50 and reopened.events()[-2]["message"] == "event 499"

    small = history.HistoryOptions(max_mb=0.01)  # 10.5 KB
    big = history.CameraHistory(cam, tmp_path, "sim:bytes", options=small, start=False)
    for i in range(300):
        big.record("error", message=f"{i} " + "x" * 200)
        big.flush()
    assert big.events_path.stat().st_size <= 0.01 * 1024 * 1024
    assert big.events()[-1]["message"].startswith("299 ")
    assert len(big.events()) == len(big.events_path.read_text().splitlines())


def test_samples_are_taken_while_connected_and_thinned_for_long_spans(cam: ZWOCamera, tmp_path: Path) -> None:
    hist = history.CameraHistory(cam, tmp_path, "sim:samples", start=False)
    assert hist.sample_now() is None  # not connected: nothing to sample
    cam.connect()
    cam.set_cooler(True, -5.0)
    wait_until(lambda: cam.status().cooler_on and cam.status().cooler_power is not None, 5, "cooler telemetry")
    sample = hist.sample_now()
    assert sample is not None and isinstance(sample["temp"], float) and sample["cooler"] is True
    assert sample["target"] == -5.0 and 0 <= sample["power"] <= 100
    hist.close()
    assert history.load_records(hist.samples_path)[-1]["temp"] == sample["temp"]

    # The thread samples every sample_interval (never faster than the camera's health interval).
    opts = history.HistoryOptions(sample_interval=0.1)
    live = history.CameraHistory(cam, tmp_path, "sim:live", options=opts)
    assert live.sample_interval == 0.1
    wait_until(lambda: len(history.load_records(live.samples_path)) >= 5, 10, "five samples written")
    live.close()

    clock = [time.time()]
    dense = history.CameraHistory(cam, tmp_path, "sim:dense", start=False, clock=lambda: clock[0])
    for _ in range(4000):
        clock[0] += 1.0
        dense.sample_now()
    sent = dense.telemetry(2.0)["samples"]
    assert len(sent) <= history.MAX_SAMPLES_SENT and sent[-1] == dense.samples()[-1]


def test_a_history_never_keeps_its_camera_alive(sim: simulator.SimulatedSDK, tmp_path: Path) -> None:
    camera = ZWOCamera(0, reconnect=FAST, health_interval=0.1)
    hist = history.attach(camera, "sim:weak", directory=tmp_path)
    assert hist is not None and history.history_for(camera) is hist
    thread = hist._thread
    assert thread is not None and thread.is_alive()
    ref = weakref.ref(camera)
    del camera
    gc.collect()
    assert ref() is None  # the listener, the thread and the registry hold it weakly
    thread.join(5)
    assert not thread.is_alive()  # nothing more to record: the thread wrote what it had and ended
    assert [e["type"] for e in history.load_records(hist.events_path)] == ["server_start"]


def test_telemetry_parameters_and_json(cam: ZWOCamera, tmp_path: Path) -> None:
    assert history.parse_hours("") == history.DEFAULT_HOURS
    assert history.parse_hours('{"hours": 3}') == 3.0
    assert history.parse_hours('{"hours": "1.5"}') == 1.5
    for bad in ('{"hours": 0}', '{"hours": -2}', '{"hours": 100000}', "[1]", "hours=3", '{"hours": true}'):
        with pytest.raises(InvalidValueError, match="valid 0 to 720"):
            history.parse_hours(bad)
    body = json.loads(history.telemetry_json(cam, ""))  # not attached: an empty answer that says why
    assert body["events"] == [] and "no history" in body["note"]
    history.attach(cam, "sim:json", directory=tmp_path)
    body = json.loads(history.telemetry_json(cam, '{"hours": 1}'))
    assert body["hours"] == 1.0 and body["events"][0]["type"] == "server_start" and body["camera"] == "ZWO ASI294MC Pro"
    assert body["summary"]["drops"] == 0 and body["now"].endswith("Z")


def test_config_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(tmp_path / "config.json")
    defaults = history.HistoryOptions()
    assert history.health_interval(config) == 1.0 and history.HistoryOptions.from_config(config) == defaults
    assert history.history_dir(config) == tmp_path / "history"
    config.set_server_value("health_interval", 0.5)
    config.set_server_value("history", {"max_events": 100, "max_mb": 1, "sample_interval": 30, "enabled": True})
    assert history.health_interval(config) == 0.5
    assert history.HistoryOptions.from_config(config) == history.HistoryOptions(max_events=100, max_mb=1.0,
                                                                                sample_interval=30.0)
    config.set_server_value("health_interval", 0)
    config.set_server_value("history", {"max_events": "many", "sample_interval": 0.01})
    assert history.health_interval(config) == 1.0 and history.HistoryOptions.from_config(config) == defaults
    assert "server.health_interval = 0 is invalid" in caplog.text and "server.history.max_events" in caplog.text
    config.set_server_value("history", {"enabled": False})
    assert history.attach(object(), "x", config) is None  # type: ignore[arg-type]
    assert history.file_stem("sim:ASI294MC Pro:1A2B") == "sim_ASI294MC_Pro_1A2B"


def _night(path: Path, start: dt.datetime) -> None:
    """A night's events: two USB drops recovered in 0.8 s and 1.1 s, and three exposures."""
    def at(minutes: float) -> str:
        return history.iso_utc((start + dt.timedelta(minutes=minutes)).timestamp())

    rows = [{"t": at(0), "type": "server_start", "camera": "ZWO ASI294MC Pro"},
            {"t": at(1), "type": "connected"},
            {"t": at(10), "type": "exposure_ended", "outcome": "completed", "duration": 300},
            {"t": at(60), "type": "connection_lost", "cause": "usb", "reason": "camera removed"},
            {"t": at(60.1), "type": "reconnected", "recovery_s": 0.8},
            {"t": at(61), "type": "exposure_ended", "outcome": "failed", "duration": 300, "reason": "unplugged"},
            {"t": at(200), "type": "connection_lost", "cause": "usb", "reason": "camera removed"},
            {"t": at(200.1), "type": "reconnect_failed", "attempt": 1},
            {"t": at(200.2), "type": "reconnected", "recovery_s": 1.1, "attempts": 2},
            {"t": at(300), "type": "exposure_ended", "outcome": "completed", "duration": 300}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_doctor_summarises_last_night(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    now = dt.datetime(2026, 12, 5, 9, 30).astimezone()  # the morning after
    _night(tmp_path / "history" / "ASI294MC_Pro_1A2B.jsonl", now.replace(hour=21, day=4))
    (results,) = cmd_doctor.check_history(str(config), now)
    assert results.status == "warn" and "troubleshooting.md" in (results.fix or "")
    assert results.detail == ("ZWO ASI294MC Pro: last night: 2 USB drops, recovered in 0.8 s and 1.1 s "
                              "(1 failed reconnect attempt); 3 exposures (2 completed, 1 failed)")
    # In the afternoon "last night" is still the night that ended at noon; a quiet night is "ok".
    (later,) = cmd_doctor.check_history(str(config), now.replace(day=6, hour=15))
    assert later.status == "ok" and later.detail == "ZWO ASI294MC Pro: last night: no activity"
    (none,) = cmd_doctor.check_history(str(tmp_path / "elsewhere" / "config.json"), now)
    assert none.status == "ok" and "no camera history yet" in none.detail

    # The command prints it (a night that ended this morning, in the machine's own time zone).
    start, _ = history.night_window(dt.datetime.now().astimezone())
    _night(tmp_path / "history" / "ASI294MC_Pro_1A2B.jsonl", start + dt.timedelta(minutes=30))
    out = subprocess.run([sys.executable, "-m", "zwo_runtime", "doctor", "--config", str(config), "--port", "0",
                          "--indi-port", "0", "--discovery-port", "0"], cwd=str(REPO), capture_output=True,
                         text=True, timeout=60)
    line = next(ln for ln in out.stdout.splitlines() if ln.split()[1:2] == ["history"])
    assert line.startswith("WARN") and "last night: 2 USB drops, recovered in 0.8 s and 1.1 s" in line, out.stdout
