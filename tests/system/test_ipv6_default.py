"""IPv4 and IPv6 by default (issue 14): ``serve`` with no ``--bind`` listens on every IPv4 and IPv6
address and answers Alpaca discovery on both families; ``--bind`` may be given more than once; a
host without IPv6 still starts.

Every server that listens on all addresses or answers discovery runs inside throw-away network
namespaces (``support.netns``: a server and a client namespace joined by veth pairs), and alpyca's
discovery client (which broadcasts and multicasts) runs only in the client namespace: nothing here
listens on, or sends to, the host's own interfaces. The ``--bind 127.0.0.1 --bind ::1`` case runs
on the host's loopback with discovery off.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from support import netns
from support.servers import free_port, start_server

pytestmark = pytest.mark.timeout(120)

PORT = 11111
INDI_PORT = 7624

# Runs in a namespace: waits for HTTP on argv[1] (host:port), then reports which of the addresses in
# argv[2] (a JSON list of [host, port, "http"|"indi"]) answer: HTTP /management/apiversions -> its
# Value, INDI getProperties -> whether a property definition came back. IPv6 hosts may carry %scope.
REACH = r"""
import http.client, json, socket, sys, time
first, targets = sys.argv[1], json.loads(sys.argv[2])
def http_get(host, port):
    c = http.client.HTTPConnection(host, port, timeout=3)
    try:
        c.request("GET", "/management/apiversions")
        r = c.getresponse()
        return json.loads(r.read())["Value"] if r.status == 200 else f"HTTP {r.status}"
    finally:
        c.close()
def indi(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(b"<getProperties version='1.7'/>")
        data, deadline = b"", time.monotonic() + 3
        while b"defSwitchVector" not in data and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return b"defSwitchVector" in data
host, _, port = first.rpartition(":")
deadline = time.monotonic() + 30
while True:
    try:
        http_get(host.strip("[]"), int(port)); break
    except Exception as e:
        if time.monotonic() > deadline:
            raise SystemExit(f"no HTTP at {first}: {e!r}")
        time.sleep(0.2)
out = {}
for h, p, kind in targets:
    try:
        out[f"{kind} {h} {p}"] = http_get(h, p) if kind == "http" else indi(h, p)
    except Exception as e:
        out[f"{kind} {h} {p}"] = repr(e)
print(json.dumps(out))
"""

# alpyca's own discovery client, as an application calls it (client namespace only).
ALPYCA = r"""
import json
from alpaca import discovery
print(json.dumps({"v4": discovery.search_ipv4(numquery=1, timeout=0.5),
                  "v6": discovery.search_ipv6(numquery=1, timeout=0.5)}))
"""

# A "host without IPv6": every AF_INET6 socket fails as on a kernel booted with ipv6.disable=1,
# then the server runs as `python -m zwo_runtime ...` would.
NO_IPV6 = r"""
import errno, runpy, socket, sys
_init = socket.socket.__init__
def init(self, family=-1, *args, **kw):
    if family == socket.AF_INET6:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    _init(self, family, *args, **kw)
socket.socket.__init__ = init
sys.argv = ["zwo_runtime", *sys.argv[1:]]
runpy.run_module("zwo_runtime", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def lan() -> Iterator[netns.Lan]:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with netns.Lan(links=2, tag="v6") as lan:
        yield lan


@pytest.fixture
def net(lan: netns.Lan) -> Iterator[netns.Lan]:
    try:
        yield lan
    finally:
        lan.srv.kill_all()
        lan.cli.kill_all()


def _serve_in(ns: netns.Netns, work: Path, *args: str, python: tuple[str, ...] = ("-m", "zwo_runtime")) -> tuple:
    """``serve`` (a simulated ASI294MC Pro) in namespace ``ns``; (process, its log file)."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    cmd = ["env", f"ZWO_ALPACA_SIM_LOCK_DIR={work / 'locks'}", sys.executable, *python, "serve",
           "--simulator", "asi294mc-pro", "--config", str(work / "config.json"), "--log-level", "info", *args]
    with open(log, "wb") as fh:
        proc = ns.popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=False)
    return proc, log


def _wait_log(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 30) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not logged (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")


def _reach(ns: netns.Netns, first: str, targets: list[tuple[str, int, str]]) -> dict:
    return json.loads(ns.python(REACH, first, json.dumps(targets), timeout=60))


@pytest.mark.netns
def test_no_bind_listens_on_ipv4_and_ipv6_and_search_ipv6_finds_it(net: netns.Lan, tmp_path: Path) -> None:
    proc, log = _serve_in(net.srv, tmp_path / "default", "--port", str(PORT))
    try:
        _wait_log(proc, log, r"Alpaca discovery answering on UDP port 32227 \(ipv4 and ipv6")
        listening = _wait_log(proc, log, r"Alpaca API on (\S+) and (\S+)/api/v1").groups()
        assert listening == (f"http://0.0.0.0:{PORT}", f"http://[::]:{PORT}"), listening
        assert re.search(rf"INDI server listening on 0\.0\.0\.0:{INDI_PORT} and \[::\]:{INDI_PORT}", log.read_text())

        # The default start answers on 127.0.0.1 and [::1] (checked inside the server's namespace)...
        local = _reach(net.srv, f"127.0.0.1:{PORT}", [("127.0.0.1", PORT, "http"), ("::1", PORT, "http"),
                                                        ("127.0.0.1", INDI_PORT, "indi"), ("::1", INDI_PORT, "indi")])
        assert local == {f"http 127.0.0.1 {PORT}": [1], f"http ::1 {PORT}": [1],
                         f"indi 127.0.0.1 {INDI_PORT}": True, f"indi ::1 {INDI_PORT}": True}, local

        # ...and alpyca finds it over IPv6 (and IPv4) across the veth pairs, at addresses that answer.
        found = json.loads(net.cli.python(ALPYCA, timeout=30))
        assert sorted(found["v4"]) == [f"10.77.0.1:{PORT}", f"10.78.0.1:{PORT}"], found
        v6 = found["v6"]
        assert len(v6) == 2 and all(re.fullmatch(rf"\[fe80::[0-9a-f:]+%\d+\]:{PORT}", a) for a in v6), found
        targets = [(a.rpartition(":")[0].strip("[]"), PORT, "http") for a in v6]
        targets += [(net.v6(0, 1), PORT, "http"), (net.v6(1, 1), PORT, "http"), (net.v6(0, 1), INDI_PORT, "indi")]
        remote = _reach(net.cli, f"{net.v4(0, 1)}:{PORT}", targets)
        assert all(v in ([1], True) for v in remote.values()), remote
    finally:
        netns.stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]


@pytest.mark.netns
def test_port_0_with_no_bind_is_one_port_on_both_families(net: netns.Lan, tmp_path: Path) -> None:
    proc, log = _serve_in(net.srv, tmp_path / "port0", "--port", "0", "--indi-port", "0", "--no-discovery")
    try:
        m = _wait_log(proc, log, r"Alpaca API on http://0\.0\.0\.0:(\d+) and http://\[::\]:(\d+)/api/v1")
        assert m.group(1) == m.group(2), m.group(0)
        port = int(m.group(1))
        got = _reach(net.srv, f"127.0.0.1:{port}", [("127.0.0.1", port, "http"), ("::1", port, "http")])
        assert got == {f"http 127.0.0.1 {port}": [1], f"http ::1 {port}": [1]}, got
    finally:
        netns.stop_process(proc)


@pytest.mark.netns
def test_several_binds_discovery_answers_for_each_and_only_there(net: netns.Lan, tmp_path: Path) -> None:
    a4, a6 = net.v4(0, 1), net.v6(0, 1)  # link 0 only; link 1 (10.78/fd78) must stay silent and closed
    proc, log = _serve_in(net.srv, tmp_path / "binds", "--port", str(PORT), "--bind", a4, "--bind", a6)
    try:
        _wait_log(proc, log, rf"Alpaca API on http://{a4}:{PORT} and http://\[{a6}\]:{PORT}/api/v1")
        _wait_log(proc, log, r"Alpaca discovery answering on UDP port 32227 \(ipv4 and ipv6")
        found = json.loads(net.cli.python(ALPYCA, timeout=30))
        assert found["v4"] == [f"{a4}:{PORT}"], found
        assert len(found["v6"]) == 1 and re.fullmatch(rf"\[{a6}%\d+\]:{PORT}", found["v6"][0]), found
        got = _reach(net.cli, f"{a4}:{PORT}", [(a6, PORT, "http"), (a4, INDI_PORT, "indi"), (a6, INDI_PORT, "indi"),
                                               (net.v4(1, 1), PORT, "http"), (net.v6(1, 1), PORT, "http")])
        assert got[f"http {a6} {PORT}"] == [1] and got[f"indi {a4} {INDI_PORT}"] is True, got
        assert got[f"indi {a6} {INDI_PORT}"] is True, got
        assert "Refused" in got[f"http {net.v4(1, 1)} {PORT}"] and "Refused" in got[f"http {net.v6(1, 1)} {PORT}"], got
    finally:
        netns.stop_process(proc)


@pytest.mark.netns
def test_a_host_without_ipv6_still_starts_on_ipv4(net: netns.Lan, tmp_path: Path) -> None:
    proc, log = _serve_in(net.srv, tmp_path / "noipv6", "--port", str(PORT), python=("-c", NO_IPV6))
    try:
        _wait_log(proc, log, r"IPv6 is not available on this host \(.*\): listening on IPv4 addresses only")
        _wait_log(proc, log, rf"Alpaca API on http://0\.0\.0\.0:{PORT}/api/v1")
        _wait_log(proc, log, r"Alpaca discovery answering on UDP port 32227 \(ipv4\)")
        got = _reach(net.cli, f"{net.v4(0, 1)}:{PORT}", [(net.v4(0, 1), PORT, "http"),
                                                         (net.v4(0, 1), INDI_PORT, "indi")])
        assert got == {f"http {net.v4(0, 1)} {PORT}": [1], f"indi {net.v4(0, 1)} {INDI_PORT}": True}, got
        assert json.loads(net.cli.python(ALPYCA, timeout=30))["v4"] == [f"10.77.0.1:{PORT}", f"10.78.0.1:{PORT}"]
    finally:
        netns.stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_two_binds_answer_on_both_and_nowhere_else(tmp_path: Path) -> None:
    indi = free_port()
    srv = start_server(tmp_path / "two", "--bind", "::1", "--indi-port", str(indi), host="127.0.0.1")
    try:
        assert "--bind" in srv.args and srv.args.count("--bind") == 2, srv.args
        for host in ("127.0.0.1", "[::1]"):
            r = requests.get(f"http://{host}:{srv.port}/management/apiversions", timeout=5)
            assert r.status_code == 200 and r.json()["Value"] == [1], (host, r.text)
            r = requests.get(f"http://{host}:{srv.port}/api/v1/camera/0/name", timeout=5)
            assert "ASI294MC" in r.json()["Value"], r.text
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect((host, indi))
                s.sendall(b"<getProperties version='1.7'/>")
                assert b"<def" in s.recv(65536)
        proc = psutil.Process(srv.pid)
        get = getattr(proc, "net_connections", None) or proc.connections
        tcp = {(c.laddr.ip, c.laddr.port) for c in get(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert tcp == {("127.0.0.1", srv.port), ("::1", srv.port), ("127.0.0.1", indi), ("::1", indi)}, tcp
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", srv.port), timeout=1).close()
        assert f"Alpaca API on http://127.0.0.1:{srv.port} and http://[::1]:{srv.port}/api/v1" in srv.log_text()
    finally:
        srv.stop()
