#!/usr/bin/env python3
"""HTTP stack comparison on this server's workload: large binary bodies, many tiny polls, thread-pool
(SDK-like) calls. Each stack serves the same three endpoints from a child process:

* ``/api/v1/camera/0/camerastate``: a tiny Alpaca JSON envelope (orjson), parameters from the query;
* ``/api/v1/camera/0/gain``: the same, but the value comes from a 0.3 ms blocking call in a thread pool
  (what an SDK call through ctypes looks like to the loop);
* ``/api/v1/camera/0/imagearray``: a 44-byte header + a cached 122 MB buffer (a full ASI6200 frame),
  written as 4 MiB memoryview slices with flow control (no copies in our code).

Stacks: ``aiohttp`` (the product's stack, written exactly as the product writes - see
alpaca_server/app.py), ``asyncio-protocol`` (a hand-written HTTP/1.1 asyncio.Protocol: the floor for
asyncio), and, when importable, ``aiohttp+uvloop`` and ``uvicorn+starlette`` (httptools, uvloop) -
``pip install uvicorn starlette uvloop httptools``; none of them is a dependency of the product.

Measured per stack (medians over ``--rounds`` rounds, stacks interleaved): single-client poll p50,
8-thread poll throughput and p99, server CPU per poll (from /proc/<pid>/stat), thread-pool call p50,
ImageBytes download rate relative to raw TCP in the same round, and 8-poller p99 during downloads.

Usage: .venv/bin/python bench/http_stacks.py [--rounds 2]
Writes bench/results/http_stacks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import orjson

from _common import (
    FRAME_BYTES,
    PYTHON,
    Http,
    Result,
    TcpReference,
    free_port,
    median,
    percentile,
    start_downloader,
)

CHUNK = 4 * 1024 * 1024
HEADER = bytes(44)
STACKS = ("aiohttp", "aiohttp+uvloop", "asyncio-protocol", "uvicorn+starlette")


# ----------------------------------------------------------------------------- the shared app logic


class App:
    """What every stack serves: the same handlers, only the HTTP plumbing differs."""

    def __init__(self) -> None:
        self.payload = np.full(FRAME_BYTES, 7, dtype=np.uint8).data.cast("B")
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self.stid = 0

    def envelope(self, query: str, value: object) -> bytes:
        q = parse_qs(query)
        ctid = int(q.get("ClientTransactionID", ["0"])[0])
        self.stid += 1
        return orjson.dumps({"Value": value, "ClientTransactionID": ctid, "ServerTransactionID": self.stid,
                             "ErrorNumber": 0, "ErrorMessage": ""})

    @staticmethod
    def sdk_call() -> int:
        time.sleep(0.0003)
        return 200


# ----------------------------------------------------------------------------- stacks (child side)


def serve_aiohttp(port: int, use_uvloop: bool) -> None:
    from aiohttp import web  # noqa: PLC0415

    app_state = App()

    async def member(request: web.Request) -> web.StreamResponse:
        name = request.match_info["member"]
        if name == "camerastate":
            return web.Response(body=app_state.envelope(request.query_string, 0), content_type="application/json")
        if name == "gain":
            value = await asyncio.get_running_loop().run_in_executor(app_state.pool, app_state.sdk_call)
            return web.Response(body=app_state.envelope(request.query_string, value), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/imagebytes"})
        resp.content_length = len(HEADER) + len(app_state.payload)
        await resp.prepare(request)
        await resp.write(HEADER)
        view = app_state.payload
        for off in range(0, len(view), CHUNK):
            await resp.write(view[off:off + CHUNK])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/camera/0/{member}", member)
    if use_uvloop:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


class _Proto(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: GET only, no bodies in, Content-Length out."""

    app: App

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server hands out a Transport
        self.buf = b""
        self.paused = False
        self.resume = asyncio.Event()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self.run())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.queue.put_nowait(head)

    def pause_writing(self) -> None:
        self.paused = True
        self.resume.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.resume.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.task.cancel()

    async def drain(self) -> None:
        if self.paused:
            await self.resume.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            head = await self.queue.get()
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            target = line.split(" ")[1]
            path, _, query = target.partition("?")
            name = path.rsplit("/", 1)[-1]
            if name in ("camerastate", "gain"):
                value = 0 if name == "camerastate" else await loop.run_in_executor(self.app.pool, self.app.sdk_call)
                body = self.app.envelope(query, value)
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                     % len(body) + body)
            else:
                view = self.app.payload
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/imagebytes\r\n"
                                     b"Content-Length: %d\r\n\r\n" % (len(HEADER) + len(view)) + HEADER)
                for off in range(0, len(view), CHUNK):
                    self.transport.write(view[off:off + CHUNK])
                    await self.drain()
                    await asyncio.sleep(0)


def serve_protocol(port: int) -> None:
    _Proto.app = App()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Proto, "127.0.0.1", port, reuse_address=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_uvicorn(port: int) -> None:
    import uvicorn  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import Response, StreamingResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    app_state = App()

    async def member(request):
        name = request.path_params["member"]
        if name == "camerastate":
            return Response(app_state.envelope(request.url.query, 0), media_type="application/json")
        if name == "gain":
            value = await asyncio.get_running_loop().run_in_executor(app_state.pool, app_state.sdk_call)
            return Response(app_state.envelope(request.url.query, value), media_type="application/json")

        async def body():
            yield HEADER
            view = app_state.payload
            for off in range(0, len(view), CHUNK):
                yield view[off:off + CHUNK]

        return StreamingResponse(body(), media_type="application/imagebytes",
                                 headers={"Content-Length": str(len(HEADER) + len(app_state.payload))})

    app = Starlette(routes=[Route("/api/v1/camera/0/{member}", member)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", lifespan="off")


def available(stack: str) -> bool:
    """Whether the stack's packages import here."""
    mods = {"aiohttp": ["aiohttp"], "aiohttp+uvloop": ["aiohttp", "uvloop"], "asyncio-protocol": [],
            "uvicorn+starlette": ["uvicorn", "starlette", "uvloop", "httptools"]}[stack]
    for m in mods:
        try:
            __import__(m)
        except ImportError:
            return False
    return True


# ----------------------------------------------------------------------------- measuring (parent side)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(stack: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([PYTHON, str(Path(__file__).resolve()), "serve", stack, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{stack} exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")  # type: ignore[union-attr]
        try:
            if Http(port).request("GET", "/api/v1/camera/0/camerastate")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{stack} did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


def polls(port: int, member: str, n: int) -> list[float]:
    h = Http(port)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        status, _, _ = h.request("GET", f"/api/v1/camera/0/{member}", {"ClientID": 1, "ClientTransactionID": i + 1})
        lat.append(time.perf_counter() - t0)
        assert status == 200
    h.close()
    return lat[20:]


def threaded_polls(port: int, threads: int, seconds: float, interval: float, stop: threading.Event | None = None
                   ) -> list[tuple[float, float]]:
    out: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        h = Http(port)
        for k in range(1_000_000):
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                break
            t0 = time.perf_counter()
            h.request("GET", "/api/v1/camera/0/camerastate", {"ClientTransactionID": k})
            out[i].append((t0, time.perf_counter() - t0))
            if interval:
                time.sleep(interval)
        h.close()

    ws = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join(seconds + 30)
    return [x for o in out for x in o]


def measure(stack: str, tcp: TcpReference) -> dict:
    proc, port = start(stack)
    try:
        r: dict = {}
        lat = polls(port, "camerastate", 1000)
        r["poll_p50_ms"] = percentile(lat, 50) * 1e3
        c0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        many = threaded_polls(port, 8, 2.0, 0.0)
        wall = time.perf_counter() - t0
        r["poll_cpu_us"] = (cpu_seconds(proc.pid) - c0) / max(1, len(many)) * 1e6
        r["poll8_rps"] = len(many) / wall
        r["poll8_p99_ms"] = percentile([x[1] for x in many], 99) * 1e3
        lat = polls(port, "gain", 300)
        r["pool_call_p50_ms"] = percentile(lat, 50) * 1e3
        buf = memoryview(bytearray(FRAME_BYTES + 4096))
        h = Http(port)
        h.download_into("/api/v1/camera/0/imagearray", buf)  # warm-up
        ratios, dl = [], []
        for _ in range(3):
            t_tcp = tcp.transfer()
            d = h.download_into("/api/v1/camera/0/imagearray", buf)["t_total"]
            t_tcp = (t_tcp + tcp.transfer()) / 2
            ratios.append(t_tcp / d)
            dl.append(d)
        r["imagebytes_ratio"] = median(ratios)
        r["imagebytes_MBps"] = FRAME_BYTES / median(dl) / 1e6
        # 8 pollers (5 ms apart each) while a child process downloads the frame back to back
        child = start_downloader(port, "cached", 6, 60)
        stop_ev = threading.Event()
        windows: list[tuple[float, float]] = []

        def collect() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                _, t, dt, _ = line.split()
                windows.append((float(t), float(t) + float(dt)))
            child.wait(60)
            stop_ev.set()

        th = threading.Thread(target=collect, daemon=True)
        th.start()
        samples = threaded_polls(port, 8, 60.0, 0.005, stop_ev)
        th.join(60)
        if child.poll() is None:
            child.kill()
            child.wait(5)
        during = [lat for t, lat in samples if any(a <= t <= b for a, b in windows)]
        r["poll_during_download_p99_ms"] = percentile(during, 99) * 1e3
        h.close()
        return r
    finally:
        stop(proc)


def run(rounds: int) -> Result:
    res = Result("http_stacks")
    stacks = [s for s in STACKS if available(s)]
    tcp = TcpReference(FRAME_BYTES)
    per: dict[str, list[dict]] = {s: [] for s in stacks}
    try:
        for rnd in range(rounds):
            for s in stacks:
                per[s].append(measure(s, tcp))
                print(f"round {rnd + 1}: {s}: {per[s][-1]}", flush=True)
    finally:
        tcp.close()
    keys = ("poll_p50_ms", "poll8_rps", "poll8_p99_ms", "poll_cpu_us", "pool_call_p50_ms", "imagebytes_ratio",
            "imagebytes_MBps", "poll_during_download_p99_ms")
    summary = {s: {k: median(m[k] for m in per[s]) for k in keys} for s in stacks}
    cols = ["stack", "poll p50 (1 client)", "8 threads: req/s", "8 threads: p99", "server CPU / poll",
            "pool call p50", "ImageBytes / raw TCP", "8 pollers p99 during downloads"]
    grid = []
    for s in stacks:
        m = summary[s]
        grid.append([s, f"{m['poll_p50_ms']:.2f} ms", f"{m['poll8_rps']:.0f}", f"{m['poll8_p99_ms']:.1f} ms",
                     f"{m['poll_cpu_us']:.0f} us", f"{m['pool_call_p50_ms']:.2f} ms",
                     f"{m['imagebytes_ratio']:.2f}x ({m['imagebytes_MBps']:.0f} MB/s)",
                     f"{m['poll_during_download_p99_ms']:.1f} ms"])
    res.tables.append((f"same workload, medians of {rounds} round(s), stacks interleaved", cols, grid))
    missing = [s for s in STACKS if s not in stacks]
    if missing:
        res.add("not measured (not installed)", ", ".join(missing))
    res.data = {"rounds": per, "summary": summary}
    return res


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        stack, port = sys.argv[2], int(sys.argv[3])
        if stack == "aiohttp":
            serve_aiohttp(port, False)
        elif stack == "aiohttp+uvloop":
            serve_aiohttp(port, True)
        elif stack == "asyncio-protocol":
            serve_protocol(port)
        elif stack == "uvicorn+starlette":
            serve_uvicorn(port)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    res = run(max(1, min(args.rounds, 10)))
    path = res.write()
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
