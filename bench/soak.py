#!/usr/bin/env python3
"""Soak test of ``zwo-alpaca serve``: a night's traffic, squeezed, with cables being pulled.

Starts its own server (simulated ASI294MC Pro + two ASI120MM Minis, Alpaca and INDI, private lock
directory and config) and runs, for ``--seconds`` (default 600; it stops by itself):

* 8 Alpaca clients polling state (CameraState, ImageReady, PercentCompleted, DeviceState,
  CCDTemperature, Connected) of cameras 0 and 1, each on its own keep-alive connection;
* an Alpaca imaging client on camera 0 (ASI294MC Pro, full 4144x2822 frames): expose, wait, and
  let the downloaders fetch the frame: 2 with ImageBytes and 1 with JSON;
* an INDI client exposing on camera 1 (ASI120MM Mini) and receiving every FITS BLOB;
* connect/disconnect cycles on camera 2 (the second Mini), alternately over Alpaca and over INDI,
  each with an exposure;
* random unplug/replug (seeded: ``--seed``) of cameras 0 and 1: immediate, or armed for the next
  exposure's exposure or readout phase, replugged 0.3-2 s later.

The run is split into cycles. At the end of each cycle every client stops and closes its
connections, every camera is plugged in and recovered, and the server is sampled at rest: RSS
(lowest of three samples), thread count and thread names (``sim.threads``). The first cycle is the
warm-up; leak growth is the lowest RSS over the last third of the cycles minus the lowest over
the first third after the warm-up (a frame buffer coming and going is not a leak; a slope is).
Threads: the server's thread pools start workers lazily up to a fixed maximum, so pool workers
(``<prefix>_<n>``) are reported per pool, and every other thread must be back to its count at the
end of the warm-up.

At the end: the simulator's open handles (``sim.record``), then SIGTERM, the exit status and time,
and the lock directory (no camera may be held by anyone after the exit).

Reports requests served, errors by kind (expected ones are those a pulled cable causes, listed in
EXPECTED), exposures completed, p50/p99 polling latency, RSS and threads at start and end, open
handles. Prints a table and writes JSON (default bench/results/soak.json). Exit status 0 when the
verdict is clean, 1 otherwise.

Usage:  .venv/bin/python bench/soak.py [--seconds 600] [--seed 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from _common import free_port  # noqa: E402 - shared with the tests (tests/support/servers.py)

MODELS = "asi294mc-pro,asi120mm-mini,asi120mm-mini"
CAM_IMAGING, CAM_INDI, CAM_CYCLE = 0, 1, 2
DEV_INDI, DEV_CYCLE = "ZWO CCD ASI120MM Mini", "ZWO CCD ASI120MM Mini 1"
FULL = (4144, 2822)
POLL_MEMBERS = ("camerastate", "imageready", "percentcompleted", "devicestate", "ccdtemperature", "connected")
# Error kinds a pulled cable legitimately causes, and why. Anything else is a finding.
EXPECTED = {
    "alpaca:0x501": "a camera call while the camera is unplugged / reconnecting (CameraGone)",
    "alpaca:0x40B": "ImageArray after the exposure was lost to an unplug (no image ready)",
    "indi:alert:CCD_EXPOSURE": "an INDI exposure lost to an unplug, or requested while unplugged",
    "exposure_lost": "an Alpaca exposure lost to an unplug (CameraState went to Error)",
}
POOL_RE = re.compile(r"^(.*)_(\d+)$")


# ------------------------------------------------------------------------------------- stats
class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.poll_latency: list[float] = []
        self.exposures: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.download_bytes = 0
        self.unplugs: Counter[str] = Counter()
        self.indi_lag: list[float] = []

    def ok(self, proto: str, n: int = 1) -> None:
        with self.lock:
            self.requests[proto] += n

    def error(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.errors[kind] += 1
            self.examples.setdefault(kind, detail[:3000])

    def count(self, what: Counter[str], key: str, n: int = 1) -> None:
        with self.lock:
            what[key] += n


# ------------------------------------------------------------------------------------- server
class Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.indi_port = free_port(), free_port()
        self.lock_dir = workdir / "sim-locks"
        self.log_path = workdir / "server.log"
        env = dict(os.environ, ZWO_ALPACA_SIM_LOCK_DIR=str(self.lock_dir),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("JOURNAL_STREAM", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zwo_runtime", "serve", "--bind", "127.0.0.1", "--port", str(self.port),
                 "--indi-port", str(self.indi_port), "--no-discovery", "--simulator", MODELS,
                 "--config", str(workdir / "config.json")],
                cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_path.read_text()}")
            try:
                requests.get(self.url("/management/apiversions"), timeout=1)
                socket.create_connection(("127.0.0.1", self.indi_port), timeout=1).close()
                break
            except (requests.RequestException, OSError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.1)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, n: int, member: str) -> str:
        return self.url(f"/api/v1/camera/{n}/{member}")

    def proc_status(self) -> dict[str, float]:
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "Threads:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
        return {"rss_mb": out["VmRSS"] / 1024, "threads": out["Threads"]}

    def action(self, n: int, name: str, params: dict | None = None, timeout: float = 10) -> Any:
        r = requests.put(self.api(n, "action"), data={"Action": name, "Parameters": json.dumps(params) if params
                                                      else ""}, timeout=timeout)
        body = r.json()
        if body["ErrorNumber"]:
            raise RuntimeError(f"{name}: {body['ErrorMessage']}")
        value = body["Value"]
        return json.loads(value) if value[:1] in "[{" else value

    def put(self, n: int, member: str, timeout: float = 10, **params: Any) -> dict:
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
        return requests.put(self.api(n, member), data=data, timeout=timeout).json()

    def get(self, n: int, member: str, timeout: float = 10) -> dict:
        return requests.get(self.api(n, member), timeout=timeout).json()

    def stop(self) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def locks_held(lock_dir: Path) -> int:
    held = 0
    for path in lock_dir.glob("*.lock"):
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            held += 1
        finally:
            os.close(fd)
    return held


# ------------------------------------------------------------------------------------- INDI client
class IndiClient:
    """A raw INDI client that parses the stream as it arrives and keeps only events, not bytes."""

    TAG = re.compile(rb"<(\w+)")
    ATTR = re.compile(rb'(\w+)="([^"]*)"')

    def __init__(self, port: int, device: str, blobs: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.device = device
        self.cond = threading.Condition()
        self.events: list[tuple[str, str, str, bytes]] = []  # (tag, name, state, body head)
        self.closed = False
        self.blob_bytes = 0
        # This client's view of the device: defined properties, and whether CONNECTION says connected.
        self.defined: set[str] = set()
        self.connected_view = False
        self.reader = threading.Thread(target=self._read, name="indi-reader", daemon=True)
        self.reader.start()
        self.send(f'<getProperties version="1.7" device="{device}"/>')
        if blobs:
            self.send(f'<enableBLOB device="{device}">Also</enableBLOB>')

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def _read(self) -> None:
        buf = bytearray()
        scan = 0
        try:
            while True:
                chunk = self.sock.recv(1 << 18)
                if not chunk:
                    break
                buf += chunk
                while True:
                    start = buf.find(b"<")
                    if start < 0:
                        buf.clear()
                        scan = 0
                        break
                    if start:
                        del buf[:start]
                        scan = max(0, scan - start)
                    m = self.TAG.match(buf)
                    head_end = buf.find(b">")
                    if not m or head_end < 0:
                        break
                    tag = m.group(1).decode()
                    if buf[head_end - 1:head_end] == b"/":
                        end = head_end + 1
                    else:
                        close = b"</" + m.group(1) + b">"
                        i = buf.find(close, max(scan, head_end))
                        if i < 0:
                            scan = max(head_end, len(buf) - len(close))
                            break
                        end = i + len(close)
                    self._event(tag, bytes(buf[:head_end + 1]), bytes(buf[head_end + 1:min(end, head_end + 400)]),
                                end)
                    del buf[:end]
                    scan = 0
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _event(self, tag: str, head: bytes, body: bytes, size: int) -> None:
        attrs = {k.decode(): v.decode(errors="replace") for k, v in self.ATTR.findall(head)}
        if attrs.get("device", self.device) != self.device:
            return
        if tag == "setBLOBVector":
            self.blob_bytes += size
        with self.cond:
            name = attrs.get("name", "")
            if tag.startswith("def"):
                self.defined.add(name)
            elif tag == "delProperty":
                if name:
                    self.defined.discard(name)
                else:
                    self.defined.clear()
            if name == "CONNECTION" and tag in ("defSwitchVector", "setSwitchVector"):
                self.connected_view = re.search(rb'name="CONNECT"[^>]*>\s*On', body) is not None
            note = attrs.get("message", "").encode()
            self.events.append((tag, attrs.get("name", ""), attrs.get("state", ""),
                                note if tag == "message" else (note + b" | " if note else b"") + body))
            if len(self.events) > 5000:
                del self.events[:4000]
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, pred: Callable[[tuple[str, str, str, bytes]], bool], mark: int, timeout: float) -> tuple | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if mark > len(self.events):  # trimmed: look at what is left
                    mark = 0
                for ev in self.events[mark:]:
                    if pred(ev):
                        return ev
                mark = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(min(left, 0.5))

    def switch(self, prop: str, member: str) -> int:
        mark = self.mark()
        self.send(f'<newSwitchVector device="{self.device}" name="{prop}"><oneSwitch name="{member}">On</oneSwitch>'
                  f'</newSwitchVector>')
        return mark

    def expose(self, seconds: float) -> int:
        mark = self.mark()
        self.send(f'<newNumberVector device="{self.device}" name="CCD_EXPOSURE"><oneNumber name="CCD_EXPOSURE_VALUE">'
                  f'{seconds}</oneNumber></newNumberVector>')
        return mark

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.reader.join(2)


# ------------------------------------------------------------------------------------- workers
class Soak:
    def __init__(self, args: argparse.Namespace, server: Server) -> None:
        self.args = args
        self.server = server
        self.stats = Stats()
        self.rng = random.Random(args.seed)
        self.stop = threading.Event()
        self.frame_cond = threading.Condition()
        self.frame_id = 0
        self.fetched: dict[str, int] = {}
        self.unplugged: set[int] = set()
        self.unplug_lock = threading.Lock()

    # ---- helpers
    def _alpaca(self, s: requests.Session, method: str, n: int, member: str, role: str, timeout: float = 10,
                **params: Any) -> dict | None:
        """One Alpaca call; errors are counted by kind; returns the envelope (None on failure)."""
        try:
            if method == "GET":
                r = s.get(self.server.api(n, member), timeout=timeout)
            else:
                data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
                r = s.put(self.server.api(n, member), data=data, timeout=timeout)
        except requests.Timeout:
            self.stats.error(f"unanswered:{role}:{member}", f"no answer within {timeout} s")
            return None
        except requests.RequestException as exc:
            self.stats.error(f"connection:{role}", repr(exc))
            return None
        if r.status_code != 200:
            self.stats.error(f"http:{r.status_code}", f"{method} {member}: {r.text[:200]}")
            return None
        try:
            body = r.json()
        except ValueError:
            self.stats.error("malformed:json", r.text[:200])
            return None
        self.stats.ok("alpaca")
        if body.get("ErrorNumber"):
            self.stats.error(f"alpaca:0x{body['ErrorNumber']:X}",
                             f"{role} {method} {member}: {body.get('ErrorMessage')}")
        return body

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; False when the stretch ends."""
        return not self.stop.wait(seconds)

    # ---- pollers
    def poller(self, index: int) -> None:
        s = requests.Session()
        rng = random.Random(self.args.seed * 100 + index)
        while not self.stop.is_set():
            n = rng.choice((CAM_IMAGING, CAM_INDI))
            member = rng.choice(POLL_MEMBERS)
            t0 = time.perf_counter()
            body = self._alpaca(s, "GET", n, member, "poller", timeout=10)
            if body is not None:
                with self.stats.lock:
                    self.stats.poll_latency.append(time.perf_counter() - t0)
            self._sleep(0.05)
        s.close()

    # ---- imaging client (camera 0) and its downloaders
    def imager(self) -> None:
        s = requests.Session()
        rng = random.Random(self.args.seed + 7)
        while not self.stop.is_set():
            duration = round(rng.uniform(0.1, 0.5), 3)
            body = self._alpaca(s, "PUT", CAM_IMAGING, "startexposure", "imager", Duration=duration, Light=True)
            if body is None or body["ErrorNumber"]:
                self._wait_recovered(s, CAM_IMAGING)
                self._sleep(0.1)
                continue
            deadline = time.monotonic() + duration + 15
            outcome = None
            while not self.stop.is_set() and time.monotonic() < deadline:
                st = self._alpaca(s, "GET", CAM_IMAGING, "camerastate", "imager")
                if st is not None and st.get("Value") == 5:
                    outcome = "lost"
                    break
                rd = self._alpaca(s, "GET", CAM_IMAGING, "imageready", "imager")
                if rd is not None and rd.get("Value") is True:
                    outcome = "ready"
                    break
                self._sleep(0.05)
            if outcome == "lost":
                self.stats.error("exposure_lost", "camera 0 went to Error during an exposure")
                self._wait_recovered(s, CAM_IMAGING)
                continue
            if outcome is None:
                if not self.stop.is_set():
                    self.stats.error("stuck:exposure", f"no image within {duration + 15:.0f} s")
                else:  # the stretch ends mid-exposure: leave the camera idle for the next one
                    self._alpaca(s, "PUT", CAM_IMAGING, "abortexposure", "imager")
                continue
            self.stats.count(self.stats.exposures, "alpaca")
            with self.frame_cond:
                self.frame_id += 1
                fid = self.frame_id
                self.frame_cond.notify_all()
                # Like an imaging program: the next exposure starts once the frame was downloaded.
                self.frame_cond.wait_for(lambda: self.stop.is_set() or all(v >= fid for v in self.fetched.values()),
                                         60)
        s.close()

    def _wait_recovered(self, s: requests.Session, n: int) -> None:
        deadline = time.monotonic() + 20
        while not self.stop.is_set() and time.monotonic() < deadline:
            st = self._alpaca(s, "GET", n, "camerastate", "recovery")
            if st is not None and not st["ErrorNumber"] and st["Value"] != 5:
                return
            self._sleep(0.1)
        if not self.stop.is_set():
            self.stats.error("stuck:recovery", f"camera {n} still in Error after 20 s")

    def downloader(self, name: str, imagebytes: bool) -> None:
        s = requests.Session()
        headers = {"Accept": "application/imagebytes"} if imagebytes else {}
        last = self.fetched.get(name, 0)
        while not self.stop.is_set():
            with self.frame_cond:
                self.frame_cond.wait_for(lambda: self.stop.is_set() or self.frame_id > last, 1.0)
                fid = self.frame_id
            if self.stop.is_set():
                break
            if fid <= last:
                continue
            self._download(s, headers, imagebytes)
            last = fid
            with self.frame_cond:
                self.fetched[name] = fid
                self.frame_cond.notify_all()
        s.close()

    def _download(self, s: requests.Session, headers: dict, imagebytes: bool) -> None:
        kind = "imagebytes" if imagebytes else "json"
        try:
            r = s.get(self.server.api(CAM_IMAGING, "imagearray"), headers=headers, timeout=(10, 60), stream=True)
            first = b""
            tail = b""
            total = 0
            for chunk in r.iter_content(1 << 20):
                if len(first) < 64:
                    first += chunk[:64]
                tail = (tail + chunk)[-256:]
                total += len(chunk)
            r.close()
        except requests.Timeout:
            self.stats.error(f"unanswered:download:{kind}", "no data within 60 s")
            return
        except requests.RequestException as exc:
            self.stats.error(f"connection:download:{kind}", repr(exc))
            return
        if r.status_code != 200:
            self.stats.error(f"http:{r.status_code}", f"download {kind}")
            return
        self.stats.ok("alpaca")
        if imagebytes:
            err, = struct.unpack_from("<i", first, 4)
            if err:
                self.stats.error(f"alpaca:0x{err:X}", f"download {kind}: {tail[-200:]!r}")
                return
            dims = struct.unpack_from("<2i", first, 32)
            if dims != FULL or total != 44 + FULL[0] * FULL[1] * 2:
                self.stats.error("malformed:imagebytes", f"dims {dims}, {total} bytes")
                return
        else:
            if first.startswith(b'{"ErrorNumber"') or b'"ErrorNumber":0' not in tail:
                m = re.search(rb'"ErrorNumber":(\d+)', first + tail)
                code = int(m.group(1)) if m else -1
                self.stats.error(f"alpaca:0x{code:X}", f"download json: {tail[-200:]!r}")
                return
            if not first.startswith(b'{"Type":2,"Rank":2,"Value":[[') or total < FULL[0] * FULL[1] * 2:
                self.stats.error("malformed:json_image", f"{first[:60]!r}... {total} bytes")
                return
        self.stats.count(self.stats.downloads, kind)
        with self.stats.lock:
            self.stats.download_bytes += total

    # ---- INDI client exposing on camera 1
    def indi_imager(self) -> None:
        rng = random.Random(self.args.seed + 11)
        try:
            c = IndiClient(self.server.indi_port, DEV_INDI, blobs=True)
        except OSError as exc:
            self.stats.error("connection:indi", repr(exc))
            return
        try:
            if c.wait(lambda e: e[1] == "CONNECTION", 0, 10) is None:
                self.stats.error("unanswered:indi:getProperties", "no CONNECTION within 10 s")
                return
            mark = c.switch("CONNECTION", "CONNECT")
            if c.wait(lambda e: e[1] == "CONNECTION" and e[2] == "Ok", mark, 15) is None:
                self.stats.error("unanswered:indi:CONNECT", "CONNECTION never Ok")
                return
            self.stats.ok("indi")
            while not self.stop.is_set():
                duration = round(rng.uniform(0.05, 0.3), 3)
                mark = c.expose(duration)
                ev = c.wait(lambda e: e[1] == "CCD_EXPOSURE" and e[2] in ("Ok", "Alert"), mark, duration + 20)
                if ev is None:
                    trail = [(e[0][:6], e[1], e[2]) for e in c.events[max(0, mark - 3):][-25:]]
                    self.stats.error("unanswered:indi:CCD_EXPOSURE",
                                     f"no Ok/Alert within {duration + 20:.0f} s (at {time.strftime('%H:%M:%S')}); "
                                     f"events: {trail}")
                    continue
                self.stats.ok("indi")
                if ev[2] == "Alert":
                    self.stats.error("indi:alert:CCD_EXPOSURE", ev[3][:200].decode(errors="replace"))
                    self._sleep(0.3)
                    continue
                blob = c.wait(lambda e: e[0] == "setBLOBVector" and e[1] == "CCD1", mark, 1)
                if blob is None:
                    self.stats.error("indi:missing_blob", "CCD_EXPOSURE Ok without a BLOB before it")
                    continue
                self.stats.count(self.stats.exposures, "indi")
        finally:
            with self.stats.lock:
                self.stats.download_bytes += c.blob_bytes
            c.close()

    # ---- connect/disconnect cycles on camera 2
    def cycler(self) -> None:
        s = requests.Session()
        rng = random.Random(self.args.seed + 13)
        indi: IndiClient | None = None
        turn = 0
        try:
            while not self.stop.is_set():
                turn += 1
                if turn % 2:
                    self._cycle_alpaca(s, rng)
                else:
                    if indi is None:
                        indi = IndiClient(self.server.indi_port, DEV_CYCLE, blobs=True)
                        indi.wait(lambda e: e[1] == "CONNECTION", 0, 10)
                    self._cycle_indi(indi)
        except OSError as exc:
            self.stats.error("connection:indi", repr(exc))
        finally:
            if indi is not None:
                indi.close()
            s.close()

    def _cycle_alpaca(self, s: requests.Session, rng: random.Random) -> None:
        for member, params in (("connected", {"Connected": True}), ("gain", {"Gain": rng.randint(0, 100)}),
                               ("startexposure", {"Duration": 0.02, "Light": True})):
            body = self._alpaca(s, "PUT", CAM_CYCLE, member, "cycler", **params)
            if body is None or body["ErrorNumber"]:
                break
        else:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                body = self._alpaca(s, "GET", CAM_CYCLE, "imageready", "cycler")
                if body is None or body.get("Value") is True:
                    if body is not None:
                        self.stats.count(self.stats.exposures, "cycle_alpaca")
                    break
                time.sleep(0.03)
            else:
                self.stats.error("stuck:exposure", "camera 2 exposure over Alpaca never ready")
        body = self._alpaca(s, "PUT", CAM_CYCLE, "connected", "cycler", Connected=False)
        if body is not None and not body["ErrorNumber"]:
            self.stats.count(self.stats.exposures, "disconnects")

    def _cycle_indi(self, c: IndiClient) -> None:
        # INDI reports asynchronously: the Alpaca cycle just disconnected the camera, and this client
        # must see that (and the connection before it) before its own CONNECT's answer can be told
        # from the stale ones. How long that takes is the INDI view's lag behind the core.
        t0 = time.monotonic()
        with c.cond:
            if not c.cond.wait_for(lambda: not c.connected_view and "CCD_EXPOSURE" not in c.defined, 5):
                self.stats.error("indi:stale_view", "camera 2: INDI still shows it connected 5 s after "
                                                    "Alpaca disconnected it")
                return
        with self.stats.lock:
            self.stats.indi_lag.append(time.monotonic() - t0)
        mark = c.switch("CONNECTION", "CONNECT")
        ev = c.wait(lambda e: e[1] == "CONNECTION" and e[2] in ("Ok", "Alert"), mark, 15)
        if ev is None:
            self.stats.error("unanswered:indi:CONNECT", "camera 2")
            return
        self.stats.ok("indi")
        if ev[2] == "Alert":
            self.stats.error("indi:connect_failed:cycle", f"camera 2: {ev[3][:300].decode(errors='replace')}")
            return
        # Camera 2 is disconnected between cycles, so its properties are defined anew after CONNECT.
        if c.wait(lambda e: e[0] == "defNumberVector" and e[1] == "CCD_EXPOSURE", mark, 5) is None:
            self.stats.error("indi:no_properties", "camera 2: CCD_EXPOSURE never defined after CONNECT")
            return
        mark = c.expose(0.02)
        ev = c.wait(lambda e: e[1] == "CCD_EXPOSURE" and e[2] in ("Ok", "Alert"), mark, 15)
        if ev is None:
            trail = [(e[0][:6], e[1], e[2], e[3][:90]) for e in c.events[max(0, mark - 40):][-60:]
                     if e[1] in ("CONNECTION", "CCD_EXPOSURE", "")]
            self.stats.error("unanswered:indi:CCD_EXPOSURE",
                             f"camera 2 (at {time.strftime('%H:%M:%S')}); events: {trail}")
        elif ev[2] == "Alert":
            self.stats.error("indi:alert:cycle", ev[3][:200].decode(errors="replace"))
        else:
            self.stats.ok("indi")
            self.stats.count(self.stats.exposures, "cycle_indi")
        mark = c.switch("CONNECTION", "DISCONNECT")
        if c.wait(lambda e: e[1] == "CONNECTION" and e[2] == "Idle", mark, 5) is None:
            self.stats.error("unanswered:indi:DISCONNECT", "camera 2")
        else:
            self.stats.ok("indi")
            self.stats.count(self.stats.exposures, "disconnects")

    # ---- chaos
    def chaos(self) -> None:
        while self._sleep(self.rng.uniform(2.0, 6.0)):
            slot = self.rng.choice((CAM_IMAGING, CAM_INDI))
            how = self.rng.choice(("now", "exposure", "readout"))
            try:
                if how == "now":
                    self.server.action(slot, "sim.unplug")
                else:
                    self.server.action(slot, "sim.unplug_after", {"phase": how, "delay": self.rng.uniform(0, 0.2)})
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and not self.stop.is_set():
                        if self.server.get(slot, "camerastate", timeout=5).get("Value") == 5:
                            break
                        time.sleep(0.05)
                self.stats.count(self.stats.unplugs, how)
                self._sleep(self.rng.uniform(0.3, 2.0))
            except (requests.RequestException, RuntimeError) as exc:
                self.stats.error("chaos", repr(exc))
            finally:
                self._replug(slot)

    def _replug(self, slot: int) -> None:
        try:
            self.server.action(slot, "sim.replug")
        except (requests.RequestException, RuntimeError) as exc:
            self.stats.error("chaos", repr(exc))

    # ---- one stretch of traffic
    def run_stretch(self, seconds: float) -> None:
        self.stop.clear()
        workers = [threading.Thread(target=self.poller, args=(i,), name=f"poller{i}", daemon=True) for i in range(8)]
        workers.append(threading.Thread(target=self.imager, name="imager", daemon=True))
        for name, ib in (("ib1", True), ("ib2", True), ("json", False)):
            self.fetched[name] = self.frame_id  # frames of an earlier stretch are not downloaded late
            workers.append(threading.Thread(target=self.downloader, args=(name, ib), name=name, daemon=True))
        workers += [threading.Thread(target=self.indi_imager, name="indi", daemon=True),
                    threading.Thread(target=self.cycler, name="cycler", daemon=True),
                    threading.Thread(target=self.chaos, name="chaos", daemon=True)]
        for w in workers:
            w.start()
        self.stop.wait(seconds)
        self.stop.set()
        with self.frame_cond:
            self.frame_cond.notify_all()
        for w in workers:
            w.join(90)
            if w.is_alive():
                self.stats.error("stuck:client", f"{w.name} did not stop within 90 s")

    def settle(self) -> dict[str, Any]:
        """Every camera plugged in and recovered, camera 2 disconnected; then sample the server at rest."""
        for slot in (CAM_IMAGING, CAM_INDI):
            self._replug(slot)
        deadline = time.monotonic() + 20
        for slot in (CAM_IMAGING, CAM_INDI):
            while time.monotonic() < deadline:
                if self.server.get(slot, "camerastate").get("Value") not in (5, None):
                    break
                time.sleep(0.1)
        self.server.put(CAM_CYCLE, "connected", Connected=False)
        time.sleep(1.0)
        samples = []
        for _ in range(3):
            samples.append(self.server.proc_status())
            time.sleep(0.2)
        names = self.server.action(0, "sim.threads")
        pools: Counter[str] = Counter()
        others: Counter[str] = Counter()
        for name in names:
            m = POOL_RE.match(name)
            (pools if m else others)[m.group(1) if m else re.sub(r"Thread-\d+", "Thread-N", name)] += 1
        return {"rss_mb": round(min(x["rss_mb"] for x in samples), 1), "threads": samples[-1]["threads"],
                "pool_threads": dict(pools), "other_threads": dict(others),
                "other_count": sum(others.values())}


# ------------------------------------------------------------------------------------- main
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * q))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    hard_deadline = t_start + args.seconds + 180
    cycle_s = max(8.0, min(60.0, args.seconds / 8))
    with tempfile.TemporaryDirectory(prefix="zwo-soak-") as tmp:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="zwo-soak-kept-")
            print(f"server files kept in {tmp}")
        server = Server(Path(tmp))
        soak = Soak(args, server)
        try:
            start = server.proc_status()
            for n in (CAM_IMAGING, CAM_INDI):
                server.put(n, "connected", Connected=True)
            per_cycle: list[dict[str, Any]] = []
            while time.monotonic() - t_start < args.seconds - 2 and time.monotonic() < hard_deadline:
                left = args.seconds - (time.monotonic() - t_start)
                soak.run_stretch(min(cycle_s, max(3.0, left - 4)))
                sample = soak.settle()
                sample["t"] = round(time.monotonic() - t_start, 1)
                with soak.stats.lock:
                    sample["requests"] = sum(soak.stats.requests.values())
                per_cycle.append(sample)
                if not args.quiet:
                    print(f"  cycle {len(per_cycle):2d} t={sample['t']:6.1f}s rss={sample['rss_mb']:7.1f} MB "
                          f"threads={sample['threads']} (other {sample['other_count']}) "
                          f"requests={sample['requests']}", flush=True)
            record = server.action(0, "sim.record")
            counters = {n: server.action(n, "sim.counters") for n in (CAM_IMAGING, CAM_INDI, CAM_CYCLE)}
            last_tid = server.get(0, "connected").get("ServerTransactionID")
            end = server.proc_status()
            code, stop_s = server.stop()
            held_after = locks_held(server.lock_dir)
        finally:
            server.kill()
        log = server.log_path.read_text(errors="replace")
    return summarize(args, soak.stats, per_cycle, start, end, record, counters, last_tid, code, stop_s,
                     held_after, log, time.monotonic() - t_start, cycle_s)


def summarize(args: argparse.Namespace, st: Stats, per_cycle: list[dict], start: dict, end: dict, record: dict,
              counters: dict, last_tid: int | None, code: int, stop_s: float, held_after: int, log: str,
              elapsed: float, cycle_s: float) -> dict[str, Any]:
    measured = per_cycle[1:] if len(per_cycle) > 1 else per_cycle  # the first cycle is the warm-up
    k = max(1, len(measured) // 3)
    first, last = measured[:k], measured[-k:]
    growth = min(c["rss_mb"] for c in last) - min(c["rss_mb"] for c in first)
    lat = st.poll_latency
    unexpected = {k: v for k, v in st.errors.items() if k not in EXPECTED}
    problems = []
    if unexpected:
        problems.append(f"unexpected errors: {unexpected}")
    if any(k.startswith("unanswered") for k in st.errors):
        problems.append("unanswered requests")
    if growth >= 50:
        problems.append(f"RSS grew {growth:.1f} MB")
    if measured[-1]["other_count"] != measured[0]["other_count"]:
        problems.append(f"threads other than pool workers: {measured[0]['other_threads']} at the start, "
                        f"{measured[-1]['other_threads']} at the end")
    if held_after:
        problems.append(f"{held_after} camera(s) still held after the server exited")
    if record.get("exposures_running") or record.get("video_running"):
        problems.append(f"SDK activity left at the end: {record}")
    if code != 0 or stop_s > 2.0:
        problems.append(f"shutdown: exit status {code} after {stop_s:.2f} s")
    tracebacks = log.count("Traceback")
    if tracebacks:
        problems.append(f"{tracebacks} traceback(s) in the server log")
    if not st.exposures.get("alpaca") or not st.exposures.get("indi"):
        problems.append(f"too few exposures: {dict(st.exposures)}")
    return {
        "seconds": round(elapsed, 1), "requested_seconds": args.seconds, "seed": args.seed, "cycle_s": cycle_s,
        "cycles": len(per_cycle),
        "requests": {"alpaca": st.requests["alpaca"], "indi": st.requests["indi"],
                     "server_transactions": last_tid},
        "errors": dict(st.errors), "expected_error_kinds": EXPECTED, "unexpected_errors": unexpected,
        "error_examples": st.examples,
        "exposures": {"alpaca_imaging": st.exposures["alpaca"], "indi_imaging": st.exposures["indi"],
                      "connect_cycles_alpaca": st.exposures["cycle_alpaca"],
                      "connect_cycles_indi": st.exposures["cycle_indi"],
                      "disconnects": st.exposures["disconnects"]},
        "downloads": {"imagebytes": st.downloads["imagebytes"], "json": st.downloads["json"],
                      "gigabytes_sent": round(st.download_bytes / 1e9, 2)},
        "unplugs": dict(st.unplugs),
        "indi_view_lag_ms": {"n": len(st.indi_lag), "p50": round(percentile(st.indi_lag, 0.5) * 1000, 1),
                             "p99": round(percentile(st.indi_lag, 0.99) * 1000, 1),
                             "max": round(max(st.indi_lag) * 1000, 1) if st.indi_lag else None},
        "poll_latency_ms": {"n": len(lat), "p50": round(percentile(lat, 0.5) * 1000, 1),
                            "p99": round(percentile(lat, 0.99) * 1000, 1),
                            "max": round(max(lat) * 1000, 1) if lat else None,
                            "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None},
        "rss_mb": {"start": round(start["rss_mb"], 1), "end": round(end["rss_mb"], 1),
                   "first_stretch_min": min(c["rss_mb"] for c in first),
                   "last_stretch_min": min(c["rss_mb"] for c in last), "growth": round(growth, 1),
                   "peak_at_rest": max(c["rss_mb"] for c in per_cycle)},
        "threads": {"start": start["threads"], "end": end["threads"],
                    "at_rest_after_warmup": measured[0]["threads"], "at_rest_end": measured[-1]["threads"],
                    "non_pool_after_warmup": measured[0]["other_threads"],
                    "non_pool_end": measured[-1]["other_threads"],
                    "pool_workers_end": measured[-1]["pool_threads"]},
        "open_handles": {"before_shutdown": len(record.get("open_handles", [])),
                         "before_shutdown_note": "cameras 0 and 1 are connected when the server is stopped",
                         "after_shutdown": held_after},
        "core_counters": counters,
        "shutdown": {"exit_status": code, "seconds": round(stop_s, 2)},
        "server_log": {"tracebacks": tracebacks, "error_lines": sum(1 for x in log.splitlines() if " ERROR " in x),
                       "warning_lines": sum(1 for x in log.splitlines() if " WARNING " in x),
                       "first_problems": [x for x in log.splitlines() if " ERROR " in x or " WARNING " in x][:40]},
        "per_cycle": per_cycle,
        "verdict": {"ok": not problems, "problems": problems},
    }


def print_table(res: dict[str, Any]) -> None:
    rows = [
        ("duration", f"{res['seconds']} s, {res['cycles']} cycles of {res['cycle_s']:.0f} s, seed {res['seed']}"),
        ("requests served", f"Alpaca {res['requests']['alpaca']}, INDI {res['requests']['indi']} "
                            f"(server transactions {res['requests']['server_transactions']})"),
        ("exposures completed", ", ".join(f"{k} {v}" for k, v in res["exposures"].items())),
        ("downloads", ", ".join(f"{k} {v}" for k, v in res["downloads"].items())),
        ("unplugs", ", ".join(f"{k} {v}" for k, v in res["unplugs"].items()) or "none"),
        ("INDI view lag", f"an Alpaca disconnect seen over INDI after p50 {res['indi_view_lag_ms']['p50']} ms, "
                          f"p99 {res['indi_view_lag_ms']['p99']} ms, max {res['indi_view_lag_ms']['max']} ms"),
        ("errors (expected)", ", ".join(f"{k} {v}" for k, v in res["errors"].items()
                                        if k not in res["unexpected_errors"]) or "none"),
        ("errors (UNEXPECTED)", ", ".join(f"{k} {v}" for k, v in res["unexpected_errors"].items()) or "none"),
        ("polling latency", f"p50 {res['poll_latency_ms']['p50']} ms, p99 {res['poll_latency_ms']['p99']} ms, "
                            f"max {res['poll_latency_ms']['max']} ms ({res['poll_latency_ms']['n']} polls)"),
        ("RSS", f"start {res['rss_mb']['start']} MB, end {res['rss_mb']['end']} MB; at rest: first stretch min "
                f"{res['rss_mb']['first_stretch_min']}, last stretch min {res['rss_mb']['last_stretch_min']}, "
                f"growth {res['rss_mb']['growth']} MB"),
        ("threads", f"start {res['threads']['start']}, end {res['threads']['end']}; at rest after warm-up "
                    f"{res['threads']['at_rest_after_warmup']}, at the end {res['threads']['at_rest_end']} "
                    f"(non-pool {sum(res['threads']['non_pool_after_warmup'].values())} -> "
                    f"{sum(res['threads']['non_pool_end'].values())})"),
        ("open handles", f"before shutdown {res['open_handles']['before_shutdown']} (connected cameras), "
                         f"after shutdown {res['open_handles']['after_shutdown']}"),
        ("shutdown", f"exit {res['shutdown']['exit_status']} in {res['shutdown']['seconds']} s; "
                     f"{res['server_log']['tracebacks']} tracebacks in the log"),
        ("verdict", "OK" if res["verdict"]["ok"] else "PROBLEMS: " + "; ".join(res["verdict"]["problems"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600; stops by itself)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random unplugs and client choices")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "soak.json"), help="where to write the result")
    p.add_argument("--quiet", action="store_true", help="no per-cycle lines")
    p.add_argument("--keep", action="store_true", help="keep the server's log, config and lock directory")
    args = p.parse_args(argv)
    if args.seconds < 20:
        p.error("--seconds must be at least 20 (a warm-up cycle and two measured ones)")
    res = run(args)
    print_table(res)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"written to {out}")
    return 0 if res["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
