#!/usr/bin/env python3
"""INDI BLOB benchmark: a full ASI6200MM Pro frame (9576x6388, 16-bit) as a FITS BLOB, three ways,
measured in the same run with the same client:

* ``zwo-alpaca``   our INDI shim inside ``zwo-alpaca serve --simulator asi6200mm-pro`` (the product
                   process: Alpaca runs beside it, and is polled during the transfer);
* ``libindi``      libindi's ``indi_simulator_ccd`` under ``indiserver``. Its SIMULATOR_SETTINGS caps the
                   resolution at 8192 (INDI 1.9.9) and CCD_INFO is not writable there, so it is fed a
                   9576x6388 16-bit FITS through its CCD_DIRECTORY mode: it reads that file per exposure
                   and sends it as the BLOB, which is the same frame size and payload;
* ``indipyserver`` indipydriver + indipyserver (pure Python, MIT) sending the same FITS bytes as a
                   BLOB, if they can be imported by ``--indipy-python`` (default: this interpreter).

Per repetition the client sends CCD_EXPOSURE and records: end-to-end time (request to the last byte
of the BLOB, including each camera's own exposure/readout, so not comparable between servers), and
the BLOB transfer time (first byte of <setBLOBVector> to its last byte), from which the rate that
decides the target (zwo-alpaca >= 1.0x libindi) is computed. Optionally (PyIndi installed) the same
is measured with libindi's own client library, which must parse the BLOB (as KStars does).
Also: Alpaca polling latency (camerastate) during our transfers, a raw loopback TCP reference for
the same byte count, and a bad-input probe of each server (does another client still get answers
after malformed, entity-expanding, huge and binary input?).

Usage:  .venv/bin/python bench/indi_blob.py [--reps 5] [--indipy-python PATH] [--no-libindi]
Prints a table and writes JSON to bench/results/indi_blob-<time>.json (and indi_blob-latest.json).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import free_port, wait_port  # noqa: E402 - shared with the tests (tests/support/servers.py)
from zwo_common.fits import build_fits, camera_cards, parse_header  # noqa: E402

W, H = 9576, 6388
OURS_DEV = "ZWO CCD ASI6200MM Pro"
SIM_DEV = "CCD Simulator"
PY_DEV = "PyBlob CCD"


class RawClient:
    """A minimal INDI client on a raw socket: no XML parsing of the BLOB, just byte counting."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(300 << 20)
        self.view = memoryview(self.buf)

    def send(self, xml: str) -> None:
        self.sock.sendall(xml.encode())

    def drain(self, quiet: float = 0.3) -> bytes:
        """Read whatever arrives until `quiet` seconds pass without data."""
        out = bytearray()
        self.sock.settimeout(quiet)
        try:
            while True:
                d = self.sock.recv(1 << 20)
                if not d:
                    break
                out += d
        except TimeoutError:
            pass
        self.sock.settimeout(None)
        return bytes(out)

    def wait_for(self, needle: bytes, timeout: float = 30.0) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        try:
            while needle not in out:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {needle!r} within {timeout} s")
                try:
                    d = self.sock.recv(1 << 20)
                except TimeoutError:
                    continue
                if not d:
                    raise ConnectionError("server closed")
                out += d
        finally:
            self.sock.settimeout(None)
        return bytes(out)

    def expose(self, device: str, seconds: float, timeout: float = 120.0) -> dict[str, Any]:
        """Request an exposure; return timings of the BLOB that answers it."""
        n = 0
        start = -1
        t_first = 0.0
        self.sock.settimeout(timeout)
        t0 = time.perf_counter()
        self.send(f'<newNumberVector device="{device}" name="CCD_EXPOSURE"><oneNumber name="CCD_EXPOSURE_VALUE">'
                  f'{seconds}</oneNumber></newNumberVector>')
        while True:
            k = self.sock.recv_into(self.view[n:], 8 << 20)
            if k == 0:
                raise ConnectionError("server closed during the BLOB")
            if start < 0:
                start = self.buf.find(b"<setBLOBVector", max(0, n - 16), n + k)
                if start >= 0:
                    t_first = time.perf_counter()
            n += k
            if start >= 0:
                end = self.buf.find(b"</setBLOBVector>", max(start, n - k - 20), n)
                if end >= 0:
                    t_end = time.perf_counter()
                    break
            if n > len(self.buf) - (16 << 20):
                # Keep only the tail if something huge and unexpected arrives before the BLOB.
                if start < 0:
                    self.buf[:64] = self.buf[n - 64:n]
                    n = 64
        self.sock.settimeout(None)
        blob = bytes(self.buf[start:end + 16])
        return {"end_to_end_s": t_end - t0, "transfer_s": t_end - t_first, "wire_bytes": len(blob), "_blob": blob}

    def close(self) -> None:
        self.sock.close()


def check_blob(blob: bytes) -> tuple[int, str]:
    """Decode a setBLOBVector and check it is a FITS of the full frame; returns (size, summary)."""
    head_end = blob.find(b">", blob.find(b"<oneBLOB")) + 1
    tail = blob.rfind(b"</oneBLOB>")
    payload = base64.b64decode(bytes(blob[head_end:tail]).replace(b"\n", b"").replace(b" ", b""))
    hdr, _ = parse_header(payload)
    ok = (hdr.get("NAXIS1"), hdr.get("NAXIS2"), hdr.get("BITPIX")) == (W, H, 16)
    shape = f"{hdr.get('NAXIS1')}x{hdr.get('NAXIS2')} BITPIX {hdr.get('BITPIX')}"
    return len(payload), shape + ("" if ok else " (WRONG)")


def loopback_reference(nbytes: int) -> float:
    """Seconds to push nbytes through a plain loopback TCP connection (the wire's own limit)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    payload = memoryview(bytearray(8 << 20))

    def sink() -> None:
        c, _ = srv.accept()
        buf = bytearray(8 << 20)
        got = 0
        while got < nbytes:
            k = c.recv_into(buf)
            if not k:
                break
            got += k
        c.sendall(b"k")
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    sent = 0
    while sent < nbytes:
        sent += s.send(payload[: min(len(payload), nbytes - sent)])
    s.recv(1)
    dt = time.perf_counter() - t0
    s.close()
    t.join()
    srv.close()
    return dt


# ------------------------------------------------------------------------------------------ servers
def start_ours(work: Path) -> tuple[subprocess.Popen, int, int]:
    http, indi = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), ZWO_ALPACA_SIM_LOCK_DIR=str(work / "locks"))
    log = open(work / "zwo-alpaca.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "zwo_runtime", "serve", "--simulator", "asi6200mm-pro",
                             "--bind", "127.0.0.1", "--port", str(http), "--indi-port", str(indi), "--no-discovery",
                             "--config", str(work / "config.json")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(indi, 30.0)
    wait_port(http, 30.0)
    return proc, indi, http


def start_libindi(work: Path, fits_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, HOME=str(work))  # a private ~/.indi config directory
    log = open(work / "indiserver.log", "wb")
    # -m 1024: indiserver drops clients more than maxqsiz MB behind (128 by default), and one
    # base64 frame is 163 MB.
    proc = subprocess.Popen(["indiserver", "-p", str(port), "-m", "1024", "indi_simulator_ccd"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, 30.0)
    time.sleep(0.5)
    c = RawClient(port)
    c.send('<getProperties version="1.7"/>')
    c.drain(0.5)
    # The directory properties exist only while connected.
    c.send(f'<newSwitchVector device="{SIM_DEV}" name="CONNECTION"><oneSwitch name="CONNECT">On</oneSwitch>'
           f'</newSwitchVector>')
    c.drain(1.0)
    c.send(f'<newTextVector device="{SIM_DEV}" name="CCD_DIRECTORY_LOCATION"><oneText name="LOCATION">{fits_dir}'
           f'</oneText></newTextVector>')
    c.drain(0.5)
    c.send(f'<newSwitchVector device="{SIM_DEV}" name="CCD_DIRECTORY_TOGGLE"><oneSwitch name="INDI_ENABLED">On'
           f'</oneSwitch></newSwitchVector>')
    c.drain(0.5)
    c.close()
    return proc, port


INDIPY_SERVER = textwrap.dedent('''
    import asyncio, sys
    import indipydriver as ipd
    from indipyserver import IPyServer
    port, path = int(sys.argv[1]), sys.argv[2]
    data = open(path, "rb").read()

    class Drv(ipd.IPyDriver):
        async def rxevent(self, event):
            if isinstance(event, ipd.newNumberVector) and event.vectorname == "CCD_EXPOSURE":
                dev = self["PyBlob CCD"]
                exp = dev["CCD_EXPOSURE"]
                exp["CCD_EXPOSURE_VALUE"] = event["CCD_EXPOSURE_VALUE"]
                exp.state = "Busy"
                await exp.send_setVector()
                blob = dev["CCD1"]
                blob["CCD1"] = data
                await blob.send_setVectorMembers(members=["CCD1"])
                exp.state = "Ok"
                await exp.send_setVector()

    exp = ipd.NumberVector("CCD_EXPOSURE", "Expose", "Main", "rw", "Idle",
                           [ipd.NumberMember("CCD_EXPOSURE_VALUE", "Duration", "%5.2f", 0, 3600, 1, 1)])
    blob = ipd.BLOBVector("CCD1", "Image", "Image", "ro", "Idle", [ipd.BLOBMember("CCD1", "Image", blobformat=".fits")])
    drv = Drv(ipd.Device("PyBlob CCD", [exp, blob]))
    server = IPyServer(drv, host="127.0.0.1", port=port, maxconnections=5)
    asyncio.run(server.asyncrun())
''')


def start_indipy(work: Path, python: str, fits_path: Path) -> tuple[subprocess.Popen, int] | None:
    probe = subprocess.run([python, "-c", "import indipydriver, indipyserver"], capture_output=True)
    if probe.returncode != 0:
        return None
    port = free_port()
    script = work / "indipy_server.py"
    script.write_text(INDIPY_SERVER)
    log = open(work / "indipyserver.log", "wb")
    proc = subprocess.Popen([python, str(script), str(port), str(fits_path)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_port(port, 30.0)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ------------------------------------------------------------------------------------------ measuring
def measure_raw(port: int, device: str, reps: int, seconds: float, connect: bool) -> list[dict[str, Any]]:
    c = RawClient(port)
    c.send('<getProperties version="1.7"/>')
    c.send(f'<enableBLOB device="{device}">Also</enableBLOB>')
    if connect:
        c.send(f'<newSwitchVector device="{device}" name="CONNECTION"><oneSwitch name="CONNECT">On</oneSwitch>'
               f'</newSwitchVector>')
        time.sleep(1.0)
    c.drain(0.5)
    results = []
    for i in range(reps + 1):  # the first is a warm-up (page faults, caches), not recorded
        r = c.expose(device, seconds)
        blob = r.pop("_blob")
        if i == 0:
            size, summary = check_blob(blob)
            r["payload_bytes"] = size
            r["check"] = summary
            print(f"    {device}: BLOB decodes to {size} bytes, {summary}")
        else:
            results.append(r)
        c.drain(0.2)
    c.close()
    return results


def measure_pyindi(port: int, device: str, reps: int, seconds: float) -> list[float] | None:
    """End-to-end with libindi's client library (PyIndi): request to the BLOB callback."""
    try:
        import PyIndi  # noqa: PLC0415
    except ImportError:
        return None

    class Client(PyIndi.BaseClient):
        def __init__(self) -> None:
            super().__init__()
            self.got = threading.Event()
            self.size = 0

        def updateProperty(self, prop):  # noqa: N802 - PyIndi's API
            if prop.getType() == PyIndi.INDI_BLOB:
                for m in PyIndi.PropertyBlob(prop):
                    self.size = m.getSize()
                self.got.set()

    c = Client()
    c.setServer("127.0.0.1", port)
    if not c.connectServer():
        return None
    try:
        deadline = time.monotonic() + 10
        dev = None
        while time.monotonic() < deadline and (dev is None or not dev.getNumber("CCD_EXPOSURE").isValid()):
            dev = c.getDevice(device)
            time.sleep(0.1)
        c.setBLOBMode(PyIndi.B_ALSO, device, None)
        assert dev is not None
        out = []
        for i in range(reps + 1):
            c.got.clear()
            exp = dev.getNumber("CCD_EXPOSURE")
            exp[0].setValue(seconds)
            t0 = time.perf_counter()
            c.sendNewNumber(exp)
            if not c.got.wait(120):
                return None
            if i:
                out.append(time.perf_counter() - t0)
            time.sleep(0.3)
        return out
    finally:
        c.disconnectServer()


class AlpacaPoller:
    """Polls camerastate on the product's Alpaca API from 4 threads; latency samples in ms."""

    def __init__(self, http_port: int) -> None:
        import http.client  # noqa: PLC0415

        self.http_port = http_port
        self.samples: list[float] = []
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(http.client,), daemon=True) for _ in range(4)]
        self.active = threading.Event()

    def _run(self, httpc: Any) -> None:
        conn = httpc.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        while not self.stop_ev.is_set():
            t0 = time.perf_counter()
            conn.request("GET", "/api/v1/camera/0/camerastate?ClientID=1&ClientTransactionID=1")
            conn.getresponse().read()
            if self.active.is_set():
                self.samples.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.002)

    def __enter__(self) -> AlpacaPoller:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(5)


BAD_INPUTS = {
    "malformed": b"<newNumberVector device='x' name='y'><oneNumber name='z'>1</oops></newNumberVector>",
    "binary": bytes(range(256)) * 16,
    "entity_expansion": b"<!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
                        b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>]>"
                        b"<newTextVector device='x' name='y'><oneText name='z'>&d;&d;&d;</oneText></newTextVector>",
    "huge_element": b"<newTextVector device='x' name='y'><oneText name='z'>" + b"A" * (32 << 20)
                    + b"</oneText></newTextVector>",
    "truncated": b"<newSwitchVector device='x' name='y'><oneSwitch name='z'>O",
}


def _answers(sock: socket.socket, device: str, timeout: float = 3.0) -> bool:
    """Ask for the device's properties on `sock`; True if a definition comes back in time."""
    want = f'device="{device}"'.encode()
    sock.settimeout(timeout)
    try:
        sock.sendall(f'<getProperties version="1.7" device="{device}"/>'.encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = sock.recv(1 << 16)
            if not d:
                return False
            data += d
            if b"<def" in data and want in data:
                return True
        return False
    except OSError:
        return False


def probe_bad_input(port: int, device: str) -> dict[str, str]:
    """Send each bad input on its own connection; then: is a second client still served promptly,
    and what became of the offending connection (still served, closed, or hanging)?"""
    out: dict[str, str] = {}
    for name, payload in BAD_INPUTS.items():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b'<getProperties version="1.7"/>')
            sender = threading.Thread(target=lambda: _send_quietly(s, payload, name == "truncated"), daemon=True)
            t0 = time.perf_counter()
            sender.start()
            sender.join(10)
            blocked = sender.is_alive()
            time.sleep(0.3)
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            ok = _answers(c, device)
            c.close()
            answer_s = time.perf_counter() - t0
            if blocked:
                same = "blocked (server stopped reading it)"
            else:
                same = "still served" if _answers(s, device) else "closed/unanswered"
            s.close()
            out[name] = f"{'other clients OK' if ok else 'OTHER CLIENTS NOT SERVED'}; offending client {same}" \
                        f" ({answer_s:.2f} s)"
        except OSError as exc:
            out[name] = f"error: {exc}"
    return out


def _send_quietly(sock: socket.socket, payload: bytes, half_close: bool) -> None:
    try:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tr = [r["transfer_s"] for r in runs]
    e2e = [r["end_to_end_s"] for r in runs]
    wire = runs[0]["wire_bytes"]
    med = statistics.median(tr)
    return {"reps": len(runs), "wire_bytes": wire, "transfer_s_median": med, "transfer_s_min": min(tr),
            "rate_MBps_median": wire / med / 1e6, "end_to_end_s_median": statistics.median(e2e),
            "end_to_end_s_min": min(e2e)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--exposure", type=float, default=0.01, help="exposure seconds requested (default 0.01)")
    ap.add_argument("--indipy-python", default=sys.executable,
                    help="python with indipydriver+indipyserver installed (skipped if they do not import)")
    ap.add_argument("--no-libindi", action="store_true")
    ap.add_argument("--no-pyindi", action="store_true", help="skip the libindi-client (PyIndi) column")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="indi-blob-bench-"))
    results: dict[str, Any] = {"frame": f"{W}x{H} uint16", "time": datetime.now().isoformat(timespec="seconds"),
                                  "python": sys.version.split()[0], "cpus": os.cpu_count()}
    procs: list[subprocess.Popen] = []
    try:
        print(f"writing a {W}x{H} 16-bit FITS for the libindi and indipyserver servers ...")
        frame = np.random.default_rng(0).integers(0, 4096, size=(H, W), dtype=np.uint16) * 16
        fits = build_fits(frame, camera_cards(exptime=0.01, start=None, instrume="bench", frame_type="Light",
                                              xbin=1, ybin=1, pixel_size_um=3.76, ccd_temp=None, gain=None,
                                              offset=None))
        fits_dir = work / "frames"
        fits_dir.mkdir()
        fits_path = fits_dir / "frame.fits"
        fits_path.write_bytes(fits.buffer.tobytes())
        del frame, fits

        servers: dict[str, dict[str, Any]] = {}

        print("zwo-alpaca (our INDI shim, simulated ASI6200MM Pro) ...")
        proc, indi_port, http_port = start_ours(work)
        procs.append(proc)
        with AlpacaPoller(http_port) as poller:
            poller.active.set()
            runs = measure_raw(indi_port, OURS_DEV, args.reps, args.exposure, connect=True)
            poller.active.clear()
        lat = sorted(poller.samples)
        ours = summarise(runs)
        if lat:
            ours["alpaca_poll_ms_p50"] = lat[len(lat) // 2]
            ours["alpaca_poll_ms_p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            ours["alpaca_poll_samples"] = len(lat)
        if not args.no_pyindi:
            pyr = measure_pyindi(indi_port, OURS_DEV, max(2, args.reps // 2), args.exposure)
            if pyr:
                ours["pyindi_end_to_end_s_median"] = statistics.median(pyr)
        ours["bad_input"] = probe_bad_input(indi_port, OURS_DEV)
        servers["zwo-alpaca"] = ours
        stop(proc)

        if not args.no_libindi and shutil.which("indiserver") and shutil.which("indi_simulator_ccd"):
            print("libindi (indiserver + indi_simulator_ccd, directory mode) ...")
            proc, port = start_libindi(work, fits_dir)
            procs.append(proc)
            lib = summarise(measure_raw(port, SIM_DEV, args.reps, args.exposure, connect=False))
            if not args.no_pyindi:
                pyr = measure_pyindi(port, SIM_DEV, max(2, args.reps // 2), args.exposure)
                if pyr:
                    lib["pyindi_end_to_end_s_median"] = statistics.median(pyr)
            lib["bad_input"] = probe_bad_input(port, SIM_DEV)
            servers["libindi"] = lib
            stop(proc)

        started = start_indipy(work, args.indipy_python, fits_path)
        if started is not None:
            print("indipydriver + indipyserver ...")
            proc, port = started
            procs.append(proc)
            try:
                py = summarise(measure_raw(port, PY_DEV, max(1, min(args.reps, 3)), args.exposure, connect=False))
                py["bad_input"] = probe_bad_input(port, PY_DEV)
                servers["indipyserver"] = py
            except Exception as exc:  # noqa: BLE001 - recorded as a result
                servers["indipyserver"] = {"error": str(exc)}
            stop(proc)
        else:
            print("indipydriver/indipyserver not importable by", args.indipy_python, "- skipped")

        ref = loopback_reference(int(ours["wire_bytes"]))
        results["loopback_tcp_MBps"] = ours["wire_bytes"] / ref / 1e6
        results["servers"] = servers
        if "libindi" in servers and "rate_MBps_median" in servers["libindi"]:
            ratio = ours["rate_MBps_median"] / servers["libindi"]["rate_MBps_median"]
            results["ratio_vs_libindi"] = ratio
            results["target_met"] = ratio >= 1.0

        print()
        print(f"{'server':<14} {'BLOB MB':>8} {'xfer s':>8} {'MB/s':>8} {'e2e s':>7} {'PyIndi e2e s':>13} "
              f"{'poll p50/p99 ms':>16}")
        for name, r in servers.items():
            if "rate_MBps_median" not in r:
                print(f"{name:<14} {r}")
                continue
            poll = (f"{r['alpaca_poll_ms_p50']:.1f}/{r['alpaca_poll_ms_p99']:.1f}"
                    if "alpaca_poll_ms_p50" in r else "-")
            pyi = f"{r['pyindi_end_to_end_s_median']:.2f}" if "pyindi_end_to_end_s_median" in r else "-"
            print(f"{name:<14} {r['wire_bytes'] / 1e6:8.1f} {r['transfer_s_median']:8.3f} {r['rate_MBps_median']:8.0f} "
                  f"{r['end_to_end_s_median']:7.2f} {pyi:>13} {poll:>16}")
        print(f"{'loopback TCP':<14} {'':>8} {'':>8} {results['loopback_tcp_MBps']:8.0f}")
        if "ratio_vs_libindi" in results:
            print(f"\nzwo-alpaca / libindi BLOB rate: {results['ratio_vs_libindi']:.2f}x "
                  f"(target >= 1.0x: {'met' if results['target_met'] else 'NOT met'})")
        print("\nbad input (each on its own connection; then a second client asks for properties):")
        for name, r in servers.items():
            for case, outcome in (r.get("bad_input") or {}).items():
                print(f"  {name:<14} {case:<17} {outcome}")

        out_dir = REPO / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        text = json.dumps(results, indent=2, default=str)
        (out_dir / f"indi_blob-{stamp}.json").write_text(text)
        (out_dir / "indi_blob-latest.json").write_text(text)
        print(f"\nJSON: bench/results/indi_blob-{stamp}.json")
        return 0
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
