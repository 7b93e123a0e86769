"""The INDI shim with libindi's own programs (Debian's indi-bin): indi_getprop, indi_setprop and
indi_eval against the shim; indiserver chaining to the shim as a remote device; and indiserver
running ``zwo-alpaca-indi`` as a driver (INDI over stdin/stdout, Alpaca in the same process).

Every process is started here and stopped by PID. Each indiserver gets a free port and a private local
socket (`indiserver_command`), so these pass while another indiserver runs on the machine
(tests/system/test_indiserver_coexist.py checks that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.indi_client import DEV120, DEV294, IndiServer, PyIndi, PyIndiClient, indiserver_command, start_indi_server
from support.servers import alpaca_get, free_port, stop_process, wait_port
from zwo_common.fits import read_fits

needs_indi_bin = pytest.mark.skipif(shutil.which("indiserver") is None or shutil.which("indi_getprop") is None,
                                    reason="Debian's indi-bin is not installed (scripts/bootstrap test installs it)")
pytestmark = needs_indi_bin


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indi-tools"))
    yield s
    s.server.stop()


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def getprop(port: int, *specs: str, t: int = 3) -> dict[str, str]:
    out = run("indi_getprop", "-p", str(port), "-t", str(t), *specs).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_getprop_setprop_eval(srv: IndiServer) -> None:
    props = getprop(srv.port)
    assert props[f"{DEV294}.CONNECTION.DISCONNECT"] == "On"
    assert props[f"{DEV120}.DRIVER_INFO.DRIVER_INTERFACE"] == "6"
    assert run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CONNECTION.CONNECT=On").returncode == 0
    r = run("indi_eval", "-p", str(srv.port), "-t", "10", "-w", f'"{DEV294}.CONNECTION.CONNECT"==1')
    assert r.returncode == 0, r.stderr
    r = run("indi_eval", "-p", str(srv.port), "-t", "10", "-w", f'"{DEV294}.CCD_CONTROLS.Gain">=0')
    assert r.returncode == 0, r.stderr
    try:
        assert run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CCD_CONTROLS.Gain=321").returncode == 0
        r = run("indi_eval", "-p", str(srv.port), "-t", "5", "-w", f'"{DEV294}.CCD_CONTROLS.Gain"==321')
        assert r.returncode == 0, r.stderr
        assert alpaca_get(srv.server, 0, "gain")["Value"] == 321
        # a 0.2 s exposure set from the command line ends Ok
        assert run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CCD_FRAME.WIDTH;HEIGHT=320;200").returncode == 0
        assert run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CCD_EXPOSURE.CCD_EXPOSURE_VALUE=0.2").returncode == 0
        r = run("indi_eval", "-p", str(srv.port), "-t", "10", "-w", f'"{DEV294}.CCD_EXPOSURE._STATE"==1')
        assert r.returncode == 0, r.stderr
        full = getprop(srv.port, f"{DEV294}.*.*")
        assert full[f"{DEV294}.CCD_INFO.CCD_MAX_X"] == "4144"
        assert full[f"{DEV294}.CCD_CAPTURE_FORMAT.ASI_IMG_RAW16"] == "On"
        assert getprop(srv.port, f"{DEV294}.CCD_EXPOSURE._STATE") [f"{DEV294}.CCD_EXPOSURE._STATE"] == "Ok"
    finally:
        run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CCD_FRAME_RESET.RESET=On")
        run("indi_setprop", "-p", str(srv.port), f"{DEV294}.CONNECTION.DISCONNECT=On")
        run("indi_eval", "-p", str(srv.port), "-t", "5", "-w", f'"{DEV294}.CONNECTION.DISCONNECT"==1')


@pytest.mark.skipif(PyIndi is None, reason="pyindi-client is not installed")
def test_indiserver_chains_to_the_shim(srv: IndiServer, tmp_path: Path) -> None:
    """indiserver serving our device as a remote one ("device@host:port"): KStars-style setups."""
    port = free_port()
    log = open(tmp_path / "indiserver.log", "wb")
    proc = subprocess.Popen(indiserver_command(port, f"{DEV294}@127.0.0.1:{srv.port}", options=("-m", "512")),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, HOME=str(tmp_path)))
    client = None
    try:
        wait_port(port)
        client = PyIndiClient(port)
        client.setBLOBMode(PyIndi.B_ALSO, DEV294, None)
        client.connect_device(DEV294)
        mark = client.mark()
        client.set_numbers(DEV294, "CCD_FRAME", X=0, Y=0, WIDTH=512, HEIGHT=256)
        client.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok", 5, mark)
        client.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.1)
        client.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", 15, mark)
        blob = [e for e in client.since(mark) if e.name == "CCD1" and e.kind == "update"][-1]
        hdr, data = read_fits(blob.values["CCD1"][1])
        assert data.shape == (256, 512) and hdr["INSTRUME"] == DEV294
        assert alpaca_get(srv.server, 0, "connected")["Value"] is True
    finally:
        if client is not None:
            mark = client.mark()
            client.set_switch(DEV294, "CCD_FRAME_RESET", "RESET")
            client.set_switch(DEV294, "CONNECTION", "DISCONNECT")
            try:
                client.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)
            finally:
                client.close()
        stop_process(proc)
        log.close()


@pytest.mark.skipif(PyIndi is None, reason="pyindi-client is not installed")
def test_indiserver_runs_zwo_alpaca_indi_driver(tmp_path: Path) -> None:
    """indiserver starts zwo-alpaca-indi (as an Ekos profile does); the process also serves Alpaca."""
    exe = Path(sys.executable).with_name("zwo-alpaca-indi")
    if not exe.exists():
        pytest.skip("the zwo-alpaca-indi console script is not installed (pip install -e .)")
    port, http = free_port(), free_port()
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}", HOME=str(tmp_path),
               ZWO_ALPACA_SIMULATOR="asi120mm-mini", ZWO_ALPACA_PORT=str(http), ZWO_ALPACA_BIND="127.0.0.1",
               ZWO_ALPACA_DISCOVERY="off", ZWO_ALPACA_CONFIG=str(tmp_path / "config.json"),
               ZWO_ALPACA_SIM_LOCK_DIR=str(tmp_path / "locks"), ZWO_ALPACA_UPLOAD_DIR=str(tmp_path / "up"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    log = open(tmp_path / "indiserver.log", "wb")
    proc = subprocess.Popen(indiserver_command(port, "zwo-alpaca-indi"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    client = None
    try:
        wait_port(port)
        client = PyIndiClient(port)
        client.setBLOBMode(PyIndi.B_ALSO, DEV120, None)
        client.connect_device(DEV120, timeout=20)
        wait_port(http)
        r = requests.get(f"http://127.0.0.1:{http}/api/v1/camera/0/connected", timeout=5).json()
        assert r["Value"] is True  # Alpaca in the same process sees the INDI connection
        mark = client.mark()
        client.set_numbers(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.5)
        client.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Busy", 5, mark)
        state = requests.get(f"http://127.0.0.1:{http}/api/v1/camera/0/camerastate", timeout=5).json()["Value"]
        assert state in (2, 3)  # exposing or reading, over Alpaca
        client.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", 15, mark)
        blob = [e for e in client.since(mark) if e.name == "CCD1" and e.kind == "update"][-1]
        hdr, data = read_fits(blob.values["CCD1"][1])
        assert data.shape == (960, 1280) and hdr["INSTRUME"] == DEV120
    finally:
        if client is not None:
            client.close()
        stop_process(proc)
        log.close()
    # indiserver is gone: the driver must notice (stdin closes), release the camera and exit.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{http}/api/v1/camera/0/connected", timeout=0.5)
            time.sleep(0.2)
        except requests.RequestException:
            break
    else:
        pytest.fail("zwo-alpaca-indi kept running after indiserver stopped:\n"
                    + (tmp_path / "indiserver.log").read_text())
