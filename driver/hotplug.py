"""Noticing cameras plugged in after start-up.

:class:`CameraWatcher` - one thread with a bounded, state-driven loop (no sleeps: an Event wait that
`stop()` ends at once, joined with a bounded wait) - looks at the installed SDK (real or simulated)
and reports each camera that appears on the bus:

* a camera already served and open is left alone: after an unplug its ZWOCamera reconnects to it
  by serial number (see camera.py);
* a camera the caller knows but is not holding (one the config knows, served as "not plugged in",
  or a served one a client is waiting for) goes to ``on_known``, which brings that unit in under
  its existing device (``ZWOCamera.plugged_in``);
* anything else is new and goes to ``on_new``. For cameras without a serial number, a camera of an
  already served model is left alone (it could be that one coming back under another index).

Cheap when nothing changes: a tick is one ``ASIGetNumOfConnectedCameras`` plus one property read per
camera; serial numbers are probed only for camera IDs not seen before, and never for a camera this
process has open (driver.sdk.probe_serial).
"""

from __future__ import annotations

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
    changed on the bus, so it sees cameras added meanwhile). ``on_known(info)``, when given, is asked
    first about each camera that appeared: it returns True when the camera is one the caller already
    serves without holding it (a known camera that was not plugged in), having brought it in; such a
    camera is not new. ``on_new`` and ``on_known`` may block (opening, connecting); exceptions they
    raise are logged and the camera is offered again at the next change.
    """

    def __init__(self, served: Callable[[], Iterable[CameraInfo]], on_new: Callable[[CameraInfo], None], *,
                 interval: float = DEFAULT_INTERVAL_S, logger: logging.Logger | None = None,
                 busy: Callable[[], bool] | None = None,
                 on_known: Callable[[CameraInfo], bool] | None = None) -> None:
        super().__init__(interval, logger)
        self._served = served
        self._on_new = on_new
        self._on_known = on_known
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
        # The cameras served at start are not new. Any other camera on the bus now (plugged in while
        # the server was starting) is offered at the first look, like one plugged in later.
        served = {info.camera_id for info in self._served()}
        self._seen = self._bus_ids() & served

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
                if _sdk.claimed(info.camera_id):
                    continue  # open in this process already
                if self._on_known is not None:
                    try:
                        known = self._on_known(info)
                    except Exception:  # offered again at the next change
                        self.log.exception("hotplug: could not bring in %s", info.name)
                        failed.add(info.camera_id)
                        continue
                    if known:
                        continue
                if info.unique_key in keys:
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
