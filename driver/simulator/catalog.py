"""The cameras the simulator can pretend to be: SDK properties, controls and sensor physics.

Each model names the source of each of its figures (`CameraModel.sources`, keys of `SOURCES`) or
marks it `ESTIMATE`; docs/simulator.md's catalog table is generated from this module
(`python -m driver.simulator list --write docs/simulator.md`) and a test keeps the two equal.
`model_names()` is the line-up, in catalog order, for anything that runs across every model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .constants import BayerPattern, ImgType
from .constants import ControlType as CT

__all__ = ["CameraModel", "ControlSpec", "ESTIMATE", "FIGURES", "MODELS", "SOURCES", "lookup", "markdown_table",
           "model_names", "normalize", "source_url", "write_doc"]


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
    size_multiple_1024: bool = False  #: USB 2.0 ASI120s: width*height must be a multiple of 1024
    hot_pixel_fraction: float = 2e-5
    sensor: str = ""  #: sensor part number, e.g. "IMX294" (driver/model_facts.py holds the same for the core)
    #: (figure, source key) for every name in FIGURES: a key of SOURCES, or ESTIMATE
    sources: tuple[tuple[str, str], ...] = ()
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


# ----------------------------------------------------------------------------- where the figures come from

#: The figures each catalog entry names a source for (CameraModel.sources); docs/simulator.md lists them.
FIGURES: tuple[str, ...] = ("size", "adc", "full_well", "read_noise", "gain", "offset", "exposure", "bins",
                            "usb", "st4", "cooler", "bayer", "sensor", "hardware_bin")
#: A figure nobody published where we could read it: a plausible value, chosen to exercise the simulator.
ESTIMATE = "estimate"

#: Source keys -> where to read them (URL, or repository@commit:path). Everything cited here was read
#: while the catalog was written; a figure from memory of a spec page is marked ESTIMATE instead.
SOURCES: dict[str, str] = {
    "apts": "github.com/pozar87/apts@fb74419 apts/opticalequipment/camera/vendors/zwo.py "
            "(resolution, pixel size, full well, lowest read noise; audited against ZWO's product pages)",
    "asicamera2.h": "ZWO SDK header ASICamera2.h, ASISetROIFormat comment (\"for USB2.0 camera ASI120, please make "
                    "sure that iWidth*iHeight%1024=0\"); copy at github.com/AllskyTeam/allsky src/include/ASICamera2.h",
    "asi294-dump": "a control list read from a real ASI294 through the SDK (Gain 0-570 default 200, Offset 0-80 "
                   "default 8, Exposure 32 us-2000 s, BandWidth 40-100); recorded with the project's first simulator",
    "ptolemy": "github.com/Anding/Ptolemy docs/ASI.md (ASI6200: 9576x6388, 3.76 um, 51.4 ke, 16-bit ADC, cooled)",
    "spaceimages-294": "spaceimages.top/learning-to-know-my-zwo-asi-294-mc-pro-astro-cam/ (ASI294MC Pro: IMX294, "
                       "14-bit ADC, 63.7 ke; ASI183MC Pro: 12-bit ADC, 15 ke)",
    "stroblhof-1600": "astro.stroblhof-oberrohrbach.de/2020/12/08/kamera-fuer-das-c9-25/ (ASI1600MM Pro: 4656x3520, "
                      "3.8 um, 12-bit ADC)",
    "indi-allsky#2958": "github.com/aaronwmorris/indi-allsky/issues/2958 (indi_getprop of a real ASI676MC: 3552x3552, "
                        "2.0 um, CCD_CFA.CFA_TYPE=RGGB, ST4 guide properties)",
    "indi-allsky#2007": "github.com/aaronwmorris/indi-allsky/issues/2007 (ASI676MC: DRIVER_INTERFACE=6, i.e. CCD + "
                        "guider)",
    "indi-allsky#1203": "github.com/aaronwmorris/indi-allsky/issues/1203 (indi_getprop of a real ASI678MC: 3840x2160, "
                        "2.0 um, ST4 guide properties)",
    "indi-allsky#1336": "github.com/aaronwmorris/indi-allsky/issues/1336 (ASI715MC: DRIVER_INTERFACE=6)",
    "indi-allsky#2066": "github.com/aaronwmorris/indi-allsky/issues/2066 (ASI462MC: DRIVER_INTERFACE=6)",
    "indi-allsky#1063": "github.com/aaronwmorris/indi-allsky/issues/1063 (ASI224MC: DRIVER_INTERFACE=6, 1304x976)",
    "indi-3rdparty#1055": "github.com/indilib/indi-3rdparty/issues/1055 (ASI676MC: users see a wrong Bayer phase at "
                          "random; the SDK's reported pattern itself is RG, see indi-allsky#2958)",
    "clearsky-034": "clearskytonight.com/blog/astrophotography/convert-sharpcap-raw8-images/ (ASI034MC, same Aptina "
                    "MT9M034 family as the ASI120MC, debayers as GRBG)",
    "indi-asi": "github.com/indilib/indi-3rdparty indi-asi/asi_base.cpp (the guider interface and CCD_COOLER are "
                "offered from ST4Port / IsCoolerCam, CFA_TYPE from BayerPattern)",
}


def _src(**figures: str) -> tuple[tuple[str, str], ...]:
    """Sources for every figure in FIGURES: those given, ESTIMATE for the rest."""
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figure(s) {sorted(unknown)}; valid: {', '.join(FIGURES)}")
    return tuple((f, figures.get(f, ESTIMATE)) for f in FIGURES)


def _zwo(key: str, name: str, *, size: tuple[int, int], pixel: float, color: bool, bits: int, bins: tuple[int, ...],
         usb3: bool, st4: bool, cooled: bool, sensor: str, full_well: float, read_noise: tuple[float, float],
         gain: tuple[int, int], offset: tuple[int, int], hcg: int | None = None, unity: int | None = None,
         exp_min: int = 32, hardware_bin: bool = True, gamma: bool = False, bayer: int = BayerPattern.RG,
         formats: tuple[int, ...] | None = None, dark: float = 0.5, cooling_delta: float = 35.0,
         size_multiple_1024: bool = False, presets: tuple[int, int, int, int] | None = None,
         sources: tuple[tuple[str, str], ...] = (), notes: str = "") -> CameraModel:
    """A catalog entry from the published figures, deriving what follows from them.

    ElecPerADU at gain 0 is the full well over the ADC range (what ZWO's gain-0 figure is); the unity
    gain is where that falls to 1 e-/ADU; read noise runs from `read_noise[0]` at gain 0 down to the
    published lowest `read_noise[1]` at the top of the gain range, with a step at `hcg` where the
    sensor switches to high conversion gain. The black level per Offset step keeps the default
    offset near the bottom of the ADC range, as on the real cameras."""
    max_adu = (1 << bits) - 1
    e0 = round(full_well / max_adu, 3)
    if unity is None:  # below 1 e-/ADU already at gain 0 (16-bit ADCs): ZWO quotes the HCG switch point
        unity = round(200 * math.log10(e0)) if e0 > 1 else (hcg or 0)
    hi, lo = read_noise
    gain_max, gain_default = gain
    offset_max, offset_default = offset
    if hcg is not None and 0 < hcg < gain_max:
        curve: tuple[tuple[int, float], ...] = ((0, hi), (hcg - 1, round(hi * 0.8, 2)), (hcg, round(lo * 1.5, 2)),
                                                 (gain_max, lo))
    else:
        curve = ((0, hi), (gain_max, lo))
    bias = {8: 0.25, 10: 0.25, 12: 1.0, 14: 4.0, 16: 10.0}[bits]
    return CameraModel(
        key=key, name=name, max_width=size[0], max_height=size[1], pixel_size_um=pixel, is_color=color,
        bit_depth=bits, supported_bins=bins,
        supported_formats=formats or (_COLOR if color else _MONO), usb3=usb3, st4=st4, cooled=cooled,
        controls=_common_controls(gain_max=gain_max, gain_default=gain_default, exp_min=exp_min,
                                  offset_max=offset_max, offset_default=offset_default, color=color,
                                  hardware_bin=hardware_bin, cooled=cooled, gamma=gamma),
        full_well_e=full_well, elec_per_adu_gain0=e0, read_noise_curve=curve, unity_gain=unity, hcg_gain=hcg,
        gain_offset_presets=presets or (offset_default, offset_default, hcg or unity, offset_default),
        bias_adu_per_offset=bias, dark_current_25c=dark, max_cooling_delta_c=cooling_delta,
        bayer_pattern=bayer, size_multiple_1024=size_multiple_1024, sensor=sensor, sources=sources or _src(),
        notes=notes)


_MONO = (ImgType.RAW8, ImgType.RAW16)
_COLOR = (ImgType.RAW8, ImgType.RGB24, ImgType.RAW16)
_MONO_Y8 = (ImgType.RAW8, ImgType.RAW16, ImgType.Y8)

# ----------------------------------------------------------------------------- the catalog

MODELS: dict[str, CameraModel] = {}


def _add(m: CameraModel) -> None:
    MODELS[m.key] = m


# The four original models keep their figures exactly: tests, docs and users' command lines use them.
_add(CameraModel(
    key="asi120mm-mini", name="ZWO ASI120MM Mini",
    max_width=1280, max_height=960, pixel_size_um=3.75, is_color=False, bit_depth=12,
    supported_bins=(1, 2), supported_formats=_MONO_Y8,
    usb3=False, st4=True, cooled=False,
    controls=_common_controls(gain_max=100, gain_default=50, exp_min=64, offset_max=100, offset_default=8,
                              color=False, hardware_bin=False, cooled=False, gamma=True),
    full_well_e=13_000, elec_per_adu_gain0=3.17,  # 13 ke over a 12-bit ADC
    read_noise_curve=((0, 6.6), (50, 4.0), (100, 3.5)),
    unity_gain=100, hcg_gain=None, gain_offset_presets=(8, 8, 100, 16),
    bias_adu_per_offset=1.0, dark_current_25c=0.5,
    size_multiple_1024=True, hot_pixel_fraction=5e-5, sensor="AR0130CS",
    sources=_src(size="apts", full_well="apts", usb="asicamera2.h", bins="asicamera2.h"),
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
    bias_adu_per_offset=4.0, dark_current_25c=1.7, sensor="IMX294",
    sources=_src(size="apts", adc="spaceimages-294", full_well="apts", read_noise="apts", gain="asi294-dump",
                 offset="asi294-dump", exposure="asi294-dump", hardware_bin="asi294-dump",
                 sensor="spaceimages-294"),
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
    bias_adu_per_offset=10.0, dark_current_25c=0.12, sensor="IMX571",
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
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
    bias_adu_per_offset=10.0, dark_current_25c=0.12, sensor="IMX455",
    sources=_src(size="ptolemy", adc="ptolemy", full_well="ptolemy", read_noise="apts", cooler="ptolemy"),
    notes="Sony IMX455 full-frame mono, 16-bit ADC; HCG mode from gain 100",
))

# ---- the rest of the line-up, chosen so every distinct SDK-visible behaviour has a model:
# USB 2.0 (ASI120MC, ASI174MM Mini, ASI290MM Mini, ASI130MM) and USB 3.0; ST4 on the uncooled
# cameras, none on the Pro (cooled) ones; colour RG and GR; 10-, 12-, 14- and 16-bit ADCs; the
# ASI120's area rule; with and without HardwareBin; the smallest (ASI120, 1.2 Mpx; ASI715MC,
# 1.45 um pixels) and largest sensors and pixels (ASI6200, 61 Mpx; ASI2400MC Pro and ASI432MM,
# 5.94 and 9 um pixels).

_add(_zwo(
    "asi120mc", "ZWO ASI120MC", size=(1280, 960), pixel=3.75, color=True, bits=12, bins=(1, 2),
    usb3=False, st4=True, cooled=False, sensor="AR0130CS", full_well=13_000, read_noise=(6.6, 4.0),
    gain=(100, 50), offset=(100, 8), exp_min=64, hardware_bin=False, gamma=True, bayer=BayerPattern.GR,
    size_multiple_1024=True, sources=_src(size="apts", full_well="apts", read_noise="apts", usb="asicamera2.h",
                                          bayer="clearsky-034"),
    notes="USB 2.0 colour ASI120: width x height a multiple of 1024; GRBG mosaic"))

_add(_zwo(
    "asi130mm", "ZWO ASI130MM", size=(1280, 1024), pixel=5.2, color=False, bits=10, bins=(1, 2),
    usb3=False, st4=True, cooled=False, sensor="MT9M001", full_well=8_000, read_noise=(8.0, 5.0),
    gain=(64, 32), offset=(255, 10), exp_min=64, hardware_bin=False, gamma=True, formats=_MONO_Y8,
    notes="the 10-bit ADC case (discontinued USB 2.0 mono camera); every figure an estimate"))

_add(_zwo(
    "asi174mm-mini", "ZWO ASI174MM Mini", size=(1936, 1216), pixel=5.86, color=False, bits=12, bins=(1, 2),
    usb3=False, st4=True, cooled=False, sensor="IMX174", full_well=32_000, read_noise=(6.0, 6.0),
    gain=(400, 150), offset=(200, 10), hardware_bin=False, formats=_MONO_Y8,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="USB 2.0 guide camera without the ASI120's area rule"))

_add(_zwo(
    "asi290mm-mini", "ZWO ASI290MM Mini", size=(1936, 1096), pixel=2.9, color=False, bits=12, bins=(1, 2),
    usb3=False, st4=True, cooled=False, sensor="IMX290", full_well=14_600, read_noise=(3.2, 1.0),
    gain=(600, 100), offset=(210, 10), hardware_bin=False, formats=_MONO_Y8,
    sources=_src(size="apts", full_well="apts", read_noise="apts")))

_add(_zwo(
    "asi178mm", "ZWO ASI178MM", size=(3096, 2080), pixel=2.4, color=False, bits=14, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX178", full_well=15_000, read_noise=(3.5, 2.2),
    gain=(510, 150), offset=(600, 40), formats=_MONO_Y8,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="uncooled USB 3.0 mono with ST4 and a 14-bit ADC"))

_add(_zwo(
    "asi224mc", "ZWO ASI224MC", size=(1304, 976), pixel=3.75, color=True, bits=12, bins=(1, 2),
    usb3=True, st4=True, cooled=False, sensor="IMX224", full_well=19_200, read_noise=(3.0, 0.8),
    gain=(600, 135), offset=(100, 8), hcg=60,
    sources=_src(size="apts", full_well="apts", read_noise="apts", st4="indi-allsky#1063")))

_add(_zwo(
    "asi462mc", "ZWO ASI462MC", size=(1936, 1096), pixel=2.9, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX462", full_well=11_200, read_noise=(2.5, 0.5),
    gain=(570, 200), offset=(300, 10), hcg=80,
    sources=_src(size="apts", full_well="apts", read_noise="apts", st4="indi-allsky#2066")))

_add(_zwo(
    "asi585mc", "ZWO ASI585MC", size=(3840, 2160), pixel=2.9, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX585", full_well=40_000, read_noise=(5.0, 0.6),
    gain=(600, 200), offset=(80, 8), hcg=252,
    sources=_src(size="apts", full_well="apts", read_noise="apts")))

_add(_zwo(
    "asi676mc", "ZWO ASI676MC", size=(3552, 3552), pixel=2.0, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX676", full_well=10_550, read_noise=(2.5, 0.56),
    gain=(600, 200), offset=(80, 1), hcg=100,
    sources=_src(size="indi-allsky#2958", full_well="apts", read_noise="apts", st4="indi-allsky#2007",
                 bayer="indi-allsky#2958"),
    notes="square sensor; the SDK reports RG (INDI shows RGGB), though users see a shifted phase at random "
          "(indi-3rdparty#1055)"))

_add(_zwo(
    "asi678mc", "ZWO ASI678MC", size=(3840, 2160), pixel=2.0, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX678", full_well=11_270, read_noise=(2.5, 0.6),
    gain=(600, 200), offset=(80, 8), hcg=180,
    sources=_src(size="indi-allsky#1203", full_well="apts", read_noise="apts", st4="indi-allsky#1203")))

_add(_zwo(
    "asi715mc", "ZWO ASI715MC", size=(3864, 2192), pixel=1.45, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX715", full_well=6_030, read_noise=(2.5, 0.72),
    gain=(500, 200), offset=(80, 8), hcg=150,
    sources=_src(size="apts", full_well="apts", read_noise="apts", st4="indi-allsky#1336"),
    notes="the smallest pixels of the line-up"))

_add(_zwo(
    "asi432mm", "ZWO ASI432MM", size=(1608, 1104), pixel=9.0, color=False, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=True, cooled=False, sensor="IMX432", full_well=97_000, read_noise=(7.0, 2.4),
    gain=(570, 200), offset=(180, 10), formats=_MONO_Y8,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="the largest pixels of the line-up (solar/planetary)"))

_add(_zwo(
    "asi183mc-pro", "ZWO ASI183MC Pro", size=(5496, 3672), pixel=2.4, color=True, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX183", full_well=15_000, read_noise=(3.0, 1.6),
    gain=(510, 120), offset=(80, 10), dark=0.25, cooling_delta=40.0,
    sources=_src(size="apts", adc="spaceimages-294", full_well="apts", read_noise="apts")))

_add(_zwo(
    "asi533mc-pro", "ZWO ASI533MC Pro", size=(3008, 3008), pixel=3.76, color=True, bits=14, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX533", full_well=50_000, read_noise=(3.8, 1.0),
    gain=(600, 100), offset=(80, 70), hcg=100, dark=0.1,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="square APS-C-class sensor, no amp glow"))

_add(_zwo(
    "asi1600mm-pro", "ZWO ASI1600MM Pro", size=(4656, 3520), pixel=3.8, color=False, bits=12, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="MN34230", full_well=20_000, read_noise=(3.6, 1.2),
    gain=(600, 139), offset=(240, 21), hardware_bin=False, dark=0.2, cooling_delta=40.0,
    sources=_src(size="stroblhof-1600", adc="stroblhof-1600", full_well="apts", read_noise="apts"),
    notes="Panasonic MN34230 4/3\" mono; no HardwareBin control (estimate)"))

_add(_zwo(
    "asi071mc-pro", "ZWO ASI071MC Pro", size=(4944, 3284), pixel=4.78, color=True, bits=14, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX071", full_well=46_000, read_noise=(3.3, 2.3),
    gain=(250, 90), offset=(200, 65), dark=0.05,
    sources=_src(size="apts", full_well="apts", read_noise="apts")))

_add(_zwo(
    "asi2600mc-pro", "ZWO ASI2600MC Pro", size=(6248, 4176), pixel=3.76, color=True, bits=16, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX571", full_well=50_000, read_noise=(3.3, 1.0),
    gain=(700, 100), offset=(240, 50), hcg=100, dark=0.12,
    sources=_src(size="apts", full_well="apts", read_noise="apts")))

_add(_zwo(
    "asi2400mc-pro", "ZWO ASI2400MC Pro", size=(6072, 4042), pixel=5.94, color=True, bits=14, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX410", full_well=100_000, read_noise=(3.5, 1.1),
    gain=(300, 139), offset=(80, 50), hcg=139, dark=0.1,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="full-frame colour with the largest full well of the line-up"))

_add(_zwo(
    "asi6200mc-pro", "ZWO ASI6200MC Pro", size=(9576, 6388), pixel=3.76, color=True, bits=16, bins=(1, 2, 3, 4),
    usb3=True, st4=False, cooled=True, sensor="IMX455", full_well=51_400, read_noise=(3.5, 1.2),
    gain=(470, 100), offset=(240, 50), hcg=100, dark=0.12,
    sources=_src(size="apts", full_well="apts", read_noise="apts"),
    notes="the largest colour sensor (61 Mpx)"))


def model_names() -> list[str]:
    """Every catalog key, in catalog order (the original four first): what `--simulator` accepts and
    what a sweep over the line-up runs against."""
    return list(MODELS)


def source_url(ref: str) -> str:
    """Where source `ref` (a key of SOURCES, or ESTIMATE) can be read."""
    return ESTIMATE if ref == ESTIMATE else SOURCES[ref]


_FORMAT_NAMES = {ImgType.RAW8: "RAW8", ImgType.RGB24: "RGB24", ImgType.RAW16: "RAW16", ImgType.Y8: "Y8"}
_BAYER_LETTERS = {BayerPattern.RG: "RGGB", BayerPattern.BG: "BGGR", BayerPattern.GR: "GRBG", BayerPattern.GB: "GBRG"}


def _bins_text(bins: tuple[int, ...]) -> str:
    if len(bins) > 2 and list(bins) == list(range(bins[0], bins[-1] + 1)):
        return f"{bins[0]}-{bins[-1]}"
    return ", ".join(str(b) for b in bins)


def _ke(e: float) -> str:
    return f"{e / 1000:g} ke"


def markdown_table() -> str:
    """The catalog as docs/simulator.md shows it (generated, so the doc cannot disagree with the code):
    one row per model, then every figure's source per model, then the source list."""
    head = ("| key | SDK name | sensor | pixels | pixel | colour | ADC | bins | formats | USB | ST4 | cooler "
            "| HardwareBin | full well | e-/ADU at gain 0 | read noise (e-) | unity / HCG gain | Gain (default) "
            "| Offset (default) | min exposure |")
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for m in MODELS.values():
        c = {s.name: s for s in m.controls}
        g, o, e = c["Gain"], c["Offset"], c["Exposure"]
        rn = m.read_noise_curve
        colour = f"colour {_BAYER_LETTERS[BayerPattern(m.bayer_pattern)]}" if m.is_color else "mono"
        rows.append(
            f"| `{m.key}` | {m.name} | {m.sensor} | {m.max_width}x{m.max_height} | {m.pixel_size_um:g} um "
            f"| {colour} | {m.bit_depth}-bit | {_bins_text(m.supported_bins)} "
            f"| {', '.join(_FORMAT_NAMES[ImgType(f)] for f in m.supported_formats)} | {'3.0' if m.usb3 else '2.0'} "
            f"| {'yes' if m.st4 else 'no'} | {'yes' if m.cooled else 'no'} "
            f"| {'yes' if CT.HARDWARE_BIN in m.control_by_type else 'no'} | {_ke(m.full_well_e)} "
            f"| {m.elec_per_adu_gain0:g} | {rn[0][1]:g} (g{rn[0][0]}) .. {rn[-1][1]:g} (g{rn[-1][0]}) "
            f"| {m.unity_gain} / {m.hcg_gain if m.hcg_gain is not None else '-'} "
            f"| {g.min_value}-{g.max_value} ({g.default}) | {o.min_value}-{o.max_value} ({o.default}) "
            f"| {e.min_value} us |")
    rows += ["", "Sources per figure (`estimate`: no public figure was at hand; the value is plausible and "
             "chosen to exercise the simulator):", "",
             "| key | " + " | ".join(FIGURES) + " |", "|" + " --- |" * (len(FIGURES) + 1)]
    for m in MODELS.values():
        refs = dict(m.sources)
        rows.append(f"| `{m.key}` | " + " | ".join(refs.get(f, ESTIMATE) for f in FIGURES) + " |")
    rows += ["", "Source keys:", ""]
    rows += [f"* `{k}`: {v}" for k, v in SOURCES.items()]
    return "\n".join(rows) + "\n"


#: The markers around the generated table in docs/simulator.md.
DOC_BEGIN = "<!-- catalog table: generated by `python -m driver.simulator list --write docs/simulator.md` -->"
DOC_END = "<!-- end of catalog table -->"


def write_doc(path: str) -> bool:
    """Replace the generated table between DOC_BEGIN and DOC_END in `path`; True if it changed."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    a, b = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    new = text[:a] + "\n" + markdown_table() + text[b:]
    if new != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return new != text


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

