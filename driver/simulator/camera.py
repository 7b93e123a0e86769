"""One simulated camera: the state behind the SDK calls for a CameraID.

Every public method here is one SDK operation on an already-resolved camera and returns an
ASI_ERROR code (plus outputs). Time is `time.monotonic()`; the exposure, readout, video frame
clock and cooler are all evaluated lazily from timestamps, so no thread ticks in the background.
Frame preparation for snapshots runs on the SDK's worker thread while the exposure runs.

Locking: `_lock` guards all mutable state; it is never held while sleeping (waits go through the
Condition, which releases it) nor while copying pixels into a caller's buffer.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .catalog import CameraModel, ControlSpec
from .constants import AsiError as E
from .constants import CameraMode, ExpStatus, ImgType
from .constants import ControlType as CT
from .sensor import Conditions, Geometry, PreparedFrame, SensorSimulator

if TYPE_CHECKING:  # pragma: no cover
    from .faults import FaultPlan

log = logging.getLogger(__name__)
_T = TypeVar("_T")

USB3_PEAK_BYTES_S = 380e6  #: peak USB 3.0 payload rate at BandWidth 100
USB2_PEAK_BYTES_S = 40e6  #: peak USB 2.0 payload rate at BandWidth 100
HIGH_SPEED_FACTOR = 2.0  #: HighSpeedMode readout speed-up
AMBIENT_C = 20.0


def make_serial(model: CameraModel, slot: int, seed: int) -> str:
    """The camera's serial number: 16 hex digits (8 bytes), stable for (model, slot, seed)."""
    return hashlib.sha256(f"{model.key}/{slot}/{seed}".encode()).hexdigest()[:16].upper()


class Thermal:
    """Sensor temperature and cooler power, evaluated lazily from the last change.

    T(t) = T_eq + (T0 - T_eq) * exp(-(t - t0) * time_scale / tau), where T_eq is the target clamped
    to [ambient - max_delta, ambient] while the cooler is on, and ambient when it is off.
    """

    def __init__(self, model: CameraModel, ambient_c: float, time_scale: float, now: float):
        self.model = model
        self.ambient = float(ambient_c)
        self.time_scale = float(time_scale)
        self.cooler_on = False
        self.target = 0.0
        self.t0 = now
        self.temp0 = float(ambient_c)

    def equilibrium(self) -> float:
        if self.cooler_on and self.model.cooled:
            return min(max(self.target, self.ambient - self.model.max_cooling_delta_c), self.ambient)
        return self.ambient

    def temperature(self, t: float) -> float:
        eq = self.equilibrium()
        dt = max(t - self.t0, 0.0) * self.time_scale
        return eq + (self.temp0 - eq) * math.exp(-dt / self.model.cooler_time_constant_s)

    def power(self, t: float) -> float:
        """Cooler power %: what holding T_eq costs (proportional to ambient - T_eq), plus effort while pulling down."""
        if not (self.cooler_on and self.model.cooled):
            return 0.0
        eq = self.equilibrium()
        hold = 100.0 * (self.ambient - eq) / self.model.max_cooling_delta_c
        pull = 20.0 * max(self.temperature(t) - eq, 0.0)
        return min(max(hold + pull, 0.0), 100.0)

    def change(self, now: float, *, cooler_on: bool | None = None, target: float | None = None,
               ambient: float | None = None) -> None:
        self.temp0 = self.temperature(now)
        self.t0 = now
        if cooler_on is not None:
            self.cooler_on = bool(cooler_on)
        if target is not None:
            self.target = float(target)
        if ambient is not None:
            self.ambient = float(ambient)


@dataclass
class _Exposure:
    """A snapshot exposure from ASIStartExposure until its data is read or it is discarded."""

    frame_no: int
    geom: Geometry
    is_dark: bool
    t_start: float
    duration: float
    readout: float
    settings: dict[int, int]
    stopped: bool = False
    future: Future[PreparedFrame] | None = None

    @property
    def t_exp_end(self) -> float:
        return self.t_start + self.duration

    @property
    def t_ready(self) -> float:
        return self.t_exp_end + self.readout


@dataclass
class _Video:
    """A video session: frame k is ready at anchor_time + (k - anchor_index) * period."""

    anchor_time: float
    anchor_index: int
    period: float
    exposure_s: float
    readout_s: float
    last_index: int = -1
    dropped: int = 0

    def latest(self, t: float) -> int:
        if t < self.anchor_time:
            return self.anchor_index - 1
        return self.anchor_index + int((t - self.anchor_time) / self.period)

    def ready_time(self, k: int) -> float:
        return self.anchor_time + (k - self.anchor_index) * self.period


@dataclass
class _Pulse:
    direction: int
    start: float
    end: float | None = None


class CameraHost(Protocol):
    """What a SimCamera needs from the SimulatedSDK that owns it (declared here, so this module does
    not import the SDK that imports it)."""

    lock_dir: str  #: where camera lock files live
    faults: FaultPlan  #: told when an exposure or video session enters a phase
    video_timeout_cap_s: float  #: longest a forced video timeout waits

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run ``fn(*args)`` on the SDK's frame-preparation worker."""


class SimCamera:
    """A simulated camera in one slot of a SimulatedSDK.

    Public attributes: `slot` (its CameraID), `model` (CameraModel), `serial` (16 hex digits),
    `sensor` (its SensorSimulator: star positions, hot pixels, direct frame synthesis).
    """

    def __init__(self, sdk: CameraHost, slot: int, model: CameraModel, seed: int, time_scale: float,
                 ambient_c: float = AMBIENT_C):
        self._sdk = sdk
        self.slot = slot
        self.model = model
        self.serial = make_serial(model, slot, seed)
        self.sensor = SensorSimulator(model, seed, slot)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.plugged = True
        self._open = False
        self._initialized = False
        self._lock_fd: int | None = None
        self._thermal = Thermal(model, ambient_c, time_scale, time.monotonic())
        self._values: dict[int, list[int]] = {}  #: control type -> [value, auto]
        self._roi = (0, 0, 1, int(ImgType.RAW8))
        self._start = (0, 0)
        self._status = ExpStatus.IDLE
        self._exposure: _Exposure | None = None
        self._video: _Video | None = None
        self._video_timeouts = 0
        self._frame_counter = 0
        self._pulses: dict[int, _Pulse] = {}
        self._pulse_history: deque[_Pulse] = deque(maxlen=256)
        self._asi_id = bytes(8)  # "flash": survives close and unplug
        self._mode = int(CameraMode.NORMAL)
        self._dark_file: str | None = None
        self._trigger_out = {0: (1, 0, 0), 1: (1, 0, 0)}
        self._reset_settings()

    # ------------------------------------------------------------------ helpers

    @property
    def name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        return f"<SimCamera slot={self.slot} {self.model.name} serial={self.serial}>"

    def _reset_settings(self) -> None:
        m = self.model
        self._values = {c.control_type: [c.default, c.default_auto] for c in m.controls
                        if c.control_type not in (CT.TEMPERATURE, CT.COOLER_POWER_PERC)}
        w = m.max_width - m.max_width % 8
        h = m.max_height - m.max_height % 2
        while m.size_multiple_1024 and (w * h) % 1024:
            h -= 2
        self._roi = (w, h, 1, int(ImgType.RAW8))
        self._start = self._centre(w, h, 1)
        self._mode = int(CameraMode.NORMAL)

    def _centre(self, w: int, h: int, b: int) -> tuple[int, int]:
        x = (self.model.max_width // b - w) // 2
        y = (self.model.max_height // b - h) // 2
        return self._align(x, y)

    def _align(self, x: int, y: int) -> tuple[int, int]:
        # Colour sensors keep the ROI on even coordinates so the delivered mosaic keeps the model's BayerPattern.
        if self.model.is_color:
            return x - x % 2, y - y % 2
        return x, y

    def _value(self, ctype: int, default: int = 0) -> int:
        v = self._values.get(ctype)
        return int(v[0]) if v else default

    def _require_open(self) -> int:
        if not self.plugged:
            return E.CAMERA_REMOVED
        if not self._open:
            return E.CAMERA_CLOSED
        return E.SUCCESS

    def _require_initialized(self) -> int:
        """Open *and* ASIInitCamera'd: what starting an exposure or video needs."""
        return self._require_open() or (E.SUCCESS if self._initialized else E.CAMERA_CLOSED)

    def _geometry(self) -> Geometry:
        w, h, b, t = self._roi
        return Geometry(w, h, b, t, self._start[0], self._start[1], self._value(CT.FLIP),
                        bool(self._value(CT.MONO_BIN)))

    def readout_time(self, geom: Geometry | None = None, values: dict[int, int] | None = None) -> float:
        """Seconds to read out and transfer one frame: bytes / effective bandwidth.

        Software binning transfers the unbinned ROI; HardwareBin transfers binned pixels. 8-bit
        formats (RAW8, Y8 and RGB24, which the SDK debayers on the host) transfer one byte a pixel.
        """
        geom = geom or self._geometry()
        v = values if values is not None else {k: int(x[0]) for k, x in self._values.items()}
        bpp = 2 if geom.img_type == ImgType.RAW16 else 1
        b = geom.bin
        hw = bool(v.get(CT.HARDWARE_BIN, 0)) and b > 1
        pixels = geom.width * geom.height * (1 if hw else b * b)
        peak = USB3_PEAK_BYTES_S if self.model.usb3 else USB2_PEAK_BYTES_S
        bw = v.get(CT.BANDWIDTHOVERLOAD, 100) / 100.0
        rate = peak * bw * (HIGH_SPEED_FACTOR if v.get(CT.HIGH_SPEED_MODE, 0) else 1.0)
        return pixels * bpp / rate

    def _conditions(self, exposure_s: float, temperature_c: float, is_dark: bool,
                    settings: dict[int, int]) -> Conditions:
        return Conditions(exposure_s, settings.get(CT.GAIN, 0), settings.get(CT.OFFSET, 0), temperature_c,
                          is_dark, settings.get(CT.WB_R, 52), settings.get(CT.WB_B, 95))

    def _settings(self) -> dict[int, int]:
        return {k: int(v[0]) for k, v in self._values.items()}

    def _poll_status(self, now: float) -> ExpStatus:
        exp = self._exposure
        if self._status == ExpStatus.WORKING and exp is not None and exp.future is not None:
            if now >= exp.t_ready and exp.future.done():
                if exp.future.cancelled() or exp.future.exception() is not None:
                    if not exp.future.cancelled():
                        log.error("simulated frame preparation failed", exc_info=exp.future.exception())
                    self._status = ExpStatus.FAILED
                    self._exposure = None
                else:
                    self._status = ExpStatus.SUCCESS
        return self._status

    def _submit(self, exp: _Exposure) -> None:
        temp = self._thermal.temperature(exp.t_start + exp.duration / 2.0)
        cond = self._conditions(exp.duration, temp, exp.is_dark, exp.settings)
        if exp.future is not None:
            exp.future.cancel()
        exp.future = self._sdk._submit(self.sensor.prepare, exp.geom, cond, exp.frame_no)  # noqa: SLF001 - the owning SDK's worker (same package)

    def _drop_capture(self, now: float) -> None:
        """Forget any exposure or video (close, init, unplug); caller holds the lock."""
        if self._exposure is not None and self._exposure.future is not None:
            self._exposure.future.cancel()
        self._exposure = None
        self._video = None
        for p in self._pulses.values():
            p.end = now
            self._pulse_history.append(p)
        self._pulses.clear()
        self._cond.notify_all()

    # ------------------------------------------------------------------ lock file (cross-process busy)

    def lock_path(self) -> str:
        return os.path.join(self._sdk.lock_dir, f"{self.serial}.lock")

    def _acquire_lock_file(self) -> int | None:
        d = self._sdk.lock_dir
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only a courtesy for humans
        return fd

    def _release_lock_file(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ plug state (driven by SimulatedSDK)

    def unplug(self, at: float | None = None) -> bool:
        """The USB cable is pulled (at monotonic time `at`, default now): handles are dropped, an
        exposure not complete by then fails, the cooler stops."""
        now = time.monotonic()
        with self._lock:
            if not self.plugged:
                return False
            self.plugged = False
            if self._poll_status(min(now, at) if at is not None else now) == ExpStatus.WORKING:
                self._status = ExpStatus.FAILED
            self._drop_capture(now)
            self._open = False
            self._initialized = False
            self._release_lock_file()
            self._thermal.change(now, cooler_on=False)
            return True

    def replug(self) -> bool:
        with self._lock:
            if self.plugged:
                return False
            self.plugged = True
            return True

    def shutdown(self) -> None:
        """The simulator is being replaced: release everything as a process exit would."""
        now = time.monotonic()
        with self._lock:
            self._drop_capture(now)
            self._open = False
            self._initialized = False
            self._release_lock_file()

    # ------------------------------------------------------------------ open / init / close

    def open(self) -> int:
        with self._lock:
            if not self.plugged:
                return E.CAMERA_REMOVED
            if self._open:
                return E.SUCCESS
            fd = self._acquire_lock_file()
            if fd is None:  # opened by another process
                return E.CAMERA_REMOVED if self._sdk.faults.quirk("busy_open_removed") else E.GENERAL_ERROR
            self._lock_fd = fd
            self._open = True
            self._initialized = False
            self._status = ExpStatus.IDLE
            self._exposure = None
            self._reset_settings()
            return E.SUCCESS

    def init(self) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            self._drop_capture(now)
            self._status = ExpStatus.IDLE
            self._initialized = True
            return E.SUCCESS

    def close(self) -> int:
        now = time.monotonic()
        with self._lock:
            if not self.plugged:
                return E.CAMERA_REMOVED
            if not self._open:
                return E.SUCCESS  # the SDK returns success even when already closed
            self._drop_capture(now)
            self._status = ExpStatus.IDLE
            self._open = False
            self._initialized = False
            self._release_lock_file()
            # Open resets the controls (CoolerOn defaults to 0), so the cooler stops with the handle.
            self._thermal.change(now, cooler_on=False)
            return E.SUCCESS

    # ------------------------------------------------------------------ controls

    def num_controls(self) -> tuple[int, int]:
        with self._lock:
            err = self._require_open()
            return err, (0 if err else len(self.model.controls))

    def control_caps(self, index: int) -> tuple[int, ControlSpec | None]:
        with self._lock:
            err = self._require_open()
            if err:
                return err, None
            if not 0 <= index < len(self.model.controls):
                return E.INVALID_CONTROL_TYPE, None
            return E.SUCCESS, self.model.controls[index]

    def get_control(self, ctype: int) -> tuple[int, int, bool]:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err, 0, False
            if ctype not in self.model.control_by_type:
                return E.INVALID_CONTROL_TYPE, 0, False
            if ctype == CT.TEMPERATURE:
                return E.SUCCESS, int(round(self._thermal.temperature(now) * 10.0)), False
            if ctype == CT.COOLER_POWER_PERC:
                return E.SUCCESS, int(round(self._thermal.power(now))), False
            v = self._values[ctype]
            return E.SUCCESS, int(v[0]), bool(v[1])

    def set_control(self, ctype: int, value: int, auto: bool) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            spec = self.model.control_by_type.get(ctype)
            if spec is None:
                return E.INVALID_CONTROL_TYPE
            if not spec.writable:
                return E.GENERAL_ERROR
            # The SDK clamps out-of-range values and reports success.
            v = min(max(int(value), spec.min_value), spec.max_value)
            self._values[ctype] = [v, bool(auto) and spec.auto_supported]
            if ctype == CT.COOLER_ON:
                self._thermal.change(now, cooler_on=bool(v))
            elif ctype == CT.TARGET_TEMP:
                self._thermal.change(now, target=v)
            elif ctype in (CT.EXPOSURE, CT.BANDWIDTHOVERLOAD, CT.HIGH_SPEED_MODE, CT.HARDWARE_BIN) and self._video:
                self._retime_video(now)
            return E.SUCCESS

    # ------------------------------------------------------------------ ROI

    def get_roi(self) -> tuple[int, tuple[int, int, int, int]]:
        with self._lock:
            return self._require_open(), self._roi

    def set_roi(self, w: int, h: int, b: int, img_type: int) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if self._video is not None:
                return E.INVALID_SEQUENCE  # "you must stop capture before call it"
            if self._poll_status(now) == ExpStatus.WORKING:
                return E.EXPOSURE_IN_PROGRESS
            m = self.model
            if b not in m.supported_bins:
                return E.INVALID_SIZE
            if img_type not in m.supported_formats:
                return E.INVALID_IMGTYPE
            if w <= 0 or h <= 0 or w % 8 or h % 2 or w > m.max_width // b or h > m.max_height // b:
                return E.INVALID_SIZE
            if m.size_multiple_1024 and (w * h) % 1024:
                return E.INVALID_SIZE
            self._roi = (int(w), int(h), int(b), int(img_type))
            self._start = self._centre(w, h, b)  # the SDK re-centres the ROI on every format change
            return E.SUCCESS

    def get_start(self) -> tuple[int, tuple[int, int]]:
        with self._lock:
            return self._require_open(), self._start

    def set_start(self, x: int, y: int) -> int:
        with self._lock:
            err = self._require_open()
            if err:
                return err
            w, h, b, _ = self._roi
            if x < 0 or y < 0 or x + w > self.model.max_width // b or y + h > self.model.max_height // b:
                return E.OUTOF_BOUNDARY
            self._start = self._align(int(x), int(y))
            return E.SUCCESS

    # ------------------------------------------------------------------ snapshot exposures

    def start_exposure(self, is_dark: bool) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_initialized()
            if err:
                return err
            if self._video is not None:
                return E.VIDEO_MODE_ACTIVE
            if self._poll_status(now) == ExpStatus.WORKING:
                if not (self._exposure is not None and self._exposure.stopped):
                    return E.EXPOSURE_IN_PROGRESS
                # A stopped exposure still reading out is abandoned, so abort + restart needs no wait.
                if self._exposure.future is not None:
                    self._exposure.future.cancel()
            geom = self._geometry()
            settings = self._settings()
            exp = _Exposure(self._frame_counter, geom, bool(is_dark), now,
                            settings.get(CT.EXPOSURE, 0) / 1e6, self.readout_time(geom, settings), settings)
            self._frame_counter += 1
            self._exposure = exp
            self._status = ExpStatus.WORKING
            self._submit(exp)
            phases = {"exposure": (exp.t_start, exp.t_exp_end), "readout": (exp.t_exp_end, exp.t_ready)}
        self._sdk.faults.phase_started(self.slot, exp, phases)
        return E.SUCCESS

    def stop_exposure(self) -> int:
        """End a running exposure early. Its shorter image is read out and becomes available (SUCCESS);
        with the quirk "stop_discards_image" the exposure fails instead (FAILED, no image)."""
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            exp = self._exposure
            if self._poll_status(now) != ExpStatus.WORKING or exp is None or now >= exp.t_exp_end:
                return E.SUCCESS
            if self._sdk.faults.quirk("stop_discards_image"):
                if exp.future is not None:
                    exp.future.cancel()
                self._exposure = None
                self._status = ExpStatus.FAILED
                return E.SUCCESS
            exp.duration = max(now - exp.t_start, 0.0)
            exp.stopped = True
            self._submit(exp)
            phases = {"exposure": (exp.t_start, exp.t_exp_end), "readout": (exp.t_exp_end, exp.t_ready)}
        self._sdk.faults.phase_started(self.slot, exp, phases, rescheduled=True)
        return E.SUCCESS

    def exp_status(self) -> tuple[int, int]:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err, 0
            return E.SUCCESS, int(self._poll_status(now))

    def data_after_exp(self, address: int, size: int) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if self._poll_status(now) != ExpStatus.SUCCESS or self._exposure is None:
                return E.TIMEOUT  # the header's "no image get"
            exp = self._exposure
            if size < exp.geom.nbytes:
                return E.BUFFER_TOO_SMALL
            assert exp.future is not None  # a SUCCESS status means the frame was submitted
            frame = exp.future.result()
            self._exposure = None
            self._status = ExpStatus.IDLE
        frame.render_into(address)
        return E.SUCCESS

    # ------------------------------------------------------------------ video

    def _retime_video(self, now: float) -> None:
        v = self._video
        assert v is not None  # called only in video mode
        settings = self._settings()
        exposure = settings.get(CT.EXPOSURE, 0) / 1e6
        readout = self.readout_time(self._geometry(), settings)
        start = max(v.last_index, v.latest(now)) + 1
        v.anchor_index = start
        v.last_index = start - 1
        v.exposure_s = exposure
        v.readout_s = readout
        v.period = max(exposure, readout, 1e-5)
        v.anchor_time = now + exposure + readout
        self._cond.notify_all()

    def start_video(self) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_initialized()
            if err:
                return err
            if self._video is not None:
                return E.SUCCESS
            if self._poll_status(now) == ExpStatus.WORKING:
                return E.EXPOSURE_IN_PROGRESS
            self._exposure = None
            self._status = ExpStatus.IDLE
            self._video = _Video(math.inf, 0, 1.0, 0.0, 0.0)
            self._retime_video(now)
            v = self._video
            phases = {"exposure": (now, now + v.exposure_s), "readout": (now + v.exposure_s, v.anchor_time)}
        self._sdk.faults.phase_started(self.slot, v, phases)
        return E.SUCCESS

    def stop_video(self) -> int:
        with self._lock:
            err = self._require_open()
            if err:
                return err
            self._video = None
            self._cond.notify_all()
            return E.SUCCESS

    def add_video_timeouts(self, count: int) -> None:
        with self._lock:
            self._video_timeouts += int(count)

    def video_data(self, address: int, size: int, timeout_ms: int) -> int:
        t_enter = time.monotonic()
        deadline = math.inf if timeout_ms < 0 else t_enter + timeout_ms / 1000.0
        with self._cond:
            err = self._require_open()
            if err:
                return err
            session = self._video
            if session is None:
                return E.INVALID_SEQUENCE
            if size < self._geometry().nbytes:
                return E.BUFFER_TOO_SMALL
            if self._video_timeouts > 0:
                self._video_timeouts -= 1
                cap = self._sdk.video_timeout_cap_s
                end = t_enter + (cap if timeout_ms < 0 else min(timeout_ms / 1000.0, cap))
                while self.plugged and self._video is session:
                    rem = end - time.monotonic()
                    if rem <= 0:
                        break
                    self._cond.wait(rem)
                return E.TIMEOUT if self.plugged else E.CAMERA_REMOVED
            while True:
                err = self._require_open()
                if err:
                    return err
                if self._video is not session:
                    return E.TIMEOUT  # capture stopped while waiting
                now = time.monotonic()
                n = session.latest(now)
                if n > session.last_index:
                    session.dropped += n - session.last_index - 1
                    session.last_index = n
                    frame_no = self._frame_counter
                    self._frame_counter += 1
                    geom = self._geometry()
                    settings = self._settings()
                    cond = self._conditions(session.exposure_s, self._thermal.temperature(now), False, settings)
                    break
                if now >= deadline:
                    return E.TIMEOUT
                self._cond.wait(min(session.ready_time(session.last_index + 1), deadline) - now)
        self.sensor.prepare(geom, cond, frame_no).render_into(address)
        return E.SUCCESS

    def dropped_frames(self) -> tuple[int, int]:
        with self._lock:
            err = self._require_open()
            return err, (self._video.dropped if self._video else 0)

    # ------------------------------------------------------------------ ST4 guiding

    def pulse(self, direction: int, on: bool) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if not self.model.st4 or direction not in (0, 1, 2, 3):
                return E.GENERAL_ERROR
            if on:
                self._pulses.setdefault(direction, _Pulse(direction, now))
            else:
                p = self._pulses.pop(direction, None)
                if p is not None:
                    p.end = now
                    self._pulse_history.append(p)
            return E.SUCCESS

    # ------------------------------------------------------------------ the rest of the API

    def gain_offset(self) -> tuple[int, tuple[int, int, int, int]]:
        with self._lock:
            return self._require_open(), self.model.gain_offset_presets

    def serial_number(self) -> tuple[int, bytes]:
        with self._lock:
            err = self._require_open()
            if err:
                return err, b""
            if not self.model.has_serial:
                return E.GENERAL_ERROR, b""
            return E.SUCCESS, bytes.fromhex(self.serial)

    def get_id(self) -> tuple[int, bytes]:
        with self._lock:
            err = self._require_open()
            if err:
                return err, b""
            if not self.model.usb3:
                return E.GENERAL_ERROR, b""  # "only available for USB3.0 camera"
            return E.SUCCESS, self._asi_id

    def set_id(self, value: bytes) -> int:
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if not self.model.usb3:
                return E.GENERAL_ERROR
            self._asi_id = bytes(value[:8]).ljust(8, b"\0")
            return E.SUCCESS

    def supported_modes(self) -> tuple[int, list[int]]:
        with self._lock:
            err = self._require_open()
            modes = list(range(7)) if self.model.trigger else [int(CameraMode.NORMAL)]
            return err, modes

    def get_mode(self) -> tuple[int, int]:
        with self._lock:
            return self._require_open(), self._mode

    def set_mode(self, mode: int) -> int:
        now = time.monotonic()
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if self._video is not None or self._poll_status(now) == ExpStatus.WORKING:
                return E.INVALID_SEQUENCE
            allowed = range(7) if self.model.trigger else (int(CameraMode.NORMAL),)
            if mode not in allowed:
                return E.INVALID_MODE
            self._mode = int(mode)
            return E.SUCCESS

    def soft_trigger(self, start: bool) -> int:
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if not self.model.trigger or self._mode == CameraMode.NORMAL:
                return E.INVALID_MODE
            return E.SUCCESS

    def trigger_output(self, pin: int, conf: tuple[int, int, int] | None = None) -> tuple[int, tuple[int, int, int]]:
        with self._lock:
            err = self._require_open()
            if err:
                return err, (0, 0, 0)
            if not self.model.trigger or pin not in self._trigger_out:
                return E.GENERAL_ERROR, (0, 0, 0)
            if conf is not None:
                self._trigger_out[pin] = conf
            return E.SUCCESS, self._trigger_out[pin]

    def dark_subtract(self, path: str | None) -> int:
        with self._lock:
            err = self._require_open()
            if err:
                return err
            if path is None:
                self._dark_file = None
                return E.SUCCESS
            if not path or not os.path.isfile(path):
                return E.INVALID_PATH
            try:
                with open(path, "rb") as fh:
                    magic = fh.read(2)
            except OSError:
                return E.INVALID_PATH
            if magic != b"BM":
                return E.INVALID_FILEFORMAT
            self._dark_file = path
            return E.SUCCESS

    # ------------------------------------------------------------------ introspection for tests

    def snapshot(self) -> dict[str, Any]:
        """Physical and logical state, for SimulatedSDK.camera_state()."""
        now = time.monotonic()
        with self._lock:
            status = self._poll_status(now) if self.plugged else self._status
            w, h, b, t = self._roi
            v = self._video
            return {
                "slot": self.slot,
                "model": self.model.key,
                "name": self.model.name,
                "serial": self.serial,
                "plugged": self.plugged,
                "open": self._open,
                "initialized": self._initialized,
                "lock_path": self.lock_path(),
                "temperature_c": self._thermal.temperature(now),
                "target_c": self._thermal.target,
                "ambient_c": self._thermal.ambient,
                "cooler_on": self._thermal.cooler_on,
                "cooler_power": self._thermal.power(now),
                "gain": self._value(CT.GAIN),
                "offset": self._value(CT.OFFSET),
                "exposure_us": self._value(CT.EXPOSURE),
                "controls": {c.name: (tuple(self._values[c.control_type]) if c.control_type in self._values else None)
                             for c in self.model.controls},
                "roi": {"width": w, "height": h, "bin": b, "image_type": t,
                        "start_x": self._start[0], "start_y": self._start[1]},
                "readout_s": self.readout_time(),
                "exposure_status": int(status),
                "exposure": None if self._exposure is None else {
                    "frame_no": self._exposure.frame_no, "duration_s": self._exposure.duration,
                    "is_dark": self._exposure.is_dark, "stopped": self._exposure.stopped,
                    "t_start": self._exposure.t_start, "t_ready": self._exposure.t_ready},
                "video": v is not None,
                "video_period_s": v.period if v else None,
                "dropped_frames": v.dropped if v else 0,
                "frames": self._frame_counter,
                "pulse_guiding": set(self._pulses),
                "pulse_history": [(p.direction, p.start, p.end) for p in self._pulse_history],
                "camera_mode": self._mode,
                "asi_id": self._asi_id,
                "dark_file": self._dark_file,
                "video_timeouts_pending": self._video_timeouts,
            }

    def record_flags(self, now: float) -> tuple[bool, bool, bool, set[int]]:
        """(open, exposing, video, pulse directions) for SimulatedSDK.record()."""
        with self._lock:
            exposing = (self.plugged and self._poll_status(now) == ExpStatus.WORKING
                        and self._exposure is not None and not self._exposure.stopped)
            return self._open, exposing, self._video is not None, set(self._pulses)
