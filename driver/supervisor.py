"""The supervisor of one connected camera: health checks, reconnection with backoff, the capture schedule.

One thread per connected camera, holding only a weak reference to it (a forgotten camera object
is still collected). It decides *when* to act; the acts themselves (reconnect, release off-peak,
resume) are the camera's, because they change its state, and every state change happens there.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Protocol

from .models import CaptureWindow, ReconnectPolicy
from .state import OPEN_STATES, CameraState


class Supervised(Protocol):
    """What the supervisor needs of its camera (`Supervised`); the camera does the acts, it decides when."""

    log: logging.Logger
    reconnect_policy: ReconnectPolicy
    health_interval: float

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> CameraState: ...

    @property
    def schedule(self) -> CaptureWindow | None: ...

    def _sdk_unloaded(self) -> bool: ...

    def _local_now(self) -> _dt.datetime: ...

    def _abandon(self) -> None: ...

    def _go_off_peak(self, window: CaptureWindow) -> None: ...

    def _resume_from_off_peak(self) -> None: ...

    def _try_reconnect(self) -> None: ...

    def _health_check(self) -> None: ...


S = CameraState
#: The longest the loop sleeps between looks at the camera.
IDLE_WAIT_S = 0.25
#: How long stopping waits for the thread (it wakes at once; the bound covers an SDK call in progress).
JOIN_S = 1.0
_HEALTHY = frozenset({S.IDLE, S.IMAGE_READY, S.EXPOSING, S.READING, S.CAPTURING})


class Supervisor:
    """Runs a camera's periodic duties on a thread of its own while the camera is connected."""

    def __init__(self, cam: Supervised) -> None:
        self._ref = weakref.ref(cam)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self.wake = threading.Event()

    def start(self) -> None:
        """Start the thread unless it runs already."""
        # Created and started under one lock, so a concurrent stop() never sees an unstarted thread.
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            cam = self._ref()
            name = cam.name if cam is not None else "camera"  # the model name, once connected
            thread = threading.Thread(target=self._run, args=(self._ref, self._stop, self.wake),
                                      name=f"{name}-supervisor", daemon=True)
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        """Stop the thread and join it (bounded); harmless when it is not running or from itself."""
        with self._guard:
            thread, self._thread = self._thread, None
            self._stop.set()
            self.wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=JOIN_S)

    def forget(self) -> None:
        """Called from the thread itself when it ends on its own (the SDK was unloaded)."""
        with self._guard:
            self._stop.set()
            self._thread = None

    @staticmethod
    def _run(ref: weakref.ref[Supervised], stop: threading.Event, wake: threading.Event) -> None:
        delays: Iterator[float] | None = None
        next_health = 0.0
        next_attempt = 0.0
        while not stop.is_set():
            cam = ref()
            if cam is None:
                return
            now = time.monotonic()
            state = cam.state
            window = cam.schedule
            wait = IDLE_WAIT_S
            if cam._sdk_unloaded():
                cam._abandon()
                return
            try:
                if window is not None and state != S.DISCONNECTING:
                    inside = window.contains(cam._local_now())
                    if not inside and state in (OPEN_STATES | {S.ERROR}):
                        cam._go_off_peak(window)
                        continue
                    if inside and state == S.OFF_PEAK:
                        cam._resume_from_off_peak()
                        continue
                elif window is None and state == S.OFF_PEAK:
                    cam._resume_from_off_peak()
                    continue
                if state == S.ERROR and cam.reconnect_policy.enabled:
                    if delays is None:
                        delays = cam.reconnect_policy.delays()
                        next_attempt = now + next(delays)
                    if now >= next_attempt:
                        cam._try_reconnect()
                        if cam.state == S.ERROR:
                            next_attempt = time.monotonic() + next(delays)
                        else:
                            delays = None
                    wait = max(0.01, min(wait, next_attempt - time.monotonic()))
                elif state in _HEALTHY:
                    delays = None
                    if now >= next_health:
                        next_health = now + cam.health_interval
                        cam._health_check()
                    wait = min(wait, max(0.01, next_health - time.monotonic()))
            except Exception:
                cam.log.exception("%s: supervisor step failed", cam.name)
            del cam  # hold no strong reference while sleeping
            wake.wait(wait)
            wake.clear()
