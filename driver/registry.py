"""Process-wide record of cameras, so that every open camera is released when the process ends.

Normal exit and `atexit` release cameras here. SIGTERM is turned into a normal exit (SystemExit) by
`install_signal_handlers()` so the same path runs; SIGINT already raises KeyboardInterrupt. Core
threads are daemon threads, so interpreter shutdown never waits on them before this runs.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import weakref
from typing import Any, Protocol

from .models import CameraInfo


class Tracked(Protocol):
    """What the registry needs of a camera object (`Tracked` is one; the registry imports none)."""

    @property
    def name(self) -> str: ...

    @property
    def info(self) -> CameraInfo | None: ...

    def disconnect_camera(self) -> None: ...


log = logging.getLogger("zwo_alpaca.registry")
_all: weakref.WeakSet[Tracked] = weakref.WeakSet()
# Weak too: a connected camera that nothing else references is released by its finaliser (the
# design note's last line of defence); what is still alive at exit is released by the exit hook.
_open: weakref.WeakSet[Tracked] = weakref.WeakSet()
_lock = threading.Lock()
_hooked = False


def track(cam: Tracked) -> None:
    """Remember a camera object (weakly) and make sure the exit hook is installed."""
    global _hooked
    with _lock:
        _all.add(cam)
        if not _hooked:
            atexit.register(release_all)
            _hooked = True


def opened(cam: Tracked) -> None:
    """A camera was connected: exit releases it unless it was disconnected (or collected) first."""
    with _lock:
        _open.add(cam)


def closed(cam: Tracked) -> None:
    """A camera was disconnected."""
    with _lock:
        _open.discard(cam)


def tracked() -> list[Tracked]:
    """Every camera object alive in this process, connected or not."""
    with _lock:
        return list(_all)


def open_cameras() -> list[Tracked]:
    """The cameras currently connected (or trying to be)."""
    with _lock:
        return list(_open)


def release_all() -> None:
    """Disconnect every camera this process has; each one bounded in time, failures logged."""
    with _lock:
        cams = list(_open) + [c for c in _all if c not in _open]
    for cam in cams:
        try:
            cam.disconnect_camera()
        except Exception as exc:  # noqa: BLE001 - exit must go on even if one camera misbehaves
            log.warning("releasing %s at exit failed: %s", getattr(cam, "name", cam), exc)


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def install_signal_handlers() -> None:
    """Make SIGTERM exit normally (running atexit, so cameras are released). Main thread only."""
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _sigterm)
