"""The tests that start libindi's ``indiserver`` pass while another indiserver runs on the machine -
the normal state of an astro Pi (Astroberry, StellarMate, INDI Web Manager, a KStars session).

A stray ``indiserver`` is started here on the defaults, TCP port 7624 and the local socket
``/tmp/indiserver`` (an abstract name: nothing on disk). indiserver 1.9 has no option to listen on
loopback only, so it listens on every interface for the few seconds of this test; nothing connects
to it but this test, over 127.0.0.1. First a control: a second indiserver *without* a private socket
fails beside it ("bind: Address already in use"), as the INDI tests did before they got one. Then the
INDI tests that start indiserver run in a pytest subprocess (bounded time) and must all pass. The
stray server and its stub driver are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.indi_client import PyIndi
from support.servers import REPO, free_port, stop_process

DEFAULT_PORT = 7624
DEFAULT_SOCKET = "/tmp/indiserver"  # libindi's default for -u
INDISERVER_TESTS = [
    "tests/indi/test_indi_tools.py::test_indiserver_chains_to_the_shim",
    "tests/indi/test_indi_tools.py::test_indiserver_runs_zwo_alpaca_indi_driver",
]

pytestmark = pytest.mark.skipif(shutil.which("indiserver") is None or shutil.which("indi_getprop") is None,
                                reason="Debian's indi-bin is not installed (scripts/bootstrap test installs it)")


def abstract_socket_bound(name: str) -> bool:
    """Whether a unix socket with the abstract name ``name`` exists (/proc/net/unix shows it as "@name")."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(f) >= 8 and f[7] == "@" + name for f in (line.split() for line in lines))


def tcp_port_free(port: int) -> bool:
    """Whether indiserver could bind ``port`` (it binds every IPv4 address, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def stub_driver(path: Path) -> Path:
    """An INDI "driver" that defines nothing and lives until indiserver closes its stdin."""
    path.write_text('#!/bin/sh\necho $$ >> "$STUB_PIDS"\nexec cat >/dev/null\n')
    path.chmod(0o755)
    return path


def stop(proc: subprocess.Popen, pid_file: Path) -> None:
    """Stop an indiserver started here (SIGTERM, then SIGKILL), then any stub driver it left behind."""
    stop_process(proc)
    for pid in (int(p) for p in pid_file.read_text().split()) if pid_file.exists() else ():
        try:
            if os.getsid(pid) == proc.pid:  # still the driver of that server (its session), not a reused PID
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@dataclass
class Stray:
    proc: subprocess.Popen
    driver: Path
    log: Path


@pytest.fixture
def stray(tmp_path: Path) -> Iterator[Stray]:
    if not tcp_port_free(DEFAULT_PORT):
        pytest.skip(f"port {DEFAULT_PORT} is already taken on this machine, so no stray indiserver can be started "
                    "on the defaults (if it is an indiserver, tests/indi/test_indi_tools.py already runs beside one)")
    if abstract_socket_bound(DEFAULT_SOCKET):
        pytest.skip(f"the default INDI local socket @{DEFAULT_SOCKET} is already bound on this machine")
    driver = stub_driver(tmp_path / "stray_driver")
    pids = tmp_path / "stray-driver.pids"
    log_path = tmp_path / "stray-indiserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["indiserver", "-v", str(driver)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, STUB_PIDS=str(pids)))
    try:
        deadline = time.monotonic() + 10
        while not (abstract_socket_bound(DEFAULT_SOCKET) and not tcp_port_free(DEFAULT_PORT)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the stray indiserver did not come up on the defaults:\n{log_path.read_text()}")
            time.sleep(0.1)
        socket.create_connection(("127.0.0.1", DEFAULT_PORT), timeout=2).close()
        yield Stray(proc, driver, log_path)
    finally:
        stop(proc, pids)


def test_without_a_private_socket_a_second_indiserver_fails(stray: Stray, tmp_path: Path) -> None:
    """The control: what the INDI tests met before (free TCP port, default local socket)."""
    pids = tmp_path / "second-driver.pids"
    log_path = tmp_path / "second-indiserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["indiserver", "-p", str(free_port()), str(stray.driver)], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, STUB_PIDS=str(pids)))
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(proc, pids)
    text = log_path.read_text(errors="replace")
    assert "Address already in use" in text, f"a second indiserver started beside the stray one:\n{text}"
    assert stray.proc.poll() is None


def test_the_indiserver_tests_pass_beside_another_indiserver(stray: Stray, tmp_path: Path) -> None:
    if PyIndi is None:
        pytest.skip("pyindi-client is not installed: the indiserver tests would skip")
    if not Path(sys.executable).with_name("zwo-alpaca-indi").exists():
        pytest.skip("the zwo-alpaca-indi console script is not installed (pip install -e .)")
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                             f"--basetemp={tmp_path / 'inner'}", f"--junitxml={junit}", *INDISERVER_TESTS],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # lets the inner tests stop what they started
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
        pytest.fail(f"the indiserver tests did not finish within 240 s:\n{out}")
    took = time.monotonic() - started
    assert proc.returncode == 0, out
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {c.get("name"): [child.tag for child in c if child.tag in ("failure", "error", "skipped")]
               for c in cases}
    assert outcome == {name.split("::")[1]: [] for name in INDISERVER_TESTS}, out
    assert stray.proc.poll() is None, "the stray indiserver died"
    assert not tcp_port_free(DEFAULT_PORT) and abstract_socket_bound(DEFAULT_SOCKET)
    print(f"[indiserver-coexist] {len(outcome)} indiserver tests passed beside a stray indiserver in {took:.1f} s")
