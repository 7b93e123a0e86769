"""`ZWOCamera`: one ZWO camera through zwoasi, with an explicit state machine and graceful teardown.

Concurrency model (see docs/architecture.md):
- `_lock` (a Condition) is the camera's one lock for state: the state machine, settings, flags,
  cached telemetry and the last frame. It is never held during an SDK call, so `status()` never
  waits behind the SDK.
- `_io` serialises calls on the SDK handle (the SDK is not safe for concurrent calls on one camera).
  It is held for one call at a time, never while sleeping. `ASIGetVideoData` is the exception: it is
  made without `_io` because the SDK is designed to have video capture stopped from another thread
  while a frame is being waited for.
- Worker threads (exposure, continuous capture, supervisor) are daemon threads, always joined with a
  bounded wait; the supervisor does health checks, reconnection with backoff and the capture schedule.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from . import _zwo, registry
from . import sdk as _sdk
from .errors import (
    CameraError,
    CameraGoneError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotSupportedError,
    SdkError,
)
from .models import (
    GUIDE_DIRECTIONS,
    IMAGE_TYPE_CODES,
    CameraEvent,
    CameraInfo,
    CameraSettings,
    CameraStatus,
    CaptureWindow,
    ControlInfo,
    Frame,
    ReconnectPolicy,
)
from .state import OPEN_STATES, READY_STATES, CameraState, StateMachine

S = CameraState

# ASI error codes after which the handle is no longer trustworthy: the camera was removed,
# re-enumerated or stopped answering. Anything else is a rejected request, not a lost camera.
_GONE_CODES = frozenset({2, 4, 5, 11, 16})
_BYTES_PER_PIXEL = {"RAW8": 1, "Y8": 1, "RAW16": 2, "RGB24": 3}
# Control names as the SDK reports them.
C_GAIN, C_OFFSET, C_EXPOSURE, C_BANDWIDTH = "Gain", "Offset", "Exposure", "BandWidth"
C_HIGH_SPEED, C_FLIP, C_HW_BIN = "HighSpeedMode", "Flip", "HardwareBin"
C_COOLER_ON, C_TARGET, C_TEMPERATURE, C_COOLER_POWER = "CoolerOn", "TargetTemp", "Temperature", "CoolPowerPerc"
# The SDK's control type numbers (ASI_CONTROL_TYPE). Lookups fall back to these, because control
# names have varied between SDK versions (e.g. "CoolPowerPerc"), while the numbers have not.
_CONTROL_TYPES = {C_GAIN: 0, C_EXPOSURE: 1, C_OFFSET: 5, C_BANDWIDTH: 6, C_TEMPERATURE: 8, C_FLIP: 9,
                  C_HW_BIN: 13, C_HIGH_SPEED: 14, C_COOLER_POWER: 15, C_TARGET: 16, C_COOLER_ON: 17}


class _SdkCamera:
    """The open SDK handle: zwoasi's Camera API for one camera ID, opened and closed explicitly.

    Built lazily as a subclass of `zwoasi.Camera` (see `_open_handle`) so all of zwoasi's own code is
    used; only construction and destruction differ: zwoasi's constructor assumes ID == index, and its
    destructor would close the camera ID again on garbage collection, possibly closing a newer
    handle to the same camera.
    """


_handle_class: type | None = None


def _open_handle(camera_id: int) -> Any:
    global _handle_class
    zwo = _zwo.zwoasi()
    if _handle_class is None:
        class SdkCamera(zwo.Camera):  # type: ignore[misc, name-defined]
            def __init__(self, cid: int) -> None:  # noqa: D107 - see _SdkCamera
                self.id = cid
                self.default_timeout = -1
                self.closed = True
                zwo._open_camera(cid)  # noqa: SLF001
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


def _norm(name: str) -> str:
    """Model names compared ignoring case, punctuation and a leading "ZWO"."""
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return n[3:] if n.startswith("zwo") else n


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class ZWOCamera:
    """One ZWO ASI camera: connection lifecycle, exposures, continuous capture, cooling and guiding.

    Construction never touches hardware; `connect()` opens the camera and `disconnect_camera()`
    releases it (idempotent, thread-safe, bounded in time). Used as a context manager it connects on
    entry and always tears down on exit without suppressing exceptions.

    `camera` selects the camera: an SDK index, a serial number or model name, or a `CameraInfo` from
    `driver.sdk.enumerate_cameras()` (preferred: its serial lets reconnection find the same unit
    after a replug changes the SDK's numbering).
    """

    def __init__(
        self,
        camera: int | str | CameraInfo = 0,
        *,
        reconnect: ReconnectPolicy | None = None,
        health_interval: float = 1.0,
        name: str | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._selector = camera
        self._info: CameraInfo | None = camera if isinstance(camera, CameraInfo) else None
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self.health_interval = health_interval
        self._clock = clock or (lambda: _dt.datetime.now())
        self._lock = threading.Condition(threading.RLock())
        self._io = threading.Lock()
        self._sm = StateMachine(self._on_state_change)
        self._handle: Any = None
        self._lib: Any = None  # the SDK library object the handle belongs to
        self._settings = CameraSettings()
        self._applied_roi: tuple[int, int, int, int, int, int] | None = None
        self._want_connected = False
        self._busy_op = 0  # asynchronous connects/disconnects still running (a count: they may overlap)
        self._error: str | None = None
        self._name = name
        self.log = logger or logging.getLogger("zwo_alpaca.camera")
        # exposure
        self._exp_thread: threading.Thread | None = None
        self._exp_cancel = threading.Event()
        self._exp_keep = False
        self._exp_start_mono = 0.0
        self._exp_duration = 0.0
        self._last_start: _dt.datetime | None = None
        self._last_duration: float | None = None
        self._last_frame: Frame | None = None
        self._frame_seq = 0
        self._buffers: list[bytearray] = []
        self._buffer_turn = 0
        # continuous capture and schedule
        self._capture_thread: threading.Thread | None = None
        self._capture_stop = threading.Event()
        self._capture_intent: tuple[Callable[[Frame], None], float, str] | None = None
        self._schedule: CaptureWindow | None = None
        self._off_peak_until: str | None = None
        # supervisor
        self._supervisor: threading.Thread | None = None
        self._supervisor_stop = threading.Event()
        self._wake = threading.Event()
        self._reconnect_attempt = 0
        # telemetry
        self._temperature: float | None = None
        self._cooler_power: float | None = None
        self._cooler_on: bool | None = None
        self._guide_until: dict[int, float] = {}
        self._guide_timers: dict[int, threading.Timer] = {}
        self._counters: collections.Counter[str] = collections.Counter()
        self._listeners: list[Callable[[CameraEvent], None]] = []
        registry.track(self)

    # ------------------------------------------------------------------ identity
    @property
    def info(self) -> CameraInfo | None:
        """What is known about the camera (None until `describe()` or `connect()`)."""
        return self._info

    @property
    def name(self) -> str:
        """A display name: the one given, else the SDK's model name."""
        if self._name:
            return self._name
        return self._info.name if self._info else f"camera {self._selector}"

    @property
    def is_simulated(self) -> bool:
        """Whether the simulated SDK is beneath zwoasi."""
        cur = _sdk.current()
        return bool(cur and cur.kind == "simulator")

    @property
    def sim_slot(self) -> int | None:
        """The simulator slot of this camera (its CameraID), for fault injection; None on hardware."""
        if not self.is_simulated:
            return None
        info = self._info or self.describe()
        return info.camera_id

    def describe(self) -> CameraInfo:
        """Read (and cache) the camera's SDK properties without opening it."""
        if self._info is not None:
            return self._info
        index = self._find_index()
        info = _sdk.camera_info(index)
        with self._lock:
            self._info = info
        return info

    def _find_index(self) -> int:
        """The SDK index of our camera now (numbering changes when cameras are replugged)."""
        zwo = _zwo.zwoasi()
        try:
            count = zwo.get_num_cameras()
        except Exception as exc:  # a broken library reports through ctypes, not ZWO_Error
            raise SdkError(f"cannot enumerate cameras: {exc}") from exc
        sel, info = self._selector, self._info
        if info is None and isinstance(sel, int):
            if 0 <= sel < count:
                return sel
            raise CameraGoneError(f"no camera at index {sel}: {count} camera(s) connected")
        if info is not None:
            want_name, want_serial = info.name, info.serial
        else:
            want_name = want_serial = str(sel)
        candidates = []
        for index in range(count):
            try:
                prop = zwo._get_camera_property(index)  # noqa: SLF001
            except zwo.ZWO_Error:
                continue
            if _norm(prop["Name"]) == _norm(want_name):
                candidates.append((index, int(prop["CameraID"])))
        if not candidates and info is None:  # the selector may be a serial number
            candidates = [(i, int(zwo._get_camera_property(i)["CameraID"])) for i in range(count)]  # noqa: SLF001
            want_name = None
        # One camera of our model: ours, unless this process has another camera of the same model (the
        # one plugged in may be that one while ours is unplugged): then the serial decides.
        if len(candidates) == 1 and want_name is not None and not (want_serial and self._has_twin()):
            return candidates[0][0]
        if want_serial:
            for index, cid in candidates:
                if _sdk.probe_serial(cid) == want_serial:
                    return index
        elif candidates:
            return candidates[0][0]
        raise CameraGoneError(f"{want_name or sel} is not connected ({count} camera(s) found)")

    def _has_twin(self) -> bool:
        """Whether this process has another camera object of the same model."""
        me = _norm(self._info.name) if self._info else None
        return any(c is not self and c.info is not None and _norm(c.info.name) == me for c in registry.tracked())

    # ------------------------------------------------------------------ listeners and state
    def add_listener(self, fn: Callable[[CameraEvent], None]) -> None:
        """Call `fn(event)` on every state change, frame, settings change and error (from core threads)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[CameraEvent], None]) -> None:
        """Stop calling `fn`."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _emit(self, kind: str, **data: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(CameraEvent(kind, data))
            except Exception:  # a listener's bug must not break the camera
                self.log.exception("%s: listener failed on %s event", self.name, kind)

    def _on_state_change(self, old: CameraState, new: CameraState) -> None:
        self.log.debug("%s: %s -> %s", self.name, old.value, new.value)
        self._lock.notify_all()
        self._emit("state", old=old, new=new)

    def _to(self, new: CameraState) -> None:
        """The single place state changes: under the lock, through the transition table."""
        with self._lock:
            self._sm.transition(new)

    @property
    def state(self) -> CameraState:
        """The current state (never waits)."""
        return self._sm.state

    def wait_for(self, predicate: Callable[[CameraStatus], bool], timeout: float) -> bool:
        """Block until `predicate(status())` holds or `timeout` passes; returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.status()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def status(self) -> CameraStatus:
        """A snapshot for polling clients; takes only the state lock, which no SDK call holds."""
        with self._lock:
            state = self._sm.state
            pct = 0
            if state == S.EXPOSING and self._exp_duration > 0:
                pct = int(min(99, max(0, (time.monotonic() - self._exp_start_mono) / self._exp_duration * 100)))
            elif state in (S.READING, S.IMAGE_READY):
                pct = 100
            return CameraStatus(
                state=state,
                connected=self._want_connected,
                connecting=self._busy_op > 0 or state in (S.CONNECTING, S.DISCONNECTING),
                image_ready=self._last_frame is not None and state not in (S.EXPOSING, S.READING)
                and self._image_ready,
                percent_completed=pct,
                last_exposure_start=self._last_start,
                last_exposure_duration=self._last_duration,
                ccd_temperature=self._temperature,
                cooler_on=self._cooler_on,
                cooler_power=self._cooler_power,
                target_temperature=self._settings.target_temperature,
                is_pulse_guiding=any(t > time.monotonic() for t in self._guide_until.values()),
                capturing=self._capture_intent is not None,
                off_peak_until=self._off_peak_until,
                status_text=self._status_text(state),
                error=self._error,
                frame_seq=self._frame_seq,
            )

    _image_ready = False

    def _status_text(self, state: CameraState) -> str:
        if state == S.EXPOSING:
            done = time.monotonic() - self._exp_start_mono
            return f"Exposing {min(done, self._exp_duration):.1f}/{self._exp_duration:.1f} s"
        if state == S.OFF_PEAK:
            return f"Idle (off-peak until {self._off_peak_until})"
        if state == S.ERROR:
            extra = f" (attempt {self._reconnect_attempt})" if self._reconnect_attempt else ""
            return f"Error: {self._error or 'camera failed'}; reconnecting{extra}"
        if state == S.CAPTURING:
            return "Capturing"
        return {S.DISCONNECTED: "Disconnected", S.CONNECTING: "Connecting", S.IDLE: "Idle",
                S.READING: "Reading out", S.IMAGE_READY: "Image ready",
                S.DISCONNECTING: "Disconnecting"}.get(state, state.value)

    def counters(self) -> dict[str, int]:
        """Counts of disconnects, reconnects, failures by cause, exposures and frames."""
        with self._lock:
            return dict(self._counters)

    # ------------------------------------------------------------------ SDK access
    def _call(self, step: str, fn: Callable[..., Any], *args: Any, locked: bool = True) -> Any:
        """Run one SDK call; translate zwoasi errors, and treat a lost camera as a fault."""
        zwo = _zwo.zwoasi()
        if self._lib is not None and zwo.zwolib is not self._lib:
            # The SDK beneath zwoasi was unloaded or replaced: our camera ID now means nothing, and
            # using it could touch another camera object's camera.
            raise CameraGoneError(f"{self.name}: the camera SDK was unloaded; {step} not possible")
        try:
            if locked:
                with self._io:
                    return fn(*args)
            return fn(*args)
        except zwo.ZWO_IOError as exc:
            code = getattr(exc, "error_code", None)
            if code in _GONE_CODES:
                raise CameraGoneError(f"{self.name}: {step} failed: {exc} (ASI error {code})") from exc
            raise SdkError(f"{self.name}: {step} failed: {exc} (ASI error {code})", code) from exc
        except zwo.ZWO_Error as exc:
            raise SdkError(f"{self.name}: {step} failed: {exc}") from exc

    def _require_handle(self) -> Any:
        with self._lock:
            state, handle = self._sm.state, self._handle
            if handle is not None and state in OPEN_STATES:
                return handle
            if state == S.ERROR:
                raise CameraGoneError(f"{self.name} is gone ({self._error}); reconnecting")
            if state == S.OFF_PEAK:
                raise InvalidOperationError(f"{self.name} is released off-peak until {self._off_peak_until}")
            if state in (S.CONNECTING, S.DISCONNECTING):
                raise NotConnectedError(f"{self.name} is {state.value}; wait until Connecting is false")
            raise NotConnectedError(f"{self.name} is not connected")

    def _control(self, name: str) -> ControlInfo | None:
        """The camera's control by SDK name, or by its standard type number when named differently."""
        info = self._info
        if info is None or not info.controls:
            return None
        if name in info.controls:
            return info.controls[name]
        ctype = _CONTROL_TYPES.get(name)
        return next((c for c in info.controls.values() if c.control_type == ctype), None)

    def _control_type(self, name: str) -> int | None:
        ctl = self._control(name)
        return ctl.control_type if ctl else None

    def controls(self) -> dict[str, ControlInfo]:
        """The camera's SDK controls (known after the first connection)."""
        info = self._info
        if info is None or info.controls is None:
            raise NotConnectedError(f"{self.name}: controls are known once the camera has been connected")
        return dict(info.controls)

    def control_value(self, name: str) -> int:
        """Read one SDK control's current value by its SDK name."""
        handle = self._require_handle()
        ctype = self._control_type(name)
        if ctype is None:
            raise NotSupportedError(f"{self.name} has no control {name!r}")
        return int(self._call(f"read {name}", handle.get_control_value, ctype)[0])

    def _set_control(self, handle: Any, name: str, value: int) -> None:
        ctype = self._control_type(name)
        if ctype is None:
            return
        self._call(f"set {name}={value}", handle.set_control_value, ctype, int(value))

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Open the camera and apply the current settings; blocks until connected or failed.

        Raises CameraGoneError when the camera is absent, SdkError when it cannot be opened (e.g. it
        is busy in another program); the state is then Disconnected again.
        """
        with self._lock:
            state = self._sm.state
            if self._want_connected and state not in (S.DISCONNECTED,):
                return  # already connected, reconnecting, or off-peak: the intent is already set
            if state == S.DISCONNECTING:
                self._lock.wait_for(lambda: self._sm.state != S.DISCONNECTING, timeout=2.0)
                if self._sm.state != S.DISCONNECTED:
                    raise InvalidOperationError(f"{self.name}: still disconnecting; try again")
            self._want_connected = True
            self._error = None
            # A fresh connection has no image ready (ASCOM's first-use rule); the last frame is kept
            # for front ends that show it, but it is not "ready" for a client that just connected.
            self._image_ready = False
            self._sm.transition(S.CONNECTING)
        try:
            self._open_and_configure()
        except BaseException as exc:
            with self._lock:
                self._want_connected = False
                self._error = str(exc)
                if self._sm.state == S.CONNECTING:
                    self._sm.transition(S.DISCONNECTED)
            self._count("connect_failures")
            raise
        registry.opened(self)
        self._start_supervisor()
        self._emit("connected")

    def begin_connect(self) -> None:
        """Start `connect()` in the background; `status().connecting` is true until it finishes."""
        self._run_async(self._connect_quietly)

    def begin_disconnect(self) -> None:
        """Start `disconnect_camera()` in the background; `status().connecting` is true until done."""
        self._run_async(self.disconnect_camera)

    def _connect_quietly(self) -> None:
        try:
            self.connect()
        except CameraError as exc:
            self.log.error("%s: connect failed: %s", self.name, exc.message)
            self._emit("error", message=exc.message)

    def _run_async(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._busy_op += 1

        def run() -> None:
            try:
                fn()
            finally:
                with self._lock:
                    self._busy_op -= 1
                    self._lock.notify_all()

        threading.Thread(target=run, name=f"{self.name}-async", daemon=True).start()

    def _open_and_configure(self) -> None:
        """Find, open and initialise the camera, then apply settings (state must be CONNECTING)."""
        # A replug between finding our camera and opening it renumbers the SDK's indices, so the ID
        # opened may be another unit of the same model: checked by serial, and tried once more.
        for _attempt in range(2):
            index = self._find_index()
            try:
                info = _sdk.camera_info(index, serial=self._info.serial if self._info else None)
            except SdkError as exc:
                if exc.code != 1:  # ASI_ERROR_INVALID_INDEX: a camera left the bus since _find_index
                    raise
                continue
            handle = self._open_verified(info)
            if handle is not None:
                break
        else:
            raise CameraGoneError(f"{self.name} is not connected (the cameras changed while connecting, or "
                                  f"another camera object of this program has it open)")
        try:
            serial = info.serial or _zwo.read_serial(info.camera_id)
            _sdk.claim(info.camera_id, serial)
            controls = {}
            for cname, caps in self._call("read controls", handle.get_controls).items():
                controls[cname] = ControlInfo(
                    name=cname, description=caps["Description"], min=int(caps["MinValue"]),
                    max=int(caps["MaxValue"]), default=int(caps["DefaultValue"]),
                    auto_supported=bool(caps["IsAutoSupported"]), writable=bool(caps["IsWritable"]),
                    control_type=int(caps["ControlType"]))
            exp = controls.get(C_EXPOSURE)
            info = replace(info, serial=serial, controls=controls,
                           exposure_min_s=exp.min / 1e6 if exp else info.exposure_min_s,
                           exposure_max_s=exp.max / 1e6 if exp else info.exposure_max_s,
                           full_well_e=self._full_well(info))
            with self._lock:
                self._require_connecting()
                self._info = info
                self._handle = handle
                self._lib = _zwo.library()
                self._applied_roi = None
            self._apply_settings(handle)
            self._read_telemetry(handle)
            with self._lock:
                self._require_connecting()
                self._sm.transition(S.IDLE)
        except BaseException:
            self._close_handle_quietly(handle, "close after a failed connect")
            with self._lock:
                if self._handle is handle:
                    self._handle = None
            raise

    def _require_connecting(self) -> None:
        """Under the lock: a disconnect that arrived while connecting wins, and the connect is abandoned."""
        if self._sm.state != S.CONNECTING:
            raise InvalidOperationError(f"{self.name}: connecting was cancelled by a disconnect")

    def _open_verified(self, info: CameraInfo) -> Any:
        """Open `info`'s camera ID; None if it is not our unit (serial differs) or this process already
        has it open (another camera object: opening and closing it again would close theirs)."""
        with self._io, _sdk.in_use_lock():  # no serial probe may open/close it meanwhile (see sdk.claim)
            if _sdk.claimed(info.camera_id):
                return None
            try:
                handle = _open_handle(info.camera_id)
            except _zwo.zwoasi().ZWO_Error as exc:
                code = getattr(exc, "error_code", None)
                msg = f"cannot open {info.name}: {exc}"
                if code == 16:
                    msg += " (is another program using the camera?)"
                raise (CameraGoneError(msg) if code in (2, 5) else SdkError(msg, code)) from exc
            actual = _zwo.read_serial(info.camera_id) if info.serial else None
            if actual and actual != info.serial:
                try:
                    handle.close()
                except Exception:
                    pass
                return None
            _sdk.claim(info.camera_id, info.serial)
            return handle

    def _full_well(self, info: CameraInfo) -> float | None:
        try:
            from .simulator import catalog  # noqa: PLC0415 - the catalog knows published full-well figures

            return float(catalog.lookup(info.model).full_well_e)
        except Exception:
            return None

    def _apply_settings(self, handle: Any) -> None:
        """Push every persisted setting to the SDK (after connect and after a reconnect)."""
        st = self._settings
        info = self._info
        assert info is not None and info.controls is not None
        for cname, value in ((C_GAIN, st.gain), (C_OFFSET, st.offset), (C_BANDWIDTH, st.usb_bandwidth)):
            if value is not None:
                self._set_control(handle, cname, value)
            elif cname in info.controls and cname == C_BANDWIDTH and info.controls[cname].writable:
                pass  # the SDK's own default bandwidth is right unless the user chose otherwise
        self._set_control(handle, C_HIGH_SPEED, int(st.high_speed))
        self._set_control(handle, C_FLIP, st.flip)
        if self._control(C_HW_BIN) is not None:
            self._set_control(handle, C_HW_BIN, int(st.hardware_bin))
        for cname, value in st.extra_controls.items():
            self._set_control(handle, cname, value)
        if info.has_cooler:
            if st.target_temperature is not None:
                self._set_control(handle, C_TARGET, int(round(st.target_temperature)))
            self._set_control(handle, C_COOLER_ON, int(st.cooler_on))

    def _read_telemetry(self, handle: Any) -> None:
        """Read temperature and cooler state: the cached values polls return, and the health check."""
        info = self._info
        temp = power = None
        cooler = None
        if self._control_type(C_TEMPERATURE) is not None:
            temp = self._call("read temperature", handle.get_control_value, self._control_type(C_TEMPERATURE))[0] / 10.0
        if info is not None and info.has_cooler:
            if self._control_type(C_COOLER_POWER) is not None:
                power = float(self._call("read cooler power", handle.get_control_value,
                                         self._control_type(C_COOLER_POWER))[0])
            if self._control_type(C_COOLER_ON) is not None:
                cooler = bool(self._call("read cooler", handle.get_control_value,
                                         self._control_type(C_COOLER_ON))[0])
        with self._lock:
            self._temperature, self._cooler_power, self._cooler_on = temp, power, cooler

    def disconnect_camera(self) -> None:
        """Release the camera gracefully. Idempotent, thread-safe, and quick even mid-exposure.

        In order: stop continuous capture, abort a running exposure (without waiting for it to
        finish), stop video capture, close the camera; the handle is cleared even when a step
        fails, and each failure is logged with its step.
        """
        with self._lock:
            state = self._sm.state
            self._want_connected = False
            self._capture_intent = None
            if state == S.DISCONNECTED and self._handle is None:
                self._stop_supervisor_async()
                return
            if state == S.DISCONNECTING:
                # another thread is tearing down: wait for it (bounded) rather than racing it
                self._lock.wait_for(lambda: self._sm.state != S.DISCONNECTING, timeout=2.0)
                return
            if state != S.DISCONNECTED:
                self._sm.transition(S.DISCONNECTING)
        self._teardown(final_state=S.DISCONNECTED if state != S.DISCONNECTED else None)
        self._stop_supervisor_async()
        registry.closed(self)
        self._count("disconnects")
        self.log.info("%s: disconnected", self.name)
        self._emit("disconnected")

    def disconnect(self) -> None:
        """Alias of `disconnect_camera()`."""
        self.disconnect_camera()

    def _teardown(self, final_state: CameraState | None) -> None:
        """Stop everything and close the handle; `final_state` None leaves the state as it is."""
        handle = self._handle
        self._step("stop continuous capture", self._stop_capture_thread)
        self._step("abort exposure", self._cancel_exposure, handle)
        self._cancel_guiding(handle)
        if handle is not None:
            self._step("stop video capture", lambda: self._sdk_quiet(handle.stop_video_capture))
            self._close_handle_quietly(handle, "close camera")
        with self._lock:
            self._handle = None
            self._applied_roi = None
            if final_state is not None:
                self._sm.transition(final_state)

    def _step(self, step: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.log.warning("%s: teardown step '%s' failed: %s", self.name, step, exc)
            self._count(f"teardown_failure:{step}")

    def _sdk_quiet(self, fn: Callable[[], Any]) -> None:
        """An SDK call during teardown: bounded wait for the I/O lock, errors ignored by the caller."""
        got = self._io.acquire(timeout=1.0)
        try:
            fn()
        finally:
            if got:
                self._io.release()

    def _close_handle_quietly(self, handle: Any, step: str) -> None:
        # A failed close is retried (3 tries, 50 ms apart): a handle left open keeps the camera busy
        # for every other program until this process exits. "Closed"/"removed" (ASI 4/5): nothing to close.
        try:
            for attempt in range(3):
                try:
                    self._sdk_quiet(handle.close)
                    return
                except Exception as exc:
                    if attempt == 2 or getattr(exc, "error_code", None) in (4, 5):
                        self.log.warning("%s: teardown step '%s' failed: %s", self.name, step, exc)
                        self._count(f"teardown_failure:{step}")
                        return
                    self.log.info("%s: teardown step '%s' failed (%s); retrying", self.name, step, exc)
                    time.sleep(0.05)
        finally:
            _sdk.release(handle.id)

    def __enter__(self) -> "ZWOCamera":
        self.connect()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.disconnect_camera()
        return False

    def __del__(self) -> None:
        try:
            if self._handle is not None:
                self.disconnect_camera()
        except Exception:
            pass

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> CameraSettings:
        """A copy of the persisted settings."""
        with self._lock:
            return self._settings.copy()

    def configure(self, **changes: Any) -> CameraSettings:
        """Validate and store settings; controls are applied at once when connected.

        Subframe and binning are checked again at `start_exposure`, because ASCOM clients set them
        one at a time and an intermediate combination may be out of range.
        """
        unknown = set(changes) - (set(CameraSettings().__dict__) - {"extra_controls"})
        if unknown:
            raise InvalidValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        info = self._info
        new = self.settings
        for key, value in changes.items():
            setattr(new, key, value)
        self._validate_settings(new, changes, info)
        with self._lock:
            self._settings = new
            handle = self._handle if self._sm.state in OPEN_STATES else None
        if handle is not None:
            self._apply_changed_controls(handle, changes)
        self._emit("settings", changes=dict(changes))
        return new.copy()

    def _validate_settings(self, st: CameraSettings, changes: dict[str, Any], info: CameraInfo | None) -> None:
        if "bin" in changes:
            bins = info.supported_bins if info else (1, 2, 3, 4)
            if not isinstance(st.bin, int) or st.bin not in bins:
                raise InvalidValueError(f"binning {st.bin} is not supported; valid: {', '.join(map(str, bins))}")
        for key in ("start_x", "start_y"):
            if key in changes and (not isinstance(getattr(st, key), int) or getattr(st, key) < 0):
                raise InvalidValueError(f"{key} must be an integer >= 0, got {getattr(st, key)}")
        for key in ("width", "height"):
            val = getattr(st, key)
            if key in changes and val is not None and (not isinstance(val, int) or val < 1):
                raise InvalidValueError(f"{key} must be an integer >= 1, got {val}")
        if "image_type" in changes:
            types = info.image_types if info else ("RAW8", "RAW16", "RGB24")
            if st.image_type not in types:
                raise InvalidValueError(f"image type {st.image_type!r} is not supported; valid: {', '.join(types)}")
        for key, cname in (("gain", C_GAIN), ("offset", C_OFFSET), ("usb_bandwidth", C_BANDWIDTH), ("flip", C_FLIP)):
            val = getattr(st, key)
            if key not in changes or val is None:
                continue
            if not isinstance(val, int) or isinstance(val, bool):
                raise InvalidValueError(f"{key} must be an integer, got {val!r}")
            if info is not None and info.controls is not None:
                ctl = self._control(cname)
                if ctl is None:
                    raise NotSupportedError(f"{self.name} has no {cname} control")
                if not ctl.min <= val <= ctl.max:
                    raise InvalidValueError(f"{key} {val} is out of range {ctl.min}..{ctl.max}")
        if "high_speed" in changes and st.high_speed and info is not None and info.controls is not None \
                and self._control(C_HIGH_SPEED) is None:
            raise NotSupportedError(f"{self.name} has no high-speed mode")
        if "hardware_bin" in changes and st.hardware_bin and info is not None and info.controls is not None \
                and self._control(C_HW_BIN) is None:
            raise NotSupportedError(f"{self.name} has no hardware binning")
        if ("cooler_on" in changes or "target_temperature" in changes) and info is not None and not info.has_cooler \
                and (st.cooler_on or st.target_temperature is not None):
            raise NotSupportedError(f"{self.name} has no cooler")
        if "target_temperature" in changes and st.target_temperature is not None:
            lo, hi = self.target_temperature_range()
            t = st.target_temperature
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not lo <= t <= hi:
                raise InvalidValueError(f"target temperature {t} is out of range {lo}..{hi} C")

    def target_temperature_range(self) -> tuple[float, float]:
        """The cooler's settable range in C (from the SDK's TargetTemp control when known)."""
        info = self._info
        ctl = self._control(C_TARGET)
        if ctl is not None:
            return float(ctl.min), float(ctl.max)
        return -40.0, 30.0

    def _apply_changed_controls(self, handle: Any, changes: dict[str, Any]) -> None:
        st = self.settings
        mapping = {"gain": C_GAIN, "offset": C_OFFSET, "usb_bandwidth": C_BANDWIDTH, "flip": C_FLIP}
        for key, cname in mapping.items():
            if key in changes and getattr(st, key) is not None:
                self._set_control(handle, cname, getattr(st, key))
        if "high_speed" in changes:
            self._set_control(handle, C_HIGH_SPEED, int(st.high_speed))
        if "hardware_bin" in changes:
            self._set_control(handle, C_HW_BIN, int(st.hardware_bin))
        if "target_temperature" in changes and st.target_temperature is not None:
            self._set_control(handle, C_TARGET, int(round(st.target_temperature)))
        if "cooler_on" in changes:
            self._set_control(handle, C_COOLER_ON, int(st.cooler_on))
            with self._lock:
                self._cooler_on = st.cooler_on

    # Controls with a dedicated setting; set_control() refers callers to it so there is one way each.
    _SETTING_OF = {C_GAIN: "gain", C_OFFSET: "offset", C_BANDWIDTH: "usb_bandwidth", C_FLIP: "flip",
                   C_HIGH_SPEED: "high_speed", C_HW_BIN: "hardware_bin", C_COOLER_ON: "cooler_on",
                   C_TARGET: "target_temperature", C_EXPOSURE: None}

    def set_control(self, name: str, value: int) -> None:
        """Set any other writable SDK control by its SDK name (e.g. WB_R, MonoBin, AntiDewHeater).

        The value persists like the other settings and is reapplied after every reconnect.
        """
        if name in self._SETTING_OF:
            key = self._SETTING_OF[name]
            if key is None:
                raise InvalidValueError("the exposure time is given to start_exposure(), not set as a control")
            self.configure(**{key: value})
            return
        ctl = self._control(name)
        if ctl is None:
            if self._info is None or self._info.controls is None:
                raise NotConnectedError(f"{self.name}: controls are known once the camera has been connected")
            raise NotSupportedError(f"{self.name} has no control {name!r}; it has: "
                                    f"{', '.join(sorted(self._info.controls))}")
        if not ctl.writable:
            raise InvalidValueError(f"{name} is read-only on {self.name}")
        if not isinstance(value, int) or isinstance(value, bool) or not ctl.min <= value <= ctl.max:
            raise InvalidValueError(f"{name} {value!r} is out of range {ctl.min}..{ctl.max}")
        with self._lock:
            self._settings.extra_controls[name] = value
            handle = self._handle if self._sm.state in OPEN_STATES else None
        if handle is not None:
            self._set_control(handle, name, value)
        self._emit("settings", changes={name: value})

    def set_cooler(self, on: bool, target: float | None = None) -> None:
        """Switch the cooler and optionally set its target (C)."""
        info = self._info
        if info is not None and not info.has_cooler:
            raise NotSupportedError(f"{self.name} has no cooler")
        changes: dict[str, Any] = {"cooler_on": bool(on)}
        if target is not None:
            changes["target_temperature"] = float(target)
        self.configure(**changes)

    # ------------------------------------------------------------------ exposures
    def _sdk_roi(self, st: CameraSettings, info: CameraInfo) -> tuple[int, ...]:
        """Map a requested subframe to one the SDK accepts, and how to cut the result back.

        Returns (sdk_x, sdk_y, sdk_w, sdk_h, crop_x, crop_y, width, height, cut_w, cut_h). ZWO needs
        the width a multiple of 8 and the height of 2 (ASI120: area a multiple of 1024), so a slightly
        larger region is read and cropped, and any subframe inside the binned sensor is accepted. The
        last few columns/rows of an odd-sized binned sensor cannot be read at all; the cut image
        (`cut_w` x `cut_h`) is then filled out to the request by repeating its edge pixels (at most
        7 columns and 1 row).
        """
        b = st.bin
        max_w, max_h = info.max_width // b, info.max_height // b
        read_w, read_h = max_w - max_w % 8, max_h - max_h % 2
        w = st.width if st.width is not None else max_w
        h = st.height if st.height is not None else max_h
        x, y = st.start_x, st.start_y
        if x + w > max_w or y + h > max_h:
            raise InvalidValueError(
                f"subframe {w}x{h} at ({x},{y}) exceeds the {max_w}x{max_h} sensor at binning {b}: "
                f"need StartX+NumX <= {max_w} and StartY+NumY <= {max_h}")
        sdk_x, sdk_w, crop_x, cut_w = self._axis(x, w, read_w, 8)
        sdk_y, sdk_h, crop_y, cut_h = self._axis(y, h, read_h, 2)
        if "ASI120" in info.name:  # this sensor's SDK also wants width*height a multiple of 1024
            while (sdk_w * sdk_h) % 1024 and sdk_w < read_w:
                sdk_w += 8
            while (sdk_w * sdk_h) % 1024 and sdk_h < read_h:
                sdk_h += 2
            shift_x, shift_y = max(0, sdk_x + sdk_w - read_w), max(0, sdk_y + sdk_h - read_h)
            sdk_x, crop_x, sdk_y, crop_y = sdk_x - shift_x, crop_x + shift_x, sdk_y - shift_y, crop_y + shift_y
        return sdk_x, sdk_y, sdk_w, sdk_h, crop_x, crop_y, w, h, cut_w, cut_h

    @staticmethod
    def _axis(start: int, size: int, readable: int, step: int) -> tuple[int, int, int, int]:
        """One axis of `_sdk_roi`: (sdk_start, sdk_size, crop, cut) for a request of `size` at `start`.

        The SDK start is even (colour sensors round odd starts down, which would shift the Bayer
        phase) and the SDK size a multiple of `step`; `cut` is how much of the request is readable.
        """
        first = min(start, readable - 1)
        end = min(start + size, readable)
        sdk_start = first - first % 2
        sdk_size = min(readable, -(-(end - sdk_start) // step) * step)
        if sdk_start + sdk_size > readable:
            sdk_start = readable - sdk_size
        return sdk_start, sdk_size, first - sdk_start, max(1, end - first)

    def start_exposure(self, duration: float, light: bool = True) -> None:
        """Start one exposure and return at once; the image is ready when `status().image_ready`.

        Validates the duration against the camera's range and the subframe against the binned
        sensor; raises InvalidOperationError when an exposure or continuous capture is running.
        """
        info = self._info
        self._require_handle()
        assert info is not None
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration != duration:
            raise InvalidValueError(f"duration must be a number of seconds, got {duration!r}")
        lo, hi = info.exposure_min_s, info.exposure_max_s
        if duration < 0 or duration > hi:
            raise InvalidValueError(f"duration {duration} s is out of range 0..{hi:g} s "
                                    f"(shortest exposure the camera makes: {lo:g} s)")
        st = self.settings
        roi = self._sdk_roi(st, info)
        with self._lock:
            state = self._sm.state
            if state in (S.EXPOSING, S.READING):
                raise InvalidOperationError(f"{self.name}: an exposure is already in progress")
            if state == S.CAPTURING:
                raise InvalidOperationError(f"{self.name}: continuous capture is running; stop it first")
            if state not in READY_STATES:
                self._require_handle()
                raise InvalidOperationError(f"{self.name}: cannot expose while {state.value}")
            self._sm.transition(S.EXPOSING)
            self._exp_cancel.clear()
            self._exp_keep = False
            self._image_ready = False
            self._exp_duration = float(duration)
            self._exp_start_mono = time.monotonic()
            self._last_start = _utcnow()
            self._last_duration = float(duration)
            thread = threading.Thread(target=self._expose, args=(self._handle, float(duration), bool(light), st, roi),
                                      name=f"{self.name}-exposure", daemon=True)
            self._exp_thread = thread
        self._count("exposures")
        thread.start()

    def _apply_roi(self, handle: Any, st: CameraSettings, roi: tuple[int, ...]) -> None:
        sdk_x, sdk_y, sdk_w, sdk_h = roi[:4]
        key = (sdk_x, sdk_y, sdk_w, sdk_h, st.bin, IMAGE_TYPE_CODES[st.image_type])
        if key == self._applied_roi:
            return
        self._call("set ROI format", handle.set_roi_format, sdk_w, sdk_h, st.bin, IMAGE_TYPE_CODES[st.image_type])
        self._call("set ROI start", handle.set_roi_start_position, sdk_x, sdk_y)
        self._applied_roi = key

    def _buffer(self, size: int) -> bytearray:
        """Alternate between two reusable buffers, so the previous frame stays intact during the next."""
        with self._lock:
            self._buffer_turn ^= 1
            while len(self._buffers) < 2:
                self._buffers.append(bytearray(0))
            buf = self._buffers[self._buffer_turn]
            if len(buf) != size:
                buf = bytearray(size)
                self._buffers[self._buffer_turn] = buf
            return buf

    def _expose(self, handle: Any, duration: float, light: bool, st: CameraSettings, roi: tuple[int, ...]) -> None:
        """The exposure thread: start, poll against a deadline, read out, publish; never unbounded."""
        zwo = _zwo.zwoasi()
        started = False
        try:
            self._apply_roi(handle, st, roi)
            self._call("set exposure time", handle.set_control_value, self._control_type(C_EXPOSURE) or 1,
                       max(1, int(round(duration * 1e6))))
            with self._lock:
                if self._exp_cancel.is_set():
                    raise _Cancelled()
                self._exp_start_mono = time.monotonic()
                self._last_start = _utcnow()
            self._call("start exposure", handle.start_exposure, not light)
            started = True
            nbytes = roi[2] * roi[3] * _BYTES_PER_PIXEL[st.image_type]
            # readout of the largest frames over a slow link can take many seconds; never wait forever
            deadline = time.monotonic() + duration + 10.0 + nbytes / 5e6
            status = zwo.ASI_EXP_WORKING
            while True:
                elapsed = time.monotonic() - self._exp_start_mono
                remaining = duration - elapsed
                self._exp_cancel.wait(min(0.1, max(0.005, remaining)) if remaining > 0 else 0.005)
                if self._exp_cancel.is_set():
                    if not self._exp_keep:
                        raise _Cancelled()
                    self._call("stop exposure", handle.stop_exposure)
                    self._exp_cancel.clear()
                    self._exp_keep = False
                    self._exp_cancel_keep_requested = True
                status = self._call("exposure status", handle.get_exposure_status)
                if status != zwo.ASI_EXP_WORKING:
                    break
                if time.monotonic() - self._exp_start_mono >= duration:
                    with self._lock:
                        if self._sm.state == S.EXPOSING:
                            self._sm.transition(S.READING)
                if time.monotonic() > deadline:
                    raise SdkError(f"{self.name}: exposure did not complete within {deadline - self._exp_start_mono:.0f} s")
            if status != zwo.ASI_EXP_SUCCESS:
                raise SdkError(f"{self.name}: the camera reported the exposure failed (status {status})")
            started = False
            with self._lock:
                if self._sm.state == S.EXPOSING:
                    self._sm.transition(S.READING)
            buf = self._buffer(nbytes)
            self._call("read image", handle.get_data_after_exposure, buf)
            actual = min(duration, time.monotonic() - self._exp_start_mono)
            frame = self._make_frame(buf, st, roi, light, actual if getattr(self, "_exp_cancel_keep_requested", False)
                                     else duration)
            self._exp_cancel_keep_requested = False
            with self._lock:
                if self._exp_cancel.is_set() and not self._exp_keep:
                    raise _Cancelled()
                self._last_frame = frame
                self._last_duration = frame.duration
                self._frame_seq = frame.seq
                self._image_ready = True
                self._sm.transition(S.IMAGE_READY)
            self._count("frames")
            self._emit("frame", frame=frame)
        except _Cancelled:
            if started:
                try:
                    self._call("stop exposure", handle.stop_exposure)
                except Exception:  # teardown may already have closed the camera or unloaded the SDK
                    pass
            self._exp_cancel_keep_requested = False
            with self._lock:
                if self._sm.state in (S.EXPOSING, S.READING):
                    self._sm.transition(S.IDLE)
        except CameraGoneError as exc:
            self._fault("exposure", exc, handle)
        except CameraError as exc:
            if started:
                try:
                    self._call("stop exposure", handle.stop_exposure)
                except CameraError:
                    pass
            self._exposure_failed(exc)
        except Exception as exc:  # a defect must still leave a consistent state
            self.log.exception("%s: exposure thread failed", self.name)
            self._exposure_failed(SdkError(f"{self.name}: exposure failed: {exc}"))

    _exp_cancel_keep_requested = False

    def _exposure_failed(self, exc: CameraError) -> None:
        self._count(f"failure:{type(exc).__name__}")
        self.log.error("%s: %s", self.name, exc.message)
        with self._lock:
            self._error = exc.message
            if self._sm.state in (S.EXPOSING, S.READING):
                self._sm.transition(S.IDLE)
        self._emit("error", message=exc.message)

    def _make_frame(self, buf: bytearray, st: CameraSettings, roi: tuple[int, ...], light: bool,
                    duration: float) -> Frame:
        info = self._info
        assert info is not None
        sdk_w, sdk_h, crop_x, crop_y, w, h, cut_w, cut_h = roi[2:10]
        if st.image_type == "RAW16":
            arr = np.frombuffer(buf, dtype=np.uint16).reshape(sdk_h, sdk_w)
        elif st.image_type == "RGB24":
            arr = np.frombuffer(buf, dtype=np.uint8).reshape(sdk_h, sdk_w, 3)
        else:
            arr = np.frombuffer(buf, dtype=np.uint8).reshape(sdk_h, sdk_w)
        if (crop_x, crop_y, cut_w, cut_h) != (0, 0, sdk_w, sdk_h):
            arr = arr[crop_y:crop_y + cut_h, crop_x:crop_x + cut_w]
        if (cut_w, cut_h) != (w, h):
            arr = np.pad(arr, ((0, h - arr.shape[0]), (0, w - arr.shape[1])) + ((0, 0),) * (arr.ndim - 2), mode="edge")
        # The Bayer phase of a subframe shifts with its start position on the (unbinned) sensor.
        bx = (st.start_x * st.bin) % 2 if info.is_color and st.bin == 1 else 0
        by = (st.start_y * st.bin) % 2 if info.is_color and st.bin == 1 else 0
        with self._lock:
            seq = self._frame_seq + 1
            temp = self._temperature
            start = self._last_start or _utcnow()
        return Frame(
            data=arr, seq=seq, start_time=start, duration=duration, light=light, bin=st.bin,
            start_x=st.start_x, start_y=st.start_y, width=w, height=h, image_type=st.image_type,
            bit_depth=info.bit_depth, gain=st.gain if st.gain is not None else self._default(C_GAIN),
            offset=st.offset if st.offset is not None else self._default(C_OFFSET), temperature=temp,
            camera_name=info.name, bayer_pattern=info.bayer_pattern if info.is_color and st.bin == 1 else None,
            bayer_offset_x=bx, bayer_offset_y=by)

    def _default(self, cname: str) -> int | None:
        ctl = self._control(cname)
        return ctl.default if ctl else None

    def abort_exposure(self) -> None:
        """Abort a running exposure and discard it; harmless when none is running."""
        with self._lock:
            thread = self._exp_thread
            if self._sm.state not in (S.EXPOSING, S.READING):
                return
            self._exp_keep = False
            self._exp_cancel.set()
        if thread is not None:
            thread.join(timeout=1.0)

    def stop_exposure(self) -> None:
        """End a running exposure early and keep its image; harmless when none is running."""
        with self._lock:
            if self._sm.state not in (S.EXPOSING, S.READING):
                return
            self._exp_keep = True
            self._exp_cancel.set()

    def _cancel_exposure(self, handle: Any) -> None:
        """Teardown step: abort without waiting for a long exposure to finish."""
        with self._lock:
            thread = self._exp_thread
            self._exp_keep = False
            self._exp_cancel.set()
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            if handle is not None:
                try:
                    self._sdk_quiet(handle.stop_exposure)
                except Exception:
                    pass
            thread.join(timeout=0.8)
            if thread.is_alive():
                self.log.warning("%s: exposure thread still in an SDK call; closing the camera anyway", self.name)

    def last_frame(self) -> Frame | None:
        """The last image read out, kept across later failures and reconnects."""
        with self._lock:
            return self._last_frame

    # ------------------------------------------------------------------ guiding
    def pulse_guide(self, direction: str | int, duration_ms: int) -> None:
        """Start an ST4 guide pulse (N/S/E/W or 0..3) of `duration_ms`; returns at once."""
        info = self._info
        if info is not None and not info.has_st4:
            raise NotSupportedError(f"{self.name} has no ST4 guide port")
        code = GUIDE_DIRECTIONS.get(str(direction).upper()) if not isinstance(direction, int) else direction
        if code not in (0, 1, 2, 3):
            raise InvalidValueError(f"guide direction {direction!r} is invalid; valid: N, S, E, W (0..3)")
        if not isinstance(duration_ms, int) or isinstance(duration_ms, bool) or not 0 <= duration_ms <= 3_600_000:
            raise InvalidValueError(f"guide duration {duration_ms!r} ms is out of range 0..3600000")
        handle = self._require_handle()
        with self._lock:
            old = self._guide_timers.pop(code, None)
        if old is not None:
            old.cancel()
        self._call("pulse guide on", handle.pulse_guide_on, code)
        timer = threading.Timer(duration_ms / 1000.0, self._guide_off, args=(handle, code))
        timer.daemon = True
        with self._lock:
            self._guide_until[code] = time.monotonic() + duration_ms / 1000.0
            self._guide_timers[code] = timer
        timer.start()

    def _guide_off(self, handle: Any, code: int) -> None:
        try:
            self._call("pulse guide off", handle.pulse_guide_off, code)
        except CameraError as exc:
            self.log.warning("%s: %s", self.name, exc.message)
        with self._lock:
            self._guide_until.pop(code, None)
            self._guide_timers.pop(code, None)

    def _cancel_guiding(self, handle: Any) -> None:
        with self._lock:
            timers = dict(self._guide_timers)
            self._guide_timers.clear()
            self._guide_until.clear()
        for code, timer in timers.items():
            timer.cancel()
            if handle is not None:
                self._step("pulse guide off", lambda c=code: self._sdk_quiet(lambda: handle.pulse_guide_off(c)))

    # ------------------------------------------------------------------ continuous capture
    def start_capture(self, on_frame: Callable[[Frame], None], *, exposure: float, mode: str = "exposure") -> None:
        """Capture continuously, calling `on_frame(frame)` for each image, until `stop_capture()`.

        `mode` "exposure" repeats single exposures; "video" uses the SDK's video mode. A callback
        that raises is logged and the loop goes on. The intent survives reconnection and off-peak.
        """
        if mode not in ("exposure", "video"):
            raise InvalidValueError(f"capture mode {mode!r} is invalid; valid: exposure, video")
        info = self._info
        if info is not None and not info.exposure_min_s <= exposure <= info.exposure_max_s:
            raise InvalidValueError(f"exposure {exposure} s is out of range "
                                    f"{info.exposure_min_s:g}..{info.exposure_max_s:g} s")
        with self._lock:
            state = self._sm.state
            if self._capture_intent is not None:
                raise InvalidOperationError(f"{self.name}: continuous capture is already running")
            if state == S.OFF_PEAK:
                self._capture_intent = (on_frame, float(exposure), mode)
                return
            if state not in READY_STATES:
                self._require_handle()
                raise InvalidOperationError(f"{self.name}: cannot start capture while {state.value}")
            self._capture_intent = (on_frame, float(exposure), mode)
        self._launch_capture()

    def _launch_capture(self) -> None:
        with self._lock:
            intent = self._capture_intent
            if intent is None or self._handle is None or self._sm.state not in READY_STATES:
                return
            self._sm.transition(S.CAPTURING)
            self._capture_stop.clear()
            thread = threading.Thread(target=self._capture_loop, args=(self._handle, *intent),
                                      name=f"{self.name}-capture", daemon=True)
            self._capture_thread = thread
        thread.start()

    def stop_capture(self) -> None:
        """Stop continuous capture: signal, abort the frame in progress, join with a bounded wait."""
        with self._lock:
            self._capture_intent = None
        self._stop_capture_thread()

    def _stop_capture_thread(self) -> None:
        with self._lock:
            thread = self._capture_thread
            handle = self._handle
            self._capture_stop.set()
        if thread is None:
            return
        if handle is not None and thread.is_alive():
            # Wake the loop from its SDK wait: both calls are harmless when nothing is running.
            for fn in (handle.stop_exposure, handle.stop_video_capture):
                try:
                    self._sdk_quiet(fn)
                except Exception:
                    pass
        if thread is not threading.current_thread():
            # The frame in progress was stopped in the SDK above, so the loop normally ends at once;
            # the bound only has to cover a readout already under way, which grows with the frame
            # and (on real hardware) a little with the exposure.
            bound = 1.0 + min(self._exp_duration, 60.0) * 0.05 + self._readout_allowance()
            thread.join(timeout=bound)
            if thread.is_alive():
                self.log.warning("%s: capture thread did not stop within %.1f s", self.name, bound)
        with self._lock:
            if self._capture_thread is thread:
                self._capture_thread = None
            if self._sm.state == S.CAPTURING:
                self._sm.transition(S.IDLE)

    def _readout_allowance(self) -> float:
        """Seconds a full readout of the current subframe may take over a slow link (about 40 MB/s)."""
        info = self._info
        if info is None:
            return 1.0
        st = self._settings
        pixels = (st.width or info.max_width // st.bin) * (st.height or info.max_height // st.bin)
        return pixels * _BYTES_PER_PIXEL.get(st.image_type, 2) / 40e6

    def _capture_loop(self, handle: Any, on_frame: Callable[[Frame], None], exposure: float, mode: str) -> None:
        zwo = _zwo.zwoasi()
        st = self.settings
        info = self._info
        assert info is not None
        video = mode == "video"
        try:
            roi = self._sdk_roi(st, info)
            self._apply_roi(handle, st, roi)
            self._call("set exposure time", handle.set_control_value, self._control_type(C_EXPOSURE) or 1,
                       max(1, int(round(exposure * 1e6))))
            nbytes = roi[2] * roi[3] * _BYTES_PER_PIXEL[st.image_type]
            if video:
                self._call("start video capture", handle.start_video_capture)
            timeouts_in_row = 0
            while not self._capture_stop.is_set():
                with self._lock:
                    self._exp_start_mono = time.monotonic()
                    self._exp_duration = exposure
                    self._last_start = _utcnow()
                    self._last_duration = exposure
                buf = self._buffer(nbytes)
                if video:
                    try:
                        self._call("read video frame", handle.get_video_data, int(exposure * 2000 + 500), buf,
                                   locked=False)
                        timeouts_in_row = 0
                    except CameraGoneError as exc:
                        if self._capture_stop.is_set():
                            break
                        if "Timeout" in exc.message and timeouts_in_row < 5:
                            timeouts_in_row += 1
                            self._count("video_timeouts")
                            self.log.warning("%s: video frame timed out (%d in a row)", self.name, timeouts_in_row)
                            continue
                        raise
                else:
                    self._call("start exposure", handle.start_exposure, False)
                    deadline = time.monotonic() + exposure + 10.0 + nbytes / 5e6
                    status = zwo.ASI_EXP_WORKING
                    while not self._capture_stop.is_set() and time.monotonic() < deadline:
                        remaining = exposure - (time.monotonic() - self._exp_start_mono)
                        self._capture_stop.wait(min(0.1, max(0.005, remaining)) if remaining > 0 else 0.005)
                        status = self._call("exposure status", handle.get_exposure_status)
                        if status != zwo.ASI_EXP_WORKING:
                            break
                    if self._capture_stop.is_set():
                        break
                    if status != zwo.ASI_EXP_SUCCESS:
                        raise SdkError(f"{self.name}: exposure in continuous capture failed (status {status})")
                    self._call("read image", handle.get_data_after_exposure, buf)
                if self._capture_stop.is_set():
                    break
                frame = self._make_frame(buf, st, roi, True, exposure)
                with self._lock:
                    self._last_frame = frame
                    self._frame_seq = frame.seq
                    self._image_ready = True
                self._count("frames")
                try:
                    on_frame(frame)
                except Exception:
                    self._count("callback_errors")
                    self.log.exception("%s: frame callback raised; capture continues", self.name)
                self._emit("frame", frame=frame)
        except CameraGoneError as exc:
            if not self._capture_stop.is_set():
                self._fault("continuous capture", exc, handle)
        except CameraError as exc:
            if not self._capture_stop.is_set():
                self._count(f"failure:{type(exc).__name__}")
                self.log.error("%s: continuous capture stopped: %s", self.name, exc.message)
                with self._lock:
                    self._capture_intent = None
                    self._error = exc.message
        finally:
            # Whatever ended the loop, leave the SDK out of video mode and with no exposure running.
            for step, fn in (("stop video capture", handle.stop_video_capture), ("stop exposure", handle.stop_exposure)):
                if step == "stop video capture" and not video:
                    continue
                try:
                    self._sdk_quiet(fn)
                except Exception as exc:
                    self.log.debug("%s: capture cleanup '%s': %s", self.name, step, exc)
            with self._lock:
                if self._sm.state == S.CAPTURING and threading.current_thread() is self._capture_thread:
                    self._capture_thread = None
                    self._sm.transition(S.IDLE)
            self.log.debug("%s: capture loop stopped", self.name)

    # ------------------------------------------------------------------ schedule
    def set_schedule(self, window: CaptureWindow | None) -> None:
        """Capture only inside a daily window; outside it the camera is released and the intent kept."""
        with self._lock:
            self._schedule = window
        self._wake.set()

    @property
    def schedule(self) -> CaptureWindow | None:
        """The capture window, if any."""
        return self._schedule

    def _go_off_peak(self, window: CaptureWindow) -> None:
        with self._lock:
            if self._sm.state not in OPEN_STATES and self._sm.state != S.ERROR:
                return
            until = f"{window.start:%H:%M}"
            self._sm.transition(S.DISCONNECTING) if self._sm.state != S.ERROR else None
        self.log.info("%s: off-peak: releasing the camera until %s", self.name, until)
        self._teardown(final_state=None)
        with self._lock:
            self._off_peak_until = until
            if self._sm.state == S.ERROR:
                self._sm.transition(S.DISCONNECTING)
            self._sm.transition(S.OFF_PEAK)
        self._count("off_peak_releases")

    def _resume_from_off_peak(self) -> None:
        with self._lock:
            if self._sm.state != S.OFF_PEAK:
                return
            self._sm.transition(S.CONNECTING)
        self.log.info("%s: capture window open: reconnecting", self.name)
        try:
            self._open_and_configure()
        except CameraError as exc:
            with self._lock:
                self._error = exc.message
                if self._sm.state == S.CONNECTING:
                    self._sm.transition(S.ERROR)
            self._count("reconnect_failures")
            return
        with self._lock:
            self._off_peak_until = None
        self._launch_capture()

    # ------------------------------------------------------------------ faults and recovery
    def _fault(self, step: str, exc: CameraError, handle: Any = None) -> None:
        """The camera is gone or broken: record it, tear down fully, and let the supervisor reconnect.

        A failure on a handle that is no longer current (a teardown closed it while a health check
        or readout was using it) is stale and ignored: acting on it would tear down a newer connection.
        """
        with self._lock:
            stale = handle is not None and handle is not self._handle
            if stale or self._sm.state in (S.DISCONNECTING, S.DISCONNECTED, S.ERROR, S.OFF_PEAK, S.CONNECTING):
                self.log.debug("%s: ignoring %s failure on a closed connection: %s", self.name, step, exc.message)
                return
            cause = "removed" if "removed" in exc.message.lower() or "ASI error 5" in exc.message else "io_error"
            self._counters[f"failure:{cause}"] += 1
            self.log.error("%s: %s during %s; tearing down and reconnecting", self.name, exc.message, step)
            self._error = f"camera removed or not answering ({exc.message})"
            self._sm.transition(S.ERROR)
            self._reconnect_attempt = 0
            self._capture_stop.set()
        self._emit("error", message=self._error)
        # The handle is useless now; close it so the SDK and USB are released before reconnecting.
        handle = self._handle
        with self._lock:
            self._handle = None
            self._applied_roi = None
            exp = self._exp_thread
        if handle is not None:
            self._close_handle_quietly(handle, "close after fault")
        if exp is not None and exp is not threading.current_thread():
            self._exp_cancel.set()
        self._wake.set()

    def _start_supervisor(self) -> None:
        with self._lock:
            if self._supervisor is not None and self._supervisor.is_alive():
                return
            self._supervisor_stop.clear()
            ref = weakref.ref(self)
            self._supervisor = threading.Thread(target=ZWOCamera._supervise, args=(ref, self._supervisor_stop),
                                                name=f"{self.name}-supervisor", daemon=True)
            thread = self._supervisor
        thread.start()

    def _stop_supervisor_async(self) -> None:
        with self._lock:
            thread = self._supervisor
            self._supervisor = None
            self._supervisor_stop.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    @staticmethod
    def _supervise(ref: "weakref.ref[ZWOCamera]", stop: threading.Event) -> None:
        """Health checks, reconnection with backoff, and the capture schedule; holds only a weak ref."""
        delays: Iterator[float] | None = None
        next_health = 0.0
        next_attempt = 0.0
        while not stop.is_set():
            self = ref()
            if self is None:
                return
            now = time.monotonic()
            state = self._sm.state
            window = self._schedule
            wait = 0.25
            if self._lib is not None and _zwo.library() is not self._lib:
                self._abandon()
                return
            try:
                if window is not None and state != S.DISCONNECTING:
                    inside = window.contains(self._clock())
                    if not inside and state in (OPEN_STATES | {S.ERROR}):
                        self._go_off_peak(window)
                        continue
                    if inside and state == S.OFF_PEAK:
                        self._resume_from_off_peak()
                        continue
                elif window is None and state == S.OFF_PEAK:
                    self._resume_from_off_peak()
                    continue
                if state == S.ERROR and self.reconnect_policy.enabled:
                    if delays is None:
                        delays = self.reconnect_policy.delays()
                        next_attempt = now + next(delays)
                    if now >= next_attempt:
                        self._try_reconnect()
                        if self._sm.state == S.ERROR:
                            next_attempt = time.monotonic() + next(delays)
                        else:
                            delays = None
                    wait = max(0.01, min(wait, next_attempt - time.monotonic()))
                elif state in (S.IDLE, S.IMAGE_READY, S.EXPOSING, S.READING, S.CAPTURING):
                    delays = None
                    if now >= next_health:
                        next_health = now + self.health_interval
                        handle = self._handle
                        if handle is not None:
                            try:
                                self._read_telemetry(handle)
                            except CameraGoneError as exc:
                                self._fault("health check", exc, handle)
                            except CameraError as exc:
                                self.log.debug("%s: health check: %s", self.name, exc.message)
                    wait = min(wait, max(0.01, next_health - time.monotonic()))
            except Exception:
                self.log.exception("%s: supervisor step failed", self.name)
            wake = self._wake
            del self
            wake.wait(wait)
            wake.clear()

    def _abandon(self) -> None:
        """The SDK was unloaded under us: forget the handle without calling it, and stop."""
        self.log.warning("%s: the camera SDK was unloaded; dropping the connection", self.name)
        with self._lock:
            self._want_connected = False
            self._capture_intent = None
            self._handle = None
            self._capture_stop.set()
            self._exp_cancel.set()
            if self._sm.state not in (S.DISCONNECTED, S.DISCONNECTING):
                self._sm.transition(S.DISCONNECTING)
            if self._sm.state == S.DISCONNECTING:
                self._sm.transition(S.DISCONNECTED)
            self._supervisor = None
        registry.closed(self)

    def _try_reconnect(self) -> None:
        with self._lock:
            if self._sm.state != S.ERROR or not self._want_connected:
                return
            self._reconnect_attempt += 1
            attempt = self._reconnect_attempt
            self._sm.transition(S.CONNECTING)
        try:
            self._open_and_configure()
        except CameraError as exc:
            self._count("reconnect_failures")
            self.log.info("%s: reconnect attempt %d failed: %s", self.name, attempt, exc.message)
            with self._lock:
                if self._sm.state == S.CONNECTING:
                    self._sm.transition(S.ERROR)
            return
        with self._lock:
            self._error = None
            self._reconnect_attempt = 0
        self._count("reconnects")
        self.log.info("%s: reconnected after %d attempt(s); settings restored", self.name, attempt)
        self._emit("connected")
        self._launch_capture()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1


class _Cancelled(Exception):
    """Internal: the exposure was aborted."""
