"""`zwo-alpaca capture`: FITS files with full headers, clean stops, schedule errors, off-peak and resume.

The command runs as a subprocess through the real entry point (`python -m zwo_runtime`, the
console script's `main`). Each test gives the subprocess a private simulator lock directory and
shares it with a probe in this process, so "the camera is not left busy" is checked the way another
program would see it: the probe's `connect()` succeeds at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driver import CameraState, ZWOCamera, sdk, simulator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands run in-process install log handlers on this process's stderr; remove them afterwards."""
    yield
    from zwo_runtime import logsetup

    logsetup.reset()


def env_for(lock_dir: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               ZWO_ALPACA_SIM_LOCK_DIR=str(lock_dir))
    env.pop("JOURNAL_STREAM", None)
    return env


def capture(*args: str, lock_dir: Path, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zwo_runtime", "capture", *args], cwd=REPO, env=env_for(lock_dir),
                          capture_output=True, text=True, timeout=timeout)


def read_fits(path: Path) -> tuple[dict[str, object], np.ndarray, int]:
    """A small independent FITS reader (not the one under test): header dict, pixels, file size."""
    blob = path.read_bytes()
    assert len(blob) % 2880 == 0, "FITS files are whole 2880-byte blocks"
    header: dict[str, Any] = {}
    pos = 0
    while True:
        card = blob[pos:pos + 80].decode("ascii")
        pos += 80
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] == "= ":
            raw = card[10:]
            if raw.strip().startswith("'"):
                header[key] = raw.strip()[1:].split("'")[0].rstrip()
            else:
                val = raw.split("/")[0].strip()
                header[key] = {"T": True, "F": False}.get(val) if val in ("T", "F") else (
                    int(val) if re.fullmatch(r"[+-]?\d+", val) else float(val))
    data_start = -(-pos // 2880) * 2880
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(int(header["NAXIS"]), 0, -1))
    bitpix = int(header["BITPIX"])
    count = int(np.prod(shape))
    if bitpix == 16:
        signed = np.frombuffer(blob, ">i2", count, data_start).reshape(shape)
        data = (signed.astype(np.int32) + int(header.get("BZERO", 0))).astype(np.int64)
    else:
        data = np.frombuffer(blob, np.uint8, count, data_start).reshape(shape).astype(np.int64)
    assert len(blob) >= data_start + count * abs(bitpix) // 8
    return header, data, len(blob)


@pytest.fixture
def probe(tmp_path):
    """This process's view of the simulator, sharing the subprocess's lock directory."""
    lock_dir = tmp_path / "locks"
    sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(lock_dir)})
    yield lock_dir
    simulator.uninstall()


def test_count_writes_valid_fits_files_with_full_headers(tmp_path, probe):
    out = tmp_path / "frames"
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    r = capture("--simulator", "asi294mc-pro", "--exposure", "0.2", "--count", "3", "--out", str(out),
                "--gain", "120", "--offset", "30", lock_dir=probe)
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.fits"))
    assert len(files) == 3, (r.stdout, r.stderr)
    # stdout is exactly the saved paths, one per line, for scripts
    assert r.stdout.split() == [str(f) for f in files]
    assert not list(out.glob(".*.part"))
    seen_starts = []
    for f in files:
        h, data, _ = read_fits(f)
        assert h["SIMPLE"] is True and h["BITPIX"] == 16 and h["BZERO"] == 32768
        assert h["NAXIS"] == 2 and (h["NAXIS1"], h["NAXIS2"]) == (4144, 2822)
        assert h["EXPTIME"] == pytest.approx(0.2)
        assert h["INSTRUME"] == "ZWO ASI294MC Pro"
        assert h["GAIN"] == 120 and h["OFFSET"] == 30
        assert h["XBINNING"] == 1 and h["PIXSIZE1"] == pytest.approx(4.63)
        assert h["BAYERPAT"] == "RGGB" and h["IMAGETYP"] == "Light Frame"
        start = dt.datetime.fromisoformat(str(h["DATE-OBS"]))
        assert before - dt.timedelta(seconds=1) <= start <= after
        seen_starts.append(start)
        assert data.shape == (2822, 4144)
        assert 0 <= data.min() and data.max() <= 65535 and data.std() > 0  # real pixels, unsigned range
    assert seen_starts == sorted(seen_starts) and len(set(seen_starts)) == 3
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("model,extra,expect", [
    ("asi120mm-mini", ["--bin", "2"], {"NAXIS": 2, "NAXIS1": 640, "NAXIS2": 480, "XBINNING": 2, "BITPIX": 16}),
    # 2822 / 2 = 1411 rows: odd, which the SDK cannot read directly; the whole binned frame still comes out
    ("asi294mc-pro", ["--bin", "2"], {"NAXIS1": 2072, "NAXIS2": 1411, "XBINNING": 2, "YBINNING": 2}),
    ("asi294mc-pro", ["--image-type", "RGB24", "--mode", "video"], {"NAXIS": 3, "NAXIS3": 3, "BITPIX": 8}),
    ("asi120mm-mini", ["--image-type", "RAW8"], {"NAXIS": 2, "BITPIX": 8, "READOUTM": "RAW8"}),
])
def test_binning_image_types_and_video_mode(tmp_path, probe, model, extra, expect):
    out = tmp_path / "frames"
    r = capture("--simulator", model, "--exposure", "0.05", "--count", "2", "--out", str(out), *extra, lock_dir=probe)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.fits"))
    assert len(files) == 2
    h, _, _ = read_fits(files[0])
    for key, value in expect.items():
        assert h[key] == value, key
    assert "BZERO" not in h or h["BITPIX"] == 16


def _wait_files(out: Path, n: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*.fits"))) < n:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "frames did not arrive"
        time.sleep(0.02)


@pytest.mark.parametrize("sig,exposure", [(signal.SIGINT, "0.3"), (signal.SIGTERM, "30")])
def test_continuous_stops_cleanly_on_signal_and_releases_the_camera(tmp_path, probe, sig, exposure):
    out = tmp_path / "frames"
    args = [sys.executable, "-m", "zwo_runtime", "capture", "--simulator", "asi294mc-pro", "--exposure", exposure,
            "--continuous", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, env=env_for(probe), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        if exposure == "0.3":
            _wait_files(out, 2, proc)
        else:  # mid-way through a long exposure
            deadline = time.monotonic() + 15
            while not any(probe.glob("*.lock")) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)
        busy = ZWOCamera(0)
        with pytest.raises(Exception, match="another program|busy"):
            busy.connect()  # the subprocess really holds the camera, so the probe below means something
        t0 = time.monotonic()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert "Traceback" not in stderr and f"{signal.Signals(sig).name} received: stopping" in stderr
    saved = sorted(out.glob("*.fits"))
    assert stdout.split() == [str(f) for f in saved]
    assert len(saved) >= (2 if exposure == "0.3" else 0)
    assert not list(out.glob(".*.part"))
    for f in saved:
        read_fits(f)
    cam = ZWOCamera(0)
    t1 = time.monotonic()
    cam.connect()  # at once: the camera was released
    assert time.monotonic() - t1 < 0.5 and cam.state == CameraState.IDLE
    cam.disconnect_camera()


def test_finish_frame_saves_the_exposure_in_progress(tmp_path, probe):
    out = tmp_path / "frames"
    args = [sys.executable, "-m", "zwo_runtime", "capture", "--simulator", "asi294mc-pro", "--exposure", "1.5",
            "--continuous", "--finish-frame", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, env=env_for(probe), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not any(probe.glob("*.lock")) and time.monotonic() < deadline:  # the camera is open
            time.sleep(0.02)
        time.sleep(0.4)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "finishing the exposure in progress" in stderr and "frame in progress saved" in stderr
    saved = sorted(out.glob("*.fits"))
    assert len(saved) == 1 and stdout.split() == [str(saved[0])]
    h, _, _ = read_fits(saved[0])
    assert h["EXPTIME"] == pytest.approx(1.5)


@pytest.mark.parametrize("window,message", [
    ("25:00-06:00", "must look like HH:MM-HH:MM"),
    ("20:00", "must look like HH:MM-HH:MM"),
    ("20:00-20:00", "is empty"),
])
def test_schedule_errors_are_clear(tmp_path, window, message):
    r = capture("--simulator", "asi294mc-pro", "--exposure", "1", "--continuous", "--schedule", window,
                "--out", str(tmp_path / "f"), lock_dir=tmp_path / "locks")
    assert r.returncode == 2
    assert "argument --schedule" in r.stderr and message in r.stderr and window in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "f").exists()  # rejected before anything was done


@pytest.mark.parametrize("args,message,code", [
    (["--exposure", "0", "--count", "1"], "greater than 0", 2),
    (["--exposure", "1", "--count", "2", "--continuous"], "not allowed with argument", 2),
    (["--exposure", "1", "--count", "0"], "must be 1 or more", 2),
    (["--exposure", "0.1", "--gain", "9999"], "out of range", 2),
    (["--exposure", "0.1", "--bin", "3", "--simulator", "asi120mm-mini"], "binning 3 is not supported", 2),
    (["--exposure", "0.1", "--cooler-target", "-10", "--simulator", "asi120mm-mini"], "has no cooler", 2),
    (["--exposure", "0.1", "--camera", "5"], "no camera at index 5", 1),
])
def test_bad_values_give_one_clear_line(tmp_path, args, message, code):
    if "--simulator" not in args:
        args = [*args, "--simulator", "asi294mc-pro"]
    r = capture(*args, "--out", str(tmp_path / "f"), lock_dir=tmp_path / "locks")
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_busy_camera_is_reported_not_a_traceback(tmp_path, probe):
    holder = ZWOCamera(0)
    holder.connect()
    try:
        r = capture("--simulator", "asi294mc-pro", "--exposure", "0.1", "--out", str(tmp_path / "f"), lock_dir=probe)
    finally:
        holder.disconnect_camera()
    assert r.returncode == 1
    assert "another program" in r.stderr and "Traceback" not in r.stderr


def test_log_json_gives_one_json_object_per_line_with_the_camera(tmp_path, probe):
    import json

    r = capture("--simulator", "asi294mc-pro", "--exposure", "0.05", "--out", str(tmp_path / "f"), "--log-json",
                lock_dir=probe)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert events and all({"ts", "level", "logger", "camera", "msg"} <= set(e) for e in events)
    assert any(e["camera"] == "ZWO ASI294MC Pro" and e["msg"] == "disconnected" for e in events)


def test_off_peak_releases_the_camera_and_resumes_when_the_window_opens(tmp_path, monkeypatch, capsys):
    """In-process with a fake wall clock that reaches the window's start two seconds after the run begins."""
    from zwo_runtime import cmd_capture, logsetup

    lock_dir = tmp_path / "locks"
    sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(lock_dir)})
    t0 = time.monotonic()
    window_opens_utc = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=2)
    base = dt.datetime(2024, 5, 1, 19, 59, 58)
    monkeypatch.setattr(cmd_capture, "CLOCK", lambda: base + dt.timedelta(seconds=time.monotonic() - t0))
    # Don't load the SDK again inside run(): the simulator above shares this process's lock directory.
    monkeypatch.setattr(cmd_capture, "load_simulator", lambda models: sdk.current())
    out = tmp_path / "frames"
    args = argparse.Namespace(exposure=0.2, count=2, continuous=False, schedule="20:00-21:00", out=str(out),
                              prefix=None, gain=None, offset=None, bin=None, image_type=None, cooler_target=None,
                              mode="exposure", camera="0", sdk=None, simulator=["asi294mc-pro"], progress=True,
                              finish_frame=False, log_level="info")
    try:
        rc = cmd_capture.run(args)
    finally:
        logsetup.reset()
        simulator.uninstall()
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Idle (off-peak until 20:00)" in err  # the status line, and the log line for services
    assert "off-peak: releasing the camera until 20:00" in err
    assert "capture window open: reconnecting" in err
    files = sorted(out.glob("*.fits"))
    assert len(files) == 2
    for f in files:  # nothing exposed before the window opened (DATE-OBS is rounded to the millisecond)
        h, _, _ = read_fits(f)
        assert dt.datetime.fromisoformat(str(h["DATE-OBS"])) >= window_opens_utc - dt.timedelta(milliseconds=2)
    assert took < 15
