"""Every rule about values, checked once for every front end.

Each check raises `InvalidValueError` (or `NotSupportedError` when the model lacks the feature)
with a message that names what was wrong and, from "valid " on, what is allowed; the front ends
pass the message on unchanged (Alpaca prefixes its member name), so a range reads the same in
Alpaca, INDI and on the web page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import InvalidValueError
from .events import FRAME_TYPES
from .models import GUIDE_DIRECTIONS, ControlInfo

ABSOLUTE_ZERO_C = -273.15
#: The longest guide pulse accepted, in ms (an hour: longer is surely a client's unit mistake).
GUIDE_MAX_MS = 3_600_000


def _number(value: object) -> float | None:
    """`value` as a float when it is a real number (not a bool, not NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _whole(value: object) -> int | None:
    """`value` when it is an int (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def frame_type(value: str | None, light: bool) -> str:
    """The frame type of an exposure: the one given, else light or dark from `light`."""
    if value is None:
        return "light" if light else "dark"
    ft = str(value).lower()
    if ft not in FRAME_TYPES:
        raise InvalidValueError(f"frame type {value!r} is not supported: valid {', '.join(FRAME_TYPES)}")
    return ft


def exposure(duration: object, minimum: float, maximum: float, ftype: str = "light") -> float:
    """The seconds to expose for a request of `duration`.

    The bias rule lives here: a bias frame is the camera's shortest exposure whatever was asked
    (libindi's rule, which Ekos's calibration sequences rely on). Otherwise 0..maximum is accepted
    and anything under the camera's minimum is exposed for the minimum by the SDK.
    """
    if ftype == "bias":
        return float(minimum)
    d = _number(duration)
    if d is None:
        raise InvalidValueError(f"exposure {duration!r} is not a number of seconds: "
                                f"valid 0 to {maximum:g} s (shortest exposure the camera makes: {minimum:g} s)")
    if not 0 <= d <= maximum:
        raise InvalidValueError(f"exposure {d:g} s is out of range: valid 0 to {maximum:g} s "
                                f"(shortest exposure the camera makes: {minimum:g} s)")
    return d


def capture_exposure(seconds: object, minimum: float, maximum: float) -> float:
    """The exposure of continuous capture or video: within the camera's own range."""
    s = _number(seconds)
    if s is None or not minimum <= s <= maximum:
        raise InvalidValueError(f"exposure {seconds!r} s is out of range: valid {minimum:g} to {maximum:g} s")
    return s


def binning(value: object, supported: Sequence[int]) -> int:
    """A binning factor the camera supports."""
    b = _whole(value)
    if b is None or b not in supported:
        raise InvalidValueError(f"binning {value!r} is not supported: valid {', '.join(map(str, supported))}")
    return b


def start(name: str, value: object) -> int:
    """A subframe start (binned pixels): 0 or more; the sensor bound is checked with the whole subframe."""
    v = _whole(value)
    if v is None or v < 0:
        raise InvalidValueError(f"{name} {value!r} is out of range: valid 0 or more")
    return v


def size(name: str, value: object) -> int | None:
    """A subframe size (binned pixels): 1 or more, or None for the full binned frame."""
    if value is None:
        return None
    v = _whole(value)
    if v is None or v < 1:
        raise InvalidValueError(f"{name} {value!r} is out of range: valid 1 or more")
    return v


def subframe(x: int, y: int, w: int, h: int, max_w: int, max_h: int, b: int) -> None:
    """The whole subframe inside the binned sensor."""
    if x + w > max_w or y + h > max_h:
        raise InvalidValueError(
            f"subframe {w}x{h} at ({x},{y}) exceeds the {max_w}x{max_h} sensor at binning {b}: "
            f"valid StartX+NumX <= {max_w} and StartY+NumY <= {max_h}")


def image_type(value: object, supported: Sequence[str]) -> str:
    """An image type (readout format) the camera offers."""
    if value not in supported:
        raise InvalidValueError(f"image type {value!r} is not supported: valid {', '.join(supported)}")
    return str(value)


def control(name: str, value: object, ctl: ControlInfo) -> int:
    """A value for an SDK control, within the limits the camera reports for it."""
    v = _whole(value)
    if v is None:
        raise InvalidValueError(f"{name} {value!r} is not a whole number: valid {ctl.min} to {ctl.max}")
    if not ctl.min <= v <= ctl.max:
        raise InvalidValueError(f"{name} {v} is out of range: valid {ctl.min} to {ctl.max}")
    return v


def setpoint(value: object, low: float, high: float) -> float:
    """A cooler target temperature in C, within the range of the camera's TargetTemp control."""
    t = _number(value)
    if t is None or not low <= t <= high:
        shown = repr(value) if t is None else f"{t:g}"
        raise InvalidValueError(f"target temperature {shown} C is out of range: valid {low:g} to {high:g} C")
    return t


def temperature(value: object) -> float:
    """A temperature in C before the camera's range is known (a real number, not below absolute zero)."""
    t = _number(value)
    if t is None or t < ABSOLUTE_ZERO_C:
        raise InvalidValueError(f"target temperature {value!r} C is not a temperature: "
                                f"valid {ABSOLUTE_ZERO_C:g} C or more")
    return t


def guide_direction(direction: object) -> int:
    """An ST4 direction: N, S, E, W or 0..3 (the SDK's ASI_GUIDE_DIRECTION)."""
    code = _whole(direction)
    if code is None:
        code = GUIDE_DIRECTIONS.get(str(direction).upper())
    if code is None or code not in (0, 1, 2, 3):
        raise InvalidValueError(f"guide direction {direction!r} is invalid: valid N, S, E, W (0 to 3)")
    return code


def guide_duration(duration_ms: object) -> int:
    """A guide pulse length in ms."""
    ms = _whole(duration_ms)
    if ms is None or not 0 <= ms <= GUIDE_MAX_MS:
        raise InvalidValueError(f"guide duration {duration_ms!r} ms is out of range: valid 0 to {GUIDE_MAX_MS} ms")
    return ms


#: The steepest cooler ramp accepted, in C per minute. libindi's CCD_TEMP_RAMP shows 0 to 30; the
#: core takes up to 60 so a simulated camera can be ramped in seconds (real sensors want 1 to 5).
RAMP_SLOPE_MAX = 60.0
#: The threshold range of libindi's RAMP_THRESHOLD, in C.
RAMP_THRESHOLD_RANGE = (0.1, 2.0)


def ramp_slope(value: object) -> float:
    """A cooler ramp slope in C per minute; 0 switches the ramp off."""
    v = _number(value)
    if v is None or not 0 <= v <= RAMP_SLOPE_MAX:
        shown = repr(value) if v is None else f"{v:g}"
        raise InvalidValueError(f"ramp slope {shown} C/min is out of range: valid 0 (off) to {RAMP_SLOPE_MAX:g} C/min")
    return v


def ramp_threshold(value: object) -> float:
    """How close to the setpoint (C) the sensor temperature counts as reached."""
    v = _number(value)
    low, high = RAMP_THRESHOLD_RANGE
    if v is None or not low <= v <= high:
        shown = repr(value) if v is None else f"{v:g}"
        raise InvalidValueError(f"ramp threshold {shown} C is out of range: valid {low:g} to {high:g} C")
    return v


def repeat_count(value: object) -> int:
    """How many more exposures follow one at once (fast exposure): 0 or more."""
    v = _whole(value)
    if v is None or v < 0:
        raise InvalidValueError(f"repeat count {value!r} is out of range: valid 0 or more")
    return v
