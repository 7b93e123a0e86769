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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import _zwo, controls, model_facts, registry, validation
from . import bayer as _bayer
from . import roi as _roi
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
from .events import (
    Connected,
    ConnectionLost,
    CoreEvent,
    Disconnected,
    ErrorReported,
    Exposure,
    ExposureEnded,
    ExposureOutcome,
    ExposureStarted,
    FrameCaptured,
    ReconnectFailed,
    SettingsChanged,
    StateChanged,
)
from .exposure import Cancelled, wait_exposed
from .handle import SdkIO
from .models import (
    CameraInfo,
    CameraSettings,
    CameraStatus,
    CaptureWindow,
    ControlInfo,
    Frame,
    ReconnectPolicy,
)
from .roi import Roi
from .state import OPEN_STATES, READY_STATES, CameraState, StateMachine
from .supervisor import Supervisor

S = CameraState
C = controls
#: What a teardown reports as the reason an exposure in flight ended.
DISCONNECTED_REASON = "the camera was disconnected"
OFF_PEAK_REASON = "the camera was released for the off-peak period"
#: Settings that start, move or stop the cooler ramp when they change.
RAMP_SETTINGS = frozenset({"target_temperature", "cooler_on", "ramp_slope"})


def _ramp_step(setpoint: float, goal: float, max_change: float) -> float:
    """`setpoint` moved toward `goal` by at most `max_change` (C)."""
    if abs(goal - setpoint) <= max_change:
        return goal
    return setpoint + max_change if goal > setpoint else setpoint - max_change


def _norm(name: str) -> str:
    """Model names compared ignoring case, punctuation and a leading "ZWO"."""
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return n[3:] if n.startswith("zwo") else n


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


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
        self.log = logger or logging.getLogger("zwo_alpaca.camera")
        # No strong reference cycles through self: an unreferenced camera is freed (and released by
        # __del__) at once, not at the next garbage collection.
        me = weakref.ref(self)
        self._sdk = SdkIO(lambda: cam.name if (cam := me()) is not None else "camera", self.log)
        on_change = weakref.WeakMethod(self._on_state_change)
        self._sm = StateMachine(lambda old, new: None if (fn := on_change()) is None else fn(old, new))
        self._handle: Any = None
        self._settings = CameraSettings()
        self._applied_roi: tuple[int, int, int, int, int, int] | None = None
        self._want_connected = False
        self._busy_op = 0  # asynchronous connects/disconnects still running (a count: they may overlap)
        self._error: str | None = None
        self._name = name
        self._held: dict[str, int] = {}  # control settings as the SDK holds them (read back)
        self._absent_model: str | None = None  # set by for_absent(): the config knows it, the bus does not
        self._awaiting_plug = False  # a connect was asked for while it was not plugged in
        # exposure
        self._exp_thread: threading.Thread | None = None
        self._exp_cancel = threading.Event()
        self._exp_keep = False
        self._exp_stopped_early = False
        self._exp_reason: str | None = None  # why the core cancelled the exposure (a disconnect, a fault)
        self._exp_failed = False  # a fault, not a request, cancelled it
        self._exposure: Exposure | None = None  # the one running, or the last one
        self._exposure_open = False  # an ExposureStarted whose ExposureEnded is not yet published
        self._exposure_count = 0
        self._exp_start_mono = 0.0
        self._exp_duration = 0.0
        self._last_start: _dt.datetime | None = None
        self._last_duration: float | None = None
        self._last_frame: Frame | None = None
        self._frame_seq = 0
        # True only in the block that publishes a frame; False from every new exposure or connection.
        self._image_ready = False
        self._buffers: list[bytearray] = []
        self._buffer_turn = 0
        # continuous capture and schedule
        self._capture_thread: threading.Thread | None = None
        self._capture_stop = threading.Event()
        self._capture_intent: tuple[Callable[[Frame], None], float, str] | None = None
        self._schedule: CaptureWindow | None = None
        self._off_peak_until: str | None = None
        # supervisor: health checks, reconnection, the capture schedule
        self._supervisor = Supervisor(self)
        self._reconnect_attempt = 0
        self._lost_at: float | None = None  # when the camera was lost (monotonic), for the downtime
        # telemetry
        self._temperature: float | None = None
        self._cooler_power: float | None = None
        self._cooler_on: bool | None = None
        self._guide_until: dict[int, float] = {}
        self._guide_timers: dict[int, threading.Timer] = {}
        # cooler ramp (while connected) and warm-up (after a disconnect that asked for it)
        self._ramp_thread: threading.Thread | None = None
        self._ramp_stop = threading.Event()
        self._ramp_setpoint: float | None = None  # the step the SDK's TargetTemp is at (a float; the SDK rounds)
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = threading.Event()
        self._warm_cooler_off = True  # how a warm-up that is cut short ends: cooler off, or left to a new connect
        # fast exposure: exposures still to start, each as soon as the one before is read out
        self._repeat_left = 0
        self._counters: collections.Counter[str] = collections.Counter()
        self._listeners: list[Callable[[CoreEvent], None]] = []
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

    @classmethod
    def for_absent(cls, model_name: str, serial: str | None, **kwargs: Any) -> ZWOCamera:
        """A camera the config knows (by model and serial) but that is not on the bus now.

        It can be served as a device from the start: `connect()` says it is not plugged in and keeps
        the request, and `plugged_in()` brings the unit in when hotplug sees it.
        """
        kwargs.setdefault("name", model_name)
        cam = cls(serial or model_name, **kwargs)
        cam._absent_model = model_name
        cam._absent_serial = serial
        return cam

    _absent_serial: str | None = None

    @property
    def model_name(self) -> str:
        """The SDK's model name ("ZWO ASI294MC Pro"), known from the bus or, for an absent camera, the config."""
        if self._info is not None:
            return self._info.name
        return self._absent_model or self.name

    @property
    def configured_only(self) -> bool:
        """A camera built by `for_absent()` whose unit has not been seen on the bus yet (no SDK facts)."""
        return self._info is None and self._absent_model is not None

    @property
    def serial(self) -> str | None:
        """The unit's serial number when known."""
        return self._info.serial if self._info is not None and self._info.serial else self._absent_serial

    def _not_plugged_in_message(self) -> str:
        serial = self.serial
        unit = f"{self.model_name} (serial {serial})" if serial else self.model_name
        return f"{unit} is not plugged in; it connects when it is"

    def plugged_in(self, info: CameraInfo) -> bool:
        """Hotplug saw this unit on the bus: adopt what the SDK says of it, and connect it if a client
        asked while it was absent. Blocking (it may connect): call it from a worker thread.
        Returns whether it connected."""
        with self._lock:
            if self._info is None or self._sm.state == S.DISCONNECTED:
                self._info = info
            waiting = self._awaiting_plug and self._sm.state == S.DISCONNECTED
        if not waiting:
            return False
        try:
            self.connect()
        except CameraError as exc:
            self.log.warning("%s: connect after plug-in failed: %s", self.name, exc.message)
            self._publish(ErrorReported(exc.message))
            return False
        return True

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
            raise NotOnBus(f"no camera at index {sel}: {count} camera(s) connected")
        want_name: str | None
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
        raise NotOnBus(f"{want_name or sel} is not connected ({count} camera(s) found)")

    def _has_twin(self) -> bool:
        """Whether this process has another camera object of the same model."""
        me = _norm(self._info.name) if self._info else None
        return any(c is not self and c.info is not None and _norm(c.info.name) == me for c in registry.tracked())

    # ------------------------------------------------------------------ listeners and state
    def add_listener(self, fn: Callable[[CoreEvent], None]) -> None:
        """Call `fn(event)` with every `driver.events` event (from core threads; `fn` must be quick)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[CoreEvent], None]) -> None:
        """Stop calling `fn`."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _publish(self, event: CoreEvent) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # a listener's bug must not break the camera
                self.log.exception("%s: listener failed on %s event", self.name, event.kind)

    def _on_state_change(self, old: CameraState, new: CameraState) -> None:
        self.log.debug("%s: %s -> %s", self.name, old.value, new.value)
        self._lock.notify_all()
        self._publish(StateChanged(old, new))

    def _to(self, new: CameraState) -> None:
        """The single place state changes: under the lock, through the transition table.

        Every transition of the camera goes through here (the state machine refuses any other), and
        every listener hears of it as a `StateChanged`.
        """
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
            time_left: float | None = None
            if state == S.EXPOSING:
                elapsed = time.monotonic() - self._exp_start_mono
                time_left = max(0.0, self._exp_duration - elapsed)
                if self._exp_duration > 0:
                    pct = int(min(99, max(0, elapsed / self._exp_duration * 100)))
            elif state == S.READING:
                pct, time_left = 100, 0.0
            elif state == S.IMAGE_READY:
                pct = 100
            st = self._settings
            reached: bool | None = None
            if st.cooler_on and st.target_temperature is not None and self._temperature is not None \
                    and state in OPEN_STATES:
                reached = abs(self._temperature - st.target_temperature) <= st.ramp_threshold
            return CameraStatus(
                state=state,
                connected=self._want_connected,
                connecting=self._busy_op > 0 or state in (S.CONNECTING, S.DISCONNECTING),
                image_ready=self._image_ready,
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
                exposure=self._exposure,
                time_left=time_left,
                awaiting_plug=self._awaiting_plug,
                ramp_setpoint=self._ramp_setpoint if state in OPEN_STATES or state == S.WARMING else None,
                temperature_reached=reached,
            )

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
        if state == S.WARMING:
            return "Disconnected (warming the sensor up before releasing the camera)"
        return {S.DISCONNECTED: "Disconnected", S.CONNECTING: "Connecting", S.IDLE: "Idle",
                S.READING: "Reading out", S.IMAGE_READY: "Image ready",
                S.DISCONNECTING: "Disconnecting"}.get(state, str(state.value))

    def counters(self) -> dict[str, int]:
        """Counts of disconnects, reconnects, failures by cause, exposures and frames."""
        with self._lock:
            return dict(self._counters)

    # ------------------------------------------------------------------ SDK access
    def _call(self, step: str, fn: Callable[..., Any], *args: Any, locked: bool = True) -> Any:
        """Run one SDK call through the handle's serialised, translated access (`handle.SdkIO`)."""
        return self._sdk.call(step, fn, *args, locked=locked)

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

    def _control(self, key: str | C.ControlSpec) -> ControlInfo | None:
        """The camera's control by spec or SDK name (the type number decides when names differ)."""
        info = self._info
        return C.find(info.controls if info else None, key)

    def _control_type(self, key: str | C.ControlSpec) -> int | None:
        ctl = self._control(key)
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

    def _set_control(self, handle: Any, key: str | C.ControlSpec, value: int, auto: bool = False) -> None:
        ctl = self._control(key)
        if ctl is None:
            return
        what = f"set {ctl.name}={value}" + (" (auto)" if auto else "")
        self._call(what, handle.set_control_value, ctl.control_type, int(value), bool(auto))

    def control_auto(self, name: str) -> bool:
        """Whether the SDK runs the control `name` automatically now (its read-back auto flag)."""
        handle = self._require_handle()
        ctype = self._control_type(name)
        if ctype is None:
            raise NotSupportedError(f"{self.name} has no control {name!r}")
        return bool(self._call(f"read {name}", handle.get_control_value, ctype)[1])

    def set_auto(self, name: str, on: bool) -> None:
        """Let the SDK run the control `name` automatically (controls it marks IsAutoSupported), or stop.

        The choice persists like the other settings and is reapplied after every reconnect; setting
        the control's value (`set_control`, `configure`) takes it back to manual, as in the SDK.
        """
        ctl = self._control(name)
        if ctl is None:
            if self._info is None or self._info.controls is None:
                raise NotConnectedError(f"{self.name}: controls are known once the camera has been connected")
            raise NotSupportedError(f"{self.name} has no control {name!r}")
        autos = [c.name for c in C.auto_capable(self._info.controls if self._info else None)]
        if ctl.name not in autos:
            raise NotSupportedError(f"{ctl.name} has no automatic mode on {self.name}: valid "
                                    f"{', '.join(autos) or 'none'}")
        with self._lock:
            if on:
                self._settings.auto_controls[ctl.name] = True
            else:
                self._settings.auto_controls.pop(ctl.name, None)
            handle = self._handle if self._sm.state in OPEN_STATES else None
        if handle is not None:
            # The SDK takes a value with the flag; the one it holds now keeps manual mode where it was.
            value = int(self._call(f"read {ctl.name}", handle.get_control_value, ctl.control_type)[0])
            self._set_control(handle, ctl.name, value, auto=bool(on))
        self._publish(SettingsChanged({f"auto:{ctl.name}": bool(on)}))

    def _manual(self, names: set[str]) -> None:
        """Controls given a value go back to manual (the SDK's auto flag is cleared with every value set)."""
        with self._lock:
            for cname in names:
                self._settings.auto_controls.pop(cname, None)

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Open the camera and apply the current settings; blocks until connected or failed.

        Raises CameraGoneError when the camera is absent, SdkError when it cannot be opened (e.g. it
        is busy in another program); the state is then Disconnected again.
        """
        if self._sm.state == S.WARMING:
            # A warm-up after the last disconnect still holds the camera: it lets go (the cooler stays
            # as it is; the settings applied below switch it on again and ramp from where it is).
            self._finish_warmup(cooler_off=False)
        with self._lock:
            state = self._sm.state
            if self._want_connected and state not in (S.DISCONNECTED,):
                return  # already connected, reconnecting, or off-peak: the intent is already set
            if state == S.WARMING:
                raise InvalidOperationError(f"{self.name}: still warming up after the last disconnect; try again")
            if state == S.DISCONNECTING:
                self._lock.wait_for(lambda: self._sm.state != S.DISCONNECTING, timeout=2.0)
                if self._sm.state != S.DISCONNECTED:
                    raise InvalidOperationError(f"{self.name}: still disconnecting; try again")
            self._want_connected = True
            self._error = None
            # A fresh connection has no image ready (ASCOM's first-use rule); the last frame is kept
            # for front ends that show it, but it is not "ready" for a client that just connected.
            self._image_ready = False
            self._to(S.CONNECTING)
        try:
            self._open_and_configure()
        except BaseException as exc:
            known = isinstance(exc, NotOnBus) and (self._info is not None or self._absent_model is not None)
            with self._lock:
                self._want_connected = False
                self._error = str(exc)
                if self._sm.state == S.CONNECTING:
                    self._to(S.DISCONNECTED)
                # A known unit that is not on the bus is "not plugged in" (NotConnected, as ASCOM has
                # it), and the request is kept: `plugged_in` connects it when hotplug sees it.
                self._awaiting_plug = known
            self._count("connect_failures")
            if known:
                raise NotConnectedError(self._not_plugged_in_message()) from exc
            raise
        with self._lock:
            self._awaiting_plug = False
        registry.opened(self)
        self._supervisor.start()
        self._publish(Connected(restored=False))

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
            self._publish(ErrorReported(exc.message))

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
            handle = self._sdk.open_verified(info)
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
            exp = C.find(controls, C.EXPOSURE)  # keyed by SDK name: a ControlSpec key never matched
            info = replace(info, serial=serial, controls=controls,
                           exposure_min_s=exp.min / 1e6 if exp else info.exposure_min_s,
                           exposure_max_s=exp.max / 1e6 if exp else info.exposure_max_s,
                           full_well_e=model_facts.facts(info.model).full_well_e)
            with self._lock:
                self._require_connecting()
                self._info = info
                self._handle = handle
                self._sdk.lib = _zwo.library()
                self._applied_roi = None
            self._reconcile_settings()
            self._apply_settings(handle)
            self._read_telemetry(handle)
            with self._lock:
                self._require_connecting()
                self._to(S.IDLE)
        except BaseException:
            self._close_handle(handle, "close after a failed connect")
            with self._lock:
                if self._handle is handle:
                    self._handle = None
            raise

    def _require_connecting(self) -> None:
        """Under the lock: a disconnect that arrived while connecting wins, and the connect is abandoned."""
        if self._sm.state != S.CONNECTING:
            raise InvalidOperationError(f"{self.name}: connecting was cancelled by a disconnect")

    def _apply_settings(self, handle: Any) -> None:
        """Push every persisted setting to the SDK (after connect and after a reconnect)."""
        self._push_settings(handle, None)

    #: What a setting goes back to when the camera cannot take the stored value.
    _FALLBACK: dict[str, Any] = {"bin": 1, "start_x": 0, "start_y": 0, "width": None, "height": None,
                                 "image_type": "RAW16", "gain": None, "offset": None, "usb_bandwidth": None,
                                 "flip": 0, "high_speed": False, "hardware_bin": False, "cooler_on": False,
                                 "target_temperature": None}

    def _reconcile_settings(self) -> None:
        """Check the stored settings against the camera now that its controls are known.

        Settings stored before the first connection (config defaults) could only be type-checked. A
        value the camera cannot take is not applied: it goes back to the SDK's default, with one
        warning naming the key, the value and the valid range, so what is reported is what is held.
        """
        info = self._info
        assert info is not None
        st = self.settings
        for key in self._FALLBACK:
            value = getattr(st, key)
            if value == self._FALLBACK[key]:
                continue
            try:
                self._validate_settings(st.copy(), {key: value}, info)
            except CameraError as exc:
                self.log.warning("%s: setting %s=%r is not applied: %s", self.name, key, value, exc.message)
                with self._lock:
                    setattr(self._settings, key, self._FALLBACK[key])
        bad: list[str] = []
        for cname, value in st.extra_controls.items():
            ctl = self._control(cname)
            try:
                if ctl is None:
                    raise NotSupportedError(f"{self.name} has no control {cname!r}")
                validation.control(cname, value, ctl)
            except CameraError as exc:
                self.log.warning("%s: setting %s=%r is not applied: %s", self.name, cname, value, exc.message)
                bad.append(cname)
        if bad:
            with self._lock:
                for cname in bad:
                    self._settings.extra_controls.pop(cname, None)

    def held(self, setting: str) -> int | None:
        """The value the SDK holds for a control setting ("gain", "offset", ...), as read back after it
        was last set; None before the first connection. What frames and clients report."""
        with self._lock:
            return self._held.get(setting)

    def _read_back(self, handle: Any, keys: set[str] | None) -> None:
        """Read the SDK's values of the reported controls (it may round or clamp what it was given)."""
        held: dict[str, int] = {}
        for key in ("gain", "offset"):
            spec = C.spec_for_setting(key)
            ctl = self._control(spec) if spec else None
            if ctl is None or (keys is not None and key not in keys):
                continue
            held[key] = int(self._call(f"read {ctl.name}", handle.get_control_value, ctl.control_type)[0])
        with self._lock:
            self._held.update(held)

    def _push_settings(self, handle: Any, keys: set[str] | None) -> None:
        """Push the settings named in `keys` (None: all of them) to the SDK, through the controls table.

        A setting of None leaves the SDK's own default; a control the camera lacks is skipped (the
        settings were validated against the camera's controls when they were stored).
        """
        st = self.settings
        info = self._info
        if keys is None or keys & RAMP_SETTINGS:
            # Before the cooler is switched on, so it starts from the ramp's first step.
            self._ramp_restart(handle)
        for key in C.CONTROL_SETTINGS:
            spec = C.spec_for_setting(key)
            value = getattr(st, key)
            if spec is None or value is None or (keys is not None and key not in keys):
                continue
            if spec in (C.TARGET_TEMP, C.COOLER_ON) and not (info and info.has_cooler):
                continue
            if spec is C.TARGET_TEMP:
                continue  # the ramp gives the SDK its setpoint (`_ramp_restart`)
            self._set_control(handle, spec, int(value))
        for cname, value in st.extra_controls.items():
            if keys is None or cname in keys:
                self._set_control(handle, cname, value)
        if keys is None:  # a (re)connect: the controls the SDK ran automatically run so again
            for cname, on in st.auto_controls.items():
                ctl = self._control(cname)
                if on and ctl is not None:
                    value = int(self._call(f"read {cname}", handle.get_control_value, ctl.control_type)[0])
                    self._set_control(handle, cname, value, auto=True)
        if keys is not None and "cooler_on" in keys:
            with self._lock:
                self._cooler_on = st.cooler_on
        self._read_back(handle, keys)

    # ------------------------------------------------------------------ cooler ramp and warm-up
    #: How often the ramp moves the SDK's cooler target (the SDK takes whole degrees).
    RAMP_TICK_S = 0.25
    #: The warm-up's slope when the ramp is off (C/min): gentle, as the ramp exists to be.
    WARMUP_DEFAULT_SLOPE = 5.0
    #: The longest a warm-up holds the camera after a disconnect; then the cooler goes off regardless.
    WARMUP_MAX_S = 900.0
    #: The cooler must idle this long (power ~0 with the setpoint at or above the sensor) to end a warm-up.
    WARMUP_SETTLE_S = 1.0
    #: How long a connect or a second disconnect waits for a warm-up thread to let go of the camera.
    WARMUP_JOIN_S = 2.0

    def _ramp_restart(self, handle: Any) -> None:
        """The setpoint, the cooler switch or the slope changed: give the SDK its cooler target.

        Without a ramp (slope 0, or the cooler off) the SDK gets the setpoint itself. With one, the
        target starts at the sensor's temperature now and the ramp thread moves it toward the
        setpoint at the slope (libindi's CCD_TEMP_RAMP), whichever front end set it.
        """
        info = self._info
        if info is None or not info.has_cooler or self._control(C.TARGET_TEMP) is None:
            return
        st = self.settings
        goal = st.target_temperature
        if goal is None:
            return
        start = goal
        if st.ramp_slope > 0 and st.cooler_on:
            self._read_telemetry(handle)
            with self._lock:
                current = self._temperature
            start = goal if current is None else current
        with self._lock:
            self._ramp_setpoint = start
        self._set_control(handle, C.TARGET_TEMP, int(round(start)))
        if start != goal:
            self._start_ramp(handle)

    def _start_ramp(self, handle: Any) -> None:
        with self._lock:
            if self._ramp_thread is not None and self._ramp_thread.is_alive():
                return  # it reads the new setpoint on its next step
            self._ramp_stop = threading.Event()
            thread = threading.Thread(target=self._ramp_loop, args=(handle, self._ramp_stop),
                                      name=f"{self.name}-ramp", daemon=True)
            self._ramp_thread = thread
        thread.start()

    def _ramp_loop(self, handle: Any, stop: threading.Event) -> None:
        """Move the SDK's cooler target toward the setpoint at the slope until it gets there."""
        last = time.monotonic()
        sent = None
        try:
            while not stop.wait(self.RAMP_TICK_S):
                now = time.monotonic()
                with self._lock:
                    st = self._settings
                    setpoint, goal = self._ramp_setpoint, st.target_temperature
                    if self._handle is not handle or goal is None or setpoint is None or not st.cooler_on:
                        return
                    slope = st.ramp_slope
                    setpoint = goal if slope <= 0 else _ramp_step(setpoint, goal, slope * (now - last) / 60.0)
                    self._ramp_setpoint = setpoint
                last = now
                if int(round(setpoint)) != sent:
                    sent = int(round(setpoint))
                    self._set_control(handle, C.TARGET_TEMP, sent)
                if setpoint == goal:
                    return
        except CameraGoneError as exc:
            self._fault("cooler ramp", exc, handle)
        except CameraError as exc:
            self.log.warning("%s: cooler ramp stopped: %s", self.name, exc.message)
            self._publish(ErrorReported(f"cooler ramp stopped: {exc.message}"))
        finally:
            with self._lock:
                if self._ramp_thread is threading.current_thread():
                    self._ramp_thread = None

    def _stop_ramp(self) -> None:
        """Stop the ramp thread (bounded); the SDK keeps the target it was last given."""
        with self._lock:
            thread = self._ramp_thread
            self._ramp_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0 + self.RAMP_TICK_S)

    def _wants_warmup(self, state: CameraState) -> bool:
        """Under the lock: a disconnect now should warm the sensor up first (asked for, and cooling)."""
        info = self._info
        return bool(self._settings.warm_at_disconnect and info is not None and info.has_cooler
                    and self._handle is not None and state in OPEN_STATES
                    and (self._cooler_on or self._settings.cooler_on))

    def _warm_loop(self, handle: Any, stop: threading.Event) -> None:
        """After a disconnect: raise the cooler target at the slope until the cooler idles, then switch
        it off and close the camera. Bounded by WARMUP_MAX_S; `stop` cuts it short (a connect taking
        over, a second disconnect, process exit)."""
        began = last = time.monotonic()
        slope = self._settings.ramp_slope or self.WARMUP_DEFAULT_SLOPE
        ctl = self._control(C.TARGET_TEMP)
        top = float(ctl.max) if ctl is not None else self.DEFAULT_SETPOINT_RANGE[1]
        sent: int | None = None
        why = "the cooler is idle"
        try:
            self._read_telemetry(handle)
            with self._lock:
                setpoint = self._temperature if self._temperature is not None else top
                self._ramp_setpoint = setpoint
            quiet_since: float | None = None
            while not stop.wait(self.RAMP_TICK_S):
                now = time.monotonic()
                if now - began > self.WARMUP_MAX_S:
                    why = f"the warm-up reached its limit of {self.WARMUP_MAX_S:.0f} s"
                    break
                setpoint = _ramp_step(setpoint, top, slope * (now - last) / 60.0)
                last = now
                with self._lock:
                    self._ramp_setpoint = setpoint
                if int(round(setpoint)) != sent:
                    sent = int(round(setpoint))
                    self._set_control(handle, C.TARGET_TEMP, sent)
                self._read_telemetry(handle)
                with self._lock:
                    temp, power = self._temperature, self._cooler_power
                idle = power is not None and power <= 1.0 and (temp is None or setpoint >= temp)
                quiet_since = (quiet_since or now) if idle else None
                if quiet_since is not None and now - quiet_since >= self.WARMUP_SETTLE_S:
                    break
                if setpoint >= top:
                    why = "the cooler target reached its maximum"
                    break
            else:
                why = "the warm-up was cut short"
        except CameraError as exc:
            why = f"the warm-up failed: {exc.message}"
        self._end_warmup(handle, why)

    def _end_warmup(self, handle: Any, why: str) -> None:
        """The warm-up's last act: cooler off (unless a connect takes over), close, Disconnected."""
        with self._lock:
            cooler_off = self._warm_cooler_off
        if cooler_off:
            try:
                self._set_control(handle, C.COOLER_ON, 0)
            except CameraError as exc:
                self.log.warning("%s: switching the cooler off after the warm-up failed: %s", self.name, exc.message)
        self._close_handle(handle, "close after warm-up")
        with self._lock:
            if self._handle is handle:
                self._handle = None
                self._applied_roi = None
            self._ramp_setpoint = None
            self._cooler_on = False if cooler_off else self._cooler_on
            if self._sm.state == S.WARMING:
                self._to(S.DISCONNECTED)
            if self._warm_thread is threading.current_thread():
                self._warm_thread = None
        registry.closed(self)
        self.log.info("%s: warm-up ended (%s); cooler %s, camera released", self.name, why,
                      "off" if cooler_off else "left to the new connection")

    def _finish_warmup(self, cooler_off: bool) -> None:
        """Cut a warm-up short and wait (bounded) until its thread has released the camera."""
        with self._lock:
            thread = self._warm_thread
            self._warm_cooler_off = cooler_off
            self._warm_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.WARMUP_JOIN_S)
            if thread.is_alive():
                self.log.warning("%s: warm-up thread still in an SDK call after %.1f s", self.name,
                                 self.WARMUP_JOIN_S)

    def _read_telemetry(self, handle: Any) -> None:
        """Read temperature and cooler state: the cached values polls return, and the health check."""
        info = self._info
        temp = power = None
        cooler = None
        if self._control_type(C.TEMPERATURE) is not None:
            temp = self._call("read temperature", handle.get_control_value, self._control_type(C.TEMPERATURE))[0] / 10.0
        if info is not None and info.has_cooler:
            if self._control_type(C.COOLER_POWER) is not None:
                power = float(self._call("read cooler power", handle.get_control_value,
                                         self._control_type(C.COOLER_POWER))[0])
            if self._control_type(C.COOLER_ON) is not None:
                cooler = bool(self._call("read cooler", handle.get_control_value,
                                         self._control_type(C.COOLER_ON))[0])
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
            self._awaiting_plug = False
            self._capture_intent = None
            warm = False
            if state == S.WARMING:
                warming = True  # a second disconnect (or process exit): end the warm-up now, cooler off
            else:
                warming = False
                if state == S.DISCONNECTED and self._handle is None:
                    self._supervisor.stop()
                    return
                if state == S.DISCONNECTING:
                    # another thread is tearing down: wait for it (bounded) rather than racing it
                    self._lock.wait_for(lambda: self._sm.state != S.DISCONNECTING, timeout=2.0)
                    return
                warm = self._wants_warmup(state)
                if state != S.DISCONNECTED:
                    self._to(S.DISCONNECTING)
        if warming:
            self._finish_warmup(cooler_off=True)
            return
        if warm:
            self._teardown(final_state=S.WARMING, keep_handle=True)
        else:
            self._teardown(final_state=S.DISCONNECTED if state != S.DISCONNECTED else None)
        self._supervisor.stop()
        if not warm:
            registry.closed(self)
        self._count("disconnects")
        self.log.info("%s: disconnected%s", self.name, "; warming the sensor up before releasing it" if warm else "")
        self._publish(Disconnected())

    def disconnect(self) -> None:
        """Alias of `disconnect_camera()`."""
        self.disconnect_camera()

    def _teardown(self, final_state: CameraState | None, reason: str = DISCONNECTED_REASON,
                  keep_handle: bool = False) -> None:
        """Stop everything and close the handle; `final_state` None leaves the state as it is.

        `keep_handle` (a disconnect that warms the sensor up first) stops everything the same way
        but leaves the handle open for the warm-up thread, which closes it (`_warm_loop`).
        """
        handle = self._handle
        self._step("stop cooler ramp", self._stop_ramp)
        self._step("stop continuous capture", self._stop_capture_thread)
        self._step("abort exposure", self._cancel_exposure, handle, reason)
        self._cancel_guiding(handle)
        if handle is not None:
            self._step("stop video capture", lambda: self._sdk.quiet(handle.stop_video_capture))
            if not keep_handle:
                self._close_handle(handle, "close camera")
        thread: threading.Thread | None = None
        with self._lock:
            if keep_handle and handle is not None:
                self._warm_stop = threading.Event()
                self._warm_cooler_off = True
                thread = threading.Thread(target=self._warm_loop, args=(handle, self._warm_stop),
                                          name=f"{self.name}-warmup", daemon=True)
                self._warm_thread = thread
            else:
                self._handle = None
                self._ramp_setpoint = None
            self._applied_roi = None
            if final_state is not None:
                self._to(final_state)
        if thread is not None:
            thread.start()

    def _step(self, step: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - teardown goes on; the failure is logged and counted
            self.log.warning("%s: teardown step '%s' failed: %s", self.name, step, exc)
            self._count(f"teardown_failure:{step}")

    def _close_handle(self, handle: Any, step: str) -> None:
        self._sdk.close(handle, step, lambda st: self._count(f"teardown_failure:{st}"))

    def __enter__(self) -> ZWOCamera:
        self.connect()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.disconnect_camera()

    def __del__(self) -> None:
        try:
            if self._handle is not None:
                self.disconnect_camera()
        except Exception:  # noqa: BLE001 - a finaliser must not raise (the interpreter may be exiting)
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
        unknown = set(changes) - (set(CameraSettings().__dict__) - {"extra_controls", "auto_controls"})
        if unknown:
            raise InvalidValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        info = self._info
        new = self.settings
        for key, value in changes.items():
            setattr(new, key, value)
        self._validate_settings(new, changes, info)
        # A control given a value is manual again (the SDK clears its auto flag with every value set).
        new.auto_controls = {n: on for n, on in new.auto_controls.items()
                             if C.setting_for(n) not in changes}
        with self._lock:
            self._settings = new
            handle = self._handle if self._sm.state in OPEN_STATES else None
        if handle is not None:
            self._push_settings(handle, set(changes))
        self._publish(SettingsChanged(dict(changes)))
        return new.copy()

    def _validate_settings(self, st: CameraSettings, changes: dict[str, Any], info: CameraInfo | None) -> None:
        """Check the changed settings with the rules of `driver.validation` (the only place they live)."""
        if "bin" in changes:
            st.bin = validation.binning(st.bin, info.supported_bins if info else (1, 2, 3, 4))
        for key in ("start_x", "start_y"):
            if key in changes:
                setattr(st, key, validation.start(key, getattr(st, key)))
        for key in ("width", "height"):
            if key in changes:
                setattr(st, key, validation.size(key, getattr(st, key)))
        if "image_type" in changes:
            st.image_type = validation.image_type(st.image_type,
                                                  info.image_types if info else ("RAW8", "RAW16", "RGB24"))
        known = info is not None and info.controls is not None
        for key in ("gain", "offset", "usb_bandwidth", "flip"):
            val = getattr(st, key)
            if key not in changes or val is None:
                continue
            spec = C.spec_for_setting(key)
            assert spec is not None
            ctl = self._control(spec) if known else None
            if known and ctl is None:
                raise NotSupportedError(f"{self.name} has no {spec.sdk_name} control")
            if ctl is not None:
                validation.control(key, val, ctl)
            elif not isinstance(val, int) or isinstance(val, bool):
                raise InvalidValueError(f"{key} {val!r} is not a whole number")
        for key, spec, what in (("high_speed", C.HIGH_SPEED, "high-speed mode"),
                                ("hardware_bin", C.HARDWARE_BIN, "hardware binning")):
            if key in changes and getattr(st, key) and known and self._control(spec) is None:
                raise NotSupportedError(f"{self.name} has no {what}")
        if ("cooler_on" in changes or "target_temperature" in changes) and info is not None and not info.has_cooler \
                and (st.cooler_on or st.target_temperature is not None):
            raise NotSupportedError(f"{self.name} has no cooler")
        if "ramp_slope" in changes:
            st.ramp_slope = validation.ramp_slope(st.ramp_slope)
        if "ramp_threshold" in changes:
            st.ramp_threshold = validation.ramp_threshold(st.ramp_threshold)
        if "warm_at_disconnect" in changes and not isinstance(st.warm_at_disconnect, bool):
            raise InvalidValueError(f"warm_at_disconnect {st.warm_at_disconnect!r} is not true or false")
        wants_cooler = ("ramp_slope" in changes and st.ramp_slope) or \
            ("warm_at_disconnect" in changes and st.warm_at_disconnect)
        if info is not None and not info.has_cooler and wants_cooler:
            raise NotSupportedError(f"{self.name} has no cooler")
        if "target_temperature" in changes and st.target_temperature is not None:
            if known:
                st.target_temperature = validation.setpoint(st.target_temperature, *self.target_temperature_range())
            else:  # the range is the camera's: checked when it connects (`_reconcile_settings`)
                st.target_temperature = validation.temperature(st.target_temperature)

    def set_subframe(self, start_x: int, start_y: int, width: int, height: int,
                     bin: int | None = None) -> CameraSettings:
        """Set the whole subframe (binned pixels) and binning at once, checked against the binned sensor now.

        For front ends that set the frame as one value (INDI's CCD_FRAME, the web page); ASCOM's
        one-at-a-time setters use `configure()`, whose sensor bound waits for `start_exposure`.
        """
        info = self._info
        changes: dict[str, Any] = {"start_x": start_x, "start_y": start_y, "width": width, "height": height}
        if bin is not None:
            changes["bin"] = bin
        if info is not None:
            trial = self.settings
            for key, value in changes.items():
                setattr(trial, key, value)
            self._validate_settings(trial, changes, info)
            b = trial.bin
            validation.subframe(trial.start_x, trial.start_y, trial.width or info.max_width // b,
                                trial.height or info.max_height // b, info.max_width // b, info.max_height // b, b)
        return self.configure(**changes)

    #: The cooler's range when the SDK has no TargetTemp control to say (it always has, on cooled models).
    DEFAULT_SETPOINT_RANGE = (-40.0, 30.0)

    def target_temperature_range(self) -> tuple[float, float]:
        """The cooler's settable range in C, from the SDK's TargetTemp control when known."""
        ctl = self._control(C.TARGET_TEMP)
        if ctl is not None:
            return float(ctl.min), float(ctl.max)
        return self.DEFAULT_SETPOINT_RANGE

    def set_control(self, name: str, value: int) -> None:
        """Set any other writable SDK control by its SDK name (e.g. WB_R, MonoBin, AntiDewHeater).

        The value persists like the other settings and is reapplied after every reconnect.
        """
        spec = C.spec(name)
        if spec is not None and (spec.setting is not None or spec is C.EXPOSURE):
            # A control with a setting of its own is set through it, so there is one way each.
            if spec.setting is None:
                raise InvalidValueError("the exposure time is given to start_exposure(), not set as a control")
            if spec.kind == "bool":
                ctl = self._control(spec)
                if ctl is not None:  # on/off is the SDK's 0..1: 5 is a mistake, not "on"
                    validation.control(name, value, ctl)
                self.configure(**{spec.setting: bool(value)})
            else:
                self.configure(**{spec.setting: value})
            return
        ctl = self._control(name)
        if ctl is None:
            if self._info is None or self._info.controls is None:
                raise NotConnectedError(f"{self.name}: controls are known once the camera has been connected")
            raise NotSupportedError(f"{self.name} has no control {name!r}; it has: "
                                    f"{', '.join(sorted(self._info.controls))}")
        if not ctl.writable:
            raise InvalidValueError(f"{name} is read-only on {self.name}")
        value = validation.control(name, value, ctl)
        self._manual({ctl.name})
        with self._lock:
            self._settings.extra_controls[name] = value
            handle = self._handle if self._sm.state in OPEN_STATES else None
        if handle is not None:
            self._set_control(handle, name, value)
        self._publish(SettingsChanged({name: value}))

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
    def _roi(self, st: CameraSettings, info: CameraInfo) -> Roi:
        """The SDK region for `st`'s subframe (InvalidValueError when it leaves the binned sensor)."""
        return _roi.plan(st, info, model_facts.facts(info.model).area_multiple)

    def start_exposure(self, duration: float, light: bool = True, *, frame_type: str | None = None,
                       owner: object = None, repeat: int = 0) -> Exposure:
        """Start one exposure and return at once with its identity; listeners hear how it ends.

        `frame_type` is "light", "dark", "bias" or "flat" (default light or dark from `light`); a
        bias frame is the camera's shortest exposure whatever `duration` says. `owner` is the
        caller's token, carried in the events. Validates duration and subframe first; raises
        InvalidOperationError when an exposure or continuous capture is running.

        `repeat` (libindi's fast exposure): that many more exposures of the same kind follow, each
        started as soon as the one before is read out, without waiting for a client to fetch the
        image; each is an exposure of its own (`Exposure.remaining` counts down). An abort, a stop,
        a new exposure or a disconnect ends the series.
        """
        info = self._info
        self._require_handle()
        assert info is not None
        ftype = validation.frame_type(frame_type, light)
        seconds = validation.exposure(duration, info.exposure_min_s, info.exposure_max_s, ftype)
        repeat = validation.repeat_count(repeat)
        light = ftype in ("light", "flat") if frame_type is not None else bool(light)
        st = self.settings
        roi = self._roi(st, info)
        with self._lock:
            state = self._sm.state
            if state in (S.EXPOSING, S.READING):
                raise InvalidOperationError(f"{self.name}: an exposure is already in progress")
            if state == S.CAPTURING:
                raise InvalidOperationError(f"{self.name}: continuous capture is running; stop it first")
            if state not in READY_STATES:
                self._require_handle()
                raise InvalidOperationError(f"{self.name}: cannot expose while {state.value}")
            self._exposure_count += 1
            requested = float(duration) if isinstance(duration, (int, float)) else seconds
            exposure = Exposure(self._exposure_count, seconds, requested, light, ftype, owner, repeat)
            self._repeat_left = repeat
            self._exposure = exposure
            self._exposure_open = True
            self._exp_cancel.clear()
            self._exp_keep = False
            self._exp_stopped_early = False
            self._exp_reason = None
            self._exp_failed = False
            self._image_ready = False
            self._exp_duration = seconds
            self._exp_start_mono = time.monotonic()
            self._last_start = _utcnow()
            self._last_duration = seconds
            self._to(S.EXPOSING)
            thread = threading.Thread(target=self._expose, args=(self._handle, exposure, st, roi),
                                      name=f"{self.name}-exposure", daemon=True)
            self._exp_thread = thread
        self._count("exposures")
        # Published before the thread starts, so ExposureStarted always precedes its ExposureEnded.
        self._publish(ExposureStarted(exposure))
        thread.start()
        return exposure

    def _end_exposure(self, exposure: Exposure, outcome: ExposureOutcome, reason: str | None = None,
                      frame: Frame | None = None) -> None:
        """Publish how `exposure` ended: exactly once, whichever thread gets here first."""
        with self._lock:
            if self._exposure is not exposure or not self._exposure_open:
                return
            self._exposure_open = False
        self._publish(ExposureEnded(exposure, outcome, reason, frame))

    def _apply_roi(self, handle: Any, roi: Roi) -> None:
        if roi.sdk_key == self._applied_roi:
            return
        code = roi.sdk_key[5]
        self._call("set ROI format", handle.set_roi_format, roi.sdk_w, roi.sdk_h, roi.bin, code)
        self._call("set ROI start", handle.set_roi_start_position, roi.sdk_x, roi.sdk_y)
        self._applied_roi = roi.sdk_key

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

    def _set_exposure_time(self, handle: Any, seconds: float) -> None:
        self._call("set exposure time", handle.set_control_value, self._control_type(C.EXPOSURE) or 1,
                   max(1, int(round(seconds * 1e6))))

    def _on_exposure_stop(self, handle: Any) -> bool:
        """A stop request reached the exposure thread: True to discard, False to end early and keep."""
        # Taken under the lock: an abort or a teardown arriving during the SDK call below sets the
        # event again (and keep False), so the next poll discards the frame instead of losing it.
        with self._lock:
            if not self._exp_keep:
                return True
            self._exp_keep = False
            self._exp_cancel.clear()
            self._exp_stopped_early = True
        self._call("stop exposure", handle.stop_exposure)
        return False

    def _exposed(self) -> None:
        """The exposure time is over while the SDK still works: the readout has begun."""
        with self._lock:
            if self._sm.state == S.EXPOSING:
                self._to(S.READING)

    def _expose(self, handle: Any, exposure: Exposure, st: CameraSettings, roi: Roi) -> None:
        """The exposure thread: start, wait (bounded), read out, publish; always ends the exposure."""
        zwo = _zwo.zwoasi()
        started = False
        duration = exposure.duration
        try:
            self._apply_roi(handle, roi)
            self._set_exposure_time(handle, duration)
            with self._lock:
                if self._exp_cancel.is_set():
                    raise Cancelled()
                self._exp_start_mono = time.monotonic()
                self._last_start = _utcnow()
            self._call("start exposure", handle.start_exposure, not exposure.light)
            started = True
            status = wait_exposed(self._call, handle, duration, roi.nbytes, lambda: self._exp_start_mono,
                                  self._exp_cancel, on_stop=lambda: self._on_exposure_stop(handle),
                                  on_exposed=self._exposed, name=self.name)
            if self._exp_cancel.is_set() and status == zwo.ASI_EXP_WORKING:
                raise Cancelled()
            if status != zwo.ASI_EXP_SUCCESS:
                if self._exp_stopped_early:
                    # Contract clause exp.stop_keeps_image is assumed: say so when a camera disagrees.
                    raise SdkError(f"{self.name}: the camera discarded the exposure when it was stopped early "
                                   f"(status {status}): its SDK keeps no image after StopExposure; abort instead, "
                                   "or run 'zwo-alpaca selftest' (clause exp.stop_keeps_image)")
                raise SdkError(f"{self.name}: the camera reported the exposure failed (status {status})")
            started = False
            self._exposed()
            buf = self._buffer(roi.nbytes)
            self._call("read image", handle.get_data_after_exposure, buf)
            stopped = self._exp_stopped_early
            actual = min(duration, time.monotonic() - self._exp_start_mono) if stopped else duration
            frame = self._make_frame(buf, st, roi, exposure.light, actual)
            with self._lock:
                if self._exp_cancel.is_set() and not self._exp_keep:
                    raise Cancelled()
                self._last_frame = frame
                self._last_duration = frame.duration
                self._frame_seq = frame.seq
                self._image_ready = True
                self._to(S.IMAGE_READY)
            self._count("frames")
            self._publish(FrameCaptured(frame, exposure))
            self._end_exposure(exposure, ExposureOutcome.STOPPED if stopped else ExposureOutcome.COMPLETED,
                               None, frame)
            self._next_in_series(exposure)
        except Cancelled:
            if started:
                try:
                    self._call("stop exposure", handle.stop_exposure)
                except Exception:  # noqa: BLE001 - teardown may already have closed the camera or unloaded the SDK
                    pass
            with self._lock:
                if self._sm.state in (S.EXPOSING, S.READING):
                    self._to(S.IDLE)
                reason, failed = self._exp_reason, self._exp_failed
            self._end_exposure(exposure, ExposureOutcome.FAILED if failed else ExposureOutcome.ABORTED, reason)
        except CameraGoneError as exc:
            self._fault("exposure", exc, handle)
            self._end_exposure(exposure, ExposureOutcome.FAILED, self._error or exc.message)
        except CameraError as exc:
            if started:
                try:
                    self._call("stop exposure", handle.stop_exposure)
                except CameraError:
                    pass
            self._exposure_failed(exc)
            self._end_exposure(exposure, ExposureOutcome.FAILED, exc.message)
        except Exception as exc:  # a defect must still leave a consistent state
            self.log.exception("%s: exposure thread failed", self.name)
            err = SdkError(f"{self.name}: exposure failed: {exc}")
            self._exposure_failed(err)
            self._end_exposure(exposure, ExposureOutcome.FAILED, err.message)

    def _next_in_series(self, done: Exposure) -> None:
        """Fast exposure: start the next exposure of a series at once, from the exposure thread."""
        with self._lock:
            left = self._repeat_left
            if left <= 0 or self._exposure is not done or self._sm.state != S.IMAGE_READY:
                return
            self._repeat_left = 0  # start_exposure sets what is left after the next one
        try:
            self.start_exposure(done.requested, done.light, frame_type=done.frame_type, owner=done.owner,
                                repeat=left - 1)
        except CameraError as exc:
            if self._sm.state not in READY_STATES:
                return  # a disconnect or fault got in between: it ends the series and says so itself
            self.log.warning("%s: fast exposure series stopped: %s", self.name, exc.message)
            self._publish(ErrorReported(f"fast exposure stopped: {exc.message}"))

    def _exposure_failed(self, exc: CameraError) -> None:
        self._count(f"failure:{type(exc).__name__}")
        self.log.error("%s: %s", self.name, exc.message)
        with self._lock:
            self._error = exc.message
            if self._sm.state in (S.EXPOSING, S.READING):
                self._to(S.IDLE)
        self._publish(ErrorReported(exc.message))

    def _make_frame(self, buf: bytearray, st: CameraSettings, roi: Roi, light: bool, duration: float) -> Frame:
        info = self._info
        assert info is not None
        arr = roi.cut(buf, st.flip)
        cfa = self._bayer_of(info, st, roi.width, roi.height)
        with self._lock:
            seq = self._frame_seq + 1
            temp = self._temperature
            start = self._last_start or _utcnow()
            gain, offset = self._reported("gain", st), self._reported("offset", st)
        return Frame(
            data=arr, seq=seq, start_time=start, duration=duration, light=light, bin=st.bin,
            start_x=st.start_x, start_y=st.start_y, width=roi.width, height=roi.height, image_type=st.image_type,
            bit_depth=info.bit_depth, gain=gain, offset=offset, temperature=temp,
            camera_name=info.name, bayer_pattern=cfa[0] if cfa else None,
            bayer_offset_x=cfa[1] if cfa else 0, bayer_offset_y=cfa[2] if cfa else 0)

    @staticmethod
    def _bayer_of(info: CameraInfo, st: CameraSettings, width: int, height: int) -> tuple[str, int, int] | None:
        """The mosaic phase of an image of `st`'s start and flip, `width` x `height` pixels; None
        unless it is a raw colour image (a binned colour image is no mosaic)."""
        if not info.is_color or not info.bayer_pattern or st.bin != 1:
            return None
        return _bayer.phase(info.bayer_pattern, st.start_x, st.start_y, width, height, st.flip)

    def bayer_phase(self, full_frame: bool = False) -> tuple[str, int, int] | None:
        """(pattern, offset_x, offset_y) of the images the current settings deliver: the sensor's
        pattern and where the image's first pixel falls in it, after the subframe start and the flip
        (`driver.bayer`). `full_frame`: of the whole sensor read with the current flip (ASCOM's
        BayerOffsetX/Y, which do not follow the subframe). None for mono or binned images."""
        info = self._info
        if info is None:
            return None
        st = self.settings
        if full_frame:  # the sensor's own phase: no subframe, and binning does not move the mosaic
            st.start_x = st.start_y = 0
            st.width = st.height = None
            st.bin = 1
        w = st.width if st.width is not None else info.max_width // st.bin
        h = st.height if st.height is not None else info.max_height // st.bin
        return self._bayer_of(info, st, w, h)

    def reported(self, setting: str) -> int | None:
        """A control setting ("gain", "offset") as clients and frame metadata report it: what the SDK
        holds (read back after setting), else the stored value, else the control's default."""
        with self._lock:
            return self._reported(setting, self._settings)

    def _reported(self, setting: str, st: CameraSettings) -> int | None:
        held = self._held.get(setting)
        if held is not None:
            return held
        stored = getattr(st, setting)
        if stored is not None:
            return int(stored)
        spec = C.spec_for_setting(setting)
        return self._default(spec) if spec is not None else None

    def _default(self, cname: C.ControlSpec) -> int | None:
        ctl = self._control(cname)
        return ctl.default if ctl else None

    def abort_exposure(self) -> None:
        """Abort a running exposure and discard it; harmless when none is running."""
        with self._lock:
            thread = self._exp_thread
            self._repeat_left = 0  # also between two exposures of a fast series
            if self._sm.state not in (S.EXPOSING, S.READING):
                return
            self._exp_keep = False
            self._exp_cancel.set()
        if thread is not None:
            thread.join(timeout=1.0)

    def stop_exposure(self) -> None:
        """End a running exposure early and keep its image; harmless when none is running."""
        with self._lock:
            self._repeat_left = 0
            if self._sm.state not in (S.EXPOSING, S.READING):
                return
            self._exp_keep = True
            self._exp_cancel.set()

    #: How long a teardown waits for the exposure thread to notice its cancellation.
    EXPOSURE_JOIN_S = 0.8

    def _cancel_exposure(self, handle: Any, reason: str = DISCONNECTED_REASON) -> None:
        """Teardown step: abort without waiting for a long exposure to finish."""
        with self._lock:
            thread = self._exp_thread
            exposure = self._exposure
            self._repeat_left = 0
            self._exp_keep = False
            self._exp_reason = reason
            self._exp_cancel.set()
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            if handle is not None:
                try:
                    self._sdk.quiet(handle.stop_exposure)
                except Exception:  # noqa: BLE001 - only a wake-up: the exposure thread reports its own end
                    pass
            thread.join(timeout=self.EXPOSURE_JOIN_S)
            if thread.is_alive():
                self.log.warning("%s: exposure thread still in an SDK call; closing the camera anyway", self.name)
                if exposure is not None:  # its thread would say so only when the SDK call returns
                    self._end_exposure(exposure, ExposureOutcome.ABORTED, reason)

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
        code = validation.guide_direction(direction)
        duration_ms = validation.guide_duration(duration_ms)
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
                self._step("pulse guide off", lambda c=code: self._sdk.quiet(lambda: handle.pulse_guide_off(c)))

    # ------------------------------------------------------------------ continuous capture
    def start_capture(self, on_frame: Callable[[Frame], None], *, exposure: float, mode: str = "exposure") -> None:
        """Capture continuously, calling `on_frame(frame)` for each image, until `stop_capture()`.

        `mode` "exposure" repeats single exposures; "video" uses the SDK's video mode. A callback
        that raises is logged and the loop goes on. The intent survives reconnection and off-peak.
        """
        if mode not in ("exposure", "video"):
            raise InvalidValueError(f"capture mode {mode!r} is invalid; valid: exposure, video")
        info = self._info
        if info is not None:
            exposure = validation.capture_exposure(exposure, info.exposure_min_s, info.exposure_max_s)
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
            self._to(S.CAPTURING)
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
                    self._sdk.quiet(fn)
                except Exception:  # noqa: BLE001 - only a wake-up: harmless when nothing is running
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
                self._to(S.IDLE)

    def _readout_allowance(self) -> float:
        """Seconds a full readout of the current subframe may take over a slow link (about 40 MB/s)."""
        info = self._info
        if info is None:
            return 1.0
        st = self._settings
        pixels = (st.width or info.max_width // st.bin) * (st.height or info.max_height // st.bin)
        return pixels * _roi.BYTES_PER_PIXEL.get(st.image_type, 2) / 40e6

    def _capture_loop(self, handle: Any, on_frame: Callable[[Frame], None], exposure: float, mode: str) -> None:
        zwo = _zwo.zwoasi()
        st = self.settings
        info = self._info
        assert info is not None
        video = mode == "video"
        try:
            roi = self._roi(st, info)
            self._apply_roi(handle, roi)
            self._set_exposure_time(handle, exposure)
            nbytes = roi.nbytes
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
                    status = wait_exposed(self._call, handle, exposure, nbytes, lambda: self._exp_start_mono,
                                          self._capture_stop, on_stop=lambda: True, name=self.name)
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
                self._publish(FrameCaptured(frame))
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
                self._publish(ErrorReported(f"continuous capture stopped: {exc.message}"))
        finally:
            # Whatever ended the loop, leave the SDK out of video mode and with no exposure running.
            steps = (("stop video capture", handle.stop_video_capture), ("stop exposure", handle.stop_exposure))
            for step, fn in steps:
                if step == "stop video capture" and not video:
                    continue
                try:
                    self._sdk.quiet(fn)
                except Exception as exc:  # noqa: BLE001 - cleanup goes on with the next step
                    self.log.debug("%s: capture cleanup '%s': %s", self.name, step, exc)
            with self._lock:
                if self._sm.state == S.CAPTURING and threading.current_thread() is self._capture_thread:
                    self._capture_thread = None
                    self._to(S.IDLE)
            self.log.debug("%s: capture loop stopped", self.name)

    # ------------------------------------------------------------------ schedule
    def set_schedule(self, window: CaptureWindow | None) -> None:
        """Capture only inside a daily window; outside it the camera is released and the intent kept."""
        with self._lock:
            self._schedule = window
        self._supervisor.wake.set()

    @property
    def schedule(self) -> CaptureWindow | None:
        """The capture window, if any."""
        return self._schedule

    def _go_off_peak(self, window: CaptureWindow) -> None:
        with self._lock:
            if self._sm.state not in OPEN_STATES and self._sm.state != S.ERROR:
                return
            until = f"{window.start:%H:%M}"
            self._to(S.DISCONNECTING) if self._sm.state != S.ERROR else None
        self.log.info("%s: off-peak: releasing the camera until %s", self.name, until)
        self._teardown(final_state=None, reason=OFF_PEAK_REASON)
        with self._lock:
            self._off_peak_until = until
            if self._sm.state == S.ERROR:
                self._to(S.DISCONNECTING)
            self._to(S.OFF_PEAK)
        self._count("off_peak_releases")

    def _resume_from_off_peak(self) -> None:
        with self._lock:
            state = self._sm.state  # a local: the state is read again after the reconnect below
            if state != S.OFF_PEAK:
                return
            self._to(S.CONNECTING)
        self.log.info("%s: capture window open: reconnecting", self.name)
        try:
            self._open_and_configure()
        except CameraError as exc:
            with self._lock:
                self._error = exc.message
                if self._sm.state == S.CONNECTING:
                    self._to(S.ERROR)
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
            self._to(S.ERROR)
            self._reconnect_attempt = 0
            self._lost_at = time.monotonic()
            self._capture_stop.set()
            message = self._error
        self._publish(ConnectionLost(message))
        self._publish(ErrorReported(message))
        # The handle is useless now; close it so the SDK and USB are released before reconnecting.
        handle = self._handle
        with self._lock:
            self._handle = None
            self._applied_roi = None
            exp = self._exp_thread
        if handle is not None:
            self._close_handle(handle, "close after fault")
        if exp is not None and exp is not threading.current_thread():
            with self._lock:
                self._exp_reason = message
                self._exp_failed = True
            self._exp_cancel.set()
        self._supervisor.wake.set()

    def _sdk_unloaded(self) -> bool:
        """Whether the SDK library our handle belongs to was unloaded or replaced beneath zwoasi."""
        return self._sdk.lib is not None and _zwo.library() is not self._sdk.lib

    def _local_now(self) -> _dt.datetime:
        """Local wall-clock time, for the capture window (a test may give the camera its own clock)."""
        return self._clock()

    def _health_check(self) -> None:
        """Read telemetry; a camera that stopped answering is a fault (the supervisor calls this)."""
        handle = self._handle
        if handle is None:
            return
        try:
            self._read_telemetry(handle)
        except CameraGoneError as exc:
            self._fault("health check", exc, handle)
        except CameraError as exc:
            self.log.debug("%s: health check: %s", self.name, exc.message)

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
                self._to(S.DISCONNECTING)
            if self._sm.state == S.DISCONNECTING:
                self._to(S.DISCONNECTED)
            exposure = self._exposure
        self._supervisor.forget()
        registry.closed(self)
        if exposure is not None:
            self._end_exposure(exposure, ExposureOutcome.FAILED, "the camera SDK was unloaded")

    def _try_reconnect(self) -> None:
        with self._lock:
            state = self._sm.state  # a local: the state is read again after the attempt below
            if state != S.ERROR or not self._want_connected:
                return
            self._reconnect_attempt += 1
            attempt = self._reconnect_attempt
            self._to(S.CONNECTING)
        try:
            self._open_and_configure()
        except CameraError as exc:
            self._count("reconnect_failures")
            self.log.info("%s: reconnect attempt %d failed: %s", self.name, attempt, exc.message)
            with self._lock:
                if self._sm.state == S.CONNECTING:
                    self._to(S.ERROR)
            self._publish(ReconnectFailed(attempt, exc.message))
            return
        with self._lock:
            self._error = None
            self._reconnect_attempt = 0
            lost, self._lost_at = self._lost_at, None
        downtime = time.monotonic() - lost if lost is not None else None
        self._count("reconnects")
        self.log.info("%s: reconnected after %d attempt(s); settings restored", self.name, attempt)
        self._publish(Connected(restored=True, attempts=attempt, downtime_s=downtime))
        self._launch_capture()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1


class NotOnBus(CameraGoneError):
    """The camera's unit is not among the cameras the SDK enumerates now."""
