"""The fault matrix through the Alpaca API (docs/reliability.md), against ``zwo-alpaca serve``.

One server (simulated ASI294MC Pro, INDI on too) for the module. Faults are injected with the
simulator's ``sim.*`` Actions. Each case asserts: every request is answered within a bound (a
NotConnected or driver error while the camera is gone, never a hang); after the replug the core
has reconnected by itself, the SDK has gain, offset, ROI, binning, readout mode and cooler target
back, and the next exposure works; an INDI client watching the same camera sees the same story.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from support.faults import (
    CALL_BOUND_S,
    CAMERA_GONE,
    CAMERA_NAME,
    DRIVER_ERROR,
    ERROR,
    EXPOSING,
    FULL,
    IDLE,
    Indi,
    Poller,
    Rig,
    note,
    raw_get,
    read_head,
    reset_close,
    start_rig,
    wait_until,
)

SETTINGS = {"gain": ("Gain", 222), "offset": ("Offset", 33), "binx": ("BinX", 2), "startx": ("StartX", 10),
            "starty": ("StartY", 20), "numx": ("NumX", 1000), "numy": ("NumY", 800),
            "readoutmode": ("ReadoutMode", 1), "setccdtemperature": ("SetCCDTemperature", -7)}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = start_rig(tmp_path_factory.mktemp("faults-alpaca"))
    yield r
    r.finish()


@pytest.fixture
def cam(rig: Rig) -> Iterator[Rig]:
    """The camera connected, with the test's settings; afterwards plugged in, recovered and reset."""
    rig.connect()
    yield rig
    rig.restore()


def apply_settings(rig: Rig) -> dict:
    """Set everything a reconnect must restore; expose once; return the SDK's ROI for that frame."""
    for member, (param, value) in SETTINGS.items():
        rig.ok(member, **{param: value})
    rig.ok("cooleron", CoolerOn=True)
    rig.expose(0.05)
    return rig.camera_state()["roi"]


def check_restored(rig: Rig, roi: dict) -> None:
    """The SDK has the settings back, and the next exposure gives the same subframe in RAW8."""
    st = rig.camera_state()
    assert (st["gain"], st["offset"], st["target_c"], st["cooler_on"]) == (222, 33, -7, True), st
    for member, (_, value) in SETTINGS.items():
        assert rig.value(member) == value, member
    rig.expose(0.05)
    assert rig.camera_state()["roi"] == roi
    hdr, pixels = rig.image_bytes()
    assert (hdr["ErrorNumber"], hdr["Dimension1"], hdr["Dimension2"]) == (0, 1000, 800)
    assert hdr["TransmissionElementType"] == 6 and len(pixels) == 1000 * 800  # RAW8 (ReadoutMode 1)


def gone_answers(rig: Rig) -> float:
    """While the camera is gone: polls answer at once, camera calls fail fast with 0x501. Returns
    the slowest answer."""
    assert rig.poll() == ERROR
    assert rig.poll("connected") is True  # the client's intent is kept
    body = rig.put("startexposure", Duration=0.1, Light=True)
    assert body["ErrorNumber"] == CAMERA_GONE and "reconnect" in body["ErrorMessage"], body
    assert body["_seconds"] < 1.0
    assert rig.value("gain") == 222  # the settings are kept
    return max(dt for _, dt in rig.latencies[-4:])


def test_unplug_while_idle(cam: Rig) -> None:
    roi = apply_settings(cam)
    watcher = Indi(cam.indi_port)
    try:
        watcher.wait_for(b'name="CCD_EXPOSURE"', 10)
        mark = watcher.size()
        cam.unplug()
        noticed = wait_until(lambda: cam.poll() == ERROR, 3, "CameraState Error after the unplug")
        slowest = gone_answers(cam)
        watcher.expect(rb'message="\[ERROR\] camera removed', mark)  # INDI sees it too
        m2 = watcher.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.1)
        indi_s, _ = watcher.state("CCD_EXPOSURE", "Alert", m2)
        recovery = cam.replug_and_recover()
        watcher.expect(rb"connection \(re\)established", mark, 5)
        check_restored(cam, roi)
        note("unplug while idle", "alpaca", noticed_s=noticed, slowest_answer_s=slowest, recovery_s=recovery,
             outcome="CameraState 5; calls 0x501 at once; settings restored; next exposure ok")
    finally:
        watcher.close()


@pytest.mark.parametrize("phase,duration", [("exposure", 1.0), ("readout", 0.3)])
def test_unplug_mid_exposure(cam: Rig, phase: str, duration: float) -> None:
    roi = apply_settings(cam)
    watcher = Indi(cam.indi_port)
    try:
        watcher.wait_for(b'name="CCD_EXPOSURE"', 10)
        mark = watcher.size()
        cam.action("sim.unplug_after", {"phase": phase, "delay": 0.3 if phase == "exposure" else 0.0})
        t0 = time.monotonic()
        cam.ok("startexposure", Duration=duration, Light=True)
        watcher.state("CCD_EXPOSURE", "Busy", mark)  # an Alpaca exposure shows Busy over INDI
        wait_until(lambda: cam.poll() == ERROR, duration + 3, "CameraState Error")
        error_after = time.monotonic() - t0  # the unplug is 0.3 s into the exposure, or early in the readout
        assert not cam.poll("imageready")
        slowest = gone_answers(cam)
        # The image read out before the unplug can still be downloaded.
        hdr, _ = cam.image_bytes()
        assert (hdr["ErrorNumber"], hdr["Dimension1"]) == (0, 1000)
        watcher.state("CCD_EXPOSURE", "Idle", mark)  # and INDI no longer shows it Busy
        recovery = cam.replug_and_recover()
        check_restored(cam, roi)
        note(f"unplug during {phase}", "alpaca", error_after_start_s=error_after, slowest_answer_s=slowest,
             recovery_s=recovery,
             outcome="exposure lost (ImageReady false), CameraState 5, last image still served; restored")
    finally:
        watcher.close()


def test_unplug_during_image_download(cam: Rig) -> None:
    cam.full_frame(0)
    cam.expose(0.05)
    sock = raw_get(cam.server.port, "/api/v1/camera/0/imagearray", "application/imagebytes")
    try:
        status, length, got = read_head(sock)
        assert status == 200 and length == 44 + FULL[0] * FULL[1] * 2
        body = bytearray(got)
        while len(body) < 2_000_000:
            body += sock.recv(1 << 16)
        cam.unplug()
        wait_until(lambda: cam.poll() == ERROR, 3, "CameraState Error")
        t0 = time.monotonic()
        while len(body) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, f"download cut short at {len(body)} of {length} bytes"
            body += chunk
        finish = time.monotonic() - t0
    finally:
        sock.close()
    # The whole image arrived intact: the same bytes as a download made while the camera is gone.
    hdr, pixels = cam.image_bytes()
    assert hdr["ErrorNumber"] == 0 and bytes(body[44:]) == pixels
    recovery = cam.replug_and_recover()
    cam.expose(0.05)
    note("unplug during a client's image download", "alpaca", rest_of_download_s=finish, recovery_s=recovery,
         outcome="the download completes intact (the image is in server memory); next exposure ok")


def test_failing_close_still_releases_the_camera(cam: Rig) -> None:
    watcher = Indi(cam.indi_port)
    try:
        watcher.wait_for(b'name="CCD_EXPOSURE"', 10)
        mark = watcher.size()
        cam.action("sim.inject", {"function": "ASICloseCamera", "code": 16, "count": 1})
        body = cam.put("connected", Connected=False)
        assert body["ErrorNumber"] == 0 and body["_seconds"] < 1.0
        assert cam.value("connected") is False
        assert cam.record()["open_handles"] == []  # the close was retried: no SDK handle left
        probe = cam.probe_open()  # another program can open the camera at once
        assert probe.returncode == 0 and probe.stdout.startswith("holding"), probe.stderr
        watcher.state("CONNECTION", "Idle", mark)  # the disconnect is seen over INDI
        assert b'<delProperty device="ZWO CCD ASI294MC Pro" name="CCD_EXPOSURE"' in watcher.text()[mark:]
        cam.connect()
        cam.expose(0.05)
        note("failing close (ASICloseCamera error)", "alpaca", disconnect_s=body["_seconds"],
             outcome="Connected=false ok; close retried; no handle left; another program opens it at once")
    finally:
        watcher.close()


def test_camera_busy_in_another_process(cam: Rig) -> None:
    cam.ok("connected", Connected=False)
    holder = cam.hold()
    try:
        body = cam.put("connected", Connected=True)
        assert body["ErrorNumber"] in (DRIVER_ERROR, CAMERA_GONE) and body["_seconds"] < CALL_BOUND_S, body
        msg = body["ErrorMessage"]
        assert CAMERA_NAME in msg and "another program" in msg, msg
        assert cam.value("connected") is False
        # Platform 7 asynchronous Connect: Connecting ends, Connected stays false.
        cam.ok("connect")
        wait_until(lambda: not cam.value("connecting"), 5, "Connecting false")
        assert cam.value("connected") is False
    finally:
        holder.terminate()
        holder.wait(10)
    cam.connect()  # free again: connects at once
    cam.expose(0.05)
    note("camera busy in another process at connect", "alpaca", answer_s=body["_seconds"], message=msg,
         outcome=f"error {body['ErrorNumber']:#x}")


@pytest.mark.parametrize("accept", ["application/imagebytes", None], ids=["imagebytes", "json"])
def test_client_drops_connection_mid_download(cam: Rig, accept: str | None) -> None:
    cam.full_frame(0)
    cam.expose(0.05)
    headers = {"Accept": accept} if accept else {}
    # Warm up: one complete download of this kind, so buffers the server keeps anyway exist.
    requests.get(cam.server.api(0, "imagearray"), headers=headers, timeout=30).content
    time.sleep(0.3)
    base = cam.rss_mb()
    poller = Poller(cam.server)
    poller.start()
    try:
        for _ in range(4):
            sock = raw_get(cam.server.port, "/api/v1/camera/0/imagearray", accept)
            status, _, got = read_head(sock)
            assert status == 200
            received = len(got)
            while received < 3_000_000:
                received += len(sock.recv(1 << 16))
            reset_close(sock)
        # Others carry on: a complete download, and the next exposure.
        t0 = time.monotonic()
        r = requests.get(cam.server.api(0, "imagearray"), headers=headers, timeout=30)
        other_s = time.monotonic() - t0
        assert r.status_code == 200 and len(r.content) > FULL[0] * FULL[1]
        del r
        cam.expose(0.05)
    finally:
        p99, worst = poller.finish()
    time.sleep(0.5)
    grown = cam.rss_mb() - base
    assert p99 < 0.5, f"polls were held up: p99 {p99 * 1000:.0f} ms"
    assert grown < 50, f"server memory grew by {grown:.0f} MB after dropped downloads"
    note(f"client drops the connection mid-download ({'ImageBytes' if accept else 'JSON'})", "alpaca",
         poll_p99_s=p99, poll_max_s=worst, other_download_s=other_s, rss_growth_mb=round(grown, 1),
         outcome="others unaffected; memory returns")


def test_slow_client_does_not_block_others(cam: Rig) -> None:
    cam.full_frame(0)
    cam.expose(0.05)
    poller = Poller(cam.server)
    poller.start()
    sock = raw_get(cam.server.port, "/api/v1/camera/0/imagearray", "application/imagebytes", rcvbuf=16384)
    got = [0]
    stop = threading.Event()

    def slow_read() -> None:  # ~100 KB/s: 10 KB every 0.1 s
        status, _, head_rest = read_head(sock)
        assert status == 200
        got[0] += len(head_rest)
        while not stop.is_set():
            got[0] += len(sock.recv(10240))
            stop.wait(0.1)

    reader = threading.Thread(target=slow_read, daemon=True)
    reader.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        cam.expose(0.05)  # the camera is not held up by the slow download of the previous frame
        exposure_s = time.monotonic() - t0
        t0 = time.monotonic()
        hdr, pixels = cam.image_bytes()  # nor is another client's download of the new one
        other_s = time.monotonic() - t0
        assert hdr["ErrorNumber"] == 0 and len(pixels) == FULL[0] * FULL[1] * 2
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
    finally:
        stop.set()
        reader.join(5)
        sock.close()
        p99, worst = poller.finish()
    rate = got[0] / 3.5
    assert 20_000 < rate < 400_000, f"the slow client read {rate / 1000:.0f} KB/s"
    assert exposure_s < 3.0 and other_s < 5.0, (exposure_s, other_s)
    assert p99 < 0.5, f"polls were held up: p99 {p99 * 1000:.0f} ms"
    assert cam.poll() == IDLE
    note("slow client reading a full frame (~100 KB/s)", "alpaca", slow_client_kb_s=round(rate / 1000),
         next_exposure_s=exposure_s, other_download_s=other_s, poll_p99_s=p99, poll_max_s=worst,
         outcome="polls, the camera and other downloads unaffected")


def test_indi_exposure_shows_busy_over_alpaca(cam: Rig) -> None:
    """Consistency the other way round, and a disconnect from INDI seen over Alpaca."""
    c = Indi(cam.indi_port, blobs=True)
    try:
        c.wait_for(b'name="CCD_EXPOSURE"', 10)
        mark = c.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=1.0)
        c.state("CCD_EXPOSURE", "Busy", mark)
        assert cam.poll() == EXPOSING
        assert cam.put("startexposure", Duration=0.1, Light=True)["ErrorNumber"] != 0  # busy for Alpaca too
        c.state("CCD_EXPOSURE", "Ok", mark, 10)
        mark = c.switch("CONNECTION", "DISCONNECT")
        c.state("CONNECTION", "Idle", mark)
        assert cam.value("connected") is False
    finally:
        c.close()
