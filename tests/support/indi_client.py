"""Helpers shared by the INDI tests (no tests here): INDI clients and a server fixture factory.

* `PyIndiClient`: libindi's own client library (pyindi-client), recording every property event.
* `RawIndi`: a plain socket client for what the client library hides (exact bytes, ordering,
  bad input, BLOB modes).
* `start_indi_server()`: ``zwo-alpaca serve`` with the INDI shim on a free port (a subprocess, via
  `support.servers.start_server`), so Alpaca and INDI share cameras exactly as in production.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.servers import ServerProcess, free_port, start_server, wait_port  # wait_port: re-exported

try:
    import PyIndi
except Exception:  # noqa: BLE001 - pragma: no cover; a broken libindi build fails in many ways, all mean "absent"
    PyIndi = None

needs_pyindi = pytest.mark.skipif(PyIndi is None,
                                  reason="pyindi-client is not installed (pip install --no-deps pyindi-client)")

DEV294 = "ZWO CCD ASI294MC Pro"
_KEEP_ALIVE: list[Any] = []
DEV120 = "ZWO CCD ASI120MM Mini"


@dataclass
class IndiServer:
    server: ServerProcess
    indi_port: int
    upload_dir: Path

    @property
    def port(self) -> int:
        return self.indi_port


def start_indi_server(workdir: Path, simulator: str = "asi294mc-pro,asi120mm-mini") -> IndiServer:
    """zwo-alpaca serve with INDI on a free port and local uploads allowed under workdir/uploads."""
    indi_port = free_port()
    uploads = workdir / "uploads"
    server = start_server(workdir, "--indi-port", str(indi_port), simulator=simulator,
                          env={"ZWO_ALPACA_UPLOAD_DIR": str(uploads)})
    try:
        wait_port(indi_port)
    except TimeoutError:
        server.stop()
        raise RuntimeError(f"INDI port {indi_port} never opened:\n{server.log_text()}") from None
    return IndiServer(server, indi_port, uploads)


def indiserver_command(port: int, *drivers: str, options: tuple[str, ...] = ()) -> list[str]:
    """libindi's ``indiserver`` on TCP ``port`` with a private local socket (``-u``): without one every
    indiserver binds the default ``/tmp/indiserver`` and a second one fails with "bind: Address already
    in use" - so the tests pass while the Pi's own indiserver runs. The name is abstract (nothing on
    disk) and short: indiserver cannot bind one longer than 107 bytes (a deep tmp_path would not do).
    ``options`` (e.g. ``("-m", "512")``) go before the drivers, where indiserver reads options."""
    local = f"/tmp/indiserver-test-{os.getpid()}-{port}"
    return ["indiserver", "-p", str(port), "-u", local, *options, *drivers]


def definitions(raw: bytes) -> dict[str, dict[str, dict[str, str]]]:
    """Every def*Vector in ``raw``: device -> property -> its attributes, plus "kind" (Switch,
    Number...), "members" (member names, comma-separated) and "body" (the XML inside)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for m in re.finditer(rb"<def(\w+)Vector ([^>]*)>(.*?)</def\1Vector>", raw, re.S):
        attrs = {k.decode(): v.decode() for k, v in re.findall(rb'(\w+)="([^"]*)"', m.group(2))}
        attrs["kind"] = m.group(1).decode()
        attrs["members"] = ",".join(x.decode() for x in re.findall(rb'<def\w+ name="([^"]+)"', m.group(3)))
        attrs["body"] = m.group(3).decode()
        out.setdefault(attrs["device"], {})[attrs["name"]] = attrs
    return out


# ------------------------------------------------------------------------------------- PyIndi
@dataclass
class Event:
    kind: str  # "new", "update", "remove", "message"
    device: str
    name: str
    state: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    perm: int | None = None
    ptype: int | None = None
    t: float = field(default_factory=time.monotonic)


def _snapshot(prop: Any) -> tuple[dict[str, Any], str]:
    t = prop.getType()
    values: dict[str, Any] = {}
    if t == PyIndi.INDI_NUMBER:
        for m in PyIndi.PropertyNumber(prop):
            values[m.getName()] = (m.getValue(), m.getMin(), m.getMax())
    elif t == PyIndi.INDI_SWITCH:
        for m in PyIndi.PropertySwitch(prop):
            values[m.getName()] = m.getState() == PyIndi.ISS_ON
    elif t == PyIndi.INDI_TEXT:
        for m in PyIndi.PropertyText(prop):
            values[m.getName()] = m.getText()
    elif t == PyIndi.INDI_BLOB:
        for m in PyIndi.PropertyBlob(prop):
            if m.getFormat().endswith((".z", ".fz")) and m.getSize() != m.getBlobLen():
                # A compressed BLOB: `size` is the uncompressed length, and pyindi-client's getblobdata
                # reads `size` bytes of a shorter buffer; keep only what a test can trust.
                values[m.getName()] = (m.getFormat(), None)
                continue
            data = m.getblobdata() if m.getSize() else b""
            values[m.getName()] = (m.getFormat(), bytes(data))
    return values, prop.getStateAsString()


if PyIndi is not None:
    class PyIndiClient(PyIndi.BaseClient):
        """libindi's client with an event log and waits on it (callbacks run on libindi's thread)."""

        def __init__(self, port: int, host: str = "127.0.0.1") -> None:
            super().__init__()
            self.events: list[Event] = []
            self.cond = threading.Condition()
            self.setServer(host, port)
            if not self.connectServer():
                raise ConnectionError(f"PyIndi cannot connect to {host}:{port}")

        def _add(self, ev: Event) -> None:
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

        def newProperty(self, prop: Any) -> None:  # noqa: N802 - libindi's API
            values, state = _snapshot(prop)
            self._add(Event("new", prop.getDeviceName(), prop.getName(), state, values, prop.getPermission(),
                            prop.getType()))

        def updateProperty(self, prop: Any) -> None:  # noqa: N802
            values, state = _snapshot(prop)
            self._add(Event("update", prop.getDeviceName(), prop.getName(), state, values, prop.getPermission(),
                            prop.getType()))

        def removeProperty(self, prop: Any) -> None:  # noqa: N802
            self._add(Event("remove", prop.getDeviceName(), prop.getName()))

        def newMessage(self, device: Any, message_id: int) -> None:  # noqa: N802
            self._add(Event("message", device.getDeviceName(), "", values={"text": device.messageQueue(message_id)}))

        # ---- waiting
        def wait_event(self, pred: Callable[[Event], object], timeout: float = 10.0, since: int = 0) -> Event:
            deadline = time.monotonic() + timeout
            with self.cond:
                while True:
                    for ev in self.events[since:]:
                        if pred(ev):
                            return ev
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no matching INDI event within {timeout} s; last: "
                                           f"{[(e.kind, e.name, e.state) for e in self.events[-8:]]}")
                    self.cond.wait(left)

        def wait_new(self, device: str, name: str, timeout: float = 10.0) -> Event:
            """Wait for our own record of a property definition (callbacks can trail getDevice())."""
            return self.wait_event(lambda e: e.kind == "new" and e.device == device and e.name == name, timeout)

        def mark(self) -> int:
            with self.cond:
                return len(self.events)

        def since(self, mark: int) -> list[Event]:
            with self.cond:
                return list(self.events[mark:])

        def wait_prop(self, device: str, name: str, timeout: float = 10.0) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                dev = self.getDevice(device)
                if dev is not None and dev.isValid():
                    prop = dev.getProperty(name)
                    if prop is not None and prop.isValid():
                        return prop
                time.sleep(0.05)
            raise TimeoutError(f"{device}.{name} never appeared")

        # ---- sending
        def set_switch(self, device: str, name: str, on: str, *, extra_off: bool = True) -> None:
            sp = PyIndi.PropertySwitch(self.wait_prop(device, name))
            for m in sp:
                if m.getName() == on:
                    m.setState(PyIndi.ISS_ON)
                elif extra_off:
                    m.setState(PyIndi.ISS_OFF)
            self.sendNewSwitch(sp)

        def set_numbers(self, device: str, name: str, **values: float) -> None:
            np_ = PyIndi.PropertyNumber(self.wait_prop(device, name))
            for m in np_:
                if m.getName() in values:
                    m.setValue(float(values[m.getName()]))
            self.sendNewNumber(np_)

        def set_texts(self, device: str, name: str, **values: str) -> None:
            tp = PyIndi.PropertyText(self.wait_prop(device, name))
            for m in tp:
                if m.getName() in values:
                    m.setText(values[m.getName()])
            self.sendNewText(tp)

        def connect_device(self, device: str, timeout: float = 15.0) -> None:
            self.wait_prop(device, "CONNECTION")
            mark = self.mark()
            self.set_switch(device, "CONNECTION", "CONNECT")
            self.wait_event(lambda e: e.device == device and e.name == "CONNECTION" and e.state == "Ok"
                            and bool(e.values.get("CONNECT")), timeout, mark)
            self.wait_prop(device, "CCD_EXPOSURE", timeout)

        def close(self) -> None:
            try:
                self.disconnectServer()
                deadline = time.monotonic() + 3
                while self.isServerConnected() and time.monotonic() < deadline:
                    time.sleep(0.02)
            except Exception:  # noqa: BLE001 - teardown of a client whose server may be gone already
                pass
            # Never let the C++ client be destroyed: libindi's listener thread may still be running
            # its last callback into this (SWIG director) object, and freeing it under that thread
            # aborts the whole test process. A few idle objects per session cost nothing.
            _KEEP_ALIVE.append(self)
else:  # pragma: no cover
    PyIndiClient = None  # type: ignore[assignment,misc]


# ------------------------------------------------------------------------------------- raw socket
class RawIndi:
    """A bare INDI client on a socket: send XML text, collect everything received."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                d = self.sock.recv(1 << 20)
                if not d:
                    break
                with self.lock:
                    self.buf += d
        except OSError:
            pass
        self.closed = True

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def text(self) -> bytes:
        with self.lock:
            return bytes(self.buf)

    def wait_for(self, needle: bytes, timeout: float = 10.0, start: int = 0) -> int:
        """Offset of `needle` in what was received (from `start`), waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                i = self.buf.find(needle, start)
            if i >= 0:
                return i
            if self.closed:
                break
            time.sleep(0.02)
        raise TimeoutError(f"{needle[:80]!r} not received within {timeout} s (closed={self.closed}); "
                           f"tail: {self.text()[-300:]!r}")

    def size(self) -> int:
        with self.lock:
            return len(self.buf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def blob_payloads(data: bytes) -> list[tuple[str, bytes]]:
    """Decoded (format, payload) of every complete setBLOBVector in raw INDI output."""
    out = []
    pos = 0
    while True:
        i = data.find(b"<oneBLOB", pos)
        if i < 0:
            break
        j = data.find(b"</oneBLOB>", i)
        if j < 0:
            break
        head_end = data.find(b">", i) + 1
        head = data[i:head_end].decode()
        fmt = head.split('format="', 1)[1].split('"', 1)[0] if 'format="' in head else ""
        out.append((fmt, base64.b64decode(data[head_end:j].replace(b"\n", b"").replace(b" ", b""))))
        pos = j
    return out
