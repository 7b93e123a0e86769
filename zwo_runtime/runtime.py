"""One process's runtime: config, worker pools, the camera set, and the loop that serves front ends.

Both programs use it the same way (``serve.py``, ``indi_main.py``):

1. :meth:`Runtime.open` loads the config and the SDK and opens the cameras (blocking, at start-up);
2. the program builds its front ends (:mod:`zwo_runtime.frontend`) and :meth:`Runtime.serve` adds
   every camera to each, starts them, watches for cameras plugged in later (``hotplug.py``) and
   waits for SIGTERM/SIGINT or :meth:`Runtime.request_stop`;
3. then everything stops side by side, each step bounded, within :data:`SHUTDOWN_BUDGET_S`:
   every camera is released (a running exposure is ended), the front ends close their listeners.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

from zwo_common.config import Config
from zwo_common.threads import in_daemon_thread
from zwo_common.version import package_version

from . import hotplug
from .cameras import CameraSet, open_cameras
from .frontend import FrontEnd

log = logging.getLogger("zwo_alpaca")

SHUTDOWN_BUDGET_S = 2.0
SDK_WORKERS = 8
CODEC_WORKERS = 2


class Runtime:
    """What one process serves: the config, the camera set and the worker pools front ends share.

    ``sdk_pool`` runs blocking device-core calls for the front ends that need a pool (Alpaca);
    ``codec_pool`` encodes images. :meth:`close` releases the cameras and the pools.
    """

    def __init__(self, config: Config, cameras: CameraSet) -> None:
        self.config = config
        self.cameras = cameras
        self.sdk_pool = concurrent.futures.ThreadPoolExecutor(max_workers=SDK_WORKERS, thread_name_prefix="alpaca-sdk")
        self.codec_pool = concurrent.futures.ThreadPoolExecutor(max_workers=CODEC_WORKERS,
                                                                thread_name_prefix="alpaca-codec")
        self.version = package_version()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False

    @classmethod
    def open(cls, *, simulator: str | None, sdk_path: str | None, config_path: str | None) -> Runtime:
        """Load the config and the SDK and open every camera (blocking; raises when nothing can be served)."""
        config = Config.load(config_path)
        return cls(config, open_cameras(simulator, sdk_path, config))

    def request_stop(self) -> None:
        """Ask :meth:`serve` to shut down (thread-safe)."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop has closed: it is over already
            pass

    async def serve(self, front_ends: Sequence[FrontEnd], *, optional: Collection[FrontEnd] = (),
                    hotplug_interval: float = 0.0) -> int:
        """Serve every camera through ``front_ends`` until SIGTERM/SIGINT or :meth:`request_stop`.

        Front ends start in order; one that cannot start ends the run with its exception, unless
        it is in ``optional`` (logged, and the others go on). Cameras plugged in later are added to
        every running front end, and known cameras that were not plugged in are brought in under
        their own devices, when ``hotplug_interval`` > 0. Returns 0.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (in-process tests)
                pass
        running: list[FrontEnd] = []
        try:
            for front_end in front_ends:
                try:
                    await front_end.start()
                except Exception as exc:
                    if front_end not in optional:
                        raise
                    log.warning("%s not started: %s", front_end.title, exc)
                    continue
                running.append(front_end)
        except BaseException:
            await self._shutdown(running, None)
            raise
        watcher = await loop.run_in_executor(None, hotplug.start, self.cameras, running, hotplug_interval)
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(running, watcher)
        return 0

    def add_to(self, front_ends: Sequence[FrontEnd]) -> None:
        """Give every camera of the set to each front end (blocking; before they start)."""
        for served in self.cameras:
            for front_end in front_ends:
                front_end.add_camera(served.number, served.cam, key=served.key, unique_id=served.unique_id)

    async def _shutdown(self, front_ends: Sequence[FrontEnd], watcher: Any) -> None:
        loop = asyncio.get_running_loop()
        if watcher is not None:
            await in_daemon_thread(loop, watcher.stop, 1.0)
        log.info("shutting down: releasing cameras")
        started = time.monotonic()
        # Everything that may block runs side by side, each bounded: the whole shutdown must fit
        # in SHUTDOWN_BUDGET_S.
        jobs: list[asyncio.Future[Any]] = [in_daemon_thread(loop, self.cameras.release, SHUTDOWN_BUDGET_S * 0.6)]
        jobs += [asyncio.ensure_future(fe.stop(SHUTDOWN_BUDGET_S * 0.5)) for fe in front_ends]
        left = max(0.1, SHUTDOWN_BUDGET_S * 0.85 - (time.monotonic() - started))
        _, pending = await asyncio.wait(jobs, timeout=left)
        for job in pending:
            if isinstance(job, asyncio.Task):
                job.cancel()
        if pending:
            log.warning("shutdown: %d step(s) did not finish in time; exiting anyway", len(pending))
        log.info("stopped after %.2f s", time.monotonic() - started)

    def close(self, budget: float = 1.0) -> None:
        """Release the cameras (bounded by ``budget`` s) and the worker pools; for ways out that did
        not go through :meth:`serve`'s shutdown (Ctrl-C at start-up, a port in use)."""
        self.cameras.release(budget)
        self.shutdown_pools()

    def shutdown_pools(self) -> None:
        """Stop the worker pools without waiting (a call stuck in the SDK must not hold the exit)."""
        self.sdk_pool.shutdown(wait=False, cancel_futures=True)
        self.codec_pool.shutdown(wait=False, cancel_futures=True)


def finish(code: int) -> int:
    """Return ``code``, or leave at once if a worker thread is stuck in an SDK call (exit must be < 2 s)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        deadline = time.monotonic() + 0.3
        for t in stuck:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in stuck):
            os._exit(code)
    return code
