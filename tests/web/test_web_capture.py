"""The web page's saving loop: FITS files from the server itself, under the capture root only, resumed after a restart.

Through the page's JSON API (CSRF token from ``status.json``, as the page's script sends it) on a
``zwo-alpaca serve`` subprocess with simulated cameras; files are read back with astropy and with
the project's strict reader. One test drives the page's own controls in Chromium. The writer's
bounded queue (frames dropped and counted, never blocking the camera) is tested in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from driver.models import Frame
from support.servers import ServerProcess, alpaca_get, alpaca_put, start_server, wait_until
from zwo_common import capture_files
from zwo_common.fits import read_fits

MONO = "asi120mm-mini"
COLOUR = "asi294mc-pro"
FITS_NAME = re.compile(r"^ASI120MM-Mini_(\d{8})_(\d{4})\.fits$")


# ------------------------------------------------------------------------------------ helpers

def _status(srv: ServerProcess, n: int = 0) -> dict[str, Any]:
    r = requests.get(srv.url(f"/setup/v1/camera/{n}/status.json"), timeout=10)
    r.raise_for_status()
    return r.json()


def _post(srv: ServerProcess, action: str, body: dict[str, Any] | None = None, n: int = 0) -> requests.Response:
    token = _status(srv, n)["csrf"]
    return requests.post(srv.url(f"/setup/v1/camera/{n}/action/{action}"), json=body or {},
                         headers={"X-CSRF-Token": token}, timeout=30)


def _connect(srv: ServerProcess, n: int = 0) -> None:
    assert _post(srv, "connect", n=n).json()["ok"]
    wait_until(lambda: _status(srv, n)["status"]["state"] in ("idle", "image_ready"), 20, "camera connected")


def _fits(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.fits") if p.is_file())


def _start(root_args: list[str], work: Path, simulator: str = MONO) -> ServerProcess:
    return start_server(work, *root_args, simulator=simulator)


def _loop_state(work: Path) -> dict[str, Any]:
    path = work / capture_files.STATE_FILE
    return json.loads(path.read_text())["loops"] if path.exists() else {}


# ------------------------------------------------------------------------------------ files and keywords

def test_loop_writes_fits_with_the_project_keywords_and_pattern_names(tmp_path: Path) -> None:
    astropy_fits = pytest.importorskip("astropy.io.fits")
    root = tmp_path / "captures"
    srv = _start(["--capture-root", str(root)], tmp_path / "srv", simulator=f"{COLOUR},{MONO}")
    try:
        for n in (0, 1):
            _connect(srv, n)
        alpaca_put(srv, 0, "gain", Gain=200)
        alpaca_put(srv, 1, "gain", Gain=50)
        # The colour camera: a small subframe keeps the test quick.
        r = _post(srv, "settings", {"start_x": 64, "start_y": 32, "width": 640, "height": 480}, n=0)
        assert r.json()["ok"], r.text
        body = {"exposure": 0.05, "mode": "exposure", "save": True, "directory": "night1/allsky",
                "pattern": "{camera}_{date}_{seq:04d}.fits", "count": 3}
        r = _post(srv, "capture", body, n=1)
        assert r.status_code == 200 and r.json()["ok"], r.text
        assert str((root / "night1" / "allsky").resolve()) in r.json()["message"]
        colour = {"exposure": 0.1, "save": True, "directory": str(root / "colour"), "count": 2,
                  "pattern": "{night}/{camera}_{serial}_{exposure}s_{seq:03d}"}  # ".fits" is added
        assert _post(srv, "capture", colour, n=0).json()["ok"]

        folder = root / "night1" / "allsky"
        wait_until(lambda: len(_fits(folder)) >= 3 and len(_fits(root / "colour")) >= 2, 30, "files written")
        # The count is reached: the loop stops capturing by itself and is not kept for a restart.
        wait_until(lambda: _status(srv, 1)["capture"]["phase"] == "done", 10, "loop done")
        wait_until(lambda: not _status(srv, 1)["status"]["capturing"], 10, "capture stopped after the count")
        time.sleep(0.5)
        files = _fits(folder)
        assert len(files) == 3, files
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        seqs = []
        for f in files:
            m = FITS_NAME.match(f.name)
            assert m, f.name
            assert abs(int(m.group(1)) - int(today)) <= 1
            seqs.append(int(m.group(2)))
        assert seqs == [1, 2, 3]
        assert not list(folder.glob(".*.part"))
        cap = _status(srv, 1)["capture"]
        assert cap["saved"] == 3 and cap["dropped"] == 0 and cap["failed"] == 0 and cap["running"] is False
        assert cap["directory"] == str(folder.resolve()) and cap["last_file"].endswith("_0003.fits")
        assert _status(srv, 1)["capture_root"] == str(root.resolve())

        alpaca_gain = alpaca_get(srv, 1, "gain")["Value"]
        frame_numbers = []
        for f in files:
            hdr, data = read_fits(f.read_bytes())  # the project's strict reader
            with astropy_fits.open(f) as hdul:
                h = hdul[0].header
                assert hdul[0].data.shape == data.shape == (960, 1280)
                assert np.array_equal(hdul[0].data, data)
            for key in ("INSTRUME", "EXPTIME", "EXPOSURE", "XBINNING", "YBINNING", "PIXSIZE1", "XPIXSZ", "FRAME",
                        "IMAGETYP", "GAIN", "OFFSET", "DATE-OBS", "DATE-END", "READOUTM", "BITDEPTH", "FRAMENUM",
                        "SWCREATE", "CCD-TEMP", "ROWORDER"):
                assert key in h and key in hdr, key
            assert h["INSTRUME"] == "ZWO ASI120MM Mini"
            assert h["EXPTIME"] == pytest.approx(0.05) and h["FRAME"] == "Light" and h["IMAGETYP"] == "Light Frame"
            assert h["GAIN"] == 50 == alpaca_gain and h["XBINNING"] == 1 and h["READOUTM"] == "RAW16"
            assert h["BITPIX"] == 16 and h["BZERO"] == 32768
            assert "BAYERPAT" not in h
            assert h["SWCREATE"].startswith("zwo-alpaca")
            frame_numbers.append(h["FRAMENUM"])
        assert frame_numbers == sorted(frame_numbers) and len(set(frame_numbers)) == 3

        # The colour camera: Bayer keywords, subframe origin, names from {night}/{serial}/{exposure}.
        wait_until(lambda: _status(srv, 0)["capture"]["phase"] == "done", 10, "colour loop done")
        colour_files = _fits(root / "colour")
        assert len(colour_files) == 2
        night = colour_files[0].parent.name
        assert re.fullmatch(r"\d{8}", night) and colour_files[0].parent.parent.resolve() == (root / "colour").resolve()
        assert re.fullmatch(r"ASI294MC-Pro_[A-Za-z0-9]+_0\.1s_001\.fits", colour_files[0].name), colour_files[0].name
        with astropy_fits.open(colour_files[0]) as hdul:
            h = hdul[0].header
            assert h["BAYERPAT"] in ("RGGB", "GRBG", "GBRG", "BGGR") and h["GAIN"] == 200
            assert h["EXPTIME"] == pytest.approx(0.1)
            assert h["XORGSUBF"] == 64 and h["YORGSUBF"] == 32 and hdul[0].data.shape == (480, 640)
        assert _loop_state(srv.workdir) == {}
        # Between loops the camera is free for other clients: an Alpaca exposure works.
        alpaca_put(srv, 1, "startexposure", Duration=0.05, Light=True)
        wait_until(lambda: alpaca_get(srv, 1, "imageready")["Value"], 10, "Alpaca exposure after the loop")
    finally:
        srv.stop()


def test_folder_outside_the_root_and_bad_patterns_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    srv = _start(["--capture-root", str(root)], tmp_path / "srv")
    try:
        _connect(srv)
        for directory in ("../elsewhere", str(outside), "/etc", "link", "link/sub", "ok/../../elsewhere"):
            r = _post(srv, "capture", {"exposure": 0.05, "save": True, "directory": directory})
            assert r.status_code == 400, (directory, r.text)
            error = r.json()["error"]
            assert "is outside the capture root" in error and str(root.resolve()) in error, error
            assert "--capture-root" in error
        r = _post(srv, "capture", {"exposure": 0.05, "save": True, "directory": "link"})
        assert f"resolves to {outside.resolve()}" in r.json()["error"]
        for pattern, words in (("{camera}_{nope}.fits", "unknown field {nope}"), ("../{seq}.fits", "'..'"),
                               ("/abs/{seq}.fits", "relative"), ("{seq:xyz}.fits", "pattern")):
            r = _post(srv, "capture", {"exposure": 0.05, "save": True, "directory": "a", "pattern": pattern})
            assert r.status_code == 400 and words in r.json()["error"], (pattern, r.text)
        r = _post(srv, "capture", {"exposure": 0.05, "save": True, "directory": "a", "count": "two"})
        assert r.status_code == 400 and "count" in r.json()["error"]
        # The core's own range check still names the field.
        r = _post(srv, "capture", {"exposure": -1, "save": True, "directory": "a"})
        assert r.status_code == 400 and r.json()["error"].startswith("exposure: "), r.text
        st = _status(srv)
        assert not st["status"]["capturing"] and st["capture"] is None
        assert list(outside.iterdir()) == [] and not (root / "a").exists()
        assert _loop_state(srv.workdir) == {}
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ restart

def test_running_loop_resumes_after_a_restart_and_stop_forgets_it(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    work = tmp_path / "srv"
    args = ["--capture-root", str(root)]
    srv = _start(args, work)
    folder = root / "allsky"
    try:
        _connect(srv)
        r = _post(srv, "capture", {"exposure": 0.2, "mode": "exposure", "save": True, "directory": "allsky",
                                   "pattern": "{camera}_{date}_{seq:04d}.fits"})
        assert r.json()["ok"], r.text
        wait_until(lambda: len(_fits(folder)) >= 3, 20, "frames before the restart")
        stored = _loop_state(work)
        assert len(stored) == 1
        spec = next(iter(stored.values()))
        assert spec["directory"] == str(folder.resolve()) and spec["save"] is True and spec["count"] is None
        t0 = time.monotonic()
        assert srv.stop(signal.SIGTERM) == 0
        took = time.monotonic() - t0
    finally:
        srv.stop()
    assert took < 3.0, f"shutdown took {took:.2f} s"
    before = _fits(folder)
    last_seq = max(int(FITS_NAME.match(p.name).group(2)) for p in before)  # type: ignore[union-attr]
    assert not list(folder.glob(".*.part"))
    stored = next(iter(_loop_state(work).values()))
    assert stored["next_seq"] == last_seq + 1 and stored["saved"] == len(before), (stored, last_seq, len(before))

    # The same command line and config again: the loop comes back by itself, numbering continued.
    srv = _start(args, work)
    try:
        wait_until(lambda: len(_fits(folder)) >= len(before) + 2, 30, "new frames after the restart")
        after = _fits(folder)
        new_seqs = sorted(int(FITS_NAME.match(p.name).group(2)) for p in after if p not in before)  # type: ignore[union-attr]
        assert new_seqs[0] == last_seq + 1, (new_seqs, last_seq)
        st = _status(srv)
        assert st["status"]["connected"] and st["status"]["capturing"]
        assert st["capture"]["phase"] == "running" and st["capture"]["save"] is True
        assert "resuming the capture loop that was running when the server stopped" in srv.log_text()
        r = _post(srv, "stop")
        assert r.json()["ok"] and "file(s) saved" in r.json()["message"], r.text
        assert _loop_state(work) == {}
        wait_until(lambda: not _status(srv)["status"]["capturing"], 10, "stopped")
    finally:
        srv.stop()

    # Stopped on the page: not resumed by the next start.
    count = len(_fits(folder))
    srv = _start(args, work)
    try:
        time.sleep(2.0)
        st = _status(srv)
        assert st["capture"] is None and not st["status"]["connected"]
        assert len(_fits(folder)) == count
    finally:
        srv.stop()


def _window_not_now() -> str:
    now = dt.datetime.now()
    a, b = now + dt.timedelta(hours=2), now + dt.timedelta(hours=3)
    return f"{a:%H:%M}-{b:%H:%M}"


def test_resumed_loop_waits_for_its_window_with_the_camera_free(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    work = tmp_path / "srv"
    args = ["--capture-root", str(root)]
    srv = _start(args, work)
    try:
        _connect(srv)
        assert _post(srv, "capture", {"exposure": 0.2, "save": True, "directory": "w", "count": 500}).json()["ok"]
        wait_until(lambda: len(_fits(root / "w")) >= 1, 20, "a frame")
        # The window closes (it starts in two hours): the core releases the camera, the loop is kept.
        assert _post(srv, "schedule", {"window": _window_not_now()}).json()["ok"]
        wait_until(lambda: _status(srv)["status"]["state"] == "off_peak", 15, "off-peak")
        assert srv.stop() == 0
    finally:
        srv.stop()
    saved = len(_fits(root / "w"))
    assert next(iter(_loop_state(work).values()))["count"] == 500
    srv = _start(args, work)
    try:
        cap = wait_until(lambda: (_status(srv)["capture"] or {}).get("phase") == "waiting" and _status(srv)["capture"],
                         10, "loop waiting for its window")
        assert "resumes when the capture window" in cap["message"]  # type: ignore[index]
        time.sleep(1.5)
        st = _status(srv)
        assert not st["status"]["connected"], "outside its window the camera stays closed for other programs"
        assert len(_fits(root / "w")) == saved
        # Stop loop forgets the waiting loop: it will not connect the camera when the window opens.
        assert _post(srv, "stop").json()["ok"]
        assert _status(srv)["capture"]["phase"] == "stopped"
        assert _loop_state(work) == {}
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ the page itself

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_page_controls_start_a_saving_loop(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/bootstrap test)")
    sync_api = pytest.importorskip("playwright.sync_api")
    root = tmp_path / "captures"
    srv = _start(["--capture-root", str(root)], tmp_path / "srv")
    try:
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, bypass_csp=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            try:
                errors: list[str] = []
                page = ctx.new_page()
                page.set_default_timeout(15_000)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(srv.url("/setup/v1/camera/0/setup"))
                assert page.inner_text("#capture-root") == str(root.resolve())
                assert page.is_hidden("#folder")
                page.click("#connect")
                page.wait_for_selector("#badge[data-state=idle]")
                page.fill("#exposure", "0.05")
                page.check("#save")
                page.fill("#folder", "../outside")
                page.click("#start")
                page.wait_for_selector("#msg.err:not([hidden])")
                assert "outside the capture root" in page.inner_text("#msg-text")
                page.click("#msg-close")
                page.fill("#folder", "from-page")
                page.fill("#pattern", "{camera}_{seq:03d}.fits")
                page.fill("#count", "2")
                page.click("#start")
                page.wait_for_function("document.getElementById('loop-status').textContent.includes('2/2 file(s)')")
                assert "Saved to " + str((root / "from-page").resolve()) in page.inner_text("#loop-status")
                assert [p.name for p in _fits(root / "from-page")] == ["ASI120MM-Mini_001.fits",
                                                                      "ASI120MM-Mini_002.fits"]
                assert errors == []
            finally:
                ctx.close()
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ the writer, in-process

def _frame(seq: int, shape: tuple[int, int] = (480, 640)) -> Frame:
    return Frame(data=np.full(shape, seq, dtype=np.uint16), seq=seq, start_time=dt.datetime.now(dt.UTC),
                 duration=0.01, light=True, bin=1, start_x=0, start_y=0, width=shape[1], height=shape[0],
                 image_type="RAW16", bit_depth=12, gain=10, offset=5, temperature=None, camera_name="Test Cam")


def test_writer_drops_frames_instead_of_blocking_the_camera(tmp_path: Path) -> None:
    """A disk slower than the camera: submit() never waits, the queue stays bounded, drops are counted."""
    slow = threading.Event()

    def header(frame: Frame) -> list[tuple[str, object, str]]:
        slow.wait(0.2)  # a 200 ms write per frame
        return capture_files.fits_cards(frame, pixel_size_um=3.75)

    namer = capture_files.FileNamer(tmp_path, "{camera}_{seq:04d}.fits", camera="Test Cam", serial=None)
    writer = capture_files.FrameWriter(namer, header=header, max_frames=3)
    worst = 0.0
    accepted = 0
    for seq in range(1, 41):  # 40 frames at 100 per second
        t = time.monotonic()
        accepted += writer.submit(_frame(seq))
        worst = max(worst, time.monotonic() - t)
        assert writer.queued <= 4
        time.sleep(0.01)
    assert worst < 0.05, f"submit took {worst * 1000:.1f} ms"
    assert writer.dropped == 40 - accepted and writer.dropped >= 30
    assert writer.close(5.0)
    assert writer.saved == accepted and writer.failed == 0
    names = sorted(p.name for p in tmp_path.glob("*.fits"))
    assert names == [f"Test-Cam_{i:04d}.fits" for i in range(1, accepted + 1)]
    hdr, data = read_fits((tmp_path / names[0]).read_bytes())
    assert hdr["GAIN"] == 10 and hdr["FRAMENUM"] == 1 and int(data[0, 0]) == 1


def test_writer_never_replaces_a_file_and_stops_at_its_limit(tmp_path: Path) -> None:
    (tmp_path / "cam_0001.fits").write_bytes(b"not ours")
    done = threading.Event()
    namer = capture_files.FileNamer(tmp_path, "cam_{seq:04d}", camera="x", serial=None)
    writer = capture_files.FrameWriter(namer, header=lambda f: capture_files.fits_cards(f, pixel_size_um=None),
                                       limit=2, on_done=done.set)
    for seq in range(1, 6):
        writer.submit(_frame(seq, (16, 16)))
        time.sleep(0.05)
    assert done.wait(5) and writer.close(5)
    assert (tmp_path / "cam_0001.fits").read_bytes() == b"not ours"
    assert sorted(p.name for p in tmp_path.glob("*.fits")) == ["cam_0001-1.fits", "cam_0001.fits", "cam_0002.fits"]
    assert writer.saved == 2 and not writer.submit(_frame(9, (16, 16)))


def test_capture_root_resolution(tmp_path: Path) -> None:
    root = capture_files.capture_root(str(tmp_path / "r" / ".." / "r"))
    assert root == (tmp_path / "r").resolve()
    assert capture_files.resolve_directory(root, "a/b") == root / "a" / "b" and (root / "a" / "b").is_dir()
    assert capture_files.resolve_directory(root, "") == root
    assert capture_files.resolve_directory(root, str(root / "c")) == root / "c"
    with pytest.raises(capture_files.CaptureSetupError, match="outside the capture root"):
        capture_files.resolve_directory(root, "a/../../x")
    assert not (tmp_path / "x").exists()
    assert capture_files.check_pattern("") == capture_files.DEFAULT_PATTERN
    assert capture_files.check_pattern("{night}/{camera}_{seq:05d}") == "{night}/{camera}_{seq:05d}.fits"
    for bad in ("{camera.__class__}", "{seq!r}.fits", "a//{seq}.fits", "{", "x\\y"):
        with pytest.raises(capture_files.CaptureSetupError):
            capture_files.check_pattern(bad)
