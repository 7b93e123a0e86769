"""Plain value types shared by the device core and its front ends."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidValueError
from .state import CameraState

BAYER_NAMES = {0: "RGGB", 1: "BGGR", 2: "GRBG", 3: "GBRG"}
IMAGE_TYPE_NAMES = {0: "RAW8", 1: "RGB24", 2: "RAW16", 3: "Y8"}
IMAGE_TYPE_CODES = {name: code for code, name in IMAGE_TYPE_NAMES.items()}
GUIDE_DIRECTIONS = {"N": 0, "S": 1, "E": 2, "W": 3}
FRAME_TYPE_NAMES = ("light", "dark", "bias", "flat")


@dataclass(frozen=True)
class ControlInfo:
    """One SDK control as the camera reports it (limits are the SDK's, in SDK units)."""

    name: str
    description: str
    min: int
    max: int
    default: int
    auto_supported: bool
    writable: bool
    control_type: int


@dataclass(frozen=True)
class CameraInfo:
    """What the SDK says about one camera model and unit."""

    index: int
    camera_id: int
    name: str
    model: str
    serial: str | None
    max_width: int
    max_height: int
    pixel_size_um: float
    is_color: bool
    bayer_pattern: str | None
    bit_depth: int
    e_per_adu: float
    supported_bins: tuple[int, ...]
    image_types: tuple[str, ...]
    has_st4: bool
    has_cooler: bool
    has_shutter: bool
    usb3: bool
    exposure_min_s: float = 32e-6
    exposure_max_s: float = 2000.0
    full_well_e: float | None = None
    controls: dict[str, ControlInfo] | None = None

    @property
    def unique_key(self) -> str:
        """A key that identifies this physical camera across replugs and index changes."""
        return f"{self.model}:{self.serial}" if self.serial else f"{self.model}#{self.index}"


@dataclass
class CameraSettings:
    """User settings that persist across disconnects for the life of the `ZWOCamera` object.

    The subframe is in binned pixels; `None` width/height mean the full binned frame. Gain, offset and
    bandwidth of `None` mean the SDK default.
    """

    bin: int = 1
    start_x: int = 0
    start_y: int = 0
    width: int | None = None
    height: int | None = None
    image_type: str = "RAW16"
    gain: int | None = None
    offset: int | None = None
    usb_bandwidth: int | None = None
    high_speed: bool = False
    flip: int = 0
    hardware_bin: bool = False
    cooler_on: bool = False
    target_temperature: float | None = None
    #: How fast the core moves the SDK's cooler target toward `target_temperature`, in C per minute
    #: (libindi's CCD_TEMP_RAMP RAMP_SLOPE); 0 hands the setpoint to the SDK at once.
    ramp_slope: float = 0.0
    #: Within this many C of the setpoint the temperature counts as reached (RAMP_THRESHOLD).
    ramp_threshold: float = 0.2
    #: At disconnect, warm the sensor up gently (at the ramp slope) before switching the cooler off.
    warm_at_disconnect: bool = False
    # Other writable SDK controls set by name (WB_R, WB_B, MonoBin, AntiDewHeater, ...).
    extra_controls: dict[str, int] = field(default_factory=dict)
    #: SDK controls (by SDK name) the SDK runs automatically (IsAutoSupported ones: Gain, WB_R, ...).
    auto_controls: dict[str, bool] = field(default_factory=dict)

    def copy(self) -> CameraSettings:
        """An independent copy."""
        values = dict(self.__dict__)
        values["extra_controls"] = dict(self.extra_controls)
        values["auto_controls"] = dict(self.auto_controls)
        return CameraSettings(**values)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for JSON and config files)."""
        values = dict(self.__dict__)
        values["extra_controls"] = dict(self.extra_controls)
        values["auto_controls"] = dict(self.auto_controls)
        return values


@dataclass(frozen=True)
class Frame:
    """One image read out of the camera, with the facts a FITS header or an ASCOM client needs.

    `data` is (rows, columns) for RAW8/RAW16 and (rows, columns, 3) BGR for RGB24. It is a read-only
    view of a buffer the core reuses after two more exposures; copy it to keep it longer.
    """

    data: np.ndarray
    seq: int
    start_time: _dt.datetime
    duration: float
    light: bool
    bin: int
    start_x: int
    start_y: int
    width: int
    height: int
    image_type: str
    bit_depth: int
    gain: int | None
    offset: int | None
    temperature: float | None
    camera_name: str
    bayer_pattern: str | None = None
    bayer_offset_x: int = 0
    bayer_offset_y: int = 0


@dataclass(frozen=True)
class Exposure:
    """One exposure as the core accepted it; `start_exposure` returns it and events carry it.

    `duration` is what is exposed (a bias frame exposes for the camera's minimum whatever was
    asked), `requested` what the caller asked for. `owner` is the caller's opaque token, so a front
    end recognises its own exposures without guessing.
    """

    id: int
    duration: float
    requested: float
    light: bool
    frame_type: str
    owner: object = None
    #: how many more exposures of the same kind start as soon as this one is read out (fast exposure)
    remaining: int = 0


@dataclass(frozen=True)
class CameraStatus:
    """A consistent snapshot of everything polling clients ask for; taking it never waits on the SDK."""

    state: CameraState
    connected: bool
    connecting: bool
    image_ready: bool
    percent_completed: int
    last_exposure_start: _dt.datetime | None
    last_exposure_duration: float | None
    ccd_temperature: float | None
    cooler_on: bool | None
    cooler_power: float | None
    target_temperature: float | None
    is_pulse_guiding: bool
    capturing: bool
    off_peak_until: str | None
    status_text: str
    error: str | None
    frame_seq: int
    #: the exposure running, or the last one (None before the first)
    exposure: Exposure | None = None
    #: seconds left of the exposure in progress (0 while reading out); None when none is running
    time_left: float | None = None
    #: a client asked to connect while the camera was not plugged in; it connects when it is
    awaiting_plug: bool = False
    #: the cooler target the SDK holds now: the ramp's current step toward `target_temperature`
    ramp_setpoint: float | None = None
    #: the sensor is within the ramp threshold of `target_temperature` (None: no target, cooler off)
    temperature_reached: bool | None = None


@dataclass(frozen=True)
class ReconnectPolicy:
    """Bounded exponential backoff for automatic reconnection after a removed or failed camera."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 5.0
    enabled: bool = True

    def delays(self) -> Iterator[float]:
        """Yield the wait before each attempt: initial, initial*factor, ... capped at `cap`, forever."""
        delay = self.initial
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)


_HHMM = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class CaptureWindow:
    """A daily capture window in local time, e.g. 20:00-06:00 (may cross midnight)."""

    start: _dt.time
    end: _dt.time

    @classmethod
    def parse(cls, text: str) -> CaptureWindow:
        """Parse "HH:MM-HH:MM"; raises InvalidValueError with the expected form."""
        parts = text.split("-")
        if len(parts) != 2:
            raise InvalidValueError(f"capture window {text!r} must look like HH:MM-HH:MM, e.g. 20:00-06:00")
        times = []
        for part in parts:
            m = _HHMM.match(part)
            if not m:
                raise InvalidValueError(f"capture window {text!r} must look like HH:MM-HH:MM, e.g. 20:00-06:00")
            times.append(_dt.time(int(m.group(1)), int(m.group(2))))
        if times[0] == times[1]:
            raise InvalidValueError(f"capture window {text!r} is empty: start and end are equal")
        return cls(times[0], times[1])

    def contains(self, when: _dt.datetime) -> bool:
        """Whether the local wall-clock time `when` falls inside the window (start inclusive)."""
        t = when.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_start(self, when: _dt.datetime) -> _dt.datetime:
        """The next moment at or after `when` at which the window opens."""
        candidate = when.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        if candidate < when:
            candidate += _dt.timedelta(days=1)
        return candidate

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
