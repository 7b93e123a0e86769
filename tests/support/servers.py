"""Server subprocesses and small waits shared by the tests and the benchmarks.

* :func:`start_server` / :class:`ServerProcess`: a ``python -m zwo_runtime serve`` on a free
  loopback port with a private config file, simulator lock directory and log file under
  ``workdir``; always stopped by PID (SIGTERM, then SIGKILL).
* :func:`free_port`, :func:`wait_port`, :func:`wait_until`: ports and polling.
* :func:`stop_process`: stopping a process the tests started, by PID (SIGTERM, then SIGKILL).
* :func:`alpaca_get` / :func:`alpaca_put` / :func:`reset_camera`: plain HTTP calls on a server.

Nothing here is a pytest fixture (those are in ``tests/conftest.py``), and pytest is imported only
when :func:`wait_until` fails, so the benchmarks (``bench/_common.py``) use this module too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIMULATOR = "asi294mc-pro,asi120mm-mini"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(p: subprocess.Popen, grace: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop a process the tests started, by its PID only: ``sig`` (SIGTERM), then SIGKILL after
    ``grace`` seconds; its pipes are closed. Returns its exit status (None if it would not die)."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    for f in (p.stdout, p.stderr, p.stdin):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    return p.returncode


class Server:
    """Where a server answers, from its ``host`` and ``port``: a subprocess (`ServerProcess`) or an
    in-process one (`support.inprocess.InProcessServer`)."""

    host: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` (what alpyca's device classes take)."""
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return self.base_url + path

    def api(self, n: int, member: str) -> str:
        """URL of a camera member, e.g. ``api(0, "connected")``."""
        return self.url(f"/api/v1/camera/{n}/{member}")


@dataclass
class ServerProcess(Server):
    """A running ``python -m zwo_runtime serve`` and where to reach it."""

    proc: subprocess.Popen
    host: str
    port: int
    workdir: Path
    log_path: Path
    config_path: Path
    args: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the server log."""
        return "\n".join(self.log_text().splitlines()[-n:])

    @property
    def pid(self) -> int:
        """The server's process id (for /proc sampling; signals go through :meth:`stop`)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the server (by PID) and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(
    workdir: Path,
    *extra: str,
    simulator: str | None = DEFAULT_SIMULATOR,
    port: int | None = None,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    log_level: str | None = "info",
    discovery: bool = False,
) -> ServerProcess:
    """Start a server and wait until ``/management/apiversions`` answers.

    ``log_level``: passed as ``--log-level`` (None: leave it to the server, i.e. $ZWO_ALPACA_LOG_LEVEL).
    ``discovery``: leave Alpaca discovery on (pass ``--discovery-port``; with the default loopback
    ``host`` the responder binds 127.0.0.1 only).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    config = workdir / "config.json"
    log_path = workdir / "server.log"
    args = [sys.executable, "-m", "zwo_runtime", "serve", "--bind", host, "--port", str(port),
            "--indi-port", "0", "--config", str(config)]
    if log_level is not None:
        args += ["--log-level", log_level]
    if not discovery:
        args.append("--no-discovery")
    if simulator:
        args += ["--simulator", simulator]
    args += list(extra)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env["ZWO_ALPACA_SIM_LOCK_DIR"] = str(workdir / "sim-locks")
    full_env.pop("JOURNAL_STREAM", None)
    if env:
        full_env.update(env)
    log_fh = open(log_path, "wb")
    # Own session: a Ctrl-C in the terminal reaches pytest only, and tests can signal the group.
    proc = subprocess.Popen(args, cwd=str(REPO), env=full_env, stdout=log_fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log_fh.close()
    server = ServerProcess(proc, host, port, workdir, log_path, config, args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
        try:
            r = requests.get(server.url("/management/apiversions"), timeout=1)
            if r.status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not answer within {timeout} s:\n{server.log_text()}")


def alpaca_put(server: Server, n: int, member: str, timeout: float = 10.0, **params: object) -> dict:
    """PUT a member with exactly-cased parameters; returns the JSON envelope (asserts HTTP 200)."""
    data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
    r = requests.put(server.api(n, member), data=data, timeout=timeout)
    assert r.status_code == 200, f"PUT {member} -> {r.status_code}: {r.text}"
    return r.json()


def alpaca_get(server: Server, n: int, member: str, timeout: float = 10.0, **params: Any) -> dict:
    """GET a member; returns the JSON envelope (asserts HTTP 200)."""
    r = requests.get(server.api(n, member), params=params, timeout=timeout)
    assert r.status_code == 200, f"GET {member} -> {r.status_code}: {r.text}"
    return r.json()


def reset_camera(server: Server, n: int, connected: bool = True) -> None:
    """Put a shared camera back to a known state: connected, idle, full frame, bin 1, mode 0."""
    alpaca_put(server, n, "connected", Connected=True)
    alpaca_put(server, n, "abortexposure")
    deadline = time.monotonic() + 10
    while alpaca_get(server, n, "camerastate")["Value"] not in (0,) and time.monotonic() < deadline:
        time.sleep(0.05)
    alpaca_put(server, n, "binx", BinX=1)
    alpaca_put(server, n, "startx", StartX=0)
    alpaca_put(server, n, "starty", StartY=0)
    alpaca_put(server, n, "numx", NumX=alpaca_get(server, n, "cameraxsize")["Value"])
    alpaca_put(server, n, "numy", NumY=alpaca_get(server, n, "cameraysize")["Value"])
    alpaca_put(server, n, "readoutmode", ReadoutMode=0)
    if not connected:
        alpaca_put(server, n, "connected", Connected=False)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll ``predicate`` until it returns a truthy value (returned); fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            import pytest  # here, not at the top: benchmarks import this module without pytest

            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``host:port``; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} never opened")
