"""The INDI shim through libindi's own client library (pyindi-client), against ``zwo-alpaca serve``.

One server for the module: simulated ASI294MC Pro (colour, cooled, no ST4) and ASI120MM Mini
(mono, uncooled, ST4). Each test leaves the cameras disconnected-or-idle as it found them. The
last section runs once per simulated model (``sweep_model``), each against its own server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from support import models as sweep
from support.indi_client import DEV120, DEV294, IndiServer, PyIndi, PyIndiClient, needs_pyindi, start_indi_server
from support.servers import alpaca_get, alpaca_put
from zwo_common.fits import read_fits

pytestmark = needs_pyindi


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indi-shim"))
    yield s
    s.server.stop()


@pytest.fixture
def client(srv: IndiServer) -> Iterator[PyIndiClient]:
    c = PyIndiClient(srv.port)
    yield c
    c.close()


@pytest.fixture
def connected(srv: IndiServer, client: PyIndiClient) -> Iterator[PyIndiClient]:
    """DEV294 connected over INDI, BLOBs enabled; reset to full frame, bin 1 afterwards."""
    client.setBLOBMode(PyIndi.B_ALSO, DEV294, None)
    client.connect_device(DEV294)
    yield client
    alpaca_put(srv.server, 0, "abortexposure")
    mark = client.mark()
    client.set_switch(DEV294, "CCD_FRAME_RESET", "RESET")
    client.wait_event(lambda e: e.name == "CCD_FRAME_RESET" and e.state == "Ok", 5, mark)


def _expose(c: PyIndiClient, seconds: float, device: str = DEV294) -> int:
    mark = c.mark()
    c.set_numbers(device, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=seconds)
    return mark


def _wait_image(c: PyIndiClient, mark: int, timeout: float = 20.0) -> tuple[dict, np.ndarray, list]:
    """Wait for CCD_EXPOSURE Ok; return the FITS (header, data) and the events since `mark`."""
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", timeout, mark)
    events = c.since(mark)
    blobs = [e for e in events if e.name == "CCD1" and e.kind == "update"]
    assert blobs, [(e.name, e.state) for e in events]
    fmt, payload = blobs[-1].values["CCD1"]
    assert fmt == ".fits"
    hdr, data = read_fits(payload)
    return hdr, data, events


def test_disconnected_property_set_and_names(client: PyIndiClient) -> None:
    """Before CONNECT only CONNECTION, DRIVER_INFO, CONFIG_PROCESS and ACTIVE_DEVICES (libindi's
    DefaultDevice and CCD define those always) exist; names and interface bits as indi_asi."""
    for dev in (DEV294, DEV120):
        client.wait_new(dev, "DRIVER_INFO")
        client.wait_new(dev, "ACTIVE_DEVICES")
    info = {e.device: e.values for e in client.events if e.name == "DRIVER_INFO"}
    assert info[DEV294]["DRIVER_INTERFACE"] == "2"  # CCD only
    assert info[DEV120]["DRIVER_INTERFACE"] == "6"  # CCD + GUIDER (ST4 port)
    assert info[DEV294]["DRIVER_EXEC"] == "zwo-alpaca-indi" and info[DEV294]["DRIVER_NAME"] == "ZWO CCD"
    names = {e.name for e in client.events if e.device == DEV120 and e.kind == "new"}
    assert names == {"CONNECTION", "DRIVER_INFO", "CONFIG_PROCESS", "ACTIVE_DEVICES"}
    conn = next(e for e in client.events if e.device == DEV120 and e.name == "CONNECTION")
    assert conn.values == {"CONNECT": False, "DISCONNECT": True} and conn.perm == PyIndi.IP_RW


def test_connected_property_set(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    c.wait_event(lambda e: e.device == DEV294 and e.kind == "new" and e.name == "CCD_CONTROLS", 10)
    expect = {
        "CCD_EXPOSURE": (PyIndi.INDI_NUMBER, PyIndi.IP_RW), "CCD_ABORT_EXPOSURE": (PyIndi.INDI_SWITCH, PyIndi.IP_RW),
        "CCD_FRAME": (PyIndi.INDI_NUMBER, PyIndi.IP_RW), "CCD_FRAME_RESET": (PyIndi.INDI_SWITCH, PyIndi.IP_WO),
        "CCD_BINNING": (PyIndi.INDI_NUMBER, PyIndi.IP_RW), "CCD_FRAME_TYPE": (PyIndi.INDI_SWITCH, PyIndi.IP_RW),
        "CCD_TEMPERATURE": (PyIndi.INDI_NUMBER, PyIndi.IP_RW), "CCD_COOLER": (PyIndi.INDI_SWITCH, PyIndi.IP_WO),
        "CCD_COOLER_POWER": (PyIndi.INDI_NUMBER, PyIndi.IP_RO), "CCD_CONTROLS": (PyIndi.INDI_NUMBER, PyIndi.IP_RW),
        "CCD_CAPTURE_FORMAT": (PyIndi.INDI_SWITCH, PyIndi.IP_RW),
        "CCD_TRANSFER_FORMAT": (PyIndi.INDI_SWITCH, PyIndi.IP_RW), "CCD_INFO": (PyIndi.INDI_NUMBER, PyIndi.IP_RO),
        "CCD_CFA": (PyIndi.INDI_TEXT, PyIndi.IP_RW), "UPLOAD_MODE": (PyIndi.INDI_SWITCH, PyIndi.IP_RW),
        "UPLOAD_SETTINGS": (PyIndi.INDI_TEXT, PyIndi.IP_RW), "CCD1": (PyIndi.INDI_BLOB, PyIndi.IP_RO),
    }
    for name in expect:  # callbacks may trail libindi's own device state a little
        def announced(e: Any, n: str = name) -> bool:
            return e.device == DEV294 and e.kind == "new" and e.name == n

        c.wait_event(announced, 5)
    props = {e.name: e for e in c.events if e.device == DEV294 and e.kind == "new"}
    for name, (ptype, perm) in expect.items():
        assert name in props, f"{name} missing; have {sorted(props)}"
        assert (props[name].ptype, props[name].perm) == (ptype, perm), name
    assert "TELESCOPE_TIMED_GUIDE_NS" not in props  # no ST4 port on the ASI294MC Pro
    ctl = props["CCD_CONTROLS"].values
    for member in ("Gain", "Offset", "BandWidth"):
        assert member in ctl
    # SDK limits, as Alpaca reports them from the same core
    gain_range = (alpaca_get(srv.server, 0, "gainmin")["Value"], alpaca_get(srv.server, 0, "gainmax")["Value"])
    assert ctl["Gain"][1:] == gain_range
    assert "Exposure" not in ctl and "Temperature" not in ctl  # own properties / read-only
    exp = props["CCD_EXPOSURE"].values["CCD_EXPOSURE_VALUE"]
    assert exp[1] == pytest.approx(alpaca_get(srv.server, 0, "exposuremin")["Value"])
    assert exp[2] == pytest.approx(alpaca_get(srv.server, 0, "exposuremax")["Value"])
    assert set(props["CCD_CAPTURE_FORMAT"].values) >= {"ASI_IMG_RAW16", "ASI_IMG_RAW8"}
    assert props["CCD_CAPTURE_FORMAT"].values["ASI_IMG_RAW16"] is True
    assert props["CCD_CFA"].values["CFA_TYPE"] == "RGGB"
    info = props["CCD_INFO"].values
    assert (info["CCD_MAX_X"][0], info["CCD_MAX_Y"][0]) == (4144, 2822)
    assert info["CCD_PIXEL_SIZE"][0] == pytest.approx(4.63) and info["CCD_BITSPERPIXEL"][0] == 16


def test_st4_uncooled_model(srv: IndiServer, client: PyIndiClient) -> None:
    client.connect_device(DEV120)
    try:
        for name in ("TELESCOPE_TIMED_GUIDE_WE", "CCD_TEMPERATURE", "CCD_CONTROLS"):
            client.wait_new(DEV120, name)
        props = {e.name: e for e in client.events if e.device == DEV120 and e.kind == "new"}
        assert props["TELESCOPE_TIMED_GUIDE_NS"].values.keys() == {"TIMED_GUIDE_N", "TIMED_GUIDE_S"}
        assert props["CCD_TEMPERATURE"].perm == PyIndi.IP_RO
        assert "CCD_COOLER" not in props and "CCD_CFA" not in props
        mark = client.mark()
        client.set_numbers(DEV120, "TELESCOPE_TIMED_GUIDE_NS", TIMED_GUIDE_N=300, TIMED_GUIDE_S=0)
        client.wait_event(lambda e: e.name == "TELESCOPE_TIMED_GUIDE_NS" and e.state == "Busy", 5, mark)
        assert alpaca_get(srv.server, 1, "ispulseguiding")["Value"] is True
        client.wait_event(lambda e: e.name == "TELESCOPE_TIMED_GUIDE_NS" and e.state == "Ok", 5, mark)
    finally:
        mark = client.mark()
        client.set_switch(DEV120, "CONNECTION", "DISCONNECT")
        client.wait_event(lambda e: e.device == DEV120 and e.name == "CONNECTION" and e.values.get("DISCONNECT"),
                          5, mark)


def test_expose_subframe_binning_gain_fits(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    mark = c.mark()
    c.set_numbers(DEV294, "CCD_BINNING", HOR_BIN=2, VER_BIN=2)
    c.wait_event(lambda e: e.name == "CCD_BINNING" and e.state == "Ok", 5, mark)
    # (libindi's client applies incoming updates to the very object a client edits: let the frame
    # update that follows a binning change arrive before editing CCD_FRAME.)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok" and e.values["WIDTH"][0] == 4144, 5, mark)
    time.sleep(0.2)
    c.set_numbers(DEV294, "CCD_FRAME", X=64, Y=32, WIDTH=800, HEIGHT=600)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok" and e.values["WIDTH"][0] == 800, 5, mark)
    c.set_numbers(DEV294, "CCD_CONTROLS", Gain=150, Offset=20)
    c.wait_event(lambda e: e.name == "CCD_CONTROLS" and e.state == "Ok", 5, mark)
    assert alpaca_get(srv.server, 0, "gain")["Value"] == 150  # one state: Alpaca sees INDI's change
    assert alpaca_get(srv.server, 0, "binx")["Value"] == 2
    c.set_switch(DEV294, "CCD_FRAME_TYPE", "FRAME_DARK")
    c.wait_event(lambda e: e.name == "CCD_FRAME_TYPE" and e.state == "Ok", 5, mark)
    try:
        t0 = time.monotonic()
        hdr, data, events = _wait_image(c, _expose(c, 1.5))
        elapsed = time.monotonic() - t0
    finally:
        c.set_switch(DEV294, "CCD_FRAME_TYPE", "FRAME_LIGHT")
    assert data.shape == (300, 400) and data.dtype == np.uint16
    assert (hdr["NAXIS1"], hdr["NAXIS2"], hdr["BITPIX"], hdr["BZERO"]) == (400, 300, 16, 32768)
    assert (hdr["XBINNING"], hdr["YBINNING"]) == (2, 2) and (hdr["XORGSUBF"], hdr["YORGSUBF"]) == (32, 16)
    assert hdr["GAIN"] == 150 and hdr["OFFSET"] == 20 and hdr["EXPTIME"] == pytest.approx(1.5)
    assert hdr["FRAME"] == "Dark" and hdr["IMAGETYP"] == "Dark Frame" and hdr["INSTRUME"] == DEV294
    assert hdr["XPIXSZ"] == pytest.approx(9.26) and "CCD-TEMP" in hdr and "DATE-OBS" in hdr
    assert hdr["ROWORDER"] == "TOP-DOWN" and "BAYERPAT" not in hdr  # binned colour data is no mosaic
    # States as KStars expects: Busy with a countdown, the BLOB, then Ok (BLOB strictly before Ok).
    exp = [(e.state, e.values["CCD_EXPOSURE_VALUE"][0]) for e in events if e.name == "CCD_EXPOSURE"]
    busy = [v for s, v in exp if s == "Busy"]
    assert busy and busy[0] == pytest.approx(1.5) and min(busy) < 1.0
    order = [e.name for e in events if e.name in ("CCD1", "CCD_EXPOSURE") and e.state in ("Ok",)]
    assert order.index("CCD1") < order.index("CCD_EXPOSURE")
    assert elapsed < 10


@pytest.mark.parametrize("device,number", [(DEV120, 1), (DEV294, 0)], ids=["mono", "colour"])
def test_bias_frame_at_zero_seconds(srv: IndiServer, client: PyIndiClient, device: str, number: int) -> None:
    """Issue 12: FRAME_BIAS then CCD_EXPOSURE=0, as Ekos's calibration sequences send it, is not
    refused: the core's bias rule exposes for the camera's shortest exposure, typed Bias in FITS."""
    c = client
    c.setBLOBMode(PyIndi.B_ALSO, device, None)
    c.connect_device(device)
    try:
        mark = c.mark()
        c.set_switch(device, "CCD_FRAME_TYPE", "FRAME_BIAS")
        c.wait_event(lambda e: e.device == device and e.name == "CCD_FRAME_TYPE" and e.state == "Ok", 5, mark)
        hdr, _, events = _wait_image(c, _expose(c, 0, device))
        minimum = alpaca_get(srv.server, number, "exposuremin")["Value"]
        assert minimum > 0
        assert hdr["EXPTIME"] == pytest.approx(minimum) and hdr["INSTRUME"] == device
        assert hdr["IMAGETYP"] == "Bias Frame" and hdr["FRAME"] == "Bias"  # libindi's spelling
        assert not [e for e in events if e.name == "CCD_EXPOSURE" and e.state == "Alert"]
    finally:
        mark = c.mark()
        c.set_switch(device, "CCD_FRAME_TYPE", "FRAME_LIGHT")
        c.wait_event(lambda e: e.device == device and e.name == "CCD_FRAME_TYPE" and e.state == "Ok", 5, mark)
        if device == DEV120:  # the module's other tests expect it disconnected
            mark = c.mark()
            c.set_switch(device, "CONNECTION", "DISCONNECT")
            c.wait_event(lambda e: e.device == device and e.name == "CONNECTION" and e.values.get("DISCONNECT"),
                         5, mark)


def test_full_frame_raw8_bayer(connected: PyIndiClient) -> None:
    c = connected
    mark = c.mark()
    c.set_switch(DEV294, "CCD_CAPTURE_FORMAT", "ASI_IMG_RAW8")
    c.wait_event(lambda e: e.name == "CCD_CAPTURE_FORMAT" and e.state == "Ok", 5, mark)
    try:
        c.set_numbers(DEV294, "CCD_FRAME", X=1, Y=0, WIDTH=640, HEIGHT=480)
        c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok", 5, mark)
        hdr, data, _ = _wait_image(c, _expose(c, 0.05))
        assert hdr["BITPIX"] == 8 and data.shape == (480, 640) and data.dtype == np.uint8
        assert hdr["BAYERPAT"] == "RGGB" and (hdr["XBAYROFF"], hdr["YBAYROFF"]) == (1, 0)
    finally:
        c.set_switch(DEV294, "CCD_CAPTURE_FORMAT", "ASI_IMG_RAW16")


def test_abort_goes_idle_without_image(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    mark = _expose(c, 5.0)
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Busy", 5, mark)
    assert alpaca_get(srv.server, 0, "camerastate")["Value"] == 2  # exposing, seen over Alpaca
    c.set_switch(DEV294, "CCD_ABORT_EXPOSURE", "ABORT")
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Idle", 5, mark)
    c.wait_event(lambda e: e.name == "CCD_ABORT_EXPOSURE" and e.state == "Ok", 5, mark)
    time.sleep(1.0)
    assert not [e for e in c.since(mark) if e.name == "CCD1" and e.kind == "update"]
    assert alpaca_get(srv.server, 0, "camerastate")["Value"] == 0


def test_disconnect_mid_exposure_never_delivers_stale_image(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    mark = _expose(c, 2.0)
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Busy", 5, mark)
    t0 = time.monotonic()
    c.set_switch(DEV294, "CONNECTION", "DISCONNECT")
    c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT") and e.state == "Idle", 5, mark)
    assert time.monotonic() - t0 < 1.5
    c.wait_event(lambda e: e.kind == "remove" and e.name == "CCD_EXPOSURE", 5, mark)
    assert alpaca_get(srv.server, 0, "connected")["Value"] is False
    c.connect_device(DEV294)  # reconnect at once, while the old exposure would still be running
    time.sleep(2.5)  # past the moment the aborted exposure would have ended
    assert not [e for e in c.since(mark) if e.name == "CCD1" and e.kind == "update"], "stale image delivered"
    hdr, _, _ = _wait_image(c, _expose(c, 0.1))  # and the camera works normally afterwards
    assert hdr["EXPTIME"] == pytest.approx(0.1)


def test_alpaca_and_indi_share_one_state(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    # Alpaca starts an exposure: INDI shows the camera Busy, then Idle (no image: INDI did not ask).
    mark = c.mark()
    alpaca_put(srv.server, 0, "startexposure", Duration=1.5, Light=True)
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Busy", 5, mark)
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Idle", 10, mark)
    assert not [e for e in c.since(mark) if e.name == "CCD1" and e.kind == "update"]
    # While INDI exposes, Alpaca cannot start another exposure.
    mark = _expose(c, 2.0)
    c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Busy", 5, mark)
    r = requests.put(srv.server.api(0, "startexposure"), data={"Duration": "1", "Light": "true"}, timeout=5).json()
    assert r["ErrorNumber"] != 0
    _wait_image(c, mark)
    # Alpaca disconnects: INDI sees the camera go away...
    mark = c.mark()
    alpaca_put(srv.server, 0, "connected", Connected=False)
    c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)
    c.wait_event(lambda e: e.kind == "remove" and e.name == "CCD_FRAME", 5, mark)
    # ... and connects again: INDI gets the full property set back.
    alpaca_put(srv.server, 0, "connected", Connected=True)
    c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("CONNECT") and e.state == "Ok", 10, mark)
    c.wait_event(lambda e: e.kind == "new" and e.name == "CCD_FRAME", 10, mark)


def test_bad_values_alert_only_the_requester(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    other = PyIndiClient(srv.port)
    try:
        other.wait_prop(DEV294, "CCD_EXPOSURE")
        omark = other.mark()
        mark = c.mark()
        c.set_numbers(DEV294, "CCD_BINNING", HOR_BIN=4, VER_BIN=4)  # valid
        c.wait_event(lambda e: e.name == "CCD_BINNING" and e.state == "Ok", 5, mark)
        c.set_numbers(DEV294, "CCD_FRAME", X=4000, Y=0, WIDTH=400, HEIGHT=100)  # beyond the sensor
        ev = c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Alert", 5, mark)
        msg = c.wait_event(lambda e: e.kind == "message" and "exceeds" in e.values["text"], 5, mark)
        # The core's message (issue 12: one validator): the 4144x2822 sensor is 1036x705 at binning 4.
        assert "1036x705" in msg.values["text"] and "valid StartX+NumX <= 1036" in msg.values["text"]
        assert ev.values["X"][0] == 0  # the shared value was not changed
        time.sleep(0.3)
        assert not [e for e in other.since(omark) if e.state == "Alert"]
        assert alpaca_get(srv.server, 0, "startx")["Value"] == 0
    finally:
        other.close()


def test_local_upload_confined(srv: IndiServer, connected: PyIndiClient) -> None:
    c = connected
    mark = c.mark()
    c.set_texts(DEV294, "UPLOAD_SETTINGS", UPLOAD_DIR="../../etc", UPLOAD_PREFIX="IMAGE_XXX")
    c.wait_event(lambda e: e.name == "UPLOAD_SETTINGS" and e.state == "Alert", 5, mark)
    c.set_texts(DEV294, "UPLOAD_SETTINGS", UPLOAD_DIR="/etc", UPLOAD_PREFIX="IMAGE_XXX")
    c.wait_event(lambda e: e.name == "UPLOAD_SETTINGS" and e.state == "Alert" and e.t > time.monotonic() - 5, 5, mark)
    c.set_texts(DEV294, "UPLOAD_SETTINGS", UPLOAD_DIR="night1", UPLOAD_PREFIX="M31_XXX")
    ok = c.wait_event(lambda e: e.name == "UPLOAD_SETTINGS" and e.state == "Ok", 5, mark)
    assert ok.values["UPLOAD_DIR"] == str(srv.upload_dir / "night1")
    c.set_switch(DEV294, "UPLOAD_MODE", "UPLOAD_BOTH")
    c.wait_event(lambda e: e.name == "UPLOAD_MODE" and e.state == "Ok", 5, mark)
    try:
        c.set_numbers(DEV294, "CCD_FRAME", X=0, Y=0, WIDTH=320, HEIGHT=240)
        hdr, data, events = _wait_image(c, _expose(c, 0.05))
        path = next(e for e in events if e.name == "CCD_FILE_PATH" and e.kind == "update").values["FILE_PATH"]
        assert path == str(srv.upload_dir / "night1" / "M31_001.fits")
        hdr2, data2 = read_fits(Path(path).read_bytes())
        assert np.array_equal(data, data2) and hdr2["NAXIS1"] == 320
    finally:
        c.set_switch(DEV294, "UPLOAD_MODE", "UPLOAD_CLIENT")


# ==================================================================================================
# Every model (the sweep): one server per simulated model (``sweep_model``; tests/support/models.py).
# The default run covers a representative subset, ``bash scripts/sweep`` the whole catalog.
# ==================================================================================================

_CFA_NAMES = {0: "RGGB", 1: "BGGR", 2: "GRBG", 3: "GBRG"}  # ASI_BAYER_PATTERN -> INDI CFA_TYPE


@pytest.fixture(scope="module")
def model_srv(tmp_path_factory: pytest.TempPathFactory, sweep_model: str) -> Iterator[IndiServer]:
    """A server with one camera of the model under test (device 0)."""
    s = start_indi_server(tmp_path_factory.mktemp(f"indi-{sweep_model}"), simulator=sweep_model)
    yield s
    s.server.stop()


@pytest.fixture
def model_client(model_srv: IndiServer, sweep_model: str) -> Iterator[PyIndiClient]:
    """The model's camera connected over INDI with BLOBs on; disconnected again afterwards."""
    dev = sweep.indi_device(sweep_model)
    c = PyIndiClient(model_srv.port)
    c.setBLOBMode(PyIndi.B_ALSO, dev, None)
    c.connect_device(dev)
    yield c
    mark = c.mark()
    c.set_switch(dev, "CONNECTION", "DISCONNECT")
    c.wait_event(lambda e: e.device == dev and e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)
    c.close()


def test_model_property_set_follows_the_camera(model_srv: IndiServer, model_client: PyIndiClient,
                                               sweep_model: str) -> None:
    """What each model's SDK properties say shows up as INDI properties, as indi_asi offers them: the
    guider interface and guide vectors for an ST4 port, the cooler for a cooled camera, CFA for
    colour, CCD_INFO, the binning limit, the control ranges; and the ST4 port and cooler work."""
    m, dev, c = sweep.model(sweep_model), sweep.indi_device(sweep_model), model_client
    c.wait_event(lambda e: e.device == dev and e.kind == "new" and e.name == "CCD_CONTROLS", 10)
    for name in ("CCD_EXPOSURE", "CCD_INFO", "CCD_BINNING", "CCD_TEMPERATURE", "CCD_CAPTURE_FORMAT", "CCD1"):
        c.wait_new(dev, name)
    props = {e.name: e for e in c.events if e.device == dev and e.kind == "new"}
    info = next(e for e in c.events if e.device == dev and e.name == "DRIVER_INFO")
    assert info.values["DRIVER_INTERFACE"] == ("6" if m.st4 else "2")  # CCD (+ GUIDER)
    ccd_info = props["CCD_INFO"].values
    assert (ccd_info["CCD_MAX_X"][0], ccd_info["CCD_MAX_Y"][0]) == (m.max_width, m.max_height)
    assert ccd_info["CCD_PIXEL_SIZE"][0] == pytest.approx(m.pixel_size_um)
    assert props["CCD_BINNING"].values["HOR_BIN"][2] == max(m.supported_bins)
    assert ("TELESCOPE_TIMED_GUIDE_NS" in props) == m.st4 and ("TELESCOPE_TIMED_GUIDE_WE" in props) == m.st4
    assert ("CCD_COOLER" in props) == m.cooled and ("CCD_COOLER_POWER" in props) == m.cooled
    assert props["CCD_TEMPERATURE"].perm == (PyIndi.IP_RW if m.cooled else PyIndi.IP_RO)
    assert ("CCD_CFA" in props) == m.is_color
    if m.is_color:
        assert props["CCD_CFA"].values["CFA_TYPE"] == _CFA_NAMES[m.bayer_pattern]
    assert ("ASI_IMG_RGB24" in props["CCD_CAPTURE_FORMAT"].values) == m.is_color
    ctl = props["CCD_CONTROLS"].values
    for name in ("Gain", "Offset"):
        spec = m.control(name)
        assert ctl[name][1:] == (spec.min_value, spec.max_value), name
    exposure = props["CCD_EXPOSURE"].values["CCD_EXPOSURE_VALUE"]
    assert exposure[1] == pytest.approx(m.control("Exposure").min_value / 1e6)  # the SDK's minimum, not a default
    if m.st4:
        mark = c.mark()
        c.set_numbers(dev, "TELESCOPE_TIMED_GUIDE_WE", TIMED_GUIDE_W=300, TIMED_GUIDE_E=0)
        c.wait_event(lambda e: e.name == "TELESCOPE_TIMED_GUIDE_WE" and e.state == "Busy", 5, mark)
        assert alpaca_get(model_srv.server, 0, "ispulseguiding")["Value"] is True
        c.wait_event(lambda e: e.name == "TELESCOPE_TIMED_GUIDE_WE" and e.state == "Ok", 5, mark)
    if m.cooled:
        mark = c.mark()
        c.set_numbers(dev, "CCD_TEMPERATURE", CCD_TEMPERATURE_VALUE=-5)
        c.wait_event(lambda e: e.name == "CCD_COOLER" and e.values.get("COOLER_ON"), 5, mark)
        assert alpaca_get(model_srv.server, 0, "cooleron")["Value"] is True
        c.set_switch(dev, "CCD_COOLER", "COOLER_OFF")
        c.wait_event(lambda e: e.name == "CCD_COOLER" and e.values.get("COOLER_OFF"), 5, mark)


def test_model_bias_and_binned_subframe(model_srv: IndiServer, model_client: PyIndiClient, sweep_model: str) -> None:
    """A bias frame (0 s) and a binned RAW16 subframe, then a RAW8 one from an odd column: sizes, the
    FITS header, RAW16 values left-aligned to the ADC depth, and the Bayer phase for colour models."""
    m, dev, c = sweep.model(sweep_model), sweep.indi_device(sweep_model), model_client
    mark = c.mark()
    c.set_numbers(dev, "CCD_FRAME", X=64, Y=32, WIDTH=256, HEIGHT=128)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok" and e.values["WIDTH"][0] == 256, 5, mark)
    c.set_switch(dev, "CCD_FRAME_TYPE", "FRAME_BIAS")
    c.wait_event(lambda e: e.name == "CCD_FRAME_TYPE" and e.state == "Ok", 5, mark)
    try:
        hdr, data, _ = _wait_image(c, _expose(c, 0, dev))
    finally:
        c.set_switch(dev, "CCD_FRAME_TYPE", "FRAME_LIGHT")
    assert hdr["IMAGETYP"] == "Bias Frame"
    assert hdr["EXPTIME"] == pytest.approx(alpaca_get(model_srv.server, 0, "exposuremin")["Value"])
    assert data.shape == (128, 256) and data.dtype == np.uint16 and hdr["BITPIX"] == 16
    assert not (data.astype(np.int64) % (1 << (16 - m.bit_depth))).any(), "RAW16 not left-aligned to the ADC"
    assert ("BAYERPAT" in hdr) == m.is_color
    if m.is_color:
        assert hdr["BAYERPAT"] == _CFA_NAMES[m.bayer_pattern]

    mark = c.mark()
    c.set_numbers(dev, "CCD_BINNING", HOR_BIN=2, VER_BIN=2)
    c.wait_event(lambda e: e.name == "CCD_BINNING" and e.state == "Ok", 5, mark)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok", 5, mark)
    time.sleep(0.2)  # let the frame update that follows a binning change land before editing CCD_FRAME
    c.set_numbers(dev, "CCD_FRAME", X=64, Y=32, WIDTH=256, HEIGHT=128)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok" and e.values["WIDTH"][0] == 256, 5, mark)
    gain = m.control("Gain").max_value
    c.set_numbers(dev, "CCD_CONTROLS", Gain=gain)
    c.wait_event(lambda e: e.name == "CCD_CONTROLS" and e.state == "Ok", 5, mark)
    try:
        hdr, data, _ = _wait_image(c, _expose(c, 0.05, dev))
        assert data.shape == (64, 128) and (hdr["XBINNING"], hdr["XORGSUBF"], hdr["YORGSUBF"]) == (2, 32, 16)
        assert hdr["GAIN"] == gain and hdr["XPIXSZ"] == pytest.approx(2 * m.pixel_size_um)
        assert "BAYERPAT" not in hdr  # binned colour data is no mosaic
    finally:
        mark = c.mark()
        c.set_numbers(dev, "CCD_BINNING", HOR_BIN=1, VER_BIN=1)
        c.wait_event(lambda e: e.name == "CCD_BINNING" and e.state == "Ok", 5, mark)

    mark = c.mark()
    c.set_switch(dev, "CCD_CAPTURE_FORMAT", "ASI_IMG_RAW8")
    c.wait_event(lambda e: e.name == "CCD_CAPTURE_FORMAT" and e.state == "Ok", 5, mark)
    time.sleep(0.2)  # (the frame update after the binning change above)
    c.set_numbers(dev, "CCD_FRAME", X=1, Y=0, WIDTH=64, HEIGHT=32)
    c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok" and e.values["WIDTH"][0] == 64, 5, mark)
    try:
        hdr, data, _ = _wait_image(c, _expose(c, 0.05, dev))
    finally:
        c.set_switch(dev, "CCD_CAPTURE_FORMAT", "ASI_IMG_RAW16")
    assert hdr["BITPIX"] == 8 and data.shape == (32, 64) and data.dtype == np.uint8
    assert ("BAYERPAT" in hdr) == m.is_color
    if m.is_color:  # the pattern of the sensor's origin, and the subframe's offset into it
        assert hdr["BAYERPAT"] == _CFA_NAMES[m.bayer_pattern] and (hdr["XBAYROFF"], hdr["YBAYROFF"]) == (1, 0)
