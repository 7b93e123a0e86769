"""libindi's ``indiserver`` chained to our standalone server for *all* its devices (``@127.0.0.1:PORT``,
which makes indiserver ask for ``device="*"``), with a private ``-u`` socket.

tests/indi/test_indi_tools.py covers one named device chained (``"DEVICE"@host:port``) with
pyindi-client; here: every device's properties pass through (libindi's indi_getprop), a BLOB with
its format and size attribute passes through to an independent client (indipyclient) that saves it,
compressed and plain, and indiserver's own per-client BLOB policy holds for our BLOBs (a client that
did not enable BLOBs gets none of them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.indi_client import (
    DEV120,
    DEV294,
    IndiServer,
    RawIndi,
    blob_payloads,
    indiserver_command,
    start_indi_server,
)
from support.indipy import IndipyCamera, indipyclient
from support.servers import free_port, stop_process, wait_port

astropy_fits = pytest.importorskip("astropy.io.fits")
pytestmark = [
    pytest.mark.skipif(shutil.which("indiserver") is None or shutil.which("indi_getprop") is None,
                       reason="Debian's indi-bin is not installed (scripts/bootstrap test installs it)"),
    pytest.mark.skipif(indipyclient is None, reason="indipyclient is not installed (setup.cfg test extras)"),
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IndiServer, int]]:
    work = tmp_path_factory.mktemp("indi-chaining")
    srv = start_indi_server(work)
    port = free_port()
    log = open(work / "indiserver.log", "wb")
    proc = subprocess.Popen(indiserver_command(port, f"@127.0.0.1:{srv.port}", options=("-m", "512")),
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, HOME=str(work)))
    try:
        wait_port(port)
        yield srv, port
    finally:
        stop_process(proc)
        log.close()
        srv.server.stop()


def test_every_device_passes_through(chain: tuple[IndiServer, int]) -> None:
    _, port = chain
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["indi_getprop", "-p", str(port), "-t", "2"], capture_output=True, text=True,
                             timeout=20).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if f"{DEV120}.CONNECTION.DISCONNECT" in props or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for dev in (DEV294, DEV120):
        assert props[f"{dev}.CONNECTION.DISCONNECT"] == "On", out
        assert props[f"{dev}.ACTIVE_DEVICES.ACTIVE_TELESCOPE"] == "Telescope Simulator"
    assert props[f"{DEV120}.DRIVER_INFO.DRIVER_INTERFACE"] == "6"


def test_blobs_pass_through_to_an_independent_client(chain: tuple[IndiServer, int], tmp_path: Path) -> None:
    _, port = chain
    bystander = RawIndi(port)  # asks for everything but never enables BLOBs
    bystander.send('<getProperties version="1.7"/>')
    watcher = RawIndi(port)  # enables them, to read the BLOB's attributes as indiserver relays them
    watcher.send(f'<getProperties version="1.7" device="{DEV120}"/><enableBLOB device="{DEV120}">Only</enableBLOB>')
    cam = IndipyCamera(port, tmp_path)
    try:
        cam.connect_device(DEV120)
        mark = cam.mark()
        cam.send(DEV120, "CCD_FRAME", X=0, Y=0, WIDTH=320, HEIGHT=240)
        cam.set_state(DEV120, "CCD_FRAME", "Ok", mark)
        plain = cam.expose(DEV120, 0.05)
        with astropy_fits.open(plain) as h:
            assert plain.suffix == ".fits" and h[0].data.shape == (240, 320)
        mark = cam.mark()
        cam.send(DEV120, "CCD_COMPRESSION", INDI_ENABLED="On", INDI_DISABLED="Off")
        cam.set_state(DEV120, "CCD_COMPRESSION", "Ok", mark)
        at = watcher.size()
        packed = cam.expose(DEV120, 0.05)
        with astropy_fits.open(packed) as h:
            assert packed.name.endswith(".fits.fz") and h[1].data.shape == (240, 320)
            assert h[1].header["INSTRUME"] == DEV120
        i = watcher.wait_for(b'format=".fits.fz"', 10, at)
        watcher.wait_for(b"</oneBLOB>", 10, i)
        start = watcher.text().rfind(b"<oneBLOB", 0, i)
        head = watcher.text()[start:i].decode()
        found = re.search(r'size="(\d+)"', head)
        assert found is not None, head
        size = int(found.group(1))
        payload = blob_payloads(watcher.text()[start:])[0][1]
        assert payload == packed.read_bytes() and size > len(payload)  # size: the uncompressed length
        time.sleep(0.3)
        assert b"<setBLOBVector" not in bystander.text() and b"CCD_EXPOSURE" in bystander.text()
    finally:
        mark = cam.mark()
        cam.send(DEV120, "CCD_COMPRESSION", INDI_ENABLED="Off", INDI_DISABLED="On")
        cam.send(DEV120, "CCD_FRAME_RESET", RESET="On")
        cam.send(DEV120, "CONNECTION", CONNECT="Off", DISCONNECT="On")
        try:
            cam.wait_event(lambda e: getattr(e, "vectorname", "") == "CONNECTION" and e.state == "Idle", mark, 5)
        finally:
            cam.close()
            bystander.close()
            watcher.close()
