"""The one table of ZWO SDK controls: how each maps to a setting, a property of its own, or telemetry.

The core uses it to push settings to the SDK and to look controls up; the INDI device uses it to
decide which controls CCD_CONTROLS carries; the web page uses it for its fields. Control names
have varied between SDK versions (e.g. "CoolPowerPerc"), the ASI_CONTROL_TYPE numbers have not, so
every lookup falls back to the number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .models import ControlInfo


@dataclass(frozen=True)
class ControlSpec:
    """What the product does with one SDK control.

    `setting` is the `CameraSettings` field that persists it (None: set by name through
    `ZWOCamera.set_control`, kept in `extra_controls`). `own_property` marks controls that a front end
    shows through a dedicated property instead of a generic control list (exposure time, cooler,
    flip); `telemetry` marks read-only readings.
    """

    sdk_name: str
    control_type: int
    setting: str | None = None
    kind: Literal["int", "bool"] = "int"
    own_property: bool = False
    telemetry: bool = False
    aliases: tuple[str, ...] = ()


GAIN = ControlSpec("Gain", 0, "gain")
EXPOSURE = ControlSpec("Exposure", 1, own_property=True)
GAMMA = ControlSpec("Gamma", 2)
WB_R = ControlSpec("WB_R", 3)
WB_B = ControlSpec("WB_B", 4)
OFFSET = ControlSpec("Offset", 5, "offset", aliases=("Brightness",))
BANDWIDTH = ControlSpec("BandWidth", 6, "usb_bandwidth")
TEMPERATURE = ControlSpec("Temperature", 8, telemetry=True)
FLIP = ControlSpec("Flip", 9, "flip", own_property=True)
HARDWARE_BIN = ControlSpec("HardwareBin", 13, "hardware_bin", kind="bool")
HIGH_SPEED = ControlSpec("HighSpeedMode", 14, "high_speed", kind="bool")
COOLER_POWER = ControlSpec("CoolPowerPerc", 15, telemetry=True, aliases=("CoolerPowerPerc",))
TARGET_TEMP = ControlSpec("TargetTemp", 16, "target_temperature", own_property=True)
COOLER_ON = ControlSpec("CoolerOn", 17, "cooler_on", kind="bool", own_property=True)

CONTROLS: tuple[ControlSpec, ...] = (
    GAIN, EXPOSURE, GAMMA, WB_R, WB_B, OFFSET, BANDWIDTH, TEMPERATURE, FLIP, HARDWARE_BIN, HIGH_SPEED,
    COOLER_POWER, TARGET_TEMP, COOLER_ON,
)

_BY_NAME: dict[str, ControlSpec] = {n: c for c in CONTROLS for n in (c.sdk_name, *c.aliases)}
_BY_TYPE: dict[int, ControlSpec] = {c.control_type: c for c in CONTROLS}
_BY_SETTING: dict[str, ControlSpec] = {c.setting: c for c in CONTROLS if c.setting}

#: CameraSettings fields that are SDK controls, in the order they are applied to the SDK.
CONTROL_SETTINGS: tuple[str, ...] = tuple(c.setting for c in CONTROLS if c.setting)


def spec(key: str | int) -> ControlSpec | None:
    """The spec of a control by SDK name (or alias) or ASI_CONTROL_TYPE number; None if not tabled."""
    if isinstance(key, int):
        return _BY_TYPE.get(key)
    return _BY_NAME.get(key)


def spec_for_setting(setting: str) -> ControlSpec | None:
    """The control that persists the `CameraSettings` field `setting`, if it is one."""
    return _BY_SETTING.get(setting)


def setting_for(sdk_name: str) -> str | None:
    """The `CameraSettings` field for an SDK control name, or None (set by name, or not settable)."""
    s = spec(sdk_name)
    return s.setting if s else None


def find(controls: Mapping[str, ControlInfo] | None, key: ControlSpec | str) -> ControlInfo | None:
    """The camera's control for `key`: by SDK name, an alias, or the standard type number."""
    if not controls:
        return None
    s = key if isinstance(key, ControlSpec) else spec(key)
    names: Iterable[str] = (s.sdk_name, *s.aliases) if s else (str(key),)
    for name in names:
        if name in controls:
            return controls[name]
    if s is None:
        return None
    return next((c for c in controls.values() if c.control_type == s.control_type), None)


def adjustable(controls: Mapping[str, ControlInfo] | None) -> list[ControlInfo]:
    """Writable controls a generic list shows (INDI's CCD_CONTROLS, the web page's extra controls).

    Controls with a property of their own and read-only telemetry are left out, as indi_asi does.
    """
    out: list[ControlInfo] = []
    for ctl in (controls or {}).values():
        s = spec(ctl.name) or spec(ctl.control_type)
        if not ctl.writable or (s is not None and (s.own_property or s.telemetry)):
            continue
        out.append(ctl)
    return out


def auto_capable(controls: Mapping[str, ControlInfo] | None) -> list[ControlInfo]:
    """The adjustable controls the SDK can run automatically (IsAutoSupported): Gain, WB_R, BandWidth...

    As indi_asi: exposure, cooler and flip have properties of their own and no auto switch.
    """
    return [ctl for ctl in adjustable(controls) if ctl.auto_supported]
