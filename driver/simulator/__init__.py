"""A simulated ZWO ASI SDK that stands where libASICamera2 stands: under zwoasi.

    from driver import simulator
    sdk = simulator.install(models=["asi294mc-pro", "asi120mm-mini"], seed=0)
    import zwoasi
    cam = zwoasi.Camera(0)          # zwoasi's own code, unchanged, calling simulated C functions
    img = cam.capture()

`install()` builds a table of real ctypes C function pointers (SimulatedLibrary) around Python
implementations of the SDK and sets `zwoasi.zwolib` to it. The returned SimulatedSDK exposes the
cameras, fault injection (unplug/replug, unplug_after, inject, video_timeouts) and introspection
(record, camera_state). See docs/simulator.md.

This package knows nothing of the rest of `driver`: it depends only on the standard library,
numpy and (for `install`) the zwoasi module it plugs into.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from . import catalog
from .camera import SimCamera
from .catalog import MODELS, CameraModel, ControlSpec, lookup
from .constants import SDK_VERSION, AsiError, ControlType, ExpStatus, ImgType
from .library import SimulatedLibrary
from .sdk import SimRecord, SimulatedSDK, default_lock_dir

__all__ = [
    "AsiError", "CameraModel", "ControlSpec", "ControlType", "ExpStatus", "ImgType", "MODELS", "SDK_VERSION",
    "SimCamera", "SimRecord", "SimulatedLibrary", "SimulatedSDK", "catalog", "current", "default_lock_dir",
    "install", "lookup", "uninstall",
]

_lock = threading.Lock()
_current: SimulatedSDK | None = None


def _zwoasi() -> Any:
    """Import zwoasi without letting its "SDK library not found" warning configure root logging.

    Typed Any: zwoasi ships no type information, and the simulator assigns its module global `zwolib`."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    added = not root.handlers
    if added:
        root.addHandler(guard)
    try:
        import zwoasi  # noqa: PLC0415 - imported only when installing
    finally:
        if added:
            root.removeHandler(guard)
    return zwoasi


def install(models: Iterable[str] | str = ("asi294mc-pro",), *, seed: int = 0, lock_dir: str | None = None,
            time_scale: float = 1.0, ambient_c: float = 20.0, unplugged: Iterable[int] = ()) -> SimulatedSDK:
    """Create a simulated SDK with `models` (catalog names, in slot order) and put it under zwoasi.

    `seed` fixes star fields, hot pixels, serial numbers and noise; `lock_dir` is where the
    cross-process camera locks live (default: `default_lock_dir()`); `time_scale` speeds up the
    cooler's dynamics only; `unplugged`: slots whose camera is not plugged in until `replug(slot)`
    (until then their CameraID is unknown to the SDK: INVALID_ID). `models=()` is the SDK of a
    computer with no camera attached, answering every call as ZWO's library does then. Replaces
    (and shuts down) a previously installed simulator; whatever other library zwoasi held is
    simply dropped, not closed. Returns the new SimulatedSDK.
    """
    global _current
    zwoasi = _zwoasi()
    sdk = SimulatedSDK(models, seed=seed, lock_dir=lock_dir, time_scale=time_scale, ambient_c=ambient_c,
                       unplugged=unplugged)
    with _lock:
        old, _current = _current, sdk
        zwoasi.zwolib = sdk.library
    if old is not None:
        old.shutdown()
    return sdk


def current() -> SimulatedSDK | None:
    """The installed SimulatedSDK, or None."""
    return _current


def uninstall() -> None:
    """Shut down the installed simulator (releasing its cameras) and set zwoasi.zwolib to None."""
    global _current
    zwoasi = _zwoasi()
    with _lock:
        old, _current = _current, None
        zwoasi.zwolib = None
    if old is not None:
        old.shutdown()
