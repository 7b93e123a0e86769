"""The cameras the simulator can pretend to be: SDK properties, controls and sensor physics.

Figures come from public sources: ZWO's spec pages and manuals (resolution, pixel size, ADC depth,
full well, read noise, cooling delta), the ASICamera2.h header, and control lists that the real SDK
reports at run time (names, descriptions, ranges, defaults; e.g. the ASI294 family reports Gain
0-570 default 200, Offset 0-80 default 8, BandWidth 40-100 default 50 auto, Exposure 32 us-2000 s).
Where no public figure was at hand the value is a plausible estimate; docs/simulator.md says which.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .constants import BayerPattern, ImgType
from .constants import ControlType as CT

__all__ = ["CameraModel", "ControlSpec", "MODELS", "lookup", "normalize"]


@dataclass(frozen=True)
class ControlSpec:
    """One entry of ASIGetControlCaps: a control as the SDK describes it."""

    name: str
    description: str
    control_type: int
    min_value: int
    max_value: int
    default: int
    auto_supported: bool = False
    writable: bool = True
    default_auto: bool = False


@dataclass(frozen=True)
class CameraModel:
    """A camera model: what ASIGetCameraProperty reports plus the physics the simulator needs.

    Sensor figures are per native pixel; ADU figures are in the ADC's native units (a 14-bit
    camera's ADU, not the left-aligned 16-bit value the SDK delivers in RAW16).
    """

    key: str  #: catalog key, e.g. "asi294mc-pro"
    name: str  #: ASI_CAMERA_INFO.Name, e.g. "ZWO ASI294MC Pro"
    max_width: int
    max_height: int
    pixel_size_um: float
    is_color: bool
    bit_depth: int
    supported_bins: tuple[int, ...]
    supported_formats: tuple[int, ...]
    usb3: bool
    st4: bool
    cooled: bool
    controls: tuple[ControlSpec, ...]
    full_well_e: float  #: electrons at saturation
    elec_per_adu_gain0: float  #: ASI_CAMERA_INFO.ElecPerADU: e-/ADU at gain 0
    read_noise_curve: tuple[tuple[int, float], ...]  #: (gain, e- rms), piecewise linear
    unity_gain: int  #: the gain ZWO quotes as "unity"
    hcg_gain: int | None  #: gain at which the sensor switches to its high-conversion-gain mode
    #: ASIGetGainOffset: offsetHighestDR, offsetUnityGain, gainLowestRN, offsetLowestRN
    gain_offset_presets: tuple[int, int, int, int]
    bias_adu_per_offset: float  #: black level in native ADU per Offset step
    dark_current_25c: float  #: e-/px/s at 25 C
    dark_doubling_c: float = 6.0  #: dark current doubles every this many degrees
    max_cooling_delta_c: float = 35.0  #: how far below ambient the cooler can pull
    cooler_time_constant_s: float = 60.0
    bayer_pattern: int = BayerPattern.RG
    mechanical_shutter: bool = False
    trigger: bool = False
    has_serial: bool = True
    size_multiple_1024: bool = False  #: ASI120 family: width*height must be a multiple of 1024
    hot_pixel_fraction: float = 2e-5
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def control_by_type(self) -> dict[int, ControlSpec]:
        """Controls keyed by ASI_CONTROL_TYPE."""
        return {c.control_type: c for c in self.controls}

    def control(self, name: str) -> ControlSpec:
        """The control called `name` (SDK spelling); KeyError if the model lacks it."""
        for c in self.controls:
            if c.name == name:
                return c
        raise KeyError(name)

    def elec_per_adu(self, gain: float) -> float:
        """Conversion gain at `gain`: ZWO gain units are 0.1 dB of amplitude, so e-/ADU falls 10x per 200 units."""
        return self.elec_per_adu_gain0 * float(10.0 ** (-float(gain) / 200.0))

    def read_noise_e(self, gain: float) -> float:
        """Read noise in electrons at `gain`, interpolated in the model's published curve."""
        pts = self.read_noise_curve
        if gain <= pts[0][0]:
            return pts[0][1]
        for (g0, r0), (g1, r1) in zip(pts, pts[1:], strict=False):
            if gain <= g1:
                return r0 + (r1 - r0) * (gain - g0) / (g1 - g0) if g1 != g0 else r1
        return pts[-1][1]

    def dark_current(self, temperature_c: float) -> float:
        """Dark current in e-/px/s at the given sensor temperature."""
        return self.dark_current_25c * float(2.0 ** ((temperature_c - 25.0) / self.dark_doubling_c))

    @property
    def max_adu(self) -> int:
        """Largest native ADC value."""
        return (1 << self.bit_depth) - 1

    @property
    def megapixels(self) -> float:
        return self.max_width * self.max_height / 1e6

    def dynamic_range_stops(self, gain: float = 0) -> float:
        """Full well over read noise, in stops, at `gain` (for documentation and sanity checks)."""
        well = min(self.full_well_e, self.elec_per_adu(gain) * self.max_adu)
        return math.log2(well / self.read_noise_e(gain))


# ----------------------------------------------------------------------------- control lists

def _common_controls(gain_max: int, gain_default: int, exp_min: int, offset_max: int, offset_default: int,
                     color: bool, hardware_bin: bool, cooled: bool, gamma: bool = False) -> tuple[ControlSpec, ...]:
    """The control list in the order the SDK reports it for current ASI cameras."""
    c: list[ControlSpec] = [
        ControlSpec("Gain", "Gain", CT.GAIN, 0, gain_max, gain_default, auto_supported=True),
        ControlSpec("Exposure", "Exposure Time(us)", CT.EXPOSURE, exp_min, 2_000_000_000, 10_000, auto_supported=True),
    ]
    if gamma:
        c.append(ControlSpec("Gamma", "gamma with range 1 to 100 (nominally 50)", CT.GAMMA, 1, 100, 50))
    if color:
        c.append(ControlSpec("WB_R", "White balance: Red component", CT.WB_R, 1, 99, 52, auto_supported=True))
        c.append(ControlSpec("WB_B", "White balance: Blue component", CT.WB_B, 1, 99, 95, auto_supported=True))
    c += [
        ControlSpec("Offset", "offset", CT.OFFSET, 0, offset_max, offset_default),
        ControlSpec("BandWidth", "The total data transfer rate percentage", CT.BANDWIDTHOVERLOAD, 40, 100, 50,
                    auto_supported=True, default_auto=True),
        ControlSpec("Flip", "Flip: 0->None 1->Horiz 2->Vert 3->Both", CT.FLIP, 0, 3, 0),
        ControlSpec("AutoExpMaxGain", "Auto exposure maximum gain value", CT.AUTO_MAX_GAIN, 0, gain_max, gain_max // 2),
        ControlSpec("AutoExpMaxExpMS", "Auto exposure maximum exposure value(unit ms)", CT.AUTO_MAX_EXP,
                    1, 60_000, 100),
        ControlSpec("AutoExpTargetBrightness", "Auto exposure target brightness value", CT.AUTO_TARGET_BRIGHTNESS,
                    50, 160, 100),
    ]
    if hardware_bin:
        c.append(ControlSpec("HardwareBin", "Is hardware bin2:0->No 1->Yes", CT.HARDWARE_BIN, 0, 1, 0))
    c.append(ControlSpec("HighSpeedMode", "Is high speed mode:0->No 1->Yes", CT.HIGH_SPEED_MODE, 0, 1, 0))
    if color:
        c.append(ControlSpec("MonoBin", "bin R G G B to one pixel for color camera, color will loss", CT.MONO_BIN,
                             0, 1, 0))
    c.append(ControlSpec("Temperature", "Sensor temperature(degrees Celsius)", CT.TEMPERATURE, -500, 1000, 20,
                         writable=False))
    if cooled:
        c += [
            # The real SDK spells this "CoolPowerPerc" (not the header's ASI_COOLER_POWER_PERC wording).
            ControlSpec("CoolPowerPerc", "Cooler power percent", CT.COOLER_POWER_PERC, 0, 100, 0, writable=False),
            ControlSpec("TargetTemp", "Target temperature(cool camera only)", CT.TARGET_TEMP, -40, 30, 0),
            ControlSpec("CoolerOn", "turn on/off cooler(cool camera only)", CT.COOLER_ON, 0, 1, 0),
            ControlSpec("AntiDewHeater", "turn on/off anti dew heater(cool camera only)", CT.ANTI_DEW_HEATER, 0, 1, 0),
        ]
    return tuple(c)


_MONO = (ImgType.RAW8, ImgType.RAW16)
_COLOR = (ImgType.RAW8, ImgType.RGB24, ImgType.RAW16)

# ----------------------------------------------------------------------------- the catalog

MODELS: dict[str, CameraModel] = {}


def _add(m: CameraModel) -> None:
    MODELS[m.key] = m


_add(CameraModel(
    key="asi120mm-mini", name="ZWO ASI120MM Mini",
    max_width=1280, max_height=960, pixel_size_um=3.75, is_color=False, bit_depth=12,
    supported_bins=(1, 2), supported_formats=(ImgType.RAW8, ImgType.RAW16, ImgType.Y8),
    usb3=False, st4=True, cooled=False,
    controls=_common_controls(gain_max=100, gain_default=50, exp_min=64, offset_max=100, offset_default=8,
                              color=False, hardware_bin=False, cooled=False, gamma=True),
    full_well_e=13_000, elec_per_adu_gain0=3.17,  # 13 ke over a 12-bit ADC
    read_noise_curve=((0, 6.6), (50, 4.0), (100, 3.5)),
    unity_gain=100, hcg_gain=None, gain_offset_presets=(8, 8, 100, 16),
    bias_adu_per_offset=1.0, dark_current_25c=0.5,
    size_multiple_1024=True, hot_pixel_fraction=5e-5,
    notes="AR0130CS mono guide camera; USB 2.0, ST4 port, no cooler",
))

_add(CameraModel(
    key="asi294mc-pro", name="ZWO ASI294MC Pro",
    max_width=4144, max_height=2822, pixel_size_um=4.63, is_color=True, bit_depth=14,
    supported_bins=(1, 2, 3, 4), supported_formats=_COLOR,
    usb3=True, st4=False, cooled=True,
    controls=_common_controls(gain_max=570, gain_default=200, exp_min=32, offset_max=80, offset_default=8,
                              color=True, hardware_bin=True, cooled=True),
    full_well_e=63_700, elec_per_adu_gain0=3.89,  # 63.7 ke over a 14-bit ADC
    read_noise_curve=((0, 7.3), (119, 3.3), (120, 1.8), (300, 1.4), (570, 1.2)),
    unity_gain=120, hcg_gain=120, gain_offset_presets=(12, 30, 120, 30),
    bias_adu_per_offset=4.0, dark_current_25c=1.7,
    notes="Sony IMX294 colour (RGGB); HCG mode from gain 120",
))

_add(CameraModel(
    key="asi2600mm-pro", name="ZWO ASI2600MM Pro",
    max_width=6248, max_height=4176, pixel_size_um=3.76, is_color=False, bit_depth=16,
    supported_bins=(1, 2, 3, 4), supported_formats=_MONO,
    usb3=True, st4=False, cooled=True,
    controls=_common_controls(gain_max=700, gain_default=200, exp_min=32, offset_max=240, offset_default=1,
                              color=False, hardware_bin=True, cooled=True),
    full_well_e=50_000, elec_per_adu_gain0=0.76,  # 50 ke over a 16-bit ADC
    read_noise_curve=((0, 3.3), (99, 2.8), (100, 1.5), (300, 1.2), (700, 1.0)),
    unity_gain=100, hcg_gain=100, gain_offset_presets=(10, 50, 100, 50),
    bias_adu_per_offset=10.0, dark_current_25c=0.12,
    notes="Sony IMX571 mono, 16-bit ADC; HCG mode from gain 100",
))

_add(CameraModel(
    key="asi6200mm-pro", name="ZWO ASI6200MM Pro",
    max_width=9576, max_height=6388, pixel_size_um=3.76, is_color=False, bit_depth=16,
    supported_bins=(1, 2, 3, 4), supported_formats=_MONO,
    usb3=True, st4=False, cooled=True,
    controls=_common_controls(gain_max=470, gain_default=200, exp_min=32, offset_max=240, offset_default=1,
                              color=False, hardware_bin=True, cooled=True),
    full_well_e=51_400, elec_per_adu_gain0=0.78,  # 51.4 ke over a 16-bit ADC
    read_noise_curve=((0, 3.5), (99, 3.0), (100, 1.5), (470, 1.2)),
    unity_gain=100, hcg_gain=100, gain_offset_presets=(10, 50, 100, 50),
    bias_adu_per_offset=10.0, dark_current_25c=0.12,
    notes="Sony IMX455 full-frame mono, 16-bit ADC; HCG mode from gain 100",
))


def normalize(name: str) -> str:
    """Canonical form of a model name: lower case, no spaces/dashes/underscores, no "zwo" prefix."""
    s = re.sub(r"[\s\-_]+", "", name.strip().lower())
    if s.startswith("zwo"):
        s = s[3:]
    return s


_BY_NORMAL = {normalize(k): m for k, m in MODELS.items()}


def lookup(name: str) -> CameraModel:
    """The catalog model called `name`.

    Accepts the catalog key, the SDK name and looser spellings: case, spaces, dashes, underscores
    and a leading "ZWO" are ignored ("asi294mc-pro", "ASI294MC Pro", "zwo_asi294mc_pro").
    Raises ValueError naming the valid models when there is no such model.
    """
    if isinstance(name, CameraModel):
        return name
    m = _BY_NORMAL.get(normalize(str(name)))
    if m is None:
        # Models added to MODELS after import are still found.
        for k, v in MODELS.items():
            if normalize(k) == normalize(str(name)) or normalize(v.name) == normalize(str(name)):
                return v
        raise ValueError(f"unknown camera model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return m
