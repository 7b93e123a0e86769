"""Helpers for the fault-matrix tests (no tests here): a server with Alpaca and INDI on the same
simulated camera, a bounded-time Alpaca client, a raw INDI client, probes and raw HTTP sockets.

Every request made through these helpers carries a timeout, and the time each one took is kept, so
a test can assert that every request was answered, and how fast (docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support.indi_client import RawIndi, wait_port
from support.servers import REPO, ServerProcess, free_port, start_server

MODEL = "asi294mc-pro"
DEV = "ZWO CCD ASI294MC Pro"
CAMERA_NAME = "ZWO ASI294MC Pro"
FULL = (4144, 2822)
# Bounds the tests hold the server to (loaded 2-core CI machines included).
POLL_BOUND_S = 1.0  # a poll (status read) answers within this
CALL_BOUND_S = 3.0  # any other request answers within this, camera gone or not
RECOVERY_BOUND_S = 8.0  # replug -> idle again (backoff cap 5 s + reconnect)

NOT_CONNECTED, INVALID_OPERATION, DRIVER_ERROR, CAMERA_GONE = 0x407, 0x40B, 0x500, 0x501
IDLE, EXPOSING, READING, ERROR = 0, 2, 3, 5

NUM = '<newNumberVector device="{d}" name="{p}">{m}</newNumberVector>'
SW = '<newSwitchVector device="{d}" name="{p}"><oneSwitch name="{m}">On</oneSwitch></newSwitchVector>'


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``pred`` until true; returns the seconds it took, fails the test after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


@dataclass
class Rig:
    """One ``zwo-alpaca serve`` (simulated ASI294MC Pro, Alpaca + INDI) and bounded clients for it."""

    server: ServerProcess
    indi_port: int
    session: requests.Session = field(default_factory=requests.Session)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    @property
    def lock_dir(self) -> Path:
        return self.server.workdir / "sim-locks"

    # ------------------------------------------------------------------ Alpaca
    def _call(self, method: str, member: str, timeout: float, params: dict[str, Any]) -> dict:
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
        t0 = time.perf_counter()
        if method == "GET":
            r = self.session.get(self.server.api(0, member), params=data, timeout=timeout)
        else:
            r = self.session.put(self.server.api(0, member), data=data, timeout=timeout)
        dt = time.perf_counter() - t0
        self.latencies.append((f"{method} {member}", dt))
        assert r.status_code == 200, f"{method} {member} -> HTTP {r.status_code}: {r.text[:200]}"
        body = r.json()
        body["_seconds"] = dt
        return body

    def get(self, member: str, timeout: float = CALL_BOUND_S, **params: Any) -> dict:
        return self._call("GET", member, timeout, params)

    def put(self, member: str, timeout: float = CALL_BOUND_S, **params: Any) -> dict:
        return self._call("PUT", member, timeout, params)

    def ok(self, member: str, **params: Any) -> Any:
        """PUT that must succeed; returns the Value (if any)."""
        body = self.put(member, **params)
        assert body["ErrorNumber"] == 0, f"PUT {member} {params}: {body['ErrorNumber']:#x} {body['ErrorMessage']}"
        return body.get("Value")

    def value(self, member: str, bound: float = CALL_BOUND_S) -> Any:
        body = self.get(member, timeout=bound)
        assert body["ErrorNumber"] == 0, f"GET {member}: {body['ErrorNumber']:#x} {body['ErrorMessage']}"
        assert body["_seconds"] < bound, f"GET {member} took {body['_seconds']:.2f} s"
        return body["Value"]

    def poll(self, member: str = "camerastate") -> Any:
        """A status read: must answer within POLL_BOUND_S whatever the camera is doing."""
        return self.value(member, POLL_BOUND_S)

    def action(self, name: str, params: dict[str, Any] | None = None) -> str:
        return self.ok("action", Action=name, Parameters=json.dumps(params) if params is not None else "")

    def camera_state(self) -> dict:
        """The simulated camera's SDK-side state (controls, ROI, cooler)."""
        return json.loads(self.action("sim.camera_state"))

    def record(self) -> dict:
        return json.loads(self.action("sim.record"))

    def unplug(self) -> None:
        self.action("sim.unplug")

    def replug_and_recover(self) -> float:
        """Replug; seconds until the core has reconnected (CameraState no longer Error)."""
        self.action("sim.replug")
        t0 = time.monotonic()
        wait_until(lambda: self.poll() != ERROR and not self.value("connecting"), RECOVERY_BOUND_S,
                   "reconnect after replug")
        return time.monotonic() - t0

    def expose(self, seconds: float = 0.05, timeout: float = 15.0) -> None:
        self.ok("startexposure", Duration=seconds, Light=True)
        wait_until(lambda: self.poll("imageready"), timeout, "ImageReady")

    def image_bytes(self, timeout: float = 20.0) -> tuple[dict[str, int], bytes]:
        """The current image as ImageBytes: (header fields, pixel bytes)."""
        r = self.session.get(self.server.api(0, "imagearray"), headers={"Accept": "application/imagebytes"},
                             timeout=timeout)
        assert r.status_code == 200
        return parse_imagebytes(r.content)

    def full_frame(self, mode: int = 0) -> None:
        self.ok("binx", BinX=1)
        self.ok("startx", StartX=0)
        self.ok("starty", StartY=0)
        self.ok("numx", NumX=FULL[0])
        self.ok("numy", NumY=FULL[1])
        self.ok("readoutmode", ReadoutMode=mode)

    def connect(self) -> None:
        self.ok("connected", Connected=True)

    def restore(self) -> None:
        """After a case: cable in, connected, recovered, no exposure, full frame, cooler off."""
        self.action("sim.replug")
        self.connect()
        wait_until(lambda: self.poll() != ERROR, 10, "recovered after the test")
        self.put("abortexposure")
        self.full_frame(0)
        self.ok("cooleron", CoolerOn=False)

    def finish(self) -> None:
        """End of a module: stop the server, write the fault-matrix report, no traceback logged."""
        self.server.stop()
        write_report()
        assert "Traceback" not in self.server.log_text()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.server.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    # ------------------------------------------------------------------ the rest of the world
    def lock_free(self) -> bool:
        """Whether the camera's lock file can be taken at once (nobody holds the camera)."""
        path = self.lock_dir / f"{self.camera_state()['serial']}.lock"
        return lock_is_free(path)

    def probe_open(self) -> subprocess.CompletedProcess:
        """Another program opens the camera (`python -m driver.simulator hold ... --seconds 0`)."""
        return subprocess.run([sys.executable, "-m", "driver.simulator", "hold", MODEL, "--seconds", "0",
                               "--lock-dir", str(self.lock_dir)], cwd=str(REPO), capture_output=True, text=True,
                              timeout=20, env=_env())

    def hold(self) -> subprocess.Popen:
        """Another program keeps the camera open until terminated (it has printed "holding ...")."""
        proc = subprocess.Popen([sys.executable, "-m", "driver.simulator", "hold", MODEL, "--seconds", "60",
                                 "--lock-dir", str(self.lock_dir)], cwd=str(REPO), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env())
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("holding"), (line, proc.stderr.read() if proc.stderr else "")
        return proc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def lock_is_free(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def start_rig(workdir: Path, *extra: str) -> Rig:
    indi_port = free_port()
    server = start_server(workdir, "--indi-port", str(indi_port), *extra, simulator=MODEL)
    try:
        wait_port(indi_port)
    except TimeoutError:
        server.stop()
        raise RuntimeError(f"INDI port never opened:\n{server.log_text()}") from None
    return Rig(server, indi_port)


def parse_imagebytes(body: bytes) -> tuple[dict[str, int], bytes]:
    names = ("MetadataVersion", "ErrorNumber", "ClientTransactionID", "ServerTransactionID", "DataStart",
             "ImageElementType", "TransmissionElementType", "Rank", "Dimension1", "Dimension2", "Dimension3")
    hdr = dict(zip(names, struct.unpack_from("<11i", body)))
    return hdr, body[hdr["DataStart"]:]


# ------------------------------------------------------------------------------------- INDI
class Indi(RawIndi):
    """A raw INDI client on the rig's camera, with the few requests the fault tests make."""

    def __init__(self, port: int, blobs: bool = False) -> None:
        super().__init__(port)
        self.send(f'<getProperties version="1.7" device="{DEV}"/>')
        self.sock.settimeout(None)  # RawIndi's reader would give up after 10 quiet seconds
        if blobs:
            self.send(f'<enableBLOB device="{DEV}">Also</enableBLOB>')
        self.wait_for(b'name="CONNECTION"', 10)

    def numbers(self, prop: str, **members: float | str) -> int:
        mark = self.size()
        body = "".join(f'<oneNumber name="{k}">{v}</oneNumber>' for k, v in members.items())
        self.send(NUM.format(d=DEV, p=prop, m=body))
        return mark

    def switch(self, prop: str, member: str) -> int:
        mark = self.size()
        self.send(SW.format(d=DEV, p=prop, m=member))
        return mark

    def expect(self, pattern: bytes, mark: int, timeout: float = CALL_BOUND_S) -> tuple[float, bytes]:
        """Wait for a regex after ``mark``; returns (seconds waited, the match)."""
        rx = re.compile(pattern, re.S)
        t0 = time.monotonic()
        while True:
            m = rx.search(self.text(), mark)
            if m:
                return time.monotonic() - t0, m.group(0)
            if time.monotonic() - t0 > timeout:
                tail = re.sub(rb"<oneBLOB[^>]*>[^<]*", b"<oneBLOB...>", self.text()[mark:])[-800:]
                raise AssertionError(f"INDI: {pattern!r} not received within {timeout} s; got {tail!r}")
            time.sleep(0.01)

    def state(self, prop: str, state: str, mark: int, timeout: float = CALL_BOUND_S) -> tuple[float, bytes]:
        return self.expect(rb'<set\w+Vector [^>]*name="%s" state="%s"[^>]*>' % (prop.encode(), state.encode()),
                           mark, timeout)

    def connect(self) -> None:
        mark = self.switch("CONNECTION", "CONNECT")
        self.state("CONNECTION", "Ok", mark, 15)
        self.wait_for(b'name="CCD_EXPOSURE"', 10)  # defined now, or already before (connected elsewhere)

    def expose(self, seconds: float, timeout: float = 20.0) -> bytes:
        """Expose over INDI; returns the FITS bytes of the BLOB (BLOBs must be enabled)."""
        import base64

        mark = self.numbers("CCD_EXPOSURE", CCD_EXPOSURE_VALUE=seconds)
        self.state("CCD_EXPOSURE", "Ok", mark, timeout)
        data = self.text()[mark:]
        i = data.rfind(b"<oneBLOB")
        assert i >= 0, "no BLOB before CCD_EXPOSURE Ok"
        j = data.find(b"</oneBLOB>", i)
        return base64.b64decode(data[data.find(b">", i) + 1:j])


def fits_header(fits: bytes) -> dict[str, str]:
    out = {}
    for k in range(0, 2880 * 4, 80):
        card = fits[k:k + 80].decode("ascii", "replace")
        if card.startswith("END"):
            break
        if card[8:10] == "= ":
            out[card[:8].strip()] = card[10:].split("/")[0].strip().strip("'").strip()
    return out


# ------------------------------------------------------------------------------------- raw HTTP
def raw_get(port: int, path: str, accept: str | None = None, rcvbuf: int | None = None) -> socket.socket:
    """A GET on a bare socket (the caller reads, paces and closes it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    extra = f"Accept: {accept}\r\n" if accept else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    return sock


def read_head(sock: socket.socket) -> tuple[int, int, bytes]:
    """(status, Content-Length, body bytes already received) of a response on a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the headers: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return status, int(m.group(1)) if m else -1, rest


def reset_close(sock: socket.socket) -> None:
    """Drop the connection the rude way (RST), as a client whose Wi-Fi died and came back would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Poller(threading.Thread):
    """Another client polling CameraState over its own connection; records every latency."""

    def __init__(self, server: ServerProcess, member: str = "camerastate", interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.server, self.member, self.interval = server, member, interval
        self.stop_event = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        s = requests.Session()
        while not self.stop_event.is_set():
            t0 = time.perf_counter()
            try:
                r = s.get(self.server.api(0, self.member), timeout=5)
                if r.status_code != 200 or r.json()["ErrorNumber"] != 0:
                    self.failures.append(r.text[:120])
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - t0)
            self.stop_event.wait(self.interval)
        s.close()

    def finish(self) -> tuple[float, float]:
        """Stop; (p99, max) latency in seconds; fails if any poll failed or none was made."""
        self.stop_event.set()
        self.join(10)
        assert self.latencies, "the poller made no request"
        assert not self.failures, self.failures[:3]
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]


# ------------------------------------------------------------------------------------- measurements
REPORT: dict[str, dict[str, Any]] = {}


def note(case: str, front: str, **values: Any) -> None:
    """Keep a measured outcome for docs/reliability.md (written when $ZWO_ALPACA_FAULT_REPORT is set)."""
    REPORT.setdefault(case, {})[front] = {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}


def write_report() -> None:
    path = os.environ.get("ZWO_ALPACA_FAULT_REPORT")
    if not path or not REPORT:
        return
    p = Path(path)
    old = json.loads(p.read_text()) if p.exists() else {}
    for case, fronts in REPORT.items():
        old.setdefault(case, {}).update(fronts)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
