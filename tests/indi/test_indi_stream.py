"""Live video over INDI (libindi's StreamManager properties), from the outside, against ``zwo-alpaca serve``.

Raw socket clients count ``.stream`` BLOBs byte-exactly; libindi's own client library (pyindi-client)
checks that a libindi client parses the property set and the frames. One server for the module,
with debug logging so the core's "capture loop stopped" line proves the capture thread ended.
Every wait is bounded by a count and a deadline.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from support.indi_client import (
    DEV120,
    DEV294,
    IndiServer,
    PyIndi,
    PyIndiClient,
    RawIndi,
    blob_payloads,
    definitions,
    needs_pyindi,
    wait_port,
)
from support.servers import alpaca_get, alpaca_put, free_port, start_server

NUM = '<newNumberVector device="{d}" name="{p}">{m}</newNumberVector>'
SW = '<newSwitchVector device="{d}" name="{p}"><oneSwitch name="{m}">On</oneSwitch></newSwitchVector>'
W120, H120 = 1280, 960  # ASI120MM Mini sensor
W294, H294 = 4144, 2822  # ASI294MC Pro sensor


def num(device: str, prop: str, **members: float) -> str:
    body = "".join(f'<oneNumber name="{k}">{v}</oneNumber>' for k, v in members.items())
    return NUM.format(d=device, p=prop, m=body)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    workdir = tmp_path_factory.mktemp("indi-stream")
    port = free_port()
    server = start_server(workdir, "--indi-port", str(port), log_level="debug")
    wait_port(port)
    s = IndiServer(server, port, workdir / "uploads")
    yield s
    server.stop()


class Cam:
    """A raw client attached to one device with BLOBs enabled and the camera connected."""

    def __init__(self, srv: IndiServer, device: str) -> None:
        self.dev = device
        self.c = RawIndi(srv.port)
        self.c.send(f'<getProperties version="1.7" device="{device}"/><enableBLOB device="{device}">Also</enableBLOB>')
        self.c.wait_for(b'name="CONNECTION"')
        self.c.send(SW.format(d=device, p="CONNECTION", m="CONNECT"))
        self.c.wait_for(b'name="CCD_VIDEO_STREAM"', 15)
        time.sleep(0.2)

    def send(self, xml: str) -> int:
        mark = self.c.size()
        self.c.send(xml)
        return mark

    def stream(self, on: bool) -> int:
        return self.send(SW.format(d=self.dev, p="CCD_VIDEO_STREAM", m="STREAM_ON" if on else "STREAM_OFF"))

    def wait_state(self, prop: str, state: str, mark: int, timeout: float = 10.0) -> int:
        return self.c.wait_for(f'name="{prop}" state="{state}"'.encode(), timeout, mark)

    def frames(self, mark: int, end: int | None = None) -> list[tuple[str, bytes]]:
        return [b for b in blob_payloads(self.c.text()[mark:end])]

    def wait_frames(self, n: int, mark: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.frames(mark)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.frames(mark))} of {n} frames within {timeout} s")

    def close(self, disconnect: bool = True) -> None:
        if disconnect:
            mark = self.send(SW.format(d=self.dev, p="CONNECTION", m="DISCONNECT"))
            try:
                self.c.wait_for(b'name="CONNECTION" state="Idle"', 5, mark)
            except TimeoutError:
                pass
        self.c.close()


@pytest.fixture
def cam120(srv: IndiServer) -> Iterator[Cam]:
    c = Cam(srv, DEV120)
    yield c
    c.close()


def _last_numbers(raw: bytes, prop: str) -> dict[str, float]:
    sets = re.findall(rb'<setNumberVector [^>]*name="' + prop.encode() + rb'"[^>]*>(.*?)</setNumberVector>', raw, re.S)
    assert sets, f"no {prop} update"
    return {k.decode(): float(v) for k, v in re.findall(rb'<oneNumber name="([^"]+)">([^<]*)<', sets[-1])}


# ------------------------------------------------------------------------------------------ tests
def test_stream_properties_defined_as_libindi(cam120: Cam) -> None:
    defs = definitions(cam120.c.text())[DEV120]
    expect = {  # name: (kind, perm, members) as libindi's StreamManager defines them for a CCD
        "CCD_VIDEO_STREAM": ("Switch", "rw", "STREAM_ON,STREAM_OFF"),
        "STREAM_DELAY": ("Number", "ro", "STREAM_DELAY_TIME"),
        "STREAMING_EXPOSURE": ("Number", "rw", "STREAMING_EXPOSURE_VALUE,STREAMING_DIVISOR_VALUE"),
        "FPS": ("Number", "ro", "EST_FPS,AVG_FPS"),
        "CCD_STREAM_FRAME": ("Number", "rw", "X,Y,WIDTH,HEIGHT"),
        "CCD_STREAM_ENCODER": ("Switch", "rw", "RAW"),
        "LIMITS": ("Number", "rw", "LIMITS_BUFFER_MAX,LIMITS_PREVIEW_FPS"),
    }
    for name, (kind, perm, members) in expect.items():
        d = defs.get(name)
        assert d is not None, f"{name} not defined; have {sorted(defs)}"
        assert (d["kind"], d["perm"], d["members"], d["group"]) == (kind, perm, members, "Streaming"), name
    assert defs["CCD_VIDEO_STREAM"]["rule"] == "OneOfMany"
    assert re.search(r'name="STREAM_OFF"[^>]*>On<', defs["CCD_VIDEO_STREAM"]["body"])
    assert re.search(r'name="STREAMING_EXPOSURE_VALUE"[^>]*>0.1<', defs["STREAMING_EXPOSURE"]["body"])
    assert re.search(r'name="LIMITS_PREVIEW_FPS"[^>]*min="1" max="120"[^>]*>10<', defs["LIMITS"]["body"])
    # The stream frame is the binned capture frame.
    assert re.search(rf'name="WIDTH"[^>]*>{W120}<', defs["CCD_STREAM_FRAME"]["body"])
    assert re.search(rf'name="HEIGHT"[^>]*>{H120}<', defs["CCD_STREAM_FRAME"]["body"])


def test_stream_frames_size_fps_and_off(srv: IndiServer, cam120: Cam) -> None:
    c = cam120
    mark = c.stream(True)
    c.wait_state("CCD_VIDEO_STREAM", "Busy", mark)
    frames = c.wait_frames(5, mark)
    # One camera, one state: Alpaca cannot expose while INDI streams.
    assert alpaca_put(srv.server, 1, "startexposure", Duration=0.01, Light=True)["ErrorNumber"] != 0
    # RAW16 camera format: libindi/KStars streams are 8 bits per pixel, WIDTH x HEIGHT bytes.
    assert {(fmt, len(p)) for fmt, p in frames} == {(".stream", W120 * H120)}
    head = re.search(rb'<oneBLOB name="CCD1" size="(\d+)" enclen="(\d+)" format="\.stream"', c.c.text()[mark:])
    assert head and int(head.group(1)) == W120 * H120
    assert any(p.count(0) < len(p) for _, p in frames)  # an image, not a blank buffer
    c.wait_state("FPS", "Ok", mark)
    fps = _last_numbers(c.c.text()[mark:], "FPS")
    assert 2 < fps["AVG_FPS"] < 40 and fps["EST_FPS"] > 0, fps
    off = c.stream(False)
    idle_at = c.wait_state("CCD_VIDEO_STREAM", "Idle", off)
    time.sleep(1.0)
    assert not c.frames(idle_at), "frames after the stream was turned off"
    deadline = time.monotonic() + 5
    while alpaca_get(srv.server, 1, "camerastate")["Value"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alpaca_get(srv.server, 1, "camerastate")["Value"] == 0  # idle again
    assert alpaca_put(srv.server, 1, "startexposure", Duration=0.01, Light=True)["ErrorNumber"] == 0
    deadline = time.monotonic() + 10
    while not alpaca_get(srv.server, 1, "imageready")["Value"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alpaca_get(srv.server, 1, "imageready")["Value"] is True
    fps = _last_numbers(c.c.text()[off:], "FPS")
    assert fps == {"EST_FPS": 0, "AVG_FPS": 0}


def test_binning_raw8_and_preview_limit(srv: IndiServer, cam120: Cam) -> None:
    c = cam120
    mark = c.send(num(DEV120, "CCD_BINNING", HOR_BIN=2, VER_BIN=2))
    c.wait_state("CCD_BINNING", "Ok", mark)
    c.send(SW.format(d=DEV120, p="CCD_CAPTURE_FORMAT", m="ASI_IMG_RAW8"))
    c.wait_state("CCD_CAPTURE_FORMAT", "Ok", mark)
    c.send(num(DEV120, "LIMITS", LIMITS_BUFFER_MAX=512, LIMITS_PREVIEW_FPS=2))
    c.wait_state("LIMITS", "Ok", mark)
    try:
        c.send(num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=0.02, STREAMING_DIVISOR_VALUE=1))
        c.wait_state("STREAMING_EXPOSURE", "Ok", mark)
        start = c.stream(True)
        c.wait_frames(1, start)
        t0 = time.monotonic()
        first = len(c.frames(start))
        time.sleep(2.0)
        sent = len(c.frames(start)) - first
        elapsed = time.monotonic() - t0
        fps = _last_numbers(c.c.text()[start:], "FPS")
        c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))
        assert {(f, len(p)) for f, p in c.frames(start)} == {(".stream", (W120 // 2) * (H120 // 2))}
        assert sent <= 2 * elapsed + 2, (sent, elapsed)  # LIMITS_PREVIEW_FPS = 2
        assert fps["AVG_FPS"] > 5, fps  # while the camera itself runs much faster
        sf = _last_numbers(c.c.text()[mark:], "CCD_STREAM_FRAME") if b'name="CCD_STREAM_FRAME"' in \
            c.c.text()[mark:] else None
        if sf is not None:
            assert (sf["WIDTH"], sf["HEIGHT"]) == (W120 // 2, H120 // 2)
        # A crop of the stream frame: WIDTH x HEIGHT bytes.
        m2 = c.send(num(DEV120, "CCD_STREAM_FRAME", X=10, Y=20, WIDTH=100, HEIGHT=50))
        c.wait_state("CCD_STREAM_FRAME", "Ok", m2)
        s2 = c.stream(True)
        frames = c.wait_frames(2, s2)
        c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))
        assert {len(p) for _, p in frames} == {100 * 50}
    finally:
        m = c.send(num(DEV120, "LIMITS", LIMITS_BUFFER_MAX=512, LIMITS_PREVIEW_FPS=10))
        c.send(SW.format(d=DEV120, p="CCD_CAPTURE_FORMAT", m="ASI_IMG_RAW16"))
        c.send(SW.format(d=DEV120, p="CCD_FRAME_RESET", m="RESET"))
        c.wait_state("CCD_FRAME_RESET", "Ok", m)


def test_colour_stream_is_rgb888(srv: IndiServer) -> None:
    c = Cam(srv, DEV294)
    try:
        mark = c.send(num(DEV294, "CCD_BINNING", HOR_BIN=4, VER_BIN=4))
        c.wait_state("CCD_BINNING", "Ok", mark)
        c.send(SW.format(d=DEV294, p="CCD_CAPTURE_FORMAT", m="ASI_IMG_RGB24"))
        c.wait_state("CCD_CAPTURE_FORMAT", "Ok", mark)
        start = c.stream(True)
        frames = c.wait_frames(2, start)
        c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))
        assert {(f, len(p)) for f, p in frames} == {(".stream", (W294 // 4) * (H294 // 4) * 3)}
    finally:
        c.send(SW.format(d=DEV294, p="CCD_CAPTURE_FORMAT", m="ASI_IMG_RAW16"))
        c.send(SW.format(d=DEV294, p="CCD_FRAME_RESET", m="RESET"))
        c.close()


def test_exposure_stops_stream_then_exposes(srv: IndiServer, cam120: Cam) -> None:
    c = cam120
    start = c.stream(True)
    c.wait_frames(2, start)
    mark = c.send(num(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.05))
    idle = c.wait_state("CCD_VIDEO_STREAM", "Idle", mark)
    assert b"video stream stopped: an exposure was requested" in c.c.text()[idle:idle + 400]
    ok = c.wait_state("CCD_EXPOSURE", "Ok", mark, 15)
    fits = [p for f, p in c.frames(mark, ok) if f == ".fits"]
    assert len(fits) == 1 and fits[0].startswith(b"SIMPLE  =")
    time.sleep(0.5)
    assert not [f for f, _ in c.frames(idle) if f == ".stream"]
    # Streaming again afterwards, then an exposure after STREAM_OFF also works.
    again = c.stream(True)
    c.wait_frames(1, again)
    c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))
    mark = c.send(num(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.05))
    ok = c.wait_state("CCD_EXPOSURE", "Ok", mark, 15)
    assert [f for f, _ in c.frames(mark, ok)] == [".fits"]


def test_disconnect_while_streaming_stops_capture(srv: IndiServer) -> None:
    c = Cam(srv, DEV120)
    try:
        stopped_before = srv.server.log_text().count("capture loop stopped")
        start = c.stream(True)
        c.wait_frames(2, start)
        mark = c.send(SW.format(d=DEV120, p="CONNECTION", m="DISCONNECT"))
        gone = c.c.wait_for(b'name="CONNECTION" state="Idle"', 5, mark)
        assert b'<delProperty device="ZWO CCD ASI120MM Mini" name="CCD_VIDEO_STREAM"' in c.c.text()[mark:]
        time.sleep(0.8)
        assert not c.frames(gone), "frames after disconnect"
        assert alpaca_get(srv.server, 1, "connected")["Value"] is False
        deadline = time.monotonic() + 3  # the core logs this as its capture thread ends
        while srv.server.log_text().count("capture loop stopped") <= stopped_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.server.log_text().count("capture loop stopped") == stopped_before + 1
        # Reconnected, the stream is off and stays off.
        mark = c.send(SW.format(d=DEV120, p="CONNECTION", m="CONNECT"))
        d = c.c.wait_for(b'<defSwitchVector device="ZWO CCD ASI120MM Mini" name="CCD_VIDEO_STREAM"', 10, mark)
        assert re.search(rb'name="STREAM_OFF"[^>]*>On<', c.c.text()[d:d + 600])
        time.sleep(0.6)
        assert not c.frames(mark)
    finally:
        c.close()


def test_bad_values_alert_with_range(srv: IndiServer, cam120: Cam) -> None:
    c = cam120
    cases = [
        (num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=-1), "STREAMING_EXPOSURE", rb"out of range \["),
        (num(DEV120, "STREAMING_EXPOSURE", STREAMING_DIVISOR_VALUE=99), "STREAMING_EXPOSURE", rb"\[1, 15\]"),
        (num(DEV120, "CCD_STREAM_FRAME", X=5000), "CCD_STREAM_FRAME", rb"out of range \[0, 1279\]"),
        (num(DEV120, "LIMITS", LIMITS_PREVIEW_FPS=0), "LIMITS", rb"\[1, 120\]"),
        (SW.format(d=DEV120, p="CCD_STREAM_ENCODER", m="MJPEG"), "CCD_STREAM_ENCODER", rb"members: RAW"),
    ]
    for xml, prop, why in cases:
        mark = c.send(xml)
        at = c.wait_state(prop, "Alert", mark)
        msg = c.c.text()[at:at + 600]
        assert re.search(why, msg), (prop, msg[:300])
        assert b"Traceback" not in msg
    # STREAM_ON during an exposure is refused, saying what to do; the exposure goes on.
    mark = c.send(num(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=1.5))
    c.wait_state("CCD_EXPOSURE", "Busy", mark)
    c.stream(True)
    at = c.wait_state("CCD_VIDEO_STREAM", "Alert", mark)
    assert b"an exposure is in progress" in c.c.text()[at:at + 600]
    c.wait_state("CCD_EXPOSURE", "Ok", mark, 15)
    assert not [f for f, _ in c.frames(mark) if f == ".stream"]
    # Still usable: a valid exposure value is accepted and streaming works.
    mark = c.send(num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=0.05, STREAMING_DIVISOR_VALUE=1))
    c.wait_state("STREAMING_EXPOSURE", "Ok", mark)
    start = c.stream(True)
    c.wait_frames(2, start)
    c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))


def test_slow_client_gets_newest_frames_not_backlog(srv: IndiServer, cam120: Cam) -> None:
    """A client that stops reading while frames stream: no backlog builds up and no warning flood."""
    slow = socket.create_connection(("127.0.0.1", srv.port))
    try:
        slow.sendall(f'<getProperties version="1.7" device="{DEV120}"/><enableBLOB device="{DEV120}">Also</enableBLOB>'
                     .encode())
        time.sleep(0.3)
        start = cam120.stream(True)
        cam120.wait_frames(1, start)
        time.sleep(3.0)  # ~30 frames of 1.6 MB on the wire: far more than the slow client's buffers hold
        fast_frames = len(cam120.frames(start))
        cam120.wait_state("CCD_VIDEO_STREAM", "Idle", cam120.stream(False))
        slow.settimeout(1.0)
        got = bytearray()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                d = slow.recv(1 << 20)
            except TimeoutError:
                break
            if not d:
                break
            got += d
        slow_frames = got.count(b'format=".stream"')
        assert fast_frames >= 15, fast_frames
        assert 1 <= slow_frames < fast_frames // 2, (slow_frames, fast_frames)
        assert b"not keeping up" not in got
        assert got.rfind(b'name="CCD_VIDEO_STREAM" state="Idle"') > got.rfind(b"</setBLOBVector>")
    finally:
        slow.close()


@needs_pyindi
def test_libindi_client_receives_stream(srv: IndiServer) -> None:
    c = PyIndiClient(srv.port)
    try:
        c.setBLOBMode(PyIndi.B_ALSO, DEV120, None)
        c.connect_device(DEV120)
        for name in ("CCD_VIDEO_STREAM", "FPS", "STREAMING_EXPOSURE", "CCD_STREAM_FRAME", "CCD_STREAM_ENCODER"):
            c.wait_new(DEV120, name)
        props = {e.name: e for e in c.events if e.device == DEV120 and e.kind == "new"}
        assert (props["CCD_VIDEO_STREAM"].ptype, props["CCD_VIDEO_STREAM"].perm) == (PyIndi.INDI_SWITCH, PyIndi.IP_RW)
        assert (props["FPS"].ptype, props["FPS"].perm) == (PyIndi.INDI_NUMBER, PyIndi.IP_RO)
        assert props["STREAMING_EXPOSURE"].values["STREAMING_EXPOSURE_VALUE"][0] == pytest.approx(0.1)
        mark = c.mark()
        c.set_switch(DEV120, "CCD_VIDEO_STREAM", "STREAM_ON")
        c.wait_event(lambda e: e.name == "CCD_VIDEO_STREAM" and e.state == "Busy", 5, mark)
        for _ in range(3):
            c.wait_event(lambda e: e.name == "CCD1" and e.kind == "update" and
                         len([x for x in c.since(mark) if x.name == "CCD1"]) >= 3, 10, mark)
        ev = c.wait_event(lambda e: e.name == "FPS" and e.values["AVG_FPS"][0] > 0, 5, mark)
        assert ev.values["EST_FPS"][0] > 0
        blobs = [e.values["CCD1"] for e in c.since(mark) if e.name == "CCD1" and e.kind == "update"]
        assert {(fmt, len(data)) for fmt, data in blobs} == {(".stream", W120 * H120)}
        off = c.mark()
        c.set_switch(DEV120, "CCD_VIDEO_STREAM", "STREAM_OFF")
        c.wait_event(lambda e: e.name == "CCD_VIDEO_STREAM" and e.state == "Idle", 5, off)
    finally:
        mark = c.mark()
        c.set_switch(DEV120, "CONNECTION", "DISCONNECT")
        try:
            c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)
        finally:
            c.close()


def test_divisor_drops_every_nth_frame(cam120: Cam) -> None:
    c = cam120
    mark = c.send(num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=0.1, STREAMING_DIVISOR_VALUE=1))
    c.wait_state("STREAMING_EXPOSURE", "Ok", mark)
    try:
        start = c.stream(True)
        c.wait_frames(1, start)
        time.sleep(1.6)
        full = _last_numbers(c.c.text()[start:], "FPS")["AVG_FPS"]
        half = c.send(num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=0.1, STREAMING_DIVISOR_VALUE=2))
        c.wait_state("STREAMING_EXPOSURE", "Ok", half)
        time.sleep(1.6)  # the 1 s average then holds only frames counted after the change
        divided = _last_numbers(c.c.text()[half:], "FPS")["AVG_FPS"]
        assert full > 3 and divided < 0.7 * full, (full, divided)
    finally:
        c.send(num(DEV120, "STREAMING_EXPOSURE", STREAMING_EXPOSURE_VALUE=0.1, STREAMING_DIVISOR_VALUE=1))
        c.wait_state("CCD_VIDEO_STREAM", "Idle", c.stream(False))
