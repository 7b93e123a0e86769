"""``serve --bind``: the HTTP and INDI servers listen on that address only (checked on the process's
own sockets with psutil, and by connecting).

The discovery responder is the one exception, by design: IPv4 broadcasts only reach a socket bound to
the wildcard address, so it binds 0.0.0.0 on the discovery port and answers only queries that arrived
on the interface holding ``--bind``'s address (``IP_PKTINFO``; see docs/discovery.md and
docs/security.md). The test checks that this is its only wildcard socket."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest
import requests

from support.servers import free_port, start_server


def _sockets(pid: int) -> list:
    proc = psutil.Process(pid)
    get = getattr(proc, "net_connections", None) or proc.connections
    return [c for c in get(kind="inet") if c.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("bind, other", [("127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.1")])
def test_bind_restricts_every_listener(tmp_path: Path, bind: str, other: str) -> None:
    indi = free_port(bind)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        disc = u.getsockname()[1]
    srv = start_server(tmp_path / "srv", "--indi-port", str(indi), "--discovery-port", str(disc), host=bind,
                       discovery=True)
    try:
        assert "INDI server on port" in srv.log_text(), "the INDI server should be listening for this test"
        socks = _sockets(srv.proc.pid)
        tcp = {(c.laddr.ip, c.laddr.port) for c in socks if c.type == socket.SOCK_STREAM}
        udp = {(c.laddr.ip, c.laddr.port) for c in socks if c.type == socket.SOCK_DGRAM}
        assert (bind, srv.port) in tcp and (bind, indi) in tcp, tcp
        assert {ip for ip, _ in tcp} == {bind}, f"listening beyond {bind}: {tcp}"
        assert udp and {port for _, port in udp} == {disc}, f"UDP sockets other than discovery's: {udp}"
        # Connecting proves it too: the same ports on another loopback address are closed.
        assert requests.get(f"http://{bind}:{srv.port}/management/apiversions", timeout=5).status_code == 200
        assert _reachable(bind, indi)
        assert not _reachable(other, srv.port) and not _reachable(other, indi)
    finally:
        srv.stop()
