"""What KStars/Ekos 3.6 needs from a camera device, checked through libindi's own client library
(pyindi-client: the same ``INDI::BaseClient`` KStars' ClientManager is), for a mono, a colour and a
guide (ST4) model of ours, and for libindi's ``indi_simulator_ccd`` as the reference it is taken from.

From KStars 3.6.2's source (``kstars/indi/indistd.cpp``, ``indiconcretedevice.cpp``,
``ekos/manager.cpp``, ``ekos/auxiliary/opticaltrainmanager.cpp``):

* ``DRIVER_INFO.DRIVER_INTERFACE`` is read when the device is defined, before it is connected:
  ``GenericDevice::generateDevices`` makes its ``ISD::Camera`` only for the CCD bit (2) and its
  ``ISD::Guider`` only for the guider bit (4); the optical train that gives Capture and Guide their
  camera and ST4 guider lists devices by these bits (``INDIListener::devicesByInterface``).
* Ekos counts a device ready 250 ms after the last property *definition* that follows the
  ``CONNECTION`` switch turning Ok/On (the ready timers of ``GenericDevice`` and ``ConcreteDevice``
  start from definitions received after ``Connected``): the camera properties must be defined after
  that update, as libindi's CCD base class does in ``updateProperties()``.
* ISD::Camera and Capture read ``CCD_EXPOSURE``, ``CCD_ABORT_EXPOSURE``, ``CCD_FRAME``,
  ``CCD_BINNING``, ``CCD_FRAME_TYPE``, ``CCD_INFO``, ``CCD1``, ``CCD_TRANSFER_FORMAT``,
  ``UPLOAD_MODE``, ``CCD_CAPTURE_FORMAT``; Guide's ST4 guider needs ``TELESCOPE_TIMED_GUIDE_NS/WE``.

Mono and colour differ only in ``CCD_CFA`` (colour only). A mono camera that Ekos "has online" but
Capture never selects is Ekos' optical train naming another camera (a profile first used with a
different model): docs/kstars.md, "Changing cameras"; tests/system/test_kstars_ekos.py drives Ekos.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.indi_client import Event, PyIndi, PyIndiClient, indiserver_command, needs_pyindi, start_indi_server
from support.servers import free_port, wait_port

pytestmark = needs_pyindi

CCD_INTERFACE, GUIDER_INTERFACE = 2, 4

#: Property -> (INDI type name, members Ekos reads) for every property ISD::Camera/Capture use.
CAMERA_PROPERTIES: dict[str, tuple[str, set[str]]] = {
    "CCD_EXPOSURE": ("number", {"CCD_EXPOSURE_VALUE"}),
    "CCD_ABORT_EXPOSURE": ("switch", {"ABORT"}),
    "CCD_FRAME": ("number", {"X", "Y", "WIDTH", "HEIGHT"}),
    "CCD_BINNING": ("number", {"HOR_BIN", "VER_BIN"}),
    "CCD_FRAME_TYPE": ("switch", {"FRAME_LIGHT", "FRAME_BIAS", "FRAME_DARK", "FRAME_FLAT"}),
    "CCD_INFO": ("number", {"CCD_MAX_X", "CCD_MAX_Y", "CCD_PIXEL_SIZE", "CCD_PIXEL_SIZE_X",
                            "CCD_PIXEL_SIZE_Y", "CCD_BITSPERPIXEL"}),
    "CCD1": ("blob", {"CCD1"}),
    "CCD_TRANSFER_FORMAT": ("switch", {"FORMAT_FITS"}),
    "UPLOAD_MODE": ("switch", {"UPLOAD_CLIENT", "UPLOAD_LOCAL", "UPLOAD_BOTH"}),
    "CCD_CAPTURE_FORMAT": ("switch", set()),
}
ST4_PROPERTIES = {"TELESCOPE_TIMED_GUIDE_NS": {"TIMED_GUIDE_N", "TIMED_GUIDE_S"},
                  "TELESCOPE_TIMED_GUIDE_WE": {"TIMED_GUIDE_W", "TIMED_GUIDE_E"}}
CFA_MEMBERS = {"CFA_OFFSET_X", "CFA_OFFSET_Y", "CFA_TYPE"}


@dataclass(frozen=True)
class Case:
    device: str
    colour: bool
    st4: bool
    bayer: str | None = None     # CCD_CFA.CFA_TYPE of a colour model


OURS = [Case("ZWO CCD ASI2600MM Pro", colour=False, st4=False),
        Case("ZWO CCD ASI294MC Pro", colour=True, st4=False, bayer="RGGB"),
        Case("ZWO CCD ASI120MM Mini", colour=False, st4=True)]
LIBINDI = Case("CCD Simulator", colour=False, st4=True)   # indi_simulator_ccd: mono, with a guide port


def _type_name(ptype: int | None) -> str:
    return {PyIndi.INDI_NUMBER: "number", PyIndi.INDI_SWITCH: "switch", PyIndi.INDI_TEXT: "text",
            PyIndi.INDI_BLOB: "blob", PyIndi.INDI_LIGHT: "light"}.get(ptype, str(ptype))


@pytest.fixture(scope="module")
def our_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    srv = start_indi_server(tmp_path_factory.mktemp("ekos-contract"),
                            simulator="asi2600mm-pro,asi294mc-pro,asi120mm-mini")
    yield srv.port
    srv.server.stop()


@pytest.fixture(scope="module")
def libindi_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("indiserver") is None or shutil.which("indi_simulator_ccd") is None:
        pytest.skip("Debian's indi-bin is not installed (scripts/bootstrap installs it)")
    port = free_port()
    work: Path = tmp_path_factory.mktemp("ekos-contract-libindi")
    with open(work / "indiserver.log", "wb") as log:
        proc = subprocess.Popen(indiserver_command(port, "indi_simulator_ccd"), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=work, start_new_session=True)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def our_client(our_port: int) -> Iterator[PyIndiClient]:
    """One client for all our models (it sees every device's definitions from the start; closing a
    libindi client takes about 2 s)."""
    c = PyIndiClient(our_port)
    yield c
    c.close()


def check_ekos_contract(c: PyIndiClient, case: Case) -> None:
    """Connect ``case.device`` as Ekos does and check every item of the module docstring."""
    # Before connecting: CONNECTION and DRIVER_INFO, whose interface Ekos builds its devices from.
    conn = c.wait_new(case.device, "CONNECTION")
    assert _type_name(conn.ptype) == "switch" and {"CONNECT", "DISCONNECT"} <= set(conn.values)
    info = c.wait_new(case.device, "DRIVER_INFO")
    interface = int(info.values["DRIVER_INTERFACE"])
    assert interface & CCD_INTERFACE, f"{case.device}: DRIVER_INTERFACE {interface} lacks the CCD bit"
    assert bool(interface & GUIDER_INTERFACE) == case.st4, (
        f"{case.device}: DRIVER_INTERFACE {interface}: guider bit must be {'set' if case.st4 else 'clear'}")

    c.setBLOBMode(PyIndi.B_ALSO, case.device, None)
    mark = c.mark()
    c.set_switch(case.device, "CONNECTION", "CONNECT")
    ok = c.wait_event(lambda e: e.device == case.device and e.name == "CONNECTION" and e.kind == "update"
                      and e.state == "Ok" and bool(e.values.get("CONNECT")), 15, mark)
    wanted = set(CAMERA_PROPERTIES) | (set(ST4_PROPERTIES) if case.st4 else set())

    def defined(e: Event) -> bool:
        return e.device == case.device and e.kind == "new" and e.name in wanted

    try:  # every definition Ekos needs has arrived (or the checks below name the missing one)
        c.wait_event(lambda _e: {e.name for e in c.since(mark) if defined(e)} >= wanted, 10, mark)
    except TimeoutError:
        pass
    events = [e for e in c.since(mark) if e.device == case.device]
    ok_at = next(i for i, e in enumerate(events) if e is ok)
    defined_after = {e.name: e for e in events[ok_at + 1:] if e.kind == "new"}
    defined_before = {e.name for e in events[:ok_at] if e.kind == "new"}

    # The camera properties are defined after CONNECTION turned Ok (Ekos' readiness), with the
    # members Ekos reads.
    for name, (kind, members) in CAMERA_PROPERTIES.items():
        assert name in defined_after, (f"{case.device}: {name} not defined after CONNECTION Ok "
                                       f"(before: {sorted(defined_before)})")
        ev = defined_after[name]
        assert _type_name(ev.ptype) == kind, (name, _type_name(ev.ptype))
        assert members <= set(ev.values), (name, sorted(ev.values))
    assert defined_after["CCD_EXPOSURE"].perm == PyIndi.IP_RW

    # The ST4 guider Ekos' Guide module pulses through, exactly when the interface says so.
    for name, members in ST4_PROPERTIES.items():
        if case.st4:
            assert name in defined_after and members <= set(defined_after[name].values), name
        else:
            assert name not in defined_after, name

    # Colour: the Bayer pattern Ekos debayers with; mono: no CCD_CFA at all.
    cfa = defined_after.get("CCD_CFA")
    if case.colour:
        assert cfa is not None and CFA_MEMBERS <= set(cfa.values), cfa
        assert cfa.values["CFA_TYPE"] == case.bayer
    else:
        assert cfa is None, f"{case.device}: a mono camera defines CCD_CFA {cfa.values}"

    # The interface keeps the CCD (and guider) bits once connected.
    dev = c.getDevice(case.device)
    assert int(dev.getDriverInterface()) & CCD_INTERFACE
    assert bool(int(dev.getDriverInterface()) & GUIDER_INTERFACE) == case.st4

    mark = c.mark()
    c.set_switch(case.device, "CONNECTION", "DISCONNECT")
    c.wait_event(lambda e: e.device == case.device and e.name == "CONNECTION"
                 and bool(e.values.get("DISCONNECT")), 15, mark)


@pytest.mark.parametrize("case", OURS, ids=["mono", "colour", "guide-st4"])
def test_our_camera_meets_what_ekos_needs(our_client: PyIndiClient, case: Case) -> None:
    check_ekos_contract(our_client, case)


def test_the_contract_is_libindis_own(libindi_port: int) -> None:
    """The same checks pass for libindi's CCD simulator: they state what libindi's CCD base class
    sends, so a check that ours fails is a real difference from a driver Ekos works with."""
    c = PyIndiClient(libindi_port)
    try:
        check_ekos_contract(c, LIBINDI)
    finally:
        c.close()
