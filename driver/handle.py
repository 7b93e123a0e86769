"""The open SDK handle of one camera: opening it, calling it, closing it (with retries).

Everything here is about libASICamera2 through zwoasi: which ASI errors mean the camera is gone,
how a call is serialised and translated into the core's errors, and why a close is retried. The
camera's state machine lives in `camera.py`; this module knows nothing of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _zwo
from . import sdk as _sdk
from .errors import CameraGoneError, SdkError
from .models import CameraInfo

# ASI error codes after which the handle is no longer trustworthy: the camera was removed,
# re-enumerated or stopped answering. Anything else is a rejected request, not a lost camera. Each is
# a clause of driver/sdk_contract.py: 2 id.absent / gone.unplugged, 4 call.closed, 5 gone.unplugged,
# 11 exp.not_ready after SUCCESS (the transfer failed), 16 controls.read_only (from a call the core
# validated it is a hardware failure). tests/driver/test_sdk_contract.py keeps them in step.
GONE_CODES = frozenset({2, 4, 5, 11, 16})
# INVALID_ID (the SDK forgot the unplugged camera), CAMERA_CLOSED, CAMERA_REMOVED: nothing is left to
# close, so the close is not retried (driver/sdk_contract.py clauses id.absent, gone.unplugged).
_NOTHING_TO_CLOSE = frozenset({2, 4, 5})
CLOSE_TRIES, CLOSE_RETRY_S = 3, 0.05
# A teardown waits this long at most for the I/O lock, so a wedged SDK call cannot hold it hostage.
QUIET_LOCK_WAIT_S = 1.0

_handle_class: type | None = None


def open_handle(camera_id: int) -> Any:
    """Open and initialise camera `camera_id`; returns zwoasi's Camera API bound to that ID.

    The class is a subclass of `zwoasi.Camera` built on first use, so all of zwoasi's own code is
    used; only construction and destruction differ: zwoasi's constructor assumes ID == index, and
    its destructor would close the camera ID again on garbage collection, possibly closing a newer
    handle to the same camera.
    """
    global _handle_class
    zwo = _zwo.zwoasi()
    if _handle_class is None:
        class SdkCamera(zwo.Camera):  # type: ignore[misc, name-defined]
            def __init__(self, cid: int) -> None:
                self.id = cid
                self.default_timeout = -1
                self.closed = True
                zwo._open_camera(cid)  # noqa: SLF001 - zwoasi's module-level wrappers are its API
                self.closed = False
                try:
                    zwo._init_camera(cid)  # noqa: SLF001
                except Exception:
                    try:
                        zwo._close_camera(cid)  # noqa: SLF001
                    finally:
                        self.closed = True
                    raise

            def __del__(self) -> None:
                pass

            def set_roi_format(self, width: int, height: int, bins: int, image_type: int) -> None:
                # zwoasi's version checks the size against ASIGetCameraProperty(self.id), i.e. the
                # camera ID used as an enumeration index: another camera's limits, or INVALID_INDEX,
                # once IDs and indices differ (another camera unplugged). The core checks sizes itself.
                r = zwo.zwolib.ASISetROIFormat(self.id, width, height, bins, image_type)
                if r:
                    raise zwo.zwo_errors[r]

        _handle_class = SdkCamera
    return _handle_class(camera_id)


class SdkIO:
    """Serialised, translated calls on one camera's handle.

    `lock` is held for a single call at a time and never while sleeping (the SDK is not safe for
    concurrent calls on one camera). `lib` is the SDK library the handle belongs to: a call after
    that library was unloaded or replaced is refused, because our camera ID would mean nothing.
    """

    def __init__(self, name: Callable[[], str], log: logging.Logger) -> None:
        self._name = name
        self.log = log
        self.lock = threading.Lock()
        self.lib: Any = None

    def call(self, step: str, fn: Callable[..., Any], *args: Any, locked: bool = True) -> Any:
        """Run one SDK call; zwoasi errors become CameraGoneError (camera lost) or SdkError."""
        zwo = _zwo.zwoasi()
        if self.lib is not None and zwo.zwolib is not self.lib:
            raise CameraGoneError(f"{self._name()}: the camera SDK was unloaded; {step} not possible")
        try:
            if locked:
                with self.lock:
                    return fn(*args)
            return fn(*args)
        except zwo.ZWO_IOError as exc:
            code = getattr(exc, "error_code", None)
            if code in GONE_CODES:
                raise CameraGoneError(f"{self._name()}: {step} failed: {exc} (ASI error {code})") from exc
            raise SdkError(f"{self._name()}: {step} failed: {exc} (ASI error {code})", code) from exc
        except zwo.ZWO_Error as exc:
            raise SdkError(f"{self._name()}: {step} failed: {exc}") from exc

    def quiet(self, fn: Callable[[], Any]) -> None:
        """An SDK call during teardown: a bounded wait for the lock; errors are the caller's to ignore."""
        got = self.lock.acquire(timeout=QUIET_LOCK_WAIT_S)
        try:
            fn()
        finally:
            if got:
                self.lock.release()

    def close(self, handle: Any, step: str, failed: Callable[[str], None]) -> None:
        """Close `handle`, retrying a failed close: a handle left open keeps the camera busy for every
        other program until this process exits. `failed(step)` is told when it could not be closed."""
        try:
            for attempt in range(CLOSE_TRIES):
                try:
                    self.quiet(handle.close)
                    return
                except Exception as exc:  # noqa: BLE001 - any failure is retried, then logged and reported
                    if attempt == CLOSE_TRIES - 1 or getattr(exc, "error_code", None) in _NOTHING_TO_CLOSE:
                        self.log.warning("%s: teardown step '%s' failed: %s", self._name(), step, exc)
                        failed(step)
                        return
                    self.log.info("%s: teardown step '%s' failed (%s); retrying", self._name(), step, exc)
                    time.sleep(CLOSE_RETRY_S)
        finally:
            _sdk.release(handle.id)

    def open_verified(self, info: CameraInfo) -> Any:
        """Open `info`'s camera ID; None if it is not our unit (serial differs) or this process already
        has it open (another camera object: opening and closing it again would close theirs)."""
        with self.lock, _sdk.in_use_lock():  # no serial probe may open/close it meanwhile (see sdk.claim)
            if _sdk.claimed(info.camera_id):
                return None
            try:
                handle = open_handle(info.camera_id)
            except _zwo.zwoasi().ZWO_Error as exc:
                code = getattr(exc, "error_code", None)
                msg = f"cannot open {info.name}: {exc}"
                # Which code a camera busy in another process gives is not documented (contract clause
                # open.busy_elsewhere: the simulator says 16); 5 is also what the SDK answers when the
                # USB device may not be opened at all (clause open.removed: udev rules missing).
                if code == 16:
                    msg += " (is another program using the camera?)"
                elif code == 5:
                    msg += (" (unplugged, in use by another program, or no permission to open the USB device: "
                            "'zwo-alpaca doctor' checks the udev rules)")
                raise (CameraGoneError(msg) if code in (2, 5) else SdkError(msg, code)) from exc
            actual = _zwo.read_serial(info.camera_id) if info.serial else None
            if actual and actual != info.serial:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - not our unit: closing it is a courtesy
                    pass
                return None
            _sdk.claim(info.camera_id, info.serial)
            return handle
