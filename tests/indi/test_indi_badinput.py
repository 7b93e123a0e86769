"""Bad input, BLOB policies and slow clients, on raw sockets against ``zwo-alpaca serve``.

Bad input of every kind gets an answer (an INDI message, or the property in Alert) on the
offending connection only; that connection keeps working (or is closed cleanly); other clients see
nothing of it; the server keeps serving. A client that does not read cannot hold up anybody else.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from support.indi_client import DEV120, DEV294, IndiServer, RawIndi, blob_payloads, start_indi_server

NUM = '<newNumberVector device="{d}" name="{p}"><oneNumber name="{m}">{v}</oneNumber></newNumberVector>'
SW = '<newSwitchVector device="{d}" name="{p}"><oneSwitch name="{m}">{v}</oneSwitch></newSwitchVector>'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indi-bad"))
    c = RawIndi(s.port)
    c.send('<getProperties version="1.7"/>' + SW.format(d=DEV120, p="CONNECTION", m="CONNECT", v="On"))
    c.wait_for(b'name="CCD_EXPOSURE"', 15)
    c.close()
    yield s
    s.server.stop()


def _served(port: int, device: str = DEV120, timeout: float = 5.0) -> bool:
    c = RawIndi(port)
    try:
        c.send(f'<getProperties version="1.7" device="{device}"/>')
        c.wait_for(b'name="CONNECTION"', timeout)
        return True
    except TimeoutError:
        return False
    finally:
        c.close()


BAD = {
    "malformed": (b"<newNumberVector device='x' name='y'><oneNumber name='z'>1</oops></newNumberVector>",
                  b"malformed XML"),
    "binary": (bytes(range(256)) * 8, b"malformed XML"),
    "entity_expansion": (
        b"<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
        b"<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
        b"<newTextVector device='x' name='y'><oneText name='z'>&lol3;</oneText></newTextVector>", b"malformed XML"),
    "huge_element": (b"<newTextVector device='x' name='y'><oneText name='z'>" + b"A" * (8 << 20)
                     + b"</oneText></newTextVector>", b"exceeds"),
    "deep_nesting": (b"<a><b><c><d><e><f>x</f></e></d></c></b></a>", b"nested deeper"),
    "unknown_element": (b"<fooVector device='x'/>", b"unknown INDI command"),
    "unknown_device": (SW.format(d="No Such Camera", p="CONNECTION", m="CONNECT", v="On").encode(), b"unknown device"),
    "unknown_property": (SW.format(d=DEV120, p="NO_SUCH_PROP", m="X", v="On").encode(), b"unknown property"),
    "unknown_member": (NUM.format(d=DEV120, p="CCD_EXPOSURE", m="NOPE", v="1").encode(), b"has no member"),
    "not_a_number": (NUM.format(d=DEV120, p="CCD_EXPOSURE", m="CCD_EXPOSURE_VALUE", v="soon").encode(),
                     b"is not a number"),
    "out_of_range": (NUM.format(d=DEV120, p="CCD_EXPOSURE", m="CCD_EXPOSURE_VALUE", v="1e9").encode(),
                     b"out of range"),
    # The core is the validator: its message names the binnings the camera has (issue 12).
    "negative_binning": (NUM.format(d=DEV120, p="CCD_BINNING", m="HOR_BIN", v="-3").encode(),
                         b"binning -3 is not supported: valid 1, 2"),
    "wrong_type": (SW.format(d=DEV120, p="CCD_EXPOSURE", m="CCD_EXPOSURE_VALUE", v="On").encode(),
                   b"is a Number property"),
    "read_only": (NUM.format(d=DEV120, p="CCD_INFO", m="CCD_MAX_X", v="99999").encode(), b"read-only"),
    "two_on_one_of_many": (b'<newSwitchVector device="%s" name="CCD_FRAME_TYPE"><oneSwitch name="FRAME_LIGHT">On'
                           b'</oneSwitch><oneSwitch name="FRAME_DARK">On</oneSwitch></newSwitchVector>'
                           % DEV120.encode(), b"only one of"),
    "bad_switch_state": (SW.format(d=DEV120, p="CCD_FRAME_TYPE", m="FRAME_DARK", v="Maybe").encode(),
                         b"must be On or Off"),
    "bad_blob_mode": (f'<enableBLOB device="{DEV120}">Sometimes</enableBLOB>'.encode(), b"not one of Never"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_answered_isolated_and_survivable(srv: IndiServer, case: str) -> None:
    payload, expect = BAD[case]
    watcher = RawIndi(srv.port)
    bad = RawIndi(srv.port)
    try:
        watcher.send(f'<getProperties version="1.7" device="{DEV120}"/>')
        watcher.wait_for(b'name="CCD_EXPOSURE"')
        bad.send('<getProperties version="1.7"/>')
        bad.wait_for(b'name="CCD_EXPOSURE"')
        start = bad.size()
        wstart = watcher.size()
        bad.send(payload)
        bad.wait_for(expect, 10, start)
        # the offending connection still works...
        mark = bad.size()
        bad.send(f'<getProperties version="1.7" device="{DEV120}" name="CCD_INFO"/>')
        bad.wait_for(b'name="CCD_INFO"', 5, mark)
        # ... others heard nothing about it, and new clients are served
        time.sleep(0.2)
        assert expect not in watcher.text()[wstart:] and b"Alert" not in watcher.text()[wstart:]
        assert _served(srv.port)
        if case == "entity_expansion":
            assert b"lollollol" not in bad.text()  # nothing was ever expanded
    finally:
        bad.close()
        watcher.close()


def test_truncated_input_then_close(srv: IndiServer) -> None:
    c = RawIndi(srv.port)
    c.send(b"<newSwitchVector device='x' name='y'><oneSwitch name='z'>O")
    c.sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 5
    while not c.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.closed  # closed cleanly by the server, not left hanging
    c.close()
    assert _served(srv.port)


def test_flood_of_garbage_closes_only_that_client(srv: IndiServer) -> None:
    c = RawIndi(srv.port)
    c.send(b"\x01<getProperties device='none'/>" * 1100)
    deadline = time.monotonic() + 10
    while not c.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.closed
    c.close()
    assert _served(srv.port)


def _expose_raw(c: RawIndi, device: str, seconds: float) -> int:
    mark = c.size()
    c.send(NUM.format(d=device, p="CCD_EXPOSURE", m="CCD_EXPOSURE_VALUE", v=seconds))
    return mark


def test_blob_modes_never_also_only(srv: IndiServer) -> None:
    clients = {mode: RawIndi(srv.port) for mode in ("Never", "Also", "Only")}
    try:
        for mode, c in clients.items():
            c.send(f'<getProperties version="1.7" device="{DEV120}"/>')
            c.wait_for(b'name="CCD1"')
            c.send(f'<enableBLOB device="{DEV120}">{mode}</enableBLOB>')
        time.sleep(0.2)
        marks = {m: c.size() for m, c in clients.items()}
        _expose_raw(clients["Also"], DEV120, 0.05)
        ok = b'name="CCD_EXPOSURE" state="Ok"'
        clients["Also"].wait_for(ok, 15, marks["Also"])
        clients["Never"].wait_for(ok, 15, marks["Never"])
        clients["Only"].wait_for(b"</setBLOBVector>", 15, marks["Only"])
        time.sleep(0.3)
        also = clients["Also"].text()[marks["Also"]:]
        assert also.find(b"</setBLOBVector>") < also.find(ok)  # the image comes before Ok
        assert b"setBLOBVector" not in clients["Never"].text()[marks["Never"]:]
        only = clients["Only"].text()[marks["Only"]:]
        assert b"setNumberVector" not in only and b"setBLOBVector" in only
        (fmt, payload), = blob_payloads(only)
        assert fmt == ".fits" and payload.startswith(b"SIMPLE  =")
    finally:
        for c in clients.values():
            c.close()


def test_slow_client_does_not_hold_up_others(srv: IndiServer) -> None:
    """A client that enabled BLOBs and stops reading: others get every image at full speed, Alpaca
    keeps answering, and the stalled client is later given the newest image, not a backlog."""
    # It never reads until the end; its kernel buffers hold a few MB, far less than one image. (A
    # shrunken SO_RCVBUF would also cap its later reading speed, so it is left alone.)
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(f'<getProperties version="1.7" device="{DEV294}"/><enableBLOB device="{DEV294}">Also</enableBLOB>'
                 .encode())
    fast = RawIndi(srv.port)
    lat: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        s = requests.Session()
        while not stop.is_set():
            t0 = time.perf_counter()
            s.get(srv.server.api(0, "camerastate"), timeout=5)
            lat.append(time.perf_counter() - t0)
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        fast.send(f'<getProperties version="1.7" device="{DEV294}"/><enableBLOB device="{DEV294}">Also</enableBLOB>')
        fast.send(SW.format(d=DEV294, p="CONNECTION", m="CONNECT", v="On"))
        fast.wait_for(b'name="CCD_EXPOSURE"', 15)
        time.sleep(0.3)
        poller.start()
        times = []
        for _ in range(3):  # full 4144x2822 frames: 23 MB FITS, 31 MB on the wire each
            t0 = time.monotonic()
            mark = _expose_raw(fast, DEV294, 0.01)
            fast.wait_for(b'name="CCD_EXPOSURE" state="Ok"', 30, mark)
            times.append(time.monotonic() - t0)
        assert len(blob_payloads(fast.text())) == 3
        assert max(times) < 8, times
        stop.set()
        poller.join(5)
        assert lat and sorted(lat)[int(len(lat) * 0.99) - 1] < 0.5  # Alpaca never stalled behind the slow client
        # Now drain the slow client: it gets the image it was in the middle of plus the newest one.
        slow.settimeout(3)
        got = bytearray()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if got.count(b"</setBLOBVector>") >= 2 and b"not keeping up" in got:
                break
            try:
                d = slow.recv(1 << 20)
            except TimeoutError:
                break
            if not d:
                break
            got += d
        assert got.count(b"</setBLOBVector>") == 2, got.count(b"</setBLOBVector>")
        assert b"not keeping up" in got
    finally:
        stop.set()
        slow.close()
        fast.send(SW.format(d=DEV294, p="CONNECTION", m="DISCONNECT", v="On"))
        time.sleep(0.3)
        fast.close()
