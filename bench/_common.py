"""Shared pieces of the benchmarks: the server under test, a plain HTTP client, memory sampling,
the same-run references (raw loopback TCP, memcpy, bare orjson), statistics, tables and JSON output.

Nothing here needs more than the standard library, numpy/orjson (already dependencies of the
product) and requests (a test dependency, used by the server helper shared with the tests,
tests/support/servers.py). Every loop is bounded in count and in time; every process started here
is stopped by PID.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# The helpers the tests and the benchmarks share (server subprocess, ports) live in tests/support;
# this is the one place bench/ puts tests/ on sys.path, so bench scripts import them from here.
sys.path.insert(0, str(REPO / "tests"))

from support.servers import ServerProcess, free_port, wait_port  # noqa: E402, F401 - re-exported to bench scripts
from support.servers import start_server as _start_server  # noqa: E402

RESULTS = REPO / "bench" / "results"
PYTHON = sys.executable

# The frame of the issue: ASI6200MM Pro, full resolution, RAW16.
MODEL = "asi6200mm-pro"
W, H = 9576, 6388
FRAME_BYTES = W * H * 2  # 122,342,976


# ----------------------------------------------------------------------------- small helpers


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (nan when empty)."""
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on the sorted values; nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "numpy": np.__version__,
    }


# ----------------------------------------------------------------------------- server process


Server = ServerProcess  # what start_server returns: .port, .pid, .proc, .workdir, .log_tail(), .stop()


def start_server(model: str = MODEL, extra: Sequence[str] = (), timeout: float = 40.0) -> ServerProcess:
    """Start the product server on the simulator (private config and lock dir) and wait for HTTP."""
    workdir = Path(tempfile.mkdtemp(prefix="zwo-bench-"))
    # log_level None: the server's own default (or $ZWO_ALPACA_LOG_LEVEL), as a user would run it.
    return _start_server(workdir, *extra, simulator=model, timeout=timeout, log_level=None,
                         env={"PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")})


# ----------------------------------------------------------------------------- plain HTTP client


class Http:
    """A minimal HTTP/1.1 keep-alive client on a raw socket (no client library in the measurement).

    ``request`` returns (status, headers, body bytes); ``download_into`` reads a large body straight
    into a preallocated buffer with ``recv_into`` (the same receive path as the raw TCP reference)
    and reports the time to the first byte.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self._rest = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
            self._rest = b""
        return self.sock

    def close(self) -> None:
        """Close the connection."""
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _send(self, method: str, path: str, params: dict[str, Any] | None, headers: dict[str, str] | None) -> None:
        s = self._connect()
        body = b""
        if method == "GET" and params:
            path = f"{path}?{urlencode(params)}"
        elif method == "PUT":
            body = urlencode(params or {}).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive"]
        if method == "PUT":
            lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _read_head(self) -> tuple[int, dict[str, str]]:
        s = self.sock
        assert s is not None
        buf = self._rest
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response header")
            buf += chunk
        head, _, self._rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on the keep-alive connection (reconnects once if the server closed it)."""
        for attempt in (0, 1):
            try:
                self._send(method, path, params, headers)
                status, hdrs = self._read_head()
                break
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        n = int(hdrs.get("content-length", "0"))
        body = bytearray(n)
        view = memoryview(body)
        got = min(n, len(self._rest))
        view[:got] = self._rest[:got]
        self._rest = self._rest[got:]
        s = self.sock
        assert s is not None
        while got < n:
            k = s.recv_into(view[got:])
            if k == 0:
                raise ConnectionError("connection closed in the body")
            got += k
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, bytes(body)

    def download_into(self, path: str, out: memoryview, params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` reading the body into ``out`` (must be large enough).

        Returns t_first (request sent -> first response byte), t_first_mb (-> first MiB of the body:
        real pixel data, not just the header), t_total (-> last byte), nbytes (body length).
        """
        s = self._connect()
        t0 = time.perf_counter()
        self._send("GET", path, params, headers)
        # First byte: wait for any data at all.
        first = s.recv(65536, socket.MSG_PEEK)
        t_first = time.perf_counter() - t0
        if not first:
            raise ConnectionError("closed before the response")
        status, hdrs = self._read_head()
        n = int(hdrs.get("content-length", "-1"))
        if n < 0 or n > len(out):
            raise RuntimeError(f"status {status}: body length {n} does not fit {len(out)}")
        got = min(n, len(self._rest))
        out[:got] = self._rest[:got]
        self._rest = self._rest[got:]
        t_mb = None
        mark = min(n, 1 << 20)
        while got < n:
            k = s.recv_into(out[got:n])
            if k == 0:
                raise ConnectionError("connection closed in the body")
            got += k
            if t_mb is None and got >= mark:
                t_mb = time.perf_counter() - t0
        t_total = time.perf_counter() - t0
        return {"status": status, "t_first": t_first, "t_first_mb": t_mb if t_mb is not None else t_total,
                "t_total": t_total, "nbytes": n, "content_type": hdrs.get("content-type", "")}


class Alpaca:
    """Camera 0 of a server, through :class:`Http` (one keep-alive connection)."""

    def __init__(self, port: int, device: int = 0) -> None:
        self.http = Http(port)
        self.base = f"/api/v1/camera/{device}/"
        self.ctid = 0

    def _ids(self) -> dict[str, Any]:
        self.ctid += 1
        return {"ClientID": 7, "ClientTransactionID": self.ctid}

    def get(self, member: str, **params: Any) -> Any:
        """GET a member; returns Value (raises on an ASCOM error)."""
        status, _, body = self.http.request("GET", self.base + member, {**self._ids(), **params})
        return _value(status, body, member)

    def put(self, member: str, **params: Any) -> Any:
        """PUT a member; returns Value or None."""
        status, _, body = self.http.request("PUT", self.base + member, {**params, **self._ids()})
        return _value(status, body, member)

    def close(self) -> None:
        """Close the connection."""
        self.http.close()

    def expose_and_wait(self, duration: float = 0.001, timeout: float = 30.0) -> float:
        """StartExposure, then poll ImageReady every 1 ms; seconds from the PUT to ImageReady true."""
        t0 = time.perf_counter()
        self.put("startexposure", Duration=duration, Light="true")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("imageready"):
                return time.perf_counter() - t0
            time.sleep(0.001)
        raise TimeoutError("ImageReady did not become true")


def _value(status: int, body: bytes, member: str) -> Any:
    if status != 200:
        raise RuntimeError(f"{member}: HTTP {status}: {body[:200]!r}")
    doc = json.loads(body)
    if doc.get("ErrorNumber"):
        raise RuntimeError(f"{member}: ASCOM error 0x{doc['ErrorNumber']:X}: {doc.get('ErrorMessage')}")
    return doc.get("Value")


# ----------------------------------------------------------------------------- memory sampling


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB -> bytes) and Threads of ``pid`` from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(rest.split()[0])
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS watermark (``echo 5 > /proc/<pid>/clear_refs``); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak RSS of a process over a block: VmHWM after a reset when allowed, else a 2 ms sampler.

    ``growth`` = peak - RSS at the start of the block.
    """

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid, self.interval = pid, interval
        self.start_rss = 0
        self.peak = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.start_rss = proc_status(self.pid)["VmRSS"]
        self.hwm_reset = reset_hwm(self.pid)
        self.peak = self.start_rss
        if not self.hwm_reset:  # the kernel keeps the exact peak when it can be reset: no sampling load
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            except OSError:
                return
            self._stop.wait(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        st = proc_status(self.pid)
        self.peak = max(self.peak, st["VmRSS"])
        if self.hwm_reset:
            self.peak = max(self.peak, st["VmHWM"])

    @property
    def growth(self) -> int:
        """Peak RSS growth over the block, bytes."""
        return max(0, self.peak - self.start_rss)


# ----------------------------------------------------------------------------- references


class TcpReference:
    """Loopback TCP reference: a separate server process ``sendall``s a preallocated buffer of
    ``nbytes`` per request; :meth:`transfer` ``recv_into`` a preallocated buffer here and returns the
    seconds. (A separate process, like the product server: a sender thread in this process would
    share our GIL.) Kept open for a whole run, so references can be interleaved with measurements."""

    def __init__(self, nbytes: int = FRAME_BYTES) -> None:
        self.nbytes = nbytes
        self.proc = subprocess.Popen([PYTHON, str(Path(__file__).resolve()), "tcp-serve", str(nbytes)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.out = bytearray(nbytes)
        self.view = memoryview(self.out)
        self.transfer()  # the first round pays for page faults in both buffers

    def transfer(self) -> float:
        """One ``nbytes`` transfer; seconds from the request byte to the last byte received."""
        t0 = time.perf_counter()
        self.sock.sendall(b"g")
        got = 0
        while got < self.nbytes:
            k = self.sock.recv_into(self.view[got:])
            if k == 0:
                raise ConnectionError("reference server closed early")
            got += k
        return time.perf_counter() - t0

    def close(self) -> None:
        """Stop the reference server (by PID)."""
        try:
            self.sock.sendall(b"q")
            self.sock.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def raw_tcp_rate(nbytes: int = FRAME_BYTES, reps: int = 5) -> dict[str, Any]:
    """``reps`` transfers through a fresh :class:`TcpReference`; per-rep seconds and the median rate."""
    ref = TcpReference(nbytes)
    try:
        times = [ref.transfer() for _ in range(reps)]
    finally:
        ref.close()
    s = median(times)
    return {"bytes": nbytes, "seconds": times, "seconds_median": s, "MBps": nbytes / s / 1e6}


def _tcp_serve(nbytes: int) -> None:
    payload = np.ones(nbytes, dtype=np.uint8)
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        print(lsock.getsockname()[1], flush=True)
        lsock.settimeout(30)
        conn, _ = lsock.accept()
        conn.settimeout(60)
        with conn:
            for _ in range(1000):
                if conn.recv(1) != b"g":
                    return
                conn.sendall(payload.data)


def memcpy_rate(nbytes: int = FRAME_BYTES, reps: int = 5) -> dict[str, Any]:
    """numpy copy of ``nbytes`` into a preallocated (already touched) buffer."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty(nbytes, dtype=np.uint8)
    np.copyto(dst, src)  # touch every page first: the reference is the copy, not page faults
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    s = median(times)
    return {"bytes": nbytes, "seconds": times, "seconds_median": s, "MBps": nbytes / s / 1e6}


def sample_frame(width: int = W, height: int = H, seed: int = 1) -> np.ndarray:
    """A (rows, cols) uint16 frame with sky-like values (noise around a bias, as the simulator makes)."""
    rng = np.random.default_rng(seed)
    pool = (rng.normal(1000, 30, size=1 << 20).clip(0, 65535).astype(np.uint16) << 0)
    flat = np.resize(pool, width * height)
    return flat.reshape(height, width)


def orjson_bare(frame: np.ndarray | None = None, reps: int = 3) -> dict[str, Any]:
    """orjson (OPT_SERIALIZE_NUMPY) encoding the bare, already transposed (width-major) array."""
    import orjson  # noqa: PLC0415

    if frame is None:
        frame = sample_frame()
    arr = np.ascontiguousarray(frame.T)
    times = []
    size = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        text = orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)
        times.append(time.perf_counter() - t0)
        size = len(text)
        del text
    return {"seconds": times, "seconds_median": median(times), "json_bytes": size}


# ----------------------------------------------------------------------------- output


@dataclass
class Row:
    """One line of a result table: what, measured value, target, verdict."""

    name: str
    value: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "value": self.value, "target": self.target, "ok": self.ok, "note": self.note}


def verdict(ok: bool | None) -> str:
    """PASS/FAIL/info."""
    return "" if ok is None else ("PASS" if ok else "FAIL")


def format_table(rows: Sequence[Row], title: str = "") -> str:
    """A fixed-width text table (also valid Markdown)."""
    head = ("measurement", "value", "target", "ok", "note")
    body = [(r.name, r.value, r.target, verdict(r.ok), r.note) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = []
    if title:
        lines.append(f"### {title}")
        lines.append("")
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    lines.append(fmt.format(*head))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        lines.append(fmt.format(*r))
    return "\n".join(lines)


def format_grid(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """A Markdown table with any columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    lines = [f"#### {title}", ""] if title else []
    lines.append(fmt.format(*columns))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [fmt.format(*[str(c) for c in r]) for r in rows]
    return "\n".join(lines)


@dataclass
class Result:
    """What a benchmark script produces: rows for the table and raw data for the JSON."""

    name: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    # Extra tables: (title, column names, rows of cells), printed after the main one.
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None, note: str = "") -> None:
        """Append a row."""
        self.rows.append(Row(name, value, target, ok, note))

    def text(self) -> str:
        """The main table and the extra ones, as Markdown."""
        parts = [format_table(self.rows, self.name)] if self.rows else [f"### {self.name}"]
        for title, cols, rows in self.tables:
            parts.append(format_grid(cols, rows, title))
        return "\n\n".join(parts)

    def write(self) -> Path:
        """Print the table; write bench/results/<name>.json (and a timestamped copy)."""
        print(self.text())
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = {"name": self.name, "time": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "command": " ".join([".venv/bin/python", os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
               "rows": [r.as_dict() for r in self.rows],
               "tables": [{"title": t, "columns": c, "rows": r} for t, c, r in self.tables], "data": self.data}
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(doc, indent=2, default=_jsonable))
        return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


# ----------------------------------------------------------------------------- load generator


def downloader(port: int, mode: str, count: int, max_seconds: float) -> None:
    """Child-process load: ``count`` full-frame downloads back to back (bounded by ``max_seconds``).

    mode ``cached``: ImageBytes of the current frame again and again; ``expose``: a 0.001 s exposure,
    wait for ImageReady, then ImageBytes (what an imaging session does); ``json``: JSON ImageArray.
    Prints one line per download: ``<mode> <start perf_counter> <seconds> <bytes>``.
    """
    cam = Alpaca(port)
    http = Http(port)
    buf = memoryview(bytearray(W * H * 7 + 4096 if mode == "json" else FRAME_BYTES + 4096))
    headers = None if mode == "json" else {"Accept": "application/imagebytes"}
    deadline = time.monotonic() + max_seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        if mode == "expose":
            cam.expose_and_wait()
        t0 = time.perf_counter()
        r = http.download_into("/api/v1/camera/0/imagearray", buf, headers=headers)
        print(f"{mode} {t0:.6f} {r['t_total']:.6f} {r['nbytes']}", flush=True)
    cam.close()
    http.close()


def start_downloader(port: int, mode: str, count: int, max_seconds: float = 60.0) -> subprocess.Popen:
    """Run :func:`downloader` in a child process (its own GIL); read its stdout for the timings."""
    return subprocess.Popen([PYTHON, str(Path(__file__).resolve()), "download", str(port), mode, str(count),
                             str(max_seconds)], stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["tcp-serve"]:
        _tcp_serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["download"]:
        downloader(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
