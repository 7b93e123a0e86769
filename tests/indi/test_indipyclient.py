"""The INDI shim through indipyclient (PyPI), a from-scratch asyncio INDI client with no libindi code:
it connects, enables BLOBs, exposes, saves the image itself and astropy reads the file - plain FITS
and Rice-compressed ``.fits.fz``. It also hears the snoop requests our device sends (they look like
any server's getProperties to it) and is not misled by them: no phantom device appears.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from support.indi_client import DEV294, IndiServer, start_indi_server
from support.indipy import IndipyCamera, indipyclient

astropy_fits = pytest.importorskip("astropy.io.fits")
pytestmark = pytest.mark.skipif(indipyclient is None, reason="indipyclient is not installed (setup.cfg test extras)")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indipyclient"), simulator="asi294mc-pro")
    yield s
    s.server.stop()


def test_indipyclient_exposes_and_saves_fits(srv: IndiServer, tmp_path: Path) -> None:
    cam = IndipyCamera(srv.port, tmp_path)
    try:
        cam.connect_device(DEV294)
        assert cam.vector(DEV294, "CCD1").vectortype == "BLOBVector"
        mark = cam.mark()
        cam.send(DEV294, "CCD_FRAME", X=0, Y=0, WIDTH=400, HEIGHT=300)
        cam.set_state(DEV294, "CCD_FRAME", "Ok", mark)
        path = cam.expose(DEV294, 0.1)
        assert path.suffix == ".fits" and path.parent == tmp_path
        with astropy_fits.open(path) as h:
            assert h[0].data.shape == (300, 400) and h[0].data.dtype == np.uint16
            assert h[0].header["INSTRUME"] == DEV294 and h[0].header["BAYERPAT"]
        # compressed: the client saves what it got, a .fits.fz astropy decompresses
        mark = cam.mark()
        cam.send(DEV294, "CCD_COMPRESSION", INDI_ENABLED="On", INDI_DISABLED="Off")
        cam.set_state(DEV294, "CCD_COMPRESSION", "Ok", mark)
        path = cam.expose(DEV294, 0.1)
        assert path.name.endswith(".fits.fz")
        with astropy_fits.open(path) as h:
            assert h[1].data.shape == (300, 400) and h[1].header["INSTRUME"] == DEV294
        # the snoop requests arrive as getProperties events for other devices; no device is made of them
        asked = {e.devicename for e in cam.events if getattr(e, "eventtype", "") == "getProperties"}
        assert "Telescope Simulator" in asked
        assert set(cam.client.keys()) == {DEV294}
    finally:
        mark = cam.mark()
        cam.send(DEV294, "CCD_COMPRESSION", INDI_ENABLED="Off", INDI_DISABLED="On")
        cam.send(DEV294, "CCD_FRAME_RESET", RESET="On")
        cam.send(DEV294, "CONNECTION", CONNECT="Off", DISCONNECT="On")
        try:
            cam.wait_event(lambda e: getattr(e, "vectorname", "") == "CONNECTION" and e.state == "Idle", mark, 5)
        finally:
            cam.close()
