"""A conformance suite following ASCOM ConformU's published checks, run against the live server.

Two parts, mirroring ConformU (ASCOMInitiative/ConformU):

* ``AlpacaProtocolTestManager`` - the Alpaca protocol checks, in *strict* mode: for every camera
  member, good requests (with and without an extra parameter), mis-cased ClientID /
  ClientTransactionID (GET: honoured; PUT: ignored, echoed as 0), bad id values (HTTP 400),
  bad operational values (HTTP 400 or InvalidValue), mis-cased PUT parameters (HTTP 400), bad URLs
  (4xx), the JSON key casing of every response, and ImageArray as JSON and as ImageBytes.
* ``CameraTester`` / ``DeviceTesterBaseClass`` - the behavioural checks: common members, DeviceState
  names, Connect/Disconnect, first-use errors, binning limits, cooler set-point search, gain and
  offset mode rules, pulse guiding, exposures at every binning with the LastExposure checks and
  ImageArray dimensions, and the rejection of bad durations and subframes.

Every place where ConformU would log an *issue* or an *error* is an assertion here. Timings are
shortened (ConformU's defaults: 2 s pulses and exposures) to keep the suite fast.

The suite runs once per simulated model (``sweep_model``, see tests/support/models.py): a fresh
server with that one camera, device 0. The default run covers a representative subset;
``bash scripts/sweep`` runs every catalog model.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator

import pytest
import requests

from alpaca_server.imagecodec import decode_imagebytes
from support import models as sweep
from support.servers import ServerProcess, alpaca_get, alpaca_put, start_server
from support.servers import wait_until as wait_for

pytestmark = pytest.mark.timeout(180)

TEST_CLIENT_ID = "123456"
TEST_TRANSACTION_ID = "67890"
BAD_PARAMETER_VALUE = "asduio6fghZZ"
ABSOLUTE_ZERO = -273.15
BELOW_ABSOLUTE_ZERO = -273.25
BOILING_POINT = 100.0
EXPOSURE_S = 0.5
PULSE_MS = 500
DEVICE = 0  # the one camera of each model's server
KEYS = ("ClientTransactionID", "ServerTransactionID", "ErrorNumber", "ErrorMessage")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, sweep_model: str) -> Iterator[ServerProcess]:
    """A fresh server with one camera of the model under test (first-use checks need a camera that
    never exposed)."""
    server = start_server(tmp_path_factory.mktemp(f"conformance-{sweep_model}"), simulator=sweep_model)
    yield server
    server.stop()


@pytest.fixture
def n() -> int:
    """The device number of the camera under test."""
    return DEVICE


# ==================================================================================================
# Part 1: AlpacaProtocolTestManager (strict mode)
# ==================================================================================================


def test_first_use_checks(srv: ServerProcess, n: int) -> None:
    """CameraTester.PreRunCheck / CheckProperties on a camera that never exposed (runs first)."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    assert cam.error("lastexposureduration") != 0
    assert cam.error("lastexposurestarttime") != 0
    assert cam.value("imageready") is False
    assert cam.error("imagearray") != 0
    assert cam.error("imagearrayvariant") != 0
    assert cam.value("ispulseguiding") is False


class Protocol:
    """ConformU's CallApi/SendToDevice outcome checks for one device."""

    def __init__(self, server: ServerProcess, n: int) -> None:
        self.server = server
        self.n = n
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"

    def call(self, method: str, member: str, params: list[tuple[str, str]], expected: tuple[int, ...], *,
             badly_cased_ctid: bool = False, accept_invalid_value: bool = False,
             image_bytes: bool = False) -> requests.Response:
        url = self.server.api(self.n, member)
        headers = {"Accept": "application/imagebytes"} if image_bytes else {}
        if method == "GET":
            r = self.session.get(url, params=params, headers=headers, timeout=60)
        else:
            r = self.session.request(method, url, data=params, headers=headers, timeout=60)
        what = f"{method} {member} {params}"
        sent_ctid = None
        for name, value in params:
            if name.upper() == "CLIENTTRANSACTIONID":
                sent_ctid = int(value) if value.isdigit() and int(value) <= 0xFFFFFFFF else 0
        if r.status_code == 200 and "<!DOCTYPE" not in r.text[:200]:
            if "application/imagebytes" in r.headers.get("Content-Type", "").lower():
                meta, _ = decode_imagebytes(r.content)
                assert meta["MetadataVersion"] == 1, what
                ctid, stid, err = meta["ClientTransactionID"], meta["ServerTransactionID"], meta["ErrorNumber"]
            else:
                body = r.json()
                for key in KEYS:  # exact casing of the envelope's keys
                    assert key in body, f"{what}: {key} missing or mis-cased in {list(body)}"
                ctid, stid, err = body["ClientTransactionID"], body["ServerTransactionID"], body["ErrorNumber"]
                assert (err == 0) == (body["ErrorMessage"] == ""), what
            if sent_ctid is not None:
                want = 0 if badly_cased_ctid else sent_ctid
                assert ctid == want, f"{what}: ClientTransactionID {ctid}, expected {want}"
            assert stid >= 1, what
        if r.status_code not in expected:
            ok = (r.status_code == 200 and accept_invalid_value and expected == (400,)
                  and r.json().get("ErrorNumber") == 0x401)
            assert ok, f"{what}: HTTP {r.status_code} (expected {expected}): {r.text[:200]}"
        return r

    # ConformU's parameter lists
    @staticmethod
    def ok(*extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [("ClientID", TEST_CLIENT_ID), ("ClientTransactionID", TEST_TRANSACTION_ID), *extra]

    def bad_ids(self, method: str, member: str, extra: list[tuple[str, str]]) -> None:
        for name, value in (("ClientID", ""), ("ClientID", "     "), ("ClientID", "-12345"), ("ClientID", "NASDAQ"),
                            ("ClientTransactionID", ""), ("ClientTransactionID", "     "),
                            ("ClientTransactionID", "-67890"), ("ClientTransactionID", "qweqwe")):
            params = [(k, v) for k, v in self.ok() if k != name] + [(name, value)] + extra
            self.call(method, member, params, (400,), accept_invalid_value=True)

    def get_no_parameters(self, member: str, **kw: bool) -> None:
        self.call("GET", member, self.ok(), (200,), **kw)
        self.call("GET", member, self.ok(("ExtraParameter", "ExtraValue")), (200,), **kw)
        self.call("GET", member, [("clientid", TEST_CLIENT_ID), ("ClientTransactionID", TEST_TRANSACTION_ID)], (200,),
                  **kw)
        self.call("GET", member, [("ClientID", TEST_CLIENT_ID), ("clienttransactionid", TEST_TRANSACTION_ID)], (200,),
                  **kw)
        self.bad_ids("GET", member, [])

    def put_no_parameters(self, member: str, wait=None) -> None:
        for params, bad in ((self.ok(), False), (self.ok(("ExtraParameter", "ExtraValue")), False),
                            ([("clientid", TEST_CLIENT_ID), ("ClientTransactionID", TEST_TRANSACTION_ID)], False),
                            ([("ClientID", TEST_CLIENT_ID), ("clienttransactionid", TEST_TRANSACTION_ID)], True)):
            self.call("PUT", member, params, (200,), badly_cased_ctid=bad)
            if wait:
                wait()
        self.bad_ids("PUT", member, [])

    def put_parameters(self, member: str, pairs: list[tuple[str, str]], wait=None,
                       test_bad_values: bool = True) -> None:
        self.call("PUT", member, self.ok(*pairs), (200,))
        wait and wait()
        self.call("PUT", member, self.ok(("ExtraParameter", "ExtraValue"), *pairs), (200,))
        wait and wait()
        for i, (_name, _value) in enumerate(pairs):
            if test_bad_values:
                bad = [(k, BAD_PARAMETER_VALUE if j == i else v) for j, (k, v) in enumerate(pairs)]
                self.call("PUT", member, self.ok(*bad), (400,), accept_invalid_value=True)
            inverted = [(invert_casing(k) if j == i else k, v) for j, (k, v) in enumerate(pairs)]
            self.call("PUT", member, self.ok(*inverted), (400,))
        self.call("PUT", member, [("clientid", TEST_CLIENT_ID), ("ClientTransactionID", TEST_TRANSACTION_ID), *pairs],
                  (200,))
        wait and wait()
        self.call("PUT", member, [("ClientID", TEST_CLIENT_ID), ("clienttransactionid", TEST_TRANSACTION_ID), *pairs],
                  (200,), badly_cased_ctid=True)
        wait and wait()
        self.bad_ids("PUT", member, list(pairs))
        wait and wait()


def invert_casing(name: str) -> str:
    """ConformU's InvertCasing: swap the case of every letter."""
    return name.swapcase()


def value_of(server: ServerProcess, n: int, member: str, default: str) -> str:
    """A member's current value as a PUT parameter string (ConformU reads it through the client)."""
    body = alpaca_get(server, n, member)
    if body["ErrorNumber"] != 0:
        return default
    v = body["Value"]
    return ("True" if v else "False") if isinstance(v, bool) else str(v)


def test_protocol_connect_and_common(srv: ServerProcess, n: int) -> None:
    p = Protocol(srv, n)
    p.call("PUT", "connected", p.ok(("Connected", "True")), (200,))
    p.call("PUT", "connected", p.ok(("Connected", "False")), (200,))
    p.call("PUT", "connected", [("ClientTransactionID", TEST_TRANSACTION_ID), ("Connected", "True"),
                                ("ClientID", TEST_CLIENT_ID)], (200,))
    assert alpaca_get(srv, n, "interfaceversion")["Value"] == 4
    base = f"/api/v1/camera/{n}/description?ClientID=1&ClientTransactionID=2"
    for path in (base.replace("camera", "CAMERA"), "/api/v1/baddevicetype/0/description",
                 base.replace(f"/{n}/", "/-1/"), base.replace(f"/{n}/", "/99999/"), base.replace(f"/{n}/", "/A/"),
                 base.replace("description", "descrip")):
        code = requests.get(srv.url(path), timeout=5).status_code
        assert 400 <= code < 500, path
    for path in (base.replace("/api/", "/apx/"), base.replace("/v1/", "/1/"), base.replace("/v1/", "/v/"),
                 base.replace("/v1/", "/V1/"), base.replace("/v1/", "/v2/")):
        assert requests.get(srv.url(path), timeout=5).status_code < 500, path
    for method in ("POST", "DELETE"):
        for value in ("True", "", "123456"):
            r = requests.request(method, srv.api(n, "connected"), data=p.ok(("Connected", value)), timeout=5)
            assert r.status_code < 500
    p.get_no_parameters("connected")
    for value in ("", "123456", "asdqwe"):
        p.call("PUT", "connected", p.ok(("Connected", value)), (400,), accept_invalid_value=True)
    for member in ("description", "driverinfo", "driverversion", "interfaceversion", "name", "supportedactions",
                   "devicestate"):
        p.get_no_parameters(member)
    state = alpaca_get(srv, n, "devicestate")["Value"]
    for item in state:
        assert set(item) == {"Name", "Value"}  # exact casing


CAMERA_GETS = [
    "bayeroffsetx", "bayeroffsety", "binx", "biny", "camerastate", "cameraxsize", "cameraysize", "canabortexposure",
    "canasymmetricbin", "canfastreadout", "cangetcoolerpower", "canpulseguide", "cansetccdtemperature",
    "canstopexposure", "ccdtemperature", "cooleron", "coolerpower", "electronsperadu", "exposuremax", "exposuremin",
    "exposureresolution", "fastreadout", "fullwellcapacity", "gain", "gainmax", "gainmin", "gains", "hasshutter",
    "heatsinktemperature", "imageready", "ispulseguiding", "maxadu", "maxbinx", "maxbiny", "numx", "numy", "offset",
    "offsetmax", "offsetmin", "offsets", "percentcompleted", "pixelsizex", "pixelsizey", "readoutmode",
    "readoutmodes", "sensorname", "sensortype", "setccdtemperature", "startx", "starty", "subexposureduration",
]
CAMERA_PUTS = [  # (member, parameter, default when the current value cannot be read)
    ("binx", "BinX", "1"), ("biny", "BinY", "1"), ("cooleron", "CoolerOn", "False"),
    ("fastreadout", "FastReadout", "False"), ("gain", "Gain", "1"), ("numx", "NumX", "1"), ("numy", "NumY", "1"),
    ("offset", "Offset", "1"), ("readoutmode", "ReadoutMode", "1"), ("setccdtemperature", "SetCCDTemperature", "1"),
    ("startx", "StartX", "1"), ("starty", "StartY", "1"), ("subexposureduration", "SubExposureDuration", "1"),
]


def test_protocol_camera_members(srv: ServerProcess, n: int) -> None:
    p = Protocol(srv, n)
    alpaca_put(srv, n, "connected", Connected=True)
    for member in CAMERA_GETS:
        p.get_no_parameters(member)
    for member, param, default in CAMERA_PUTS:
        p.put_parameters(member, [(param, value_of(srv, n, member, default))])

    def idle() -> None:
        wait_for(lambda: alpaca_get(srv, n, "camerastate")["Value"] in (0, 5), 20, "idle")

    p.put_no_parameters("abortexposure")
    p.put_parameters("pulseguide", [("Direction", "0"), ("Duration", "1")])
    p.put_parameters("startexposure", [("Duration", str(EXPOSURE_S / 5)), ("Light", "False")], wait=idle)
    p.put_no_parameters("stopexposure", wait=idle)
    # ImageArray and ImageArrayVariant, as ImageBytes and as JSON (ConformU checks Type and Rank keys).
    alpaca_put(srv, n, "numx", NumX=64)
    alpaca_put(srv, n, "numy", NumY=32)
    alpaca_put(srv, n, "startexposure", Duration=0.01, Light=True)
    wait_for(lambda: alpaca_get(srv, n, "imageready")["Value"], 20, "ImageReady")
    for member in ("imagearray", "imagearrayvariant"):
        p.call("GET", member, p.ok(), (200,), image_bytes=True)
        r = p.call("GET", member, p.ok(), (200,))
        assert re.match(r'^\{"Type":2,"Rank":2,', r.text)
        p.get_no_parameters(member)
    p.get_no_parameters("lastexposureduration")
    p.get_no_parameters("lastexposurestarttime")
    alpaca_put(srv, n, "numx", NumX=alpaca_get(srv, n, "cameraxsize")["Value"])
    alpaca_put(srv, n, "numy", NumY=alpaca_get(srv, n, "cameraysize")["Value"])
    alpaca_put(srv, n, "startx", StartX=0)
    alpaca_put(srv, n, "starty", StartY=0)


# ==================================================================================================
# Part 2: CameraTester
# ==================================================================================================


class Cam:
    """A thin JSON client that keeps ASCOM errors as values (ConformU inspects them)."""

    def __init__(self, server: ServerProcess, n: int) -> None:
        self.server, self.n = server, n

    def get(self, member: str) -> dict:
        return alpaca_get(self.server, self.n, member)

    def value(self, member: str):
        body = self.get(member)
        assert body["ErrorNumber"] == 0, f"{member}: {body['ErrorMessage']}"
        return body["Value"]

    def error(self, member: str) -> int:
        return self.get(member)["ErrorNumber"]

    def put(self, member: str, **params) -> int:
        return alpaca_put(self.server, self.n, member, **params)["ErrorNumber"]

    def ok(self, member: str, **params) -> None:
        body = alpaca_put(self.server, self.n, member, **params)
        assert body["ErrorNumber"] == 0, f"{member} {params}: {body['ErrorMessage']}"


def test_common_and_connection(srv: ServerProcess, n: int) -> None:
    """DeviceTesterBaseClass: Connect/Disconnect and the common members."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    assert cam.value("connected") is True
    cam.ok("connected", Connected=False)
    assert cam.value("connected") is False
    cam.ok("connect")
    wait_for(lambda: not cam.value("connecting"), 5, "Connecting false after Connect()")
    assert cam.value("connected") is True
    assert cam.value("interfaceversion") >= 1
    desc = cam.value("description")
    assert desc and len(desc) <= 68  # FITS header limit for cameras
    assert cam.value("driverinfo") and cam.value("driverversion") and cam.value("name")
    for action in cam.value("supportedactions"):
        assert isinstance(action, str) and action
    allowed = {"CameraState", "CCDTemperature", "CoolerPower", "HeatSinkTemperature", "ImageReady", "IsPulseGuiding",
               "PercentCompleted", "TimeStamp"}
    for item in cam.value("devicestate"):
        assert item["Name"] in allowed, f"non-operational or mis-cased DeviceState entry {item}"
    cam.ok("disconnect")
    wait_for(lambda: not cam.value("connecting"), 5, "Connecting false after Disconnect()")
    assert cam.value("connected") is False
    cam.ok("connected", Connected=True)


def test_camera_properties(srv: ServerProcess, n: int) -> None:
    """CameraTester.ReadCanProperties + CheckProperties."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    can = {m: cam.value(m) for m in ("canabortexposure", "canasymmetricbin", "cangetcoolerpower", "canpulseguide",
                                      "cansetccdtemperature", "canstopexposure", "canfastreadout")}
    max_bin_x, max_bin_y = cam.value("maxbinx"), cam.value("maxbiny")
    assert 1 <= max_bin_x <= 16 and 1 <= max_bin_y <= 16
    if not can["canasymmetricbin"]:
        assert max_bin_x == max_bin_y
    assert cam.value("binx") == 1 and cam.value("biny") == 1
    assert cam.put("binx", BinX=0) != 0 and cam.put("binx", BinX=max_bin_x + 1) != 0
    assert cam.put("biny", BinY=0) != 0 and cam.put("biny", BinY=max_bin_y + 1) != 0
    for b in range(1, max_bin_x + 1):
        for member, param in (("binx", "BinX"), ("biny", "BinY")):
            err = cam.put(member, **{param: b})
            assert err in (0, 0x401), f"setting {param}={b}: error 0x{err:X}"
    cam.ok("binx", BinX=1)
    cam.ok("biny", BinY=1)
    assert cam.value("camerastate") in range(6)
    xsize, ysize = cam.value("cameraxsize"), cam.value("cameraysize")
    assert xsize >= 1 and ysize >= 1
    body = cam.get("ccdtemperature")
    if body["ErrorNumber"] == 0:
        assert ABSOLUTE_ZERO <= body["Value"] <= 100
    else:
        assert body["ErrorNumber"] == 0x400
    if cam.error("cooleron") == 0:
        original = cam.value("cooleron")
        cam.ok("cooleron", CoolerOn=not original)
        cam.ok("cooleron", CoolerOn=original)
    else:
        assert cam.error("cooleron") == 0x400
    body = cam.get("coolerpower")
    assert (body["ErrorNumber"] == 0 and 0 <= body["Value"] <= 100) or body["ErrorNumber"] == 0x400
    assert (body["ErrorNumber"] == 0) == can["cangetcoolerpower"]
    assert cam.value("electronsperadu") >= 0.00001
    assert cam.value("fullwellcapacity") >= 0
    assert isinstance(cam.value("hasshutter"), bool)
    assert cam.error("heatsinktemperature") in (0, 0x400)
    assert cam.value("maxadu") >= 1
    assert 1 <= cam.value("numx") <= xsize
    cam.ok("numx", NumX=xsize // 2)
    assert 1 <= cam.value("numy") <= ysize
    cam.ok("numy", NumY=ysize // 2)
    assert cam.value("pixelsizex") >= 1.0 and cam.value("pixelsizey") >= 1.0
    # SetCCDTemperature: ConformU's set-point search.
    if can["cansetccdtemperature"]:
        original = cam.value("setccdtemperature")
        assert ABSOLUTE_ZERO <= original <= BOILING_POINT
        cam.ok("setccdtemperature", SetCCDTemperature=0.0)
        setpoint = 0.0
        while cam.put("setccdtemperature", SetCCDTemperature=setpoint) == 0:
            setpoint -= 5.0
            assert setpoint >= BELOW_ABSOLUTE_ZERO, "set point can be set below absolute zero"
        assert cam.put("setccdtemperature", SetCCDTemperature=BELOW_ABSOLUTE_ZERO) == 0x401
        setpoint = 0.0
        while cam.put("setccdtemperature", SetCCDTemperature=setpoint) == 0:
            setpoint += 5.0
            assert setpoint < BOILING_POINT, "set point can be set to 100 C"
        cam.ok("setccdtemperature", SetCCDTemperature=original)
    else:
        assert cam.put("setccdtemperature", SetCCDTemperature=0) != 0
        assert cam.error("setccdtemperature") == 0x400
    assert 0 <= cam.value("startx") <= xsize - 1
    cam.ok("startx", StartX=xsize // 2)  # accepted now, checked at StartExposure
    assert 0 <= cam.value("starty") <= ysize - 1
    cam.ok("starty", StartY=ysize // 2)
    sensor = cam.value("sensortype")
    if sensor == 0:
        assert cam.error("bayeroffsetx") == 0x400 and cam.error("bayeroffsety") == 0x400
    else:
        assert 0 <= cam.value("bayeroffsetx") <= 10000 and 0 <= cam.value("bayeroffsety") <= 10000
    exp_max, exp_min, res = cam.value("exposuremax"), cam.value("exposuremin"), cam.value("exposureresolution")
    assert exp_max >= 0.0001 and exp_min >= 0 and exp_min <= exp_max and 0 <= res <= exp_max
    if can["canfastreadout"]:
        fast = cam.value("fastreadout")
        cam.ok("fastreadout", FastReadout=not fast)
        cam.ok("fastreadout", FastReadout=fast)
    else:
        assert cam.error("fastreadout") == 0x400 and cam.put("fastreadout", FastReadout=True) == 0x400
    for kind in ("gain", "offset"):
        check_value_or_index_mode(cam, kind)
    pct = cam.get("percentcompleted")
    assert (pct["ErrorNumber"] == 0 and 0 <= pct["Value"] <= 100) or pct["ErrorNumber"] == 0x40B
    modes = cam.value("readoutmodes")
    assert modes and all(isinstance(m, str) for m in modes)
    assert 0 <= cam.value("readoutmode") < len(modes)
    name = cam.value("sensorname")
    assert isinstance(name, str) and len(name) <= 250
    assert cam.error("subexposureduration") in (0, 0x400)
    # PostRunCheck
    for member, value in (("startx", 0), ("starty", 0), ("numx", xsize), ("numy", ysize)):
        cam.ok(member, **{member[:-1].capitalize() + member[-1].upper(): value})


def test_properties_are_the_models(srv: ServerProcess, n: int, sweep_model: str) -> None:
    """What Alpaca reports is what the model's SDK properties and published facts say (the catalog
    sweep's check that nothing is lost or invented between the SDK and ASCOM)."""
    m = sweep.model(sweep_model)
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    cam.ok("readoutmode", ReadoutMode=cam.value("readoutmodes").index("RAW16"))
    assert (cam.value("cameraxsize"), cam.value("cameraysize")) == (m.max_width, m.max_height)
    assert cam.value("pixelsizex") == pytest.approx(m.pixel_size_um) == cam.value("pixelsizey")
    assert cam.value("maxbinx") == max(m.supported_bins) == cam.value("maxbiny")
    assert cam.value("cansetccdtemperature") is m.cooled and cam.value("cangetcoolerpower") is m.cooled
    assert cam.value("canpulseguide") is m.st4
    assert cam.value("sensortype") == (2 if m.is_color else 0)
    if m.is_color:
        offsets = {0: (0, 0), 1: (1, 1), 2: (1, 0), 3: (0, 1)}[m.bayer_pattern]  # RG, BG, GR, GB -> RGGB offsets
        assert (cam.value("bayeroffsetx"), cam.value("bayeroffsety")) == offsets
    assert cam.value("sensorname") == m.sensor
    assert cam.value("fullwellcapacity") == pytest.approx(m.full_well_e, rel=1e-3)  # or e/ADU x ADC range
    assert cam.value("maxadu") == 65535  # RAW16 is left-aligned
    assert cam.value("electronsperadu") == pytest.approx(m.elec_per_adu_gain0 / 2 ** (16 - m.bit_depth), rel=1e-3)
    gain, offset = m.control("Gain"), m.control("Offset")
    assert (cam.value("gainmin"), cam.value("gainmax")) == (gain.min_value, gain.max_value)
    assert (cam.value("offsetmin"), cam.value("offsetmax")) == (offset.min_value, offset.max_value)
    assert cam.value("exposuremin") == pytest.approx(m.control("Exposure").min_value / 1e6)


def check_value_or_index_mode(cam: Cam, kind: str) -> None:
    """ConformU's Gain/Offset mode rules: not implemented, index mode or value mode; limits enforced."""
    plural = cam.get(kind + "s")["ErrorNumber"] == 0
    lo = cam.get(kind + "min")
    hi = cam.get(kind + "max")
    current = cam.get(kind)
    param = kind.capitalize()
    if current["ErrorNumber"] != 0:
        assert not plural and lo["ErrorNumber"] != 0 and hi["ErrorNumber"] != 0
        assert cam.put(kind, **{param: 0}) == 0x400
        return
    assert not (plural and lo["ErrorNumber"] == 0 and hi["ErrorNumber"] == 0), "both index and value mode"
    if plural:
        assert lo["ErrorNumber"] != 0 and hi["ErrorNumber"] != 0
        return
    assert lo["ErrorNumber"] == 0 and hi["ErrorNumber"] == 0, f"{kind}: neither index nor value mode"
    assert -32768 <= lo["Value"] <= hi["Value"] <= 32767  # ConformU reads them as Int16
    cam.ok(kind, **{param: lo["Value"]})
    cam.ok(kind, **{param: hi["Value"]})
    assert cam.put(kind, **{param: lo["Value"] - 1}) == 0x401
    assert cam.put(kind, **{param: hi["Value"] + 1}) == 0x401
    cam.ok(kind, **{param: current["Value"]})


def test_camera_methods_when_idle(srv: ServerProcess, n: int) -> None:
    """CheckMethods: AbortExposure and StopExposure when idle; PulseGuide per CanPulseGuide."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    assert cam.value("camerastate") == 0
    cam.ok("abortexposure")
    cam.ok("stopexposure")
    if cam.value("canpulseguide"):
        for direction in range(4):
            t0 = time.monotonic()
            cam.ok("pulseguide", Direction=direction, Duration=PULSE_MS)
            assert time.monotonic() - t0 < 1.0, "PulseGuide must be asynchronous for ICameraV4"
            assert cam.value("ispulseguiding") is True, "IsPulseGuiding false before the pulse ended"
            wait_for(lambda: not cam.value("ispulseguiding"), PULSE_MS / 1000 + 3, "IsPulseGuiding to go false")
            assert time.monotonic() - t0 >= PULSE_MS / 1000 * 0.9
    else:
        assert cam.put("pulseguide", Direction=0, Duration=0) != 0


def conformu_exposure(cam: Cam, bin_x: int, bin_y: int, start_x: int, start_y: int, num_x: int, num_y: int,
                      duration: float, expect_error: bool) -> None:
    """CameraTester.CameraExposure: set the subframe, expose, wait, check Last*, ImageArray dims."""
    assert cam.value("camerastate") == 0, "camera not idle before the exposure"
    for member, param, value in (("binx", "BinX", bin_x), ("biny", "BinY", bin_y), ("startx", "StartX", start_x),
                                 ("starty", "StartY", start_y), ("numx", "NumX", num_x), ("numy", "NumY", num_y)):
        cam.ok(member, **{param: value})  # setting must never fail; checks happen at StartExposure
    start_utc = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t0 = time.monotonic()
    err = cam.put("startexposure", Duration=duration, Light=True)
    if expect_error:
        assert err != 0, (f"no error for bin {bin_x}x{bin_y} start ({start_x},{start_y}) size {num_x}x{num_y}, "
                          f"{duration} s")
        assert cam.value("camerastate") == 0
        return
    assert err == 0, f"StartExposure failed: {cam.get('camerastate')}"
    assert time.monotonic() - t0 < duration, "StartExposure must return before the exposure ends"
    if cam.value("imageready") and cam.value("camerastate") == 0:
        pytest.fail("StartExposure operated synchronously")
    too_early = cam.value("imageready")
    wait_for(lambda: cam.value("camerastate") in (2, 5), 10, "the Exposing state")
    too_early = too_early or cam.value("imageready")
    wait_for(lambda: cam.value("camerastate") != 2, duration + 10, "the end of Exposing")
    wait_for(lambda: cam.value("camerastate") in (0, 5), 30, "Idle")
    wait_for(lambda: cam.value("imageready") or cam.value("camerastate") == 5, 30, "ImageReady")
    assert cam.value("imageready") is True
    assert not too_early, "ImageReady was true before the exposure time had elapsed"
    assert cam.value("camerastate") == 0
    last = cam.value("lastexposureduration")
    assert abs(last - duration) / duration < 0.02
    start = cam.value("lastexposurestarttime")
    assert len(start) >= 19
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", start)
    assert (start_utc - dt.datetime.fromisoformat(start[:26])).total_seconds() < 2.0
    r = requests.get(cam.server.api(cam.n, "imagearray"), headers={"Accept": "application/imagebytes"}, timeout=60)
    meta, _ = decode_imagebytes(r.content)
    assert meta["ErrorNumber"] == 0
    assert meta["ImageElementType"] == 2, "ImageArray must be Int32"
    assert (meta["Dimension1"], meta["Dimension2"]) == (num_x, num_y), "image dimensions (swapped?)"
    with requests.get(cam.server.api(cam.n, "imagearrayvariant"), stream=True, timeout=60) as r:
        head = next(r.iter_content(64))
        assert re.match(rb'^\{"Type":2,"Rank":[23],', head)


def test_full_frame_exposure_at_each_bin(srv: ServerProcess, n: int) -> None:
    """CameraTester's full-frame exposure at every binning from 1 to MaxBinX."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    xsize, ysize = cam.value("cameraxsize"), cam.value("cameraysize")
    try:
        for b in range(1, cam.value("maxbinx") + 1):
            conformu_exposure(cam, b, b, 0, 0, xsize // b, ysize // b, EXPOSURE_S, expect_error=False)
    finally:
        cam.ok("binx", BinX=1)


def test_start_exposure_rejections(srv: ServerProcess, n: int) -> None:
    """CameraTester 'StartExposure error cases': negative duration, and bad sizes/starts at every bin."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    xsize, ysize = cam.value("cameraxsize"), cam.value("cameraysize")
    conformu_exposure(cam, 1, 1, 0, 0, xsize, ysize, -1.0, expect_error=True)
    for i in range(1, cam.value("maxbinx") + 1):
        bx, by = xsize // i, ysize // i
        conformu_exposure(cam, i, i, 0, 0, bx + 1, by, 0.1, expect_error=True)
        conformu_exposure(cam, i, i, 0, 0, bx, by + 1, 0.1, expect_error=True)
        conformu_exposure(cam, i, i, bx + 1, 0, bx, by, 0.1, expect_error=True)
        conformu_exposure(cam, i, i, 0, by + 1, bx, by, 0.1, expect_error=True)
    for member, param, value in (("binx", "BinX", 1), ("startx", "StartX", 0), ("starty", "StartY", 0),
                                 ("numx", "NumX", xsize), ("numy", "NumY", ysize)):
        cam.ok(member, **{param: value})


def test_polling_performance(srv: ServerProcess, n: int) -> None:
    """CheckPerformance: polled properties answer fast (ConformU's 'Fast' target is 0.1 s)."""
    cam = Cam(srv, n)
    cam.ok("connected", Connected=True)
    for member in ("camerastate", "ccdtemperature", "coolerpower", "imageready", "ispulseguiding", "devicestate"):
        t0 = time.monotonic()
        for _ in range(20):
            cam.get(member)
        assert (time.monotonic() - t0) / 20 < 0.1, member
