"""The core is the only validator: Alpaca, INDI and the web page refuse the same values alike.

One ``zwo-alpaca serve``, in this process (nothing here needs a process of its own), serves the same
simulated cameras over Alpaca (HTTP PUT), INDI (a raw socket client) and the web page's JSON API.
For each kind of out-of-range value - exposure duration, binning, subframe, cooler set point, guide
pulse duration, gain - every front end must refuse it, and the range it quotes (the core's message
from ``"valid "`` on, docs/architecture.md) must be the same text everywhere: no front end holds a
second bound with its own wording.

Also: ``StartExposure(Duration=0, Light=false)`` through Alpaca, the ASCOM form of a bias request,
takes a dark at the camera's shortest exposure (docs/alpaca.md: the duration range is 0..ExposureMax).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from support.indi_client import DEV120, DEV294, RawIndi
from support.inprocess import serve_in_process
from support.servers import Server, alpaca_get, alpaca_put, reset_camera, wait_port

COLOR, MONO = 0, 1  # Alpaca device numbers = web page camera numbers (ASI294MC Pro, ASI120MM Mini)
INDI_DEVICE = {COLOR: DEV294, MONO: DEV120}
INVALID_VALUE = 0x401
NUM = '<newNumberVector device="{d}" name="{p}">{members}</newNumberVector>'
_MESSAGE = re.compile(rb'message="([^"]*)"')


@dataclass
class Rig:
    """The server and one INDI connection that has connected both cameras."""

    server: Server
    indi: RawIndi
    csrf: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with serve_in_process(tmp_path_factory.mktemp("agree"), indi=True) as server:
        assert server.indi_port is not None
        indi = None
        try:
            wait_port(server.indi_port)
            for n in (COLOR, MONO):
                alpaca_put(server, n, "connected", Connected=True)
            indi = RawIndi(server.indi_port)
            indi.send('<getProperties version="1.7"/>')
            for dev in (DEV294, DEV120):
                indi.send(f'<newSwitchVector device="{dev}" name="CONNECTION"><oneSwitch name="CONNECT">On'
                          '</oneSwitch></newSwitchVector>')
            indi.wait_for(b'name="CCD_CONTROLS"', 15)
            indi.wait_for(b'name="TELESCOPE_TIMED_GUIDE_NS"', 15)
            csrf = requests.get(server.url("/setup/v1/camera/0/status.json"), timeout=5).json()["csrf"]
            yield Rig(server, indi, csrf)
        finally:
            if indi is not None:
                indi.close()


def range_text(message: str) -> str:
    """The part of a refusal that states the valid range: from "valid " to the end."""
    i = message.find("valid ")
    assert i >= 0, f"the refusal does not state the valid range: {message!r}"
    return message[i:]


# ------------------------------------------------------------------------------ the three front ends


def alpaca_refusal(rig: Rig, n: int, member: str, **params: Any) -> str:
    """PUT ``member``; it must be refused with InvalidValue (0x401): its message."""
    body = alpaca_put(rig.server, n, member, **params)
    assert body["ErrorNumber"] == INVALID_VALUE, f"Alpaca {member} {params}: {body}"
    # alpaca's own prefix is the member name; the rest is the core's message
    return str(body["ErrorMessage"])


def _indi_number(device: str, prop: str, **members: object) -> str:
    inner = "".join(f'<oneNumber name="{k}">{v}</oneNumber>' for k, v in members.items())
    return NUM.format(d=device, p=prop, members=inner)


def indi_refusal(rig: Rig, n: int, *requests_xml: str, timeout: float = 5.0) -> str:
    """Send the requests in turn until one is refused ([ERROR] message); that message.

    Several requests: e.g. a frame and then an exposure, since a front end may check a subframe
    when it is set or when it is used.
    """
    device = INDI_DEVICE[n].encode()
    seen: list[str] = []
    for xml in requests_xml:
        mark = rig.indi.size()
        rig.indi.send(xml)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for element in rig.indi.text()[mark:].split(b"<")[1:]:
                if b'device="' + device + b'"' not in element:
                    continue
                m = _MESSAGE.search(element)
                if m:
                    text = html.unescape(m.group(1).decode("utf-8", "replace"))
                    if "[ERROR]" in text:
                        return text
                    seen.append(text)
            time.sleep(0.02)
    pytest.fail(f"INDI accepted {requests_xml!r} (messages seen: {seen})")


def web_refusal(rig: Rig, n: int, action: str, body: dict[str, object]) -> str:
    """POST a page action; it must be refused with HTTP 400 and the core's message."""
    r = requests.post(rig.server.url(f"/setup/v1/camera/{n}/action/{action}"), json=body,
                      headers={"X-CSRF-Token": rig.csrf}, timeout=10)
    data = r.json()
    assert r.status_code == 400 and data["ok"] is False, f"web {action} {body}: {r.status_code} {data}"
    return str(data["error"])


def assert_same_range(messages: dict[str, str]) -> None:
    ranges = {front: range_text(m) for front, m in messages.items()}
    assert len(set(ranges.values())) == 1, f"the front ends quote different ranges: {messages}"


def _settle(rig: Rig, n: int) -> None:
    """Back to a known state after a case: idle, full frame, bin 1 (also for INDI's CCD_FRAME)."""
    reset_camera(rig.server, n)
    full = (alpaca_get(rig.server, n, "cameraxsize")["Value"], alpaca_get(rig.server, n, "cameraysize")["Value"])
    rig.indi.send(_indi_number(INDI_DEVICE[n], "CCD_BINNING", HOR_BIN=1, VER_BIN=1))
    rig.indi.send(_indi_number(INDI_DEVICE[n], "CCD_FRAME", X=0, Y=0, WIDTH=full[0], HEIGHT=full[1]))
    time.sleep(0.2)


# ------------------------------------------------------------------------------ the cases


def _exposure(rig: Rig) -> dict[str, str]:
    return {
        "alpaca": alpaca_refusal(rig, COLOR, "startexposure", Duration=1e6, Light=True),
        "indi": indi_refusal(rig, COLOR, _indi_number(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=1e6)),
        "web": web_refusal(rig, COLOR, "expose", {"duration": 1e6}),
    }


def _binning(rig: Rig) -> dict[str, str]:
    return {
        "alpaca": alpaca_refusal(rig, COLOR, "binx", BinX=5),
        "indi": indi_refusal(rig, COLOR, _indi_number(DEV294, "CCD_BINNING", HOR_BIN=5, VER_BIN=5)),
        "web": web_refusal(rig, COLOR, "settings", {"bin": 5}),
    }


def _subframe(rig: Rig) -> dict[str, str]:
    # At bin 1, so Alpaca's binned pixels and INDI's unbinned ones are the same numbers. ASCOM
    # clients set StartX/NumX one at a time, so Alpaca refuses the subframe at StartExposure.
    alpaca_put(rig.server, COLOR, "startx", StartX=4000)
    alpaca_put(rig.server, COLOR, "numx", NumX=1000)
    alpaca = alpaca_refusal(rig, COLOR, "startexposure", Duration=0.01, Light=True)
    reset_camera(rig.server, COLOR)
    return {
        "alpaca": alpaca,
        "indi": indi_refusal(rig, COLOR, _indi_number(DEV294, "CCD_FRAME", X=4000, Y=0, WIDTH=1000, HEIGHT=100),
                             _indi_number(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.01)),
        "web": web_refusal(rig, COLOR, "settings", {"start_x": 4000, "start_y": 0, "width": 1000, "height": 100,
                                                    "bin": 1}),
    }


def _setpoint(rig: Rig) -> dict[str, str]:
    return {
        "alpaca": alpaca_refusal(rig, COLOR, "setccdtemperature", SetCCDTemperature=-300.0),
        "indi": indi_refusal(rig, COLOR, _indi_number(DEV294, "CCD_TEMPERATURE", CCD_TEMPERATURE_VALUE=-300)),
        "web": web_refusal(rig, COLOR, "settings", {"target_temperature": -300}),
    }


def _pulse_duration(rig: Rig) -> dict[str, str]:
    # The web page has no guiding control, so only Alpaca and INDI take a pulse.
    return {
        "alpaca": alpaca_refusal(rig, MONO, "pulseguide", Direction=0, Duration=4_000_000),
        "indi": indi_refusal(rig, MONO, _indi_number(DEV120, "TELESCOPE_TIMED_GUIDE_NS", TIMED_GUIDE_N=4_000_000,
                                                     TIMED_GUIDE_S=0)),
    }


def _gain(rig: Rig) -> dict[str, str]:
    return {
        "alpaca": alpaca_refusal(rig, COLOR, "gain", Gain=999),
        "indi": indi_refusal(rig, COLOR, _indi_number(DEV294, "CCD_CONTROLS", Gain=999)),
        "web": web_refusal(rig, COLOR, "settings", {"gain": 999}),
    }


CASES: dict[str, tuple[int, Callable[[Rig], dict[str, str]]]] = {
    "exposure": (COLOR, _exposure),
    "binning": (COLOR, _binning),
    "subframe": (COLOR, _subframe),
    "setpoint": (COLOR, _setpoint),
    "pulse_duration": (MONO, _pulse_duration),
    "gain": (COLOR, _gain),
}


@pytest.mark.parametrize("case", list(CASES))
def test_out_of_range_value_refused_alike(rig: Rig, case: str) -> None:
    n, run = CASES[case]
    try:
        messages = run(rig)
    finally:
        _settle(rig, n)
    assert_same_range(messages)
    # Alpaca names the member, then passes the core's message on unchanged.
    assert re.match(r"^[A-Z][A-Za-z]+: ", messages["alpaca"]), messages["alpaca"]


def test_zero_second_dark_through_alpaca(rig: Rig) -> None:
    """StartExposure(0, Light=false): accepted (0 is inside 0..ExposureMax), a dark at the camera's
    shortest exposure arrives, and LastExposureDuration is at most that minimum."""
    server = rig.server
    reset_camera(server, MONO)
    minimum = alpaca_get(server, MONO, "exposuremin")["Value"]
    body = alpaca_put(server, MONO, "startexposure", Duration=0, Light=False)
    assert body["ErrorNumber"] == 0, body
    deadline = time.monotonic() + 15
    while not alpaca_get(server, MONO, "imageready")["Value"]:
        assert time.monotonic() < deadline, "the 0 s dark never became ready"
        time.sleep(0.02)
    assert alpaca_get(server, MONO, "camerastate")["Value"] == 0
    last = alpaca_get(server, MONO, "lastexposureduration")
    assert last["ErrorNumber"] == 0 and 0.0 <= last["Value"] <= minimum, (last, minimum)
    image = requests.get(server.api(MONO, "imagearray"), headers={"Accept": "application/imagebytes"}, timeout=20)
    assert image.status_code == 200 and len(image.content) > 44
