"""SER recording of the INDI live video (libindi's RECORD_STREAM & co.), and the SER writer itself.

The writer is checked against an independent reader written here from the format description
(178-byte header, frames, int64 trailer). The server tests run ``zwo-alpaca serve`` with the
simulator and an upload directory in tmp_path, drive it with raw INDI sockets, libindi's client
library (PyIndi) and libindi's ``indi_setprop``, and read the files back. Every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pytest

from indi_shim import ser
from support.indi_client import (
    DEV120,
    DEV294,
    IndiServer,
    PyIndiClient,
    RawIndi,
    definitions,
    needs_pyindi,
    start_indi_server,
    wait_port,
)
from support.servers import free_port, start_server

SW = '<newSwitchVector device="{d}" name="{p}"><oneSwitch name="{m}">On</oneSwitch></newSwitchVector>'
W120, H120 = 1280, 960


# ------------------------------------------------------------------------------ independent reader
def read_ser(path: Path) -> dict[str, Any]:
    """Parse a SER file from scratch: header fields, frames (numpy) and the timestamp trailer."""
    raw = path.read_bytes()
    assert len(raw) >= 178, f"{path}: {len(raw)} bytes, shorter than a SER header"
    h: dict[str, Any] = {"file_id": raw[0:14]}
    names = ("lu_id", "color_id", "little_endian", "width", "height", "depth", "frames")
    for i, n in enumerate(names):
        h[n] = int.from_bytes(raw[14 + 4 * i:18 + 4 * i], "little")
    h["observer"], h["instrument"], h["telescope"] = (raw[42 + 40 * i:82 + 40 * i].rstrip(b"\0") for i in range(3))
    h["datetime"] = int.from_bytes(raw[162:170], "little", signed=True)
    h["datetime_utc"] = int.from_bytes(raw[170:178], "little", signed=True)
    planes = 3 if h["color_id"] in (100, 101) else 1
    bpp = 2 if h["depth"] > 8 else 1
    fsize = h["width"] * h["height"] * planes * bpp
    end = 178 + fsize * h["frames"]
    assert len(raw) >= end, f"{path}: header says {h['frames']} frames but only {len(raw)} bytes"
    dtype = np.dtype("<u2") if bpp == 2 else np.dtype("u1")
    shape = (h["height"], h["width"], 3) if planes == 3 else (h["height"], h["width"])
    h["data"] = [np.frombuffer(raw, dtype, fsize // bpp, 178 + i * fsize).reshape(shape) for i in range(h["frames"])]
    tail = raw[end:]
    assert len(tail) in (0, 8 * h["frames"]), f"{path}: trailer of {len(tail)} bytes for {h['frames']} frames"
    h["stamps"] = list(struct.unpack(f"<{len(tail) // 8}q", tail))
    return h


def net_ticks(t: dt.datetime) -> int:
    return int((t - dt.datetime(1, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 10_000_000


# ------------------------------------------------------------------------------ writer unit tests
@pytest.mark.parametrize("depth,color,planes", [(16, ser.MONO, 1), (8, ser.BAYER_IDS["GRBG"], 1), (8, ser.BGR, 3),
                                                (12, ser.BAYER_IDS["RGGB"], 1)])
def test_ser_writer_round_trip(tmp_path: Path, depth: int, color: int, planes: int) -> None:
    rng = np.random.default_rng(depth + color)
    w, h = 37, 21
    shape = (h, w, 3) if planes == 3 else (h, w)
    dtype = np.uint16 if depth > 8 else np.uint8
    frames = [rng.integers(0, 1 << min(depth, 16), shape, dtype=dtype) for _ in range(4)]
    start = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    path = tmp_path / "x.ser"
    wr = ser.SerWriter.create(path, w, h, depth, color, instrument="ZWO CCD Test", start=start)
    for i, f in enumerate(frames):
        wr.append(f, 638_000_000_000_000_000 + i * 100_000)
    assert int.from_bytes(path.read_bytes()[38:42], "little") == 0, "the count is fixed up on close, not per frame"
    wr.close()
    got = read_ser(path)
    assert got["file_id"] == b"LUCAM-RECORDER"
    assert (got["width"], got["height"], got["depth"], got["color_id"], got["frames"]) == (w, h, depth, color, 4)
    assert got["little_endian"] == 0  # libindi's (and the readers') convention for little-endian data
    assert got["instrument"] == b"ZWO CCD Test"
    assert got["datetime_utc"] == net_ticks(start)
    for a, b in zip(got["data"], frames):
        assert np.array_equal(a, b)
    assert got["stamps"] == [638_000_000_000_000_000 + i * 100_000 for i in range(4)]
    with pytest.raises(ser.SerError):
        ser.SerWriter.create(tmp_path / "y.ser", w, h, 8).append(np.zeros((h, w + 1), np.uint8))
    with pytest.raises(FileExistsError):
        ser.SerWriter.create(path, w, h, 8)  # never overwrites


def test_ser_ticks_match_dotnet_epoch() -> None:
    # 2000-01-01T00:00:00Z is 630822816000000000 .NET ticks (a published constant).
    assert ser.ticks(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == 630_822_816_000_000_000
    assert ser.ticks_from_unix_ns(946_684_800 * 10**9) == 630_822_816_000_000_000


class _FullDisk(io.RawIOBase):
    """A seekable raw file that takes `room` bytes, then fails with ENOSPC (a full disk)."""

    def __init__(self, room: int) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.room = room

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def truncate(self, size: int | None = None) -> int:
        del self.buf[self.pos if size is None else size:]
        return len(self.buf)

    def write(self, b: Any) -> int:
        data = bytes(b)
        if self.pos >= len(self.buf) and len(self.buf) + len(data) > self.room:
            n = max(0, self.room - len(self.buf))  # a short write, then the error
            if n == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = data[:n]
        self.buf[self.pos:self.pos + len(data)] = data
        self.pos += len(data)
        return len(data)


def test_ser_writer_disk_full_keeps_a_valid_file(tmp_path: Path) -> None:
    w, h = 10, 10
    disk = _FullDisk(178 + 2 * 100 + 10)  # two frames fit, not a third, nor the 16-byte trailer
    wr = ser.SerWriter(cast(BinaryIO, disk), w, h, 8)  # a RawIOBase file stands in for a real one
    wr.append(np.full((h, w), 1, np.uint8))
    wr.append(np.full((h, w), 2, np.uint8))
    with pytest.raises(OSError):
        wr.append(np.full((h, w), 3, np.uint8))
    assert len(disk.buf) == 178 + 200, "the partial frame is cut off again"
    wr.close()  # the trailer does not fit either: left out, header still fixed up
    out = tmp_path / "full.ser"
    out.write_bytes(bytes(disk.buf))
    got = read_ser(out)
    assert got["frames"] == 2 and got["stamps"] == []
    assert [int(f[0, 0]) for f in got["data"]] == [1, 2]


def test_pattern_phase_and_expansion() -> None:
    from indi_shim.recorder import expand, shifted_pattern
    assert shifted_pattern("RGGB", 0, 0) == "RGGB"
    assert shifted_pattern("RGGB", 1, 0) == "GRBG"
    assert shifted_pattern("RGGB", 0, 1) == "GBRG"
    assert shifted_pattern("RGGB", 1, 1) == "BGGR"
    now = dt.datetime(2026, 11, 24, 22, 5, 9, tzinfo=dt.UTC)
    assert expand("a__D_/b_H_/_T_:x", now, "/base") == "a_2026-11-24/b22-05-09/2026-11-24@22-05-09-x"
    assert expand("_HOME_/v", now, "/base") == "/base/v"


# ------------------------------------------------------------------------------ server tests
@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indi-record"))
    yield s
    s.server.stop()


class Cam:
    """A raw INDI client with the camera connected and the stream cropped small (fast, small files)."""

    def __init__(self, port: int, device: str = DEV120, crop: tuple[int, int, int, int] = (0, 0, 320, 240)) -> None:
        self.dev = device
        self.c = RawIndi(port)
        self.c.send(f'<getProperties version="1.7" device="{device}"/>')
        self.c.wait_for(b'name="CONNECTION"')
        self.c.send(SW.format(d=device, p="CONNECTION", m="CONNECT"))
        self.c.wait_for(b'name="CCD_STREAM_RECORDER"', 15)
        x, y, w, h = crop
        mark = self.send(self.num("CCD_STREAM_FRAME", X=x, Y=y, WIDTH=w, HEIGHT=h))
        self.c.wait_for(b'<setNumberVector device="' + device.encode() + b'" name="CCD_STREAM_FRAME" state="Ok"',
                        5, mark)

    def num(self, prop: str, **members: float) -> str:
        body = "".join(f'<oneNumber name="{k}">{v}</oneNumber>' for k, v in members.items())
        return f'<newNumberVector device="{self.dev}" name="{prop}">{body}</newNumberVector>'

    def text(self, prop: str, **members: str) -> str:
        body = "".join(f'<oneText name="{k}">{v}</oneText>' for k, v in members.items())
        return f'<newTextVector device="{self.dev}" name="{prop}">{body}</newTextVector>'

    def send(self, xml: str) -> int:
        mark = self.c.size()
        self.c.send(xml)
        return mark

    def switch(self, prop: str, member: str) -> int:
        return self.send(SW.format(d=self.dev, p=prop, m=member))

    def wait_state(self, prop: str, state: str, mark: int, timeout: float = 10.0) -> int:
        return self.c.wait_for(f'name="{prop}" state="{state}"'.encode(), timeout, mark)

    def saved(self, mark: int, timeout: float = 10.0) -> Path:
        """The file of the next "Recording saved" message after `mark`."""
        self.c.wait_for(b"Recording saved: ", timeout, mark)
        m = re.search(rb"Recording saved: (.+?\.ser) \(", self.c.text()[mark:])
        assert m, self.c.text()[mark:][-500:]
        return Path(m.group(1).decode())

    def close(self) -> None:
        mark = self.switch("CONNECTION", "DISCONNECT")
        try:
            self.c.wait_for(b'name="CONNECTION" state="Idle"', 5, mark)
        except TimeoutError:
            pass
        self.c.close()


@pytest.fixture
def cam(srv: IndiServer) -> Iterator[Cam]:
    c = Cam(srv.port)
    yield c
    c.close()


def test_record_properties_defined_as_libindi(cam: Cam) -> None:
    raw = cam.c.text()
    defs = definitions(raw)[DEV120]
    expect = {
        "RECORD_STREAM": ("Switch", "rw", "RECORD_ON,RECORD_DURATION_ON,RECORD_FRAME_ON,RECORD_OFF"),
        "RECORD_FILE": ("Text", "rw", "RECORD_FILE_DIR,RECORD_FILE_NAME"),
        "RECORD_OPTIONS": ("Number", "rw", "RECORD_DURATION,RECORD_FRAME_TOTAL"),
        "CCD_STREAM_RECORDER": ("Switch", "rw", "SER"),
    }
    for name, (kind, perm, members) in expect.items():
        d = defs[name]
        assert (d["kind"], d["perm"], d["members"], d["group"]) == (kind, perm, members, "Streaming"), name
    assert defs["RECORD_STREAM"]["rule"] == "OneOfMany" and defs["RECORD_STREAM"]["state"] == "Idle"
    assert re.search(r'name="RECORD_OFF"[^>]*>\s*On', defs["RECORD_STREAM"]["body"])
    assert re.search(r'name="RECORD_FILE_NAME"[^>]*>\s*indi_record__T_', defs["RECORD_FILE"]["body"])
    assert re.search(r'name="RECORD_DURATION"[^>]*min="0.001" max="999999"[^>]*>\s*1\s*<',
                     defs["RECORD_OPTIONS"]["body"])
    assert re.search(r'name="RECORD_FRAME_TOTAL"[^>]*min="1" max="999999999"[^>]*>\s*30\s*<',
                     defs["RECORD_OPTIONS"]["body"])
    # libindi's definition order within the streaming set.
    order = [m.decode() for m in re.findall(rb'<def\w+Vector device="' + DEV120.encode() + rb'" name="([^"]+)"', raw)]
    want = ["CCD_VIDEO_STREAM", "STREAM_DELAY", "STREAMING_EXPOSURE", "FPS", "RECORD_STREAM", "RECORD_FILE",
            "RECORD_OPTIONS", "CCD_STREAM_FRAME", "CCD_STREAM_ENCODER", "CCD_STREAM_RECORDER", "LIMITS"]
    assert [n for n in order if n in want] == want


def test_record_on_off_writes_valid_ser_and_stops_the_stream_it_started(srv: IndiServer, cam: Cam) -> None:
    cam.send(cam.text("RECORD_FILE", RECORD_FILE_DIR="onoff/_D_", RECORD_FILE_NAME="clip__T_"))
    mark = cam.switch("RECORD_STREAM", "RECORD_ON")
    cam.wait_state("RECORD_STREAM", "Busy", mark)
    cam.wait_state("CCD_VIDEO_STREAM", "Busy", mark)  # recording turned the capture on (libindi)
    t0 = time.monotonic()
    time.sleep(2.0)
    mark = cam.switch("RECORD_STREAM", "RECORD_OFF")
    cam.wait_state("RECORD_STREAM", "Idle", mark)
    cam.wait_state("CCD_VIDEO_STREAM", "Idle", mark)  # and off again with it
    path = cam.saved(mark)
    elapsed = time.monotonic() - t0
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert path.parent == srv.upload_dir.resolve() / "onoff" / day
    assert re.fullmatch(r"clip_\d{4}-\d\d-\d\d@\d\d-\d\d-\d\d\.ser", path.name)
    got = read_ser(path)
    assert (got["width"], got["height"], got["color_id"]) == (320, 240, 0)
    assert got["depth"] in (8, 16) and got["depth"] == (16 if got["data"][0].dtype.itemsize == 2 else 8)
    assert got["depth"] == 16, "the simulator's default RAW16 is recorded at full depth, not the 8-bit preview"
    assert got["instrument"] == DEV120.encode()
    n = got["frames"]
    assert 3 <= n <= elapsed * 40, f"{n} frames in {elapsed:.1f} s"
    assert len(got["stamps"]) == n and all(b > a for a, b in zip(got["stamps"], got["stamps"][1:]))
    now = ser.ticks(dt.datetime.now(dt.UTC))
    assert 0 < now - got["stamps"][-1] < 60 * 10_000_000
    assert any(int(f.max()) > int(f.min()) for f in got["data"]), "frames carry an image, not a constant"
    assert any(int(f.max()) > 255 for f in got["data"]), "16-bit samples keep their low bits' range"
    rate = (n - 1) / ((got["stamps"][-1] - got["stamps"][0]) / 1e7)
    print(f"recorded {n} frames at {rate:.1f} frames/s")


def test_record_frame_on_stops_by_itself_and_keeps_users_stream(cam: Cam) -> None:
    mark = cam.send(cam.num("RECORD_OPTIONS", RECORD_FRAME_TOTAL=5))
    cam.wait_state("RECORD_OPTIONS", "Ok", mark)
    mark = cam.switch("CCD_VIDEO_STREAM", "STREAM_ON")
    cam.wait_state("CCD_VIDEO_STREAM", "Busy", mark)
    mark = cam.switch("RECORD_STREAM", "RECORD_FRAME_ON")
    cam.wait_state("RECORD_STREAM", "Busy", mark)
    # While recording, the options and the crop cannot change (libindi: "busy") - Alert with the reason.
    m2 = cam.send(cam.num("RECORD_OPTIONS", RECORD_FRAME_TOTAL=7))
    cam.c.wait_for(b"RECORD_OPTIONS cannot change while recording", 5, m2)
    idle = cam.wait_state("RECORD_STREAM", "Idle", mark, 15)
    path = cam.saved(mark)
    got = read_ser(path)
    assert got["frames"] == 5
    assert re.search(rb'name="RECORD_OFF">\s*On', cam.c.text()[idle:idle + 600])
    time.sleep(0.3)
    assert b'name="CCD_VIDEO_STREAM" state="Idle"' not in cam.c.text()[mark:], \
        "the user's stream stays on after a recording it did not start"
    cam.switch("CCD_VIDEO_STREAM", "STREAM_OFF")


def test_record_duration_on_stops_after_about_t_seconds(cam: Cam) -> None:
    mark = cam.send(cam.num("RECORD_OPTIONS", RECORD_DURATION=1.5))
    cam.wait_state("RECORD_OPTIONS", "Ok", mark)
    mark = cam.switch("RECORD_STREAM", "RECORD_DURATION_ON")
    cam.wait_state("RECORD_STREAM", "Busy", mark)
    t0 = time.monotonic()
    cam.wait_state("RECORD_STREAM", "Idle", mark, 10)
    took = time.monotonic() - t0
    assert 1.2 <= took <= 3.0, f"RECORD_DURATION_ON 1.5 s ended after {took:.2f} s"
    got = read_ser(cam.saved(mark))
    span = (got["stamps"][-1] - got["stamps"][0]) / 1e7
    assert got["frames"] >= 3 and span <= 1.6, (got["frames"], span)


def test_escaping_record_dir_is_refused_and_nothing_written_outside(srv: IndiServer, cam: Cam) -> None:
    base = srv.upload_dir.resolve()
    outside = base.parent / "escaped"
    for bad in ("../escaped", str(outside), "a/../../escaped"):
        mark = cam.send(cam.text("RECORD_FILE", RECORD_FILE_DIR=bad, RECORD_FILE_NAME="x"))
        i = cam.wait_state("RECORD_FILE", "Alert", mark)
        msg = cam.c.text()[i:i + 800].decode()
        assert "RECORD_FILE_DIR" in msg and str(base) in msg, msg
    mark = cam.send(cam.text("RECORD_FILE", RECORD_FILE_DIR="ok", RECORD_FILE_NAME="a/b"))
    i = cam.wait_state("RECORD_FILE", "Alert", mark)
    assert "not allowed" in cam.c.text()[i:i + 600].decode()
    # The refused values were not taken: a recording goes to the last accepted directory, inside.
    mark = cam.send(cam.num("RECORD_OPTIONS", RECORD_FRAME_TOTAL=2))
    mark = cam.switch("RECORD_STREAM", "RECORD_FRAME_ON")
    path = cam.saved(mark, 15)
    assert base in path.parents
    assert not outside.exists()
    # A symlink inside the base that leads out is not followed.
    (base / "link").symlink_to(base.parent, target_is_directory=True)
    try:
        mark = cam.send(cam.text("RECORD_FILE", RECORD_FILE_DIR="link/escaped2", RECORD_FILE_NAME="x"))
        time.sleep(0.3)
        mark = cam.switch("RECORD_STREAM", "RECORD_ON")
        i = cam.wait_state("RECORD_STREAM", "Alert", mark)
        assert "symlink" in cam.c.text()[i:i + 800].decode()
        assert not (base.parent / "escaped2").exists()
    finally:
        (base / "link").unlink()


def test_disconnect_while_recording_closes_a_valid_file(srv: IndiServer) -> None:
    c = Cam(srv.port)
    mark = c.switch("RECORD_STREAM", "RECORD_ON")
    c.wait_state("RECORD_STREAM", "Busy", mark)
    time.sleep(1.0)
    mark = c.switch("CONNECTION", "DISCONNECT")
    c.c.wait_for(b'name="CONNECTION" state="Idle"', 5, mark)
    got = read_ser(c.saved(mark))
    assert got["frames"] >= 2 and len(got["stamps"]) == got["frames"]
    c.c.close()


def test_stream_off_ends_recording(cam: Cam) -> None:
    mark = cam.switch("RECORD_STREAM", "RECORD_ON")
    cam.wait_state("RECORD_STREAM", "Busy", mark)
    time.sleep(0.8)
    mark = cam.switch("CCD_VIDEO_STREAM", "STREAM_OFF")
    cam.wait_state("RECORD_STREAM", "Idle", mark)
    assert read_ser(cam.saved(mark))["frames"] >= 1


@needs_pyindi
def test_colour_camera_records_bayer_16bit_with_libindi_tools(srv: IndiServer) -> None:
    """libindi's indi_setprop starts a frame-count recording on the colour camera; PyIndi watches."""
    cli = PyIndiClient(srv.port)
    try:
        cli.connect_device(DEV294)
        cli.wait_prop(DEV294, "RECORD_STREAM")
        mark = cli.mark()
        cli.set_numbers(DEV294, "CCD_STREAM_FRAME", X=1, Y=0, WIDTH=200, HEIGHT=100)  # odd X: phase shifts
        cli.wait_event(lambda e: e.name == "CCD_STREAM_FRAME" and e.state == "Ok", 5, mark)
        if shutil.which("indi_setprop") is None:
            pytest.skip("indi_setprop (indi-bin) not installed")
        subprocess.run(["indi_setprop", "-h", "127.0.0.1", "-p", str(srv.port),
                        f"{DEV294}.RECORD_OPTIONS.RECORD_FRAME_TOTAL=3"], check=True, timeout=10)
        cli.wait_event(lambda e: e.name == "RECORD_OPTIONS" and e.values.get("RECORD_FRAME_TOTAL", (0,))[0] == 3,
                       5, mark)
        subprocess.run(["indi_setprop", "-h", "127.0.0.1", "-p", str(srv.port),
                        f"{DEV294}.RECORD_STREAM.RECORD_FRAME_ON=On"], check=True, timeout=10)
        cli.wait_event(lambda e: e.name == "RECORD_STREAM" and e.state == "Busy", 10, mark)
        cli.wait_event(lambda e: e.name == "RECORD_STREAM" and e.state == "Idle" and e.values.get("RECORD_OFF"),
                       30, mark)
        ev = cli.wait_event(lambda e: e.kind == "message" and "Recording saved" in str(e.values), 15, mark)
        m = re.search(r"Recording saved: (.+?\.ser) \(", str(ev.values))
        assert m, ev
        got = read_ser(Path(m.group(1)))
        assert (got["width"], got["height"], got["frames"]) == (200, 100, 3)
        assert got["color_id"] == ser.BAYER_IDS["GRBG"], "RGGB sensor seen from an odd X origin is GRBG"
        assert got["depth"] == 16 and got["data"][0].dtype == np.dtype("<u2")
    finally:
        try:
            cli.set_switch(DEV294, "CONNECTION", "DISCONNECT")
            time.sleep(0.3)
        finally:
            cli.disconnectServer()


def test_no_upload_dir_refuses_recording_with_how_to(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, "--indi-port", str(port), simulator="asi120mm-mini",
                          env={"ZWO_ALPACA_UPLOAD_DIR": ""})
    try:
        wait_port(port)
        c = Cam(port)
        mark = c.switch("RECORD_STREAM", "RECORD_ON")
        i = c.wait_state("RECORD_STREAM", "Alert", mark)
        msg = c.c.text()[i:i + 1000].decode()
        assert "--upload-dir" in msg and "ZWO_ALPACA_UPLOAD_DIR" in msg, msg
        time.sleep(0.3)
        assert b'name="CCD_VIDEO_STREAM" state="Busy"' not in c.c.text()[mark:], "nothing started"
        assert not list(tmp_path.rglob("*.ser"))
        c.close()
    finally:
        server.stop()


def test_server_shutdown_while_recording_closes_a_valid_file(tmp_path: Path) -> None:
    s = start_indi_server(tmp_path, simulator="asi120mm-mini")
    try:
        c = Cam(s.port)
        mark = c.switch("RECORD_STREAM", "RECORD_ON")
        c.wait_state("RECORD_STREAM", "Busy", mark)
        time.sleep(1.0)
    finally:
        s.server.stop()  # SIGTERM: the serve process shuts down (bounded)
    files = list(s.upload_dir.rglob("*.ser"))
    assert len(files) == 1, files
    got = read_ser(files[0])
    assert got["frames"] >= 2 and len(got["stamps"]) == got["frames"]




def test_write_error_stops_recording_with_alert_and_keeps_a_valid_file(tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE, inherited by the server) makes writes fail like a full disk."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 2 << 20  # 2 MiB: about 13 frames of 320x240x16 bit
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        s = start_indi_server(tmp_path, simulator="asi120mm-mini")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        c = Cam(s.port)
        mark = c.switch("RECORD_STREAM", "RECORD_ON")
        c.wait_state("RECORD_STREAM", "Busy", mark)
        i = c.wait_state("RECORD_STREAM", "Alert", mark, 20)
        msg = c.c.text()[i:i + 800].decode()
        assert "Recording stopped: cannot write" in msg and "Traceback" not in c.c.text().decode("latin-1"), msg
        c.wait_state("CCD_VIDEO_STREAM", "Idle", mark)  # the capture the recording started is stopped
        c.c.wait_for(b"Recording closed with an error", 10, mark)
        files = list(s.upload_dir.rglob("*.ser"))
        assert len(files) == 1
        got = read_ser(files[0])
        assert got["frames"] >= 5 and files[0].stat().st_size <= limit
        c.close()
    finally:
        s.server.stop()
