"""``zwo-alpaca serve`` inside the test process, for tests where a subprocess adds nothing.

The same composition as the program (`zwo_runtime.serve.serve_forever` over a `Runtime`, with the
command line parsed by the real parser) runs on an event loop in a thread of the test process, so
a test can reach the server over HTTP and INDI exactly as through a subprocess, but without paying
for a new interpreter, and can patch module constants (limits) first. A test that sends signals,
checks exit codes or reads the server's own log output needs `support.servers.start_server`.

The simulated SDK is process-wide (zwoasi keeps one library), so one in-process server at a time,
and not beside another test's own `driver.sdk.load()`: module-scoped fixtures keep to that.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from support.servers import DEFAULT_SIMULATOR, Server, free_port

#: How long start-up and shutdown may take before the helper gives up.
START_TIMEOUT_S, STOP_TIMEOUT_S = 15.0, 5.0


@dataclass
class InProcessServer(Server):
    """Where an in-process server answers (the address helpers are `support.servers.Server`'s)."""

    host: str
    port: int
    workdir: Path
    config_path: Path
    indi_port: int | None = None


@contextmanager
def serve_in_process(workdir: Path, *extra: str, simulator: str = DEFAULT_SIMULATOR, host: str = "127.0.0.1",
                     indi: bool = False) -> Iterator[InProcessServer]:
    """Run the server in this process until the block ends; yields where it answers.

    ``extra`` are more ``serve`` options; ``indi`` also serves INDI on a free port.
    """
    from driver import simulator as sim_module
    from zwo_runtime import serve
    from zwo_runtime.cli import build_parser
    from zwo_runtime.runtime import Runtime

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    indi_port = free_port(host) if indi else 0
    config = workdir / "config.json"
    os.environ.setdefault("ZWO_ALPACA_SIM_LOCK_DIR", str(workdir / "sim-locks"))
    args = build_parser().parse_args(["serve", "--simulator", simulator, "--bind", host, "--port", str(port),
                                      "--indi-port", str(indi_port), "--no-discovery", "--config", str(config),
                                      *extra])
    runtime = Runtime.open(simulator=args.simulator, sdk_path=args.sdk, config_path=args.config)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve.serve_forever(args, runtime))

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.wait([task]))
        rest = asyncio.all_tasks(loop)
        for t in rest:
            t.cancel()
        if rest:
            loop.run_until_complete(asyncio.wait(rest, timeout=2))

    thread = threading.Thread(target=run, name="in-process-server", daemon=True)
    thread.start()
    server = InProcessServer(host, port, workdir, config, indi_port or None)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if task.done():
                raise RuntimeError(f"in-process server stopped at start: {task.exception() or task.result()}")
            try:
                requests.get(server.url("/management/apiversions"), timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"in-process server did not answer within {START_TIMEOUT_S} s") from None
                time.sleep(0.05)
        yield server
    finally:
        runtime.request_stop()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():  # the orderly stop did not finish: cancel what is left
            loop.call_soon_threadsafe(task.cancel)
            thread.join(STOP_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        runtime.close()
        sim_module.uninstall()
