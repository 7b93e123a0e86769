"""Saving the configuration as libindi's drivers do (CONFIG_PROCESS, indi_shim/config.py).

Through libindi's own programs (indi_setprop, indi_getprop, indi_eval from Debian's indi-bin) against
``zwo-alpaca serve`` and against ``zwo-alpaca-indi`` under ``indiserver``:

* CONFIG_PROCESS is defined before the camera connects, exactly as libindi's CCD simulator defines
  it (label, group, permission, rule, timeout, members, labels, and its place before ACTIVE_DEVICES);
* the INDI-only choices (ACTIVE_DEVICES, SCOPE_INFO, CCD_COMPRESSION, UPLOAD_MODE, UPLOAD_SETTINGS,
  CCD_FAST_TOGGLE, CCD_TRANSFER_FORMAT, a CCD_CFA correction) saved with CONFIG_SAVE come back
  after a restart with the same config directory; ACTIVE_DEVICES and SCOPE_INFO save themselves
  when changed (libindi's saveConfig(property)), CCD_COMPRESSION does not;
* CONFIG_DEFAULT puts the defaults back, CONFIG_LOAD re-applies the file, CONFIG_PURGE deletes it,
  and each failure is an Alert (no file to load or purge);
* a corrupt file, or a file with invalid entries, gives the defaults and a warning naming what was
  wrong, and the server serves as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.indi_client import DEV294, RawIndi, definitions, indiserver_command, start_indi_server
from support.servers import free_port, stop_process, wait_port

pytestmark = pytest.mark.skipif(shutil.which("indi_getprop") is None or shutil.which("indiserver") is None,
                                reason="Debian's indi-bin is not installed (scripts/bootstrap test installs it)")

DEV2600 = "ZWO CCD ASI2600MM Pro"


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def setprop(port: int, *specs: str) -> None:
    for spec in specs:
        r = run("indi_setprop", "-p", str(port), spec)
        assert r.returncode == 0, (spec, r.stderr)


def getprop(port: int, device: str, *names: str) -> dict[str, str]:
    """``PROP.MEMBER`` -> value for the exact names asked (indi_getprop answers at once for those)."""
    out = run("indi_getprop", "-p", str(port), "-t", "3", *(f"{device}.{n}" for n in names)).stdout
    got = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k[len(device) + 1:]: v for k, v in got.items()}


def wait_eval(port: int, expr: str, timeout: int = 10) -> None:
    r = run("indi_eval", "-p", str(port), "-t", str(timeout), "-w", expr)
    assert r.returncode == 0, (expr, r.stdout, r.stderr)


def config_process(port: int, device: str, action: str) -> str:
    """Press one CONFIG_PROCESS switch and return the state of the answer (Ok or Alert).

    Sent on a socket of its own that waits for the answer, so that the next look at the values
    (indi_getprop, another connection) comes after the action, not before."""
    c = RawIndi(port)
    try:
        c.send(f'<getProperties version="1.7" device="{device}" name="CONFIG_PROCESS"/>')
        c.wait_for(b"</defSwitchVector>")
        mark = c.size()
        c.send(f'<newSwitchVector device="{device}" name="CONFIG_PROCESS">'
               f'<oneSwitch name="{action}">On</oneSwitch></newSwitchVector>')
        at = c.wait_for(b'<setSwitchVector device="' + device.encode() + b'" name="CONFIG_PROCESS"', start=mark)
        head = c.text()[at:at + 300].decode()
        return head.split('state="')[1].split('"')[0]
    finally:
        c.close()


def connect(port: int, device: str) -> None:
    setprop(port, f"{device}.CONNECTION.CONNECT=On")
    wait_eval(port, f'"{device}.CONNECTION.CONNECT"==1')
    wait_eval(port, f'"{device}.CCD_COMPRESSION.INDI_DISABLED">=0')  # the connected set is defined


def wait_saved(workdir: Path, timeout: float = 5.0) -> None:
    """Until the camera's saved file exists (a self-saving property writes it just after answering)."""
    deadline = time.monotonic() + timeout
    while not list((workdir / "indi").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)


def saved_file(workdir: Path) -> Path:
    files = sorted((workdir / "indi").glob("*.json"))
    assert len(files) == 1, files
    return files[0]


CHOICES = ("ACTIVE_DEVICES.ACTIVE_TELESCOPE", "ACTIVE_DEVICES.ACTIVE_FILTER", "SCOPE_INFO.FOCAL_LENGTH",
           "SCOPE_INFO.APERTURE", "CCD_COMPRESSION.INDI_ENABLED", "UPLOAD_MODE.UPLOAD_LOCAL",
           "UPLOAD_SETTINGS.UPLOAD_PREFIX", "CCD_FAST_TOGGLE.INDI_ENABLED", "CCD_TRANSFER_FORMAT.FORMAT_NATIVE",
           "CCD_CFA.CFA_TYPE", "CCD_CFA.CFA_OFFSET_X")
DEFAULTS = {"ACTIVE_DEVICES.ACTIVE_TELESCOPE": "Telescope Simulator", "ACTIVE_DEVICES.ACTIVE_FILTER": "CCD Simulator",
            "SCOPE_INFO.FOCAL_LENGTH": "0", "SCOPE_INFO.APERTURE": "0", "CCD_COMPRESSION.INDI_ENABLED": "Off",
            "UPLOAD_MODE.UPLOAD_LOCAL": "Off", "UPLOAD_SETTINGS.UPLOAD_PREFIX": "IMAGE_XXX",
            "CCD_FAST_TOGGLE.INDI_ENABLED": "Off", "CCD_TRANSFER_FORMAT.FORMAT_NATIVE": "Off",
            "CCD_CFA.CFA_TYPE": "RGGB", "CCD_CFA.CFA_OFFSET_X": "0"}


# ------------------------------------------------------------------------------------ the property
def test_config_process_is_defined_before_connect_as_libindi_does(tmp_path: Path) -> None:
    """Byte-level: our definition has the attributes and members of libindi's (indi_simulator_ccd),
    and comes, as there, after DRIVER_INFO and before ACTIVE_DEVICES, while disconnected."""
    if shutil.which("indi_simulator_ccd") is None:
        pytest.skip("indi_simulator_ccd is not installed")
    srv = start_indi_server(tmp_path / "ours", simulator="asi294mc-pro")
    port = free_port()
    (tmp_path / "libindi").mkdir()
    with open(tmp_path / "libindi" / "indiserver.log", "wb") as log:
        ref = subprocess.Popen(indiserver_command(port, "indi_simulator_ccd"), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=tmp_path / "libindi", start_new_session=True,
                               env=dict(os.environ, HOME=str(tmp_path / "libindi")))
    try:
        wait_port(port)
        seen: dict[str, dict[str, Any]] = {}
        for name, p, dev in (("ours", srv.port, DEV294), ("libindi", port, "CCD Simulator")):
            c = RawIndi(p)
            try:
                c.send('<getProperties version="1.7"/>')
                c.wait_for(b'name="ACTIVE_DEVICES"')
                c.wait_for(b"</defTextVector>", start=c.text().find(b'name="ACTIVE_DEVICES"'))
                raw = c.text()
            finally:
                c.close()
            props = definitions(raw)[dev]
            order = list(props)
            assert order.index("DRIVER_INFO") < order.index("CONFIG_PROCESS") < order.index("ACTIVE_DEVICES"), order
            cp = props["CONFIG_PROCESS"]
            seen[name] = {k: cp[k] for k in ("kind", "label", "group", "perm", "rule", "timeout", "state", "members")}
            seen[name]["labels"] = [line.split('label="')[1].split('"')[0] for line in cp["body"].splitlines()
                                    if "label=" in line]
            if name == "ours":
                assert "CCD_EXPOSURE" not in props  # still disconnected
        assert seen["ours"] == seen["libindi"]
        assert seen["ours"]["members"] == "CONFIG_LOAD,CONFIG_SAVE,CONFIG_DEFAULT,CONFIG_PURGE"
        assert seen["ours"]["labels"] == ["Load", "Save", "Default", "Purge"]
        assert (seen["ours"]["group"], seen["ours"]["rule"], seen["ours"]["timeout"]) == ("Options", "AtMostOne", "0")
    finally:
        stop_process(ref)
        srv.server.stop()


# ------------------------------------------------------------------------------------ save, restart, load
@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "server"


def test_saved_choices_come_back_after_a_restart(workdir: Path) -> None:
    srv = start_indi_server(workdir, simulator="asi294mc-pro")
    try:
        p = srv.port
        assert config_process(p, DEV294, "CONFIG_LOAD") == "Alert"  # nothing saved yet (libindi: Alert)
        # ACTIVE_DEVICES saves itself when changed, before any CONFIG_SAVE and while disconnected.
        setprop(p, f"{DEV294}.ACTIVE_DEVICES.ACTIVE_TELESCOPE;ACTIVE_FILTER=EQMod Mount;ZWO EFW")
        wait_eval(p, f'"{DEV294}.ACTIVE_DEVICES._STATE"==1')
        wait_saved(workdir)
        auto = json.loads(saved_file(workdir).read_text())
        assert auto["properties"]["ACTIVE_DEVICES"]["ACTIVE_TELESCOPE"] == "EQMod Mount"
        assert auto["properties"]["CCD_COMPRESSION"] == {"INDI_ENABLED": False, "INDI_DISABLED": True}

        connect(p, DEV294)
        setprop(p, f"{DEV294}.SCOPE_INFO.FOCAL_LENGTH;APERTURE=480;80", f"{DEV294}.CCD_COMPRESSION.INDI_ENABLED=On",
                f"{DEV294}.UPLOAD_MODE.UPLOAD_LOCAL=On", f"{DEV294}.UPLOAD_SETTINGS.UPLOAD_PREFIX=M31_XXX",
                f"{DEV294}.CCD_FAST_TOGGLE.INDI_ENABLED=On", f"{DEV294}.CCD_TRANSFER_FORMAT.FORMAT_NATIVE=On",
                f"{DEV294}.CCD_CFA.CFA_TYPE;CFA_OFFSET_X=BGGR;1")
        wait_eval(p, f'"{DEV294}.CCD_CFA._STATE"==1')
        assert config_process(p, DEV294, "CONFIG_SAVE") == "Ok"
        saved = json.loads(saved_file(workdir).read_text())["properties"]
        assert saved["UPLOAD_SETTINGS"]["UPLOAD_PREFIX"] == "M31_XXX" and saved["CCD_CFA"]["CFA_TYPE"] == "BGGR"
        # After the save: SCOPE_INFO saves itself, CCD_COMPRESSION does not (libindi's rules).
        setprop(p, f"{DEV294}.SCOPE_INFO.FOCAL_LENGTH=600", f"{DEV294}.CCD_COMPRESSION.INDI_DISABLED=On")
        wait_eval(p, f'"{DEV294}.SCOPE_INFO.FOCAL_LENGTH"==600')
        wait_eval(p, f'"{DEV294}.CCD_COMPRESSION.INDI_DISABLED"==1')
        deadline = time.monotonic() + 5
        while json.loads(saved_file(workdir).read_text())["properties"]["SCOPE_INFO"]["FOCAL_LENGTH"] != 600:
            assert time.monotonic() < deadline, "SCOPE_INFO did not save itself"
            time.sleep(0.02)
        assert json.loads(saved_file(workdir).read_text())["properties"]["CCD_COMPRESSION"]["INDI_ENABLED"] is True
    finally:
        srv.server.stop()

    srv = start_indi_server(workdir, simulator="asi294mc-pro")
    try:
        p = srv.port
        # Before connecting: ACTIVE_DEVICES (always defined) already carries the saved names.
        mount = getprop(p, DEV294, "ACTIVE_DEVICES.ACTIVE_TELESCOPE")
        assert mount == {"ACTIVE_DEVICES.ACTIVE_TELESCOPE": "EQMod Mount"}
        connect(p, DEV294)
        wanted = {"ACTIVE_DEVICES.ACTIVE_TELESCOPE": "EQMod Mount", "ACTIVE_DEVICES.ACTIVE_FILTER": "ZWO EFW",
                  "SCOPE_INFO.FOCAL_LENGTH": "600", "SCOPE_INFO.APERTURE": "80", "CCD_COMPRESSION.INDI_ENABLED": "On",
                  "UPLOAD_MODE.UPLOAD_LOCAL": "On", "UPLOAD_SETTINGS.UPLOAD_PREFIX": "M31_XXX",
                  "CCD_FAST_TOGGLE.INDI_ENABLED": "On", "CCD_TRANSFER_FORMAT.FORMAT_NATIVE": "On",
                  "CCD_CFA.CFA_TYPE": "BGGR", "CCD_CFA.CFA_OFFSET_X": "1"}
        assert getprop(p, DEV294, *CHOICES) == wanted
        assert "CCD_FILE_PATH.FILE_PATH" in getprop(p, DEV294, "CCD_FILE_PATH.FILE_PATH")  # local mode shows it

        # CONFIG_DEFAULT: libindi's defaults (the CFA back to the core's phase); the self-saving
        # ACTIVE_DEVICES and SCOPE_INFO save the defaults, the others keep their saved values.
        assert config_process(p, DEV294, "CONFIG_DEFAULT") == "Ok"
        assert getprop(p, DEV294, *CHOICES) == DEFAULTS
        assert config_process(p, DEV294, "CONFIG_LOAD") == "Ok"  # what Ekos sends at connect
        loaded = getprop(p, DEV294, *CHOICES)
        assert loaded["CCD_COMPRESSION.INDI_ENABLED"] == "On" and loaded["CCD_CFA.CFA_TYPE"] == "BGGR"
        assert loaded["ACTIVE_DEVICES.ACTIVE_TELESCOPE"] == "Telescope Simulator"
        assert loaded["SCOPE_INFO.FOCAL_LENGTH"] == "0"

        # CONFIG_PURGE deletes the file; a second purge and a load then fail (Alert), as in libindi.
        path = saved_file(workdir)
        assert config_process(p, DEV294, "CONFIG_PURGE") == "Ok"
        assert not path.exists()
        assert config_process(p, DEV294, "CONFIG_PURGE") == "Alert"
        assert config_process(p, DEV294, "CONFIG_LOAD") == "Alert"
        assert getprop(p, DEV294, "CCD_COMPRESSION.INDI_ENABLED") == {"CCD_COMPRESSION.INDI_ENABLED": "On"}
    finally:
        srv.server.stop()


def test_corrupt_or_invalid_saved_files_give_defaults_and_warnings(workdir: Path) -> None:
    srv = start_indi_server(workdir, simulator="asi294mc-pro")
    try:  # the camera's file name: made by the self-saving ACTIVE_DEVICES
        setprop(srv.port, f"{DEV294}.ACTIVE_DEVICES.ACTIVE_FOCUSER=Moonlite")
        wait_eval(srv.port, f'"{DEV294}.ACTIVE_DEVICES._STATE"==1')
        wait_saved(workdir)
    finally:
        srv.server.stop()
    path = saved_file(workdir)

    path.write_text('{"version": 1, "properties": {"ACTIVE_DEVICES": {"ACTIVE_TELESCOPE": "EQ')  # cut short
    srv = start_indi_server(workdir, simulator="asi294mc-pro")
    try:
        assert getprop(srv.port, DEV294, "ACTIVE_DEVICES.ACTIVE_FOCUSER") == {
            "ACTIVE_DEVICES.ACTIVE_FOCUSER": "Focuser Simulator"}
        log = srv.server.log_text()
        assert "WARNING" in log and "could not be read" in log and "using the defaults" in log, log
        assert path.with_name(path.name + ".broken").exists()  # kept for the user to look at
        connect(srv.port, DEV294)
    finally:
        srv.server.stop()

    path.write_text(json.dumps({"version": 1, "properties": {
        "ACTIVE_DEVICES": {"ACTIVE_TELESCOPE": "EQMod Mount"},
        "UPLOAD_MODE": {"UPLOAD_CLIENT": True, "UPLOAD_LOCAL": True},
        "SCOPE_INFO": {"FOCAL_LENGTH": 480, "APERTURE": "big"},
        "CCD_COMPRESSION": "yes",
        "NO_SUCH_PROPERTY": {"X": 1}}}))
    srv = start_indi_server(workdir, simulator="asi294mc-pro")
    try:
        p = srv.port
        connect(p, DEV294)
        got = getprop(p, DEV294, "ACTIVE_DEVICES.ACTIVE_TELESCOPE", "UPLOAD_MODE.UPLOAD_CLIENT",
                      "SCOPE_INFO.FOCAL_LENGTH", "CCD_COMPRESSION.INDI_ENABLED")
        assert got == {"ACTIVE_DEVICES.ACTIVE_TELESCOPE": "EQMod Mount", "UPLOAD_MODE.UPLOAD_CLIENT": "On",
                       "SCOPE_INFO.FOCAL_LENGTH": "0", "CCD_COMPRESSION.INDI_ENABLED": "Off"}
        warnings = [line for line in srv.server.log_text().splitlines()
                    if "WARNING" in line and "saved configuration" in line]
        for name in ("UPLOAD_MODE", "SCOPE_INFO", "CCD_COMPRESSION", "NO_SUCH_PROPERTY"):
            assert any(name in line for line in warnings), (name, warnings)
        # CONFIG_LOAD of a file corrupted meanwhile: Alert, the values in use stay.
        path.write_text("not json")
        assert config_process(p, DEV294, "CONFIG_LOAD") == "Alert"
        kept = getprop(p, DEV294, "ACTIVE_DEVICES.ACTIVE_TELESCOPE")
        assert kept == {"ACTIVE_DEVICES.ACTIVE_TELESCOPE": "EQMod Mount"}
    finally:
        srv.server.stop()


# ------------------------------------------------------------------------------------ driver mode
def _indiserver_with_driver(tmp: Path, run_no: int) -> tuple[subprocess.Popen, int]:
    exe = Path(sys.executable).with_name("zwo-alpaca-indi")
    if not exe.exists():
        pytest.skip("the zwo-alpaca-indi console script is not installed (pip install -e .)")
    env = dict(os.environ, HOME=str(tmp), PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               ZWO_ALPACA_SIMULATOR="asi2600mm-pro", ZWO_ALPACA_PORT="off", ZWO_ALPACA_DISCOVERY="off",
               ZWO_ALPACA_CONFIG=str(tmp / "config.json"),
               ZWO_ALPACA_SIM_LOCK_DIR=str(tmp / f"locks-{run_no}"),  # the last run's driver may still be exiting
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                      os.environ.get("PYTHONPATH")) if p))
    port = free_port()
    with open(tmp / f"indiserver-{run_no}.log", "wb") as log:
        proc = subprocess.Popen(indiserver_command(port, "zwo-alpaca-indi"), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp, start_new_session=True, env=env)
    wait_port(port)
    wait_eval(port, f'"{DEV2600}.CONFIG_PROCESS.CONFIG_SAVE">=0', timeout=20)
    return proc, port


def test_driver_mode_under_indiserver_saves_beside_its_config(tmp_path: Path) -> None:
    proc, p = _indiserver_with_driver(tmp_path, 1)
    try:
        setprop(p, f"{DEV2600}.ACTIVE_DEVICES.ACTIVE_TELESCOPE=EQMod Mount")
        connect(p, DEV2600)
        setprop(p, f"{DEV2600}.CCD_COMPRESSION.INDI_ENABLED=On", f"{DEV2600}.SCOPE_INFO.FOCAL_LENGTH=1000")
        wait_eval(p, f'"{DEV2600}.SCOPE_INFO.FOCAL_LENGTH"==1000')
        assert config_process(p, DEV2600, "CONFIG_SAVE") == "Ok"
        assert saved_file(tmp_path).parent == tmp_path / "indi"  # beside ZWO_ALPACA_CONFIG, not in ~/.indi
        assert not (tmp_path / ".indi").exists()
    finally:
        stop_process(proc)
    proc, p = _indiserver_with_driver(tmp_path, 2)
    try:
        connect(p, DEV2600)
        assert getprop(p, DEV2600, "ACTIVE_DEVICES.ACTIVE_TELESCOPE", "CCD_COMPRESSION.INDI_ENABLED",
                       "SCOPE_INFO.FOCAL_LENGTH") == {
            "ACTIVE_DEVICES.ACTIVE_TELESCOPE": "EQMod Mount", "CCD_COMPRESSION.INDI_ENABLED": "On",
            "SCOPE_INFO.FOCAL_LENGTH": "1000"}
    finally:
        stop_process(proc)
