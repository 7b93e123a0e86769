"""Noticing cameras plugged in after start-up.

Two watchers, each one thread with a bounded, state-driven loop (no sleeps: an Event wait that
`stop()` ends at once, joined with a bounded wait):

* :class:`CameraWatcher` - on the installed SDK (real or simulated), reports a camera that was not
  there before and is not one of the cameras already served. A camera that comes back after an
  unplug is *not* new: its ZWOCamera reconnects to it by serial number (see camera.py), so the
  watcher matches by ``CameraInfo.unique_key`` and, for cameras without a serial number, leaves any
  camera of an already served model alone (it could be that one coming back under another index).
* :class:`AttachProbe` - when the simulator stands in because the real SDK saw no camera at start,
  counts the cameras that real SDK sees (loaded on its own with ctypes, beside the simulator that
  zwoasi uses). zwoasi has one library per process, so serving the new camera means starting again:
  the caller decides how (the server re-executes itself).

Cheap when nothing changes: a tick is one ``ASIGetNumOfConnectedCameras`` plus one property read per
camera; serial numbers are probed only for camera IDs not seen before, and never for a camera this
process has open (driver.sdk.probe_serial).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Self

from . import _zwo
from . import sdk as _sdk
from .errors import CameraError
from .models import CameraInfo

log = logging.getLogger("zwo_alpaca.hotplug")

DEFAULT_INTERVAL_S = 3.0


class _Periodic:
    """A daemon thread that calls ``_tick()`` every ``interval`` seconds until ``stop()`` or until
    ``_tick`` returns True; ``stop`` ends the wait at once and joins with a bounded wait."""

    thread_name = "zwo-hotplug"

    def __init__(self, interval: float, logger: logging.Logger | None) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = float(interval)
        self.log = logger or log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _begin(self) -> None:
        """Runs in start(), before the thread."""

    def _tick(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        """Start (once)."""
        if self._thread is None:
            self._begin()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop; returns within ``timeout`` (a tick in progress finishes in the background)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self._tick():
                    return
            except Exception:  # a watcher must outlive one bad look
                self.log.exception("hotplug: %s failed; trying again in %.0f s", self.thread_name, self.interval)


class CameraWatcher(_Periodic):
    """Calls ``on_new(info)`` (in its own thread) for each camera plugged in after start-up.

    ``served()`` returns the CameraInfos of the cameras already served (called every time something
    changed on the bus, so it sees cameras added meanwhile). ``on_new`` may block (it usually opens
    the camera's properties); exceptions it raises are logged and the camera is offered again at the
    next change.
    """

    def __init__(self, served: Callable[[], Iterable[CameraInfo]], on_new: Callable[[CameraInfo], None], *,
                 interval: float = DEFAULT_INTERVAL_S, logger: logging.Logger | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        super().__init__(interval, logger)
        self._served = served
        self._on_new = on_new
        # While this says True the bus is left alone: enumerating rescans USB, and a frame being read
        # out or a video stream of a served camera matters more than noticing a new camera a few
        # seconds sooner. A long exposure (nothing on the wire) does not count as busy.
        self._busy = busy
        self.skipped = 0
        # Camera IDs on the bus at the last look; None until the first one (taken at start()).
        self._seen: set[int] | None = None
        self.ticks = 0
        self.added = 0

    def _begin(self) -> None:
        self._seen = self._bus_ids()  # the cameras there at start are not new

    def _tick(self) -> bool:
        if self._busy is not None and self._busy():
            self.skipped += 1
            return False
        self.check()
        return False

    def _bus(self) -> list[CameraInfo]:
        zwo = _zwo.zwoasi()
        if zwo.zwolib is None:
            return []
        out = []
        for index in range(zwo.get_num_cameras()):
            try:
                out.append(_sdk.camera_info(index))
            except CameraError:  # gone between the count and the read
                continue
        return out

    def _bus_ids(self) -> set[int]:
        try:
            return {info.camera_id for info in self._bus()}
        except Exception:  # noqa: BLE001 - no SDK yet: everything found later is new
            return set()

    def check(self) -> list[CameraInfo]:
        """One look at the bus (what the thread does every ``interval``); returns the cameras offered."""
        self.ticks += 1
        bus = self._bus()
        ids = {info.camera_id for info in bus}
        seen = self._seen if self._seen is not None else set()
        fresh = [info for info in bus if info.camera_id not in seen]
        offered: list[CameraInfo] = []
        failed: set[int] = set()
        if fresh:
            served = list(self._served())
            keys = {s.unique_key for s in served}
            models = {s.model for s in served}
            for info in fresh:
                serial = _sdk.probe_serial(info.camera_id)
                if serial:
                    info = replace(info, serial=serial)
                if info.unique_key in keys or _sdk.claimed(info.camera_id):
                    continue  # one of ours, back after an unplug: its ZWOCamera reconnects to it
                if not info.serial and info.model in models:
                    self.log.warning("hotplug: a %s without a serial number appeared; it may be the served one "
                                     "coming back, so it is not added (restart the server to serve a second one)",
                                     info.name)
                    continue
                self.log.info("hotplug: new camera %s (serial %s, camera ID %d)", info.name, info.serial or "none",
                              info.camera_id)
                try:
                    self._on_new(info)
                except Exception:  # offered again at the next change
                    self.log.exception("hotplug: could not add %s", info.name)
                    failed.add(info.camera_id)
                    continue
                self.added += 1
                offered.append(info)
        self._seen = ids - failed
        return offered


class AttachProbe(_Periodic):
    """Counts the cameras a real libASICamera2 sees while the simulator stands in for it.

    The library is loaded with ctypes on its own (not through zwoasi, which holds the simulator);
    only ``ASIGetNumOfConnectedCameras`` is called. ``on_attached(count)`` runs once, in the probe's
    thread, the first time the count is above zero; then the probe stops.
    """

    thread_name = "zwo-attach-probe"

    def __init__(self, library_path: str, on_attached: Callable[[int], None], *,
                 interval: float = DEFAULT_INTERVAL_S, logger: logging.Logger | None = None) -> None:
        super().__init__(interval, logger)
        self.path = library_path
        self._count_fn = ctypes.CDLL(library_path).ASIGetNumOfConnectedCameras
        self._count_fn.restype = ctypes.c_int
        self._count_fn.argtypes = []
        self._on_attached = on_attached
        self.fired = False

    def count(self) -> int:
        """Cameras the real SDK sees now."""
        return int(self._count_fn())

    def _tick(self) -> bool:
        n = self.count()
        if n <= 0:
            return False
        self.fired = True
        self.log.warning("a ZWO camera is now attached (%d seen by %s)", n, self.path)
        try:
            self._on_attached(n)
        except Exception:  # nothing else to do from here
            self.log.exception("hotplug: acting on the attached camera failed")
        return True
