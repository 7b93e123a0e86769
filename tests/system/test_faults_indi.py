"""The fault matrix through the INDI shim (docs/reliability.md), with raw-socket INDI clients.

One ``zwo-alpaca serve`` (simulated ASI294MC Pro, Alpaca + INDI) for the module. Faults are
injected with the simulator's ``sim.*`` Alpaca Actions (INDI has no such hook); everything else
goes through INDI. Each case asserts: every request gets an answer within a bound (the property in
Alert with the reason, never silence), the core reconnects by itself after the replug with the
settings made over INDI restored in the SDK, the next INDI exposure delivers a correct FITS, and
Alpaca sees the same camera state.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from support.faults import (
    CALL_BOUND_S,
    CAMERA_NAME,
    DEV,
    ERROR,
    FULL,
    RECOVERY_BOUND_S,
    Indi,
    Poller,
    Rig,
    fits_header,
    note,
    reset_close,
    start_rig,
    wait_until,
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = start_rig(tmp_path_factory.mktemp("faults-indi"))
    yield r
    r.finish()


@pytest.fixture
def indi(rig: Rig) -> Iterator[Indi]:
    """An INDI client (BLOBs on) with the camera connected over INDI; afterwards all is put back."""
    c = Indi(rig.indi_port, blobs=True)
    c.connect()
    yield c
    c.close()
    rig.restore()


def apply_settings(c: Indi, rig: Rig) -> dict:
    """Gain, offset, binning, subframe, 8-bit format and cooler target, all over INDI; one exposure."""
    for prop, members in (("CCD_CONTROLS", {"Gain": 222, "Offset": 33}), ("CCD_BINNING", {"HOR_BIN": 2, "VER_BIN": 2}),
                          ("CCD_FRAME", {"X": 20, "Y": 40, "WIDTH": 2000, "HEIGHT": 1600}),
                          ("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": -7})):
        mark = c.numbers(prop, **members)
        c.expect(rb'<set\w+Vector [^>]*name="%s" state="(Ok|Busy)"' % prop.encode(), mark)
    mark = c.switch("CCD_CAPTURE_FORMAT", "ASI_IMG_RAW8")
    c.state("CCD_CAPTURE_FORMAT", "Ok", mark)
    check_fits(c.expose(0.05))
    return rig.camera_state()["roi"]


def check_fits(fits: bytes, shape: tuple[int, int] = (1000, 800), bitpix: int = 8) -> None:
    hdr = fits_header(fits)
    assert (int(hdr["NAXIS1"]), int(hdr["NAXIS2"]), int(hdr["BITPIX"])) == (*shape, bitpix), hdr
    assert len(fits) % 2880 == 0 and len(fits) >= shape[0] * shape[1] * bitpix // 8


def check_restored(c: Indi, rig: Rig, roi: dict) -> None:
    st = rig.camera_state()
    assert (st["gain"], st["offset"], st["target_c"], st["cooler_on"]) == (222, 33, -7, True), st
    check_fits(c.expose(0.05))
    assert rig.camera_state()["roi"] == roi


def test_unplug_while_idle(rig: Rig, indi: Indi) -> None:
    roi = apply_settings(indi, rig)
    mark = indi.size()
    rig.unplug()
    noticed, _ = indi.expect(rb'message="\[ERROR\] camera removed', mark)
    assert rig.poll() == ERROR  # Alpaca sees the same
    m2 = indi.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.1)
    answer, alert = indi.state("CCD_EXPOSURE", "Alert", m2, 1.0)
    assert b"reconnecting" in alert
    assert b'name="CONNECTION" state="Alert"' not in indi.text()[mark:]  # still connected (the intent)
    m3 = indi.size()
    rig.action("sim.replug")
    recovery, _ = indi.expect(rb"connection \(re\)established", m3, RECOVERY_BOUND_S)
    check_restored(indi, rig, roi)
    note("unplug while idle", "indi", noticed_s=noticed, exposure_alert_s=answer, recovery_s=recovery,
         outcome="[ERROR] camera removed message; CCD_EXPOSURE Alert at once; restored; next FITS ok")


@pytest.mark.parametrize("phase,duration", [("exposure", 1.0), ("readout", 0.3)])
def test_unplug_mid_exposure(rig: Rig, indi: Indi, phase: str, duration: float) -> None:
    roi = apply_settings(indi, rig)
    rig.action("sim.unplug_after", {"phase": phase, "delay": 0.3 if phase == "exposure" else 0.0})
    t0 = time.monotonic()
    mark = indi.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=duration)
    indi.state("CCD_EXPOSURE", "Busy", mark)
    _, alert = indi.state("CCD_EXPOSURE", "Alert", mark, duration + CALL_BOUND_S)
    alert_after = time.monotonic() - t0
    assert b"camera removed" in alert
    assert rig.poll() == ERROR and not rig.poll("imageready")
    assert b"<setBLOBVector" not in indi.text()[mark:]  # the lost exposure delivers nothing
    m2 = indi.size()
    rig.action("sim.replug")
    recovery, _ = indi.expect(rb"connection \(re\)established", m2, RECOVERY_BOUND_S)
    check_restored(indi, rig, roi)
    note(f"unplug during {phase}", "indi", alert_after_start_s=alert_after, recovery_s=recovery,
         outcome="CCD_EXPOSURE Alert 'exposure failed: camera removed'; no BLOB; restored; next FITS ok")


def test_exposure_failing_at_once_ends_in_alert_not_busy(rig: Rig, indi: Indi) -> None:
    """The camera vanishes as the exposure starts: the failure may reach the INDI loop before the
    start call's own result does; the final CCD_EXPOSURE state must still be Alert (it used to be
    overwritten by Busy, and the client waited for ever)."""
    for function in ("ASISetROIFormat", "ASIStartExposure", "ASIGetExpStatus"):
        rig.action("sim.inject", {"function": function, "code": 5, "count": 1})
        mark = indi.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.2)
        indi.state("CCD_EXPOSURE", "Alert", mark)
        time.sleep(0.5)
        states = re.findall(rb'name="CCD_EXPOSURE" state="(\w+)"', indi.text()[mark:])
        assert states[-1] == b"Alert", (function, states)
        rig.action("sim.replug")
        wait_until(lambda: rig.poll() != ERROR and not rig.value("connecting"), RECOVERY_BOUND_S, "recovered")
    indi.expose(0.05)


def _blob_client(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f'<getProperties version="1.7" device="{DEV}"/><enableBLOB device="{DEV}">Also</enableBLOB>'.encode())
    return s


def _read_until(s: socket.socket, buf: bytearray, needle: bytes, timeout: float, start: int = 0) -> int:
    deadline = time.monotonic() + timeout
    while (i := buf.find(needle, start)) < 0:
        assert time.monotonic() < deadline, f"{needle!r} not received within {timeout} s"
        chunk = s.recv(1 << 20)
        assert chunk, "connection closed"
        buf += chunk
    return i


def _full_frame_raw16(c: Indi) -> None:
    mark = c.switch("CCD_FRAME_RESET", "RESET")
    c.state("CCD_FRAME_RESET", "Ok", mark)
    mark = c.switch("CCD_CAPTURE_FORMAT", "ASI_IMG_RAW16")
    c.state("CCD_CAPTURE_FORMAT", "Ok", mark)


def test_unplug_during_blob_download(rig: Rig, indi: Indi) -> None:
    _full_frame_raw16(indi)
    slow = _blob_client(rig.indi_port, rcvbuf=65536)
    try:
        buf = bytearray()
        _read_until(slow, buf, b'name="CCD1"', 10)
        time.sleep(0.2)
        indi.expose(0.05)  # the fast client has its image...
        start = _read_until(slow, buf, b"<oneBLOB", 10)  # ...the slow one is only starting on it
        while len(buf) - start < 2_000_000:
            buf += slow.recv(65536)
        rig.unplug()
        wait_until(lambda: rig.poll() == ERROR, 3, "CameraState Error")
        t0 = time.monotonic()
        end = _read_until(slow, buf, b"</oneBLOB>", 30, start)
        finish = time.monotonic() - t0
    finally:
        slow.close()
    fits = base64.b64decode(bytes(buf[buf.find(b">", start) + 1:end]))
    check_fits(fits, FULL, 16)
    m = indi.size()
    rig.action("sim.replug")
    recovery, _ = indi.expect(rb"connection \(re\)established", m, RECOVERY_BOUND_S)
    check_fits(indi.expose(0.05), FULL, 16)
    note("unplug during a client's image download", "indi", rest_of_download_s=finish, recovery_s=recovery,
         outcome="the BLOB already being sent completes intact; next FITS ok")


def test_failing_close_still_releases_the_camera(rig: Rig, indi: Indi) -> None:
    rig.action("sim.inject", {"function": "ASICloseCamera", "code": 16, "count": 1})
    mark = indi.switch("CONNECTION", "DISCONNECT")
    took, _ = indi.state("CONNECTION", "Idle", mark, 1.5)
    assert rig.value("connected") is False  # Alpaca sees the disconnect made over INDI
    assert rig.record()["open_handles"] == []
    probe = rig.probe_open()
    assert probe.returncode == 0 and probe.stdout.startswith("holding"), probe.stderr
    indi.connect()
    check_fits(indi.expose(0.05), FULL, 16)
    note("failing close (ASICloseCamera error)", "indi", disconnect_s=took,
         outcome="CONNECTION Idle; close retried; no handle left; another program opens it at once")


def test_camera_busy_in_another_process(rig: Rig, indi: Indi) -> None:
    mark = indi.switch("CONNECTION", "DISCONNECT")
    indi.state("CONNECTION", "Idle", mark)
    holder = rig.hold()
    try:
        mark = indi.switch("CONNECTION", "CONNECT")
        took, alert = indi.state("CONNECTION", "Alert", mark)
        assert CAMERA_NAME.encode() in alert and b"another program" in alert, alert
        assert rig.value("connected") is False
        # The same text Alpaca gives.
        body = rig.put("connected", Connected=True)
        assert body["ErrorMessage"].encode() in alert
    finally:
        holder.terminate()
        holder.wait(10)
    indi.connect()
    check_fits(indi.expose(0.05), FULL, 16)
    note("camera busy in another process at connect", "indi", answer_s=took,
         outcome="CONNECTION Alert, same message as Alpaca")


def test_client_drops_connection_mid_blob(rig: Rig, indi: Indi) -> None:
    _full_frame_raw16(indi)
    indi.expose(0.05)  # warm up: the full-frame encoding buffers exist
    time.sleep(0.3)
    base = rig.rss_mb()
    poller = Poller(rig.server)
    poller.start()
    try:
        for _ in range(3):
            dropper = _blob_client(rig.indi_port)
            buf = bytearray()
            _read_until(dropper, buf, b'name="CCD1"', 10)
            time.sleep(0.1)
            t0 = time.monotonic()
            fits = indi.expose(0.05)  # the others get their image as usual
            other_s = time.monotonic() - t0
            check_fits(fits, FULL, 16)
            start = _read_until(dropper, buf, b"<oneBLOB", 10)
            while len(buf) - start < 2_000_000:
                buf += dropper.recv(65536)
            reset_close(dropper)
        fresh = Indi(rig.indi_port)  # new clients are served
        fresh.wait_for(b'name="CCD_EXPOSURE"', 5)
        fresh.close()
    finally:
        p99, worst = poller.finish()
    time.sleep(0.5)
    grown = rig.rss_mb() - base
    assert p99 < 0.5, f"Alpaca polls held up: p99 {p99 * 1000:.0f} ms"
    assert grown < 50, f"server memory grew by {grown:.0f} MB"
    note("client drops the connection mid-download", "indi", other_client_exposure_s=other_s, poll_p99_s=p99,
         poll_max_s=worst, rss_growth_mb=round(grown, 1), outcome="others unaffected; memory returns")


def test_slow_client_does_not_block_others(rig: Rig, indi: Indi) -> None:
    _full_frame_raw16(indi)
    slow = _blob_client(rig.indi_port, rcvbuf=16384)
    got = [0]
    stop = threading.Event()

    def pace() -> None:  # ~100 KB/s
        while not stop.is_set():
            try:
                got[0] += len(slow.recv(10240))
            except OSError:
                return
            stop.wait(0.1)

    reader = threading.Thread(target=pace, daemon=True)
    poller = Poller(rig.server)
    poller.start()
    reader.start()
    try:
        time.sleep(0.3)
        times = []
        for _ in range(2):
            t0 = time.monotonic()
            check_fits(indi.expose(0.05), FULL, 16)
            times.append(time.monotonic() - t0)
        time.sleep(max(0.0, 3.0 - sum(times)))
    finally:
        stop.set()
        reader.join(5)
        slow.close()
        p99, worst = poller.finish()
    rate = got[0] / (0.3 + max(3.0, sum(times)))
    assert 20_000 < rate < 400_000, f"the slow client read {rate / 1000:.0f} KB/s"
    assert max(times) < 5.0, times
    assert p99 < 0.5, f"Alpaca polls held up: p99 {p99 * 1000:.0f} ms"
    note("slow client reading a full frame (~100 KB/s)", "indi", slow_client_kb_s=round(rate / 1000),
         fast_client_exposure_s=max(times), poll_p99_s=p99, poll_max_s=worst,
         outcome="other INDI clients, Alpaca polls and the camera unaffected")


# ----------------------------------------------------------------------------------- bad input
# tests/indi/test_indi_badinput.py covers malformed, binary, entity-expanding, huge, deeply nested and
# truncated XML, unknown elements, devices, properties and members, and out-of-range numbers.
# These are the cases it leaves out.
BAD_NUMBERS = ["nan", "inf", "-inf", "1e400", "", "0x10", "1,5"]


@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_non_finite_and_garbled_numbers_are_refused(rig: Rig, indi: Indi, text: str) -> None:
    target = rig.value("setccdtemperature")
    mark = indi.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=text)
    indi.state("CCD_EXPOSURE", "Alert", mark, 2)
    mark = indi.numbers("CCD_TEMPERATURE", CCD_TEMPERATURE_VALUE=text)
    indi.state("CCD_TEMPERATURE", "Alert", mark, 2)
    assert rig.value("setccdtemperature") == target  # nothing was changed
    assert rig.camera_state()["target_c"] == target
    indi.expose(0.01)  # and the camera still works


def test_external_entities_are_never_resolved(rig: Rig, indi: Indi) -> None:
    secret = rig.server.workdir / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    mark = indi.size()
    indi.send(f'<!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>'
              f'<newTextVector device="{DEV}" name="UPLOAD_SETTINGS"><oneText name="UPLOAD_PREFIX">&e;</oneText>'
              f'</newTextVector>')
    indi.expect(rb"malformed XML|rejected input", mark)
    time.sleep(0.2)
    assert b"TOP-SECRET" not in indi.text()
    indi.expose(0.01)


def test_nul_bytes_and_garbage_between_messages(rig: Rig, indi: Indi) -> None:
    mark = indi.size()
    indi.send(b"\x00\x00\xff\xfe<getProperties version='1.7' device='%s' name='CCD_INFO'/>\x00" % DEV.encode())
    indi.expect(rb"malformed XML|rejected input|CCD_INFO", mark)
    mark = indi.size()
    indi.send(f'<getProperties version="1.7" device="{DEV}" name="CCD_INFO"/>')
    indi.expect(rb'name="CCD_INFO"', mark)  # the connection still works
    indi.expose(0.01)


def test_too_many_indi_clients_are_refused_cleanly(rig: Rig, indi: Indi) -> None:
    socks = []
    try:
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", rig.indi_port), timeout=5)
            socks.append(s)
        time.sleep(0.5)
        refused = 0
        for s in socks:
            s.setblocking(False)
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue  # accepted, silent until it asks for something
            if b"server full" in data or not data:
                refused += 1
        assert refused >= 6, refused  # 64 clients at most (one is the fixture's)
        mark = indi.size()
        indi.send(f'<getProperties version="1.7" device="{DEV}" name="CCD_INFO"/>')
        indi.expect(rb'name="CCD_INFO"', mark)  # clients already in are served
        assert requests.get(rig.server.api(0, "camerastate"), timeout=2).status_code == 200
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    fresh = Indi(rig.indi_port)  # and there is room again
    fresh.close()
    indi.expose(0.01)


@pytest.mark.parametrize("outcome", ["image", "failure"])
def test_exposure_ending_before_the_start_call_returns(tmp_path, outcome: str) -> None:
    """In-process shim on the simulator, with the core's start_exposure answering 0.6 s late (as when
    a long JSON encode holds the GIL): the image (or failure) arrives first, and the final state
    must be its Ok (or Alert), not the Busy of the late start answer (a client would wait for ever)."""
    from driver import Exposure, ZWOCamera, sdk, simulator
    from indi_shim.server import IndiServer
    from support.indi_client import RawIndi

    sdk.load(simulator=["asi120mm-mini"], sim_options={"lock_dir": str(tmp_path / "locks")})
    cam = ZWOCamera(sdk.enumerate_cameras()[0])
    real = cam.start_exposure

    def late(*args: Any, **kwargs: Any) -> Exposure:
        exposure = real(*args, **kwargs)
        time.sleep(0.6)
        return exposure

    cam.start_exposure = late  # type: ignore[method-assign]
    server = IndiServer([cam], host="127.0.0.1", port=0).start()
    dev = "ZWO CCD ASI120MM Mini"
    assert server.port is not None
    c = RawIndi(server.port)
    try:
        c.send(f'<getProperties version="1.7" device="{dev}"/><enableBLOB device="{dev}">Also</enableBLOB>'
               f'<newSwitchVector device="{dev}" name="CONNECTION"><oneSwitch name="CONNECT">On</oneSwitch>'
               f'</newSwitchVector>')
        c.wait_for(b'name="CCD_EXPOSURE"', 10)
        if outcome == "failure":
            sim = simulator.current()
            assert sim is not None
            sim.inject("ASIStartExposure", 5, 1, 0)
        mark = c.size()
        c.send(f'<newNumberVector device="{dev}" name="CCD_EXPOSURE"><oneNumber name="CCD_EXPOSURE_VALUE">0.001'
               f'</oneNumber></newNumberVector>')
        time.sleep(1.5)
        states = re.findall(rb'name="CCD_EXPOSURE" state="(\w+)"', c.text()[mark:])
        assert states and states[-1] == (b"Ok" if outcome == "image" else b"Alert"), states
        assert (b"</setBLOBVector>" in c.text()[mark:]) == (outcome == "image")
    finally:
        c.close()
        server.stop()
        cam.disconnect_camera()
        simulator.uninstall()
