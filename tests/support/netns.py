"""Throw-away network namespaces for tests that need a real (but private) LAN.

Everything created here lives inside namespaces named after the test process'
PID, so addresses such as 10.77.0.1 exist only there: broadcasts, multicasts
and unicasts sent inside them never reach the host's real interfaces.

Typical use::

    with Lan() as lan:                       # namespaces "srv" and "cli" + one veth link
        proc = lan.srv.popen([sys.executable, "-m", "alpaca_server.discovery", ...])
        out = lan.cli.python("print(1)")

Requires root and iproute2; :func:`unavailable_reason` says why not otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from support.servers import stop_process  # re-exported: tests call netns.stop_process

REPO = Path(__file__).resolve().parents[2]


def unavailable_reason() -> str | None:
    """None if namespaces can be made here, else a human-readable reason to skip."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"zwoa-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], check=False, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return f"'ip netns add' fails here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True, timeout=10)
    return None


def _run(cmd: Sequence[str], timeout: float = 10) -> str:
    r = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


@dataclasses.dataclass
class Netns:
    """One named network namespace; processes started in it are tracked and killed on cleanup."""

    name: str
    procs: list[subprocess.Popen] = dataclasses.field(default_factory=list)

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS`` and return its stdout."""
        return _run(["ip", "-n", self.name, *args])

    def sysctl(self, key: str, value: str) -> None:
        """Set a (per-namespace) sysctl, e.g. ``net/ipv6/conf/default/accept_dad``."""
        _run(["ip", "netns", "exec", self.name, "sh", "-c", f"echo {value} > /proc/sys/{key}"])

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start ``cmd`` inside the namespace (``ip netns exec`` execs, so the PID is the command's)."""
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # HTTP clients in here must talk to the namespace's own hosts, never via a proxy.
        env.update(NO_PROXY="*", no_proxy="*")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(k, None)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], cwd=REPO, env=env, **kw)
        self.procs.append(p)
        return p

    def python(self, code: str, *args: str, timeout: float = 20) -> str:
        """Run Python code (with ``sys.argv[1:] == args``) inside the namespace; returns stdout.

        Raises RuntimeError with the child's stderr if it fails.
        """
        p = self.popen([sys.executable, "-c", code, *args])
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(p, grace=2.0)
            raise
        if p.returncode != 0:
            raise RuntimeError(f"python in {self.name} exited {p.returncode}:\n{err}")
        return out

    def kill_all(self) -> None:
        """Stop every process this object started (by PID), then forget them."""
        for p in self.procs:
            stop_process(p, grace=2.0)
        self.procs.clear()


class Lan:
    """A server namespace and a client namespace joined by one or more veth links.

    Link *k* (0-based) is ``s{k}`` in the server and ``c{k}`` in the client,
    with 10.{77+k}.0.1/24 + fd{77+k}::1/64 on the server side and .2 / ::2 on
    the client side.  IPv6 duplicate address detection is off so that
    addresses, link-local ones included, are usable at once.
    """

    def __init__(self, links: int = 1, tag: str = "") -> None:
        base = f"zwoa{os.getpid()}{tag}"
        self.srv = Netns(base + "s")
        self.cli = Netns(base + "c")
        self.links = links
        self._created: list[Netns] = []

    @staticmethod
    def v4(link: int, host: int) -> str:
        """IPv4 address of ``host`` (1 = server, 2 = client) on ``link``."""
        return f"10.{77 + link}.0.{host}"

    @staticmethod
    def v6(link: int, host: int) -> str:
        """ULA IPv6 address of ``host`` on ``link``."""
        return f"fd{77 + link}::{host}"

    def __enter__(self) -> Lan:
        try:
            for ns in (self.srv, self.cli):
                _run(["ip", "netns", "add", ns.name])
                self._created.append(ns)
                ns.ip("link", "set", "lo", "up")
                for scope in ("all", "default"):
                    ns.sysctl(f"net/ipv6/conf/{scope}/accept_dad", "0")
            for k in range(self.links):
                self.add_link(k)
        except BaseException:
            self.close()
            raise
        return self

    def add_link(self, k: int) -> None:
        """Create link ``k`` (also usable after start, to test interfaces that appear later)."""
        s, c = f"s{k}", f"c{k}"
        self.srv.ip("link", "add", s, "type", "veth", "peer", "name", c, "netns", self.cli.name)
        for ns, dev, host in ((self.srv, s, 1), (self.cli, c, 2)):
            ns.sysctl(f"net/ipv6/conf/{dev}/accept_dad", "0")
            ns.ip("addr", "add", f"{self.v4(k, host)}/24", "dev", dev)
            ns.ip("-6", "addr", "add", f"{self.v6(k, host)}/64", "dev", dev, "nodad")
            ns.ip("link", "set", dev, "up")
        # The link-local address appears once both ends are up; wait (bounded).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all("fe80::" in ns.ip("-6", "addr", "show", "dev", d) for ns, d in ((self.srv, s), (self.cli, c))):
                return
            time.sleep(0.05)
        raise RuntimeError(f"no IPv6 link-local address on {s}/{c}")

    def close(self) -> None:
        """Kill our processes and delete our namespaces (which removes the veths too)."""
        for ns in (self.srv, self.cli):
            ns.kill_all()
        for ns in self._created:
            subprocess.run(["ip", "netns", "del", ns.name], check=False, capture_output=True, timeout=10)
        self._created.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
