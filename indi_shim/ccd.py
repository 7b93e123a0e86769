"""One ZWO camera as an INDI CCD device (libindi's ``INDI::CCD``): its properties mapped to core calls.

Property names, members, permissions and tabs follow libindi's INDI::CCD and INDI's own ZWO driver
(indi_asi_ccd): CCD_CONTROLS has one member per adjustable SDK control (`driver.controls`) under
the SDK's name and limits, CCD_CAPTURE_FORMAT members are ASI_IMG_RAW16/ASI_IMG_RAW8/ASI_IMG_RGB24,
the device is named "ZWO CCD <model>", and everything except CONNECTION and DRIVER_INFO exists
only while connected (defined on connect, deleted on disconnect).

One job: translate. Requests are parsed for their wire type and handed to the device core
(`configure`, `set_control`, `set_cooler`, `pulse_guide`, `start_exposure`); the core is the only
validator of values, and a `driver.errors.CameraError` it raises reaches the client as the
property in Alert with the core's own message (`CORE_ERRORS`). What is INDI's own stays here:
switch rules, upload paths, FITS keywords, CFA text, one guide direction per axis.

The exposure lifecycle is the core's: CCD_EXPOSURE follows its `ExposureStarted`/`ExposureEnded`
events (an exposure started elsewhere, e.g. over Alpaca, shows Busy here but delivers no image:
only exposures this device started, recognised by `Exposure.owner`, produce a BLOB), and the
countdown shows the core's `time_left`. The property framework (vectors, parsing, rejection) is
`device_base.PropertyDevice`; live video and recording are `stream.py`/`recorder.py`, which use
only this device's public methods.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from driver import controls as core_controls
from driver.errors import (
    CameraError,
    CameraGoneError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotSupportedError,
    SdkError,
)
from driver.events import Exposure, ExposureEnded, ExposureOutcome, ExposureStarted, StateChanged
from driver.models import BAYER_NAMES
from driver.state import CameraState
from driver.validation import RAMP_SLOPE_MAX, RAMP_THRESHOLD_RANGE
from zwo_common.fits import build_fits, camera_cards, valid_keyword
from zwo_common.fpack import FORMAT as FITS_FZ
from zwo_common.fpack import build_fits_fz, plain_size

from . import __version__
from .blob import EncodedBlob
from .config import AUTOSAVED, DeviceConfig
from .device_base import Client, DeviceHost, Handler, PropertyDevice, Reject
from .protocol import ALERT, BLOB, BUSY, IDLE, OK, Number, Switch, Text, Vector, fmt_number
from .snoop import ROLES, SCOPE_RANGES, Snooping
from .stream import VideoStream
from .upload import UploadError, UploadTarget

MAIN, IMAGE_SETTINGS, IMAGE_INFO, OPTIONS, INFO, CONTROLS, GUIDE = (
    "Main Control", "Image Settings", "Image Info", "Options", "General Info", "Controls", "Guider Control")

CCD_INTERFACE, GUIDER_INTERFACE = 2, 4

# CCD_CAPTURE_FORMAT members, named as indi_asi names them (Helpers::toString(ASI_IMG_TYPE)).
FORMATS = {"RAW16": ("ASI_IMG_RAW16", "Raw 16 bit"), "RAW8": ("ASI_IMG_RAW8", "Raw 8 bit"),
           "RGB24": ("ASI_IMG_RGB24", "RGB 24")}
FORMAT_BY_MEMBER = {m: k for k, (m, _) in FORMATS.items()}
# CCD_FRAME_TYPE members -> (label, the core's frame type).
FRAME_TYPES = {"FRAME_LIGHT": ("Light", "light"), "FRAME_BIAS": ("Bias", "bias"),
               "FRAME_DARK": ("Dark", "dark"), "FRAME_FLAT": ("Flat", "flat")}
ALWAYS_DEFINED = ("CONNECTION", "DRIVER_INFO", "CONFIG_PROCESS", "ACTIVE_DEVICES")
UPLOAD_MODES = ("UPLOAD_CLIENT", "UPLOAD_LOCAL", "UPLOAD_BOTH")
TRANSFER_FORMATS = ("FORMAT_FITS", "FORMAT_NATIVE")
ENABLED = ("INDI_ENABLED", "INDI_DISABLED")

#: The one table from core errors to what the INDI client sees. The Alert text is always the
#: core's message (it says what was wrong and what is valid); the table says how loudly the server
#: logs it: a client's bad value is routine, a camera failure is worth a warning.
CORE_ERRORS: dict[type[CameraError], int] = {
    InvalidValueError: logging.INFO,
    InvalidOperationError: logging.INFO,
    NotConnectedError: logging.INFO,
    NotSupportedError: logging.INFO,
    CameraGoneError: logging.WARNING,
    SdkError: logging.WARNING,
    CameraError: logging.WARNING,
}


def core_error_level(exc: BaseException) -> int | None:
    """The log level of a core error (`CORE_ERRORS`), or None if `exc` is not one (a bug)."""
    for cls in type(exc).__mro__:
        if cls in CORE_ERRORS:
            return CORE_ERRORS[cls]
    return None


def device_names(cameras: Sequence[Any], log: logging.Logger) -> list[str]:
    """INDI device names as indi_asi makes them: "ZWO CCD " + the model, " 1", " 2"... for repeats."""
    used: set[str] = set()
    out: list[str] = []
    for cam in cameras:
        model = None
        info = getattr(cam, "info", None)
        if info is None and getattr(cam, "configured_only", False):
            model = cam.model_name  # known from the config, not on the bus: the SDK cannot describe it
        elif info is None:
            try:
                info = cam.describe()
            except Exception as exc:  # noqa: BLE001 - an absent camera still gets a device (plugged in later)
                log.warning("INDI: cannot read camera properties (%s); naming it by its index", exc)
        if info is not None:
            model = info.model or info.name
        if not model:
            model = str(getattr(cam, "name", "") or "Camera")
        if model.upper().startswith("ZWO "):
            model = model[4:]
        base = f"ZWO CCD {model}"
        name, index = base, 0
        while name in used:
            index += 1
            name = f"{base} {index}"
        used.add(name)
        out.append(name)
    return out


class CcdDevice(PropertyDevice):
    """The INDI face of one `ZWOCamera`. All methods run on the server's event loop."""

    def __init__(self, host: DeviceHost, cam: Any, name: str, *, upload_dir: str | None = None,
                 driver_exec: str = "zwo-alpaca-indi", config_path: Path | None = None) -> None:
        super().__init__(host, name)
        self.cam = cam
        self.driver_exec = driver_exec
        # Bumped on every disconnect: an image still being encoded for the old connection is dropped.
        self.generation = 0
        self._exposure: Exposure | None = None  # the exposure CCD_EXPOSURE shows (ours or another front end's)
        self._countdown: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._defining: asyncio.Task[None] | None = None
        self._connected_defined = False
        self._listener = self._on_core_event
        self._custom_fits: dict[str, tuple[str, object, str]] = {}
        self._cfa: dict[str, str] | None = None  # CCD_CFA as a client corrected it (None: the core's phase)
        self._guide_timers: dict[str, asyncio.TimerHandle] = {}
        self._target_temp: float | None = None
        self._disconnecting = False
        self._off_peak = False  # the capture schedule released the camera (told to clients once)
        self._upload = UploadTarget(upload_dir) if upload_dir else None
        self._compress = False  # CCD_COMPRESSION: kept across reconnections, as libindi's CCD does
        self._fast = False  # CCD_FAST_TOGGLE, kept across reconnections as libindi keeps it
        # Also kept across reconnections, as libindi's CCD keeps them (and saves them: config.py).
        self._native = False  # CCD_TRANSFER_FORMAT FORMAT_NATIVE
        self._upload_mode = "UPLOAD_CLIENT"
        self._upload_settings = self._default_upload_settings()
        self._fast_count = 1  # CCD_FAST_COUNT FRAMES: frames left in the fast series, this one included
        self._encoding = 0  # images whose file is still being built from the core's (reused) buffer
        self.frames_delivered = 0
        self.stream = VideoStream(self)  # libindi's streaming properties (CCD_VIDEO_STREAM, ...)
        self.snoop = Snooping(self)  # ACTIVE_DEVICES, SCOPE_INFO and what those devices publish (snoop.py)
        self._observations: dict[int, Any] = {}  # exposure id -> what they said when it started
        # CONFIG_PROCESS and the saved INDI-only choices (indi_shim/config.py), read before the
        # first definitions as libindi's CCD reads ACTIVE_DEVICES in initProperties.
        self.config = DeviceConfig(self, config_path)
        self.config.load_at_start()
        for vec in self._base_properties():
            self.define(vec)

    # ================================================================== public interface (stream, recorder)
    @property
    def connected(self) -> bool:
        """Whether the connected property set is defined (the camera is connected)."""
        return self._connected_defined

    def require_connected(self, vec: Vector) -> None:
        """Refuse a request that needs a connected camera (raises `Reject`)."""
        if not self._connected_defined:
            raise Reject(f"{vec.name}: the camera is not connected")

    @property
    def upload_target(self) -> UploadTarget | None:
        """Where this server may write files (None: no upload directory configured)."""
        return self._upload

    @property
    def exposure_in_progress(self) -> bool:
        """Whether a single exposure is running (started here or by another front end)."""
        return self._exposure is not None

    def binned_frame_size(self) -> tuple[int, int]:
        """The capture frame's width and height in binned pixels."""
        _, _, w, h, b = self.frame_values()
        return w // b, h // b

    def frame_values(self) -> tuple[int, int, int, int, int]:
        """(x, y, w, h, bin) in unbinned pixels, as INDI's CCD_FRAME expresses them."""
        st = self.cam.settings
        b = int(st.bin)
        fw, fh = self._full()
        w = st.width if st.width is not None else fw // b
        h = st.height if st.height is not None else fh // b
        return st.start_x * b, st.start_y * b, w * b, h * b, b

    def cfa_for(self, frame: Any) -> tuple[str, int, int] | None:
        """The colour pattern and its x/y offsets of a raw colour frame, as a client set CCD_CFA if it
        did (libindi lets clients correct them); None for a mono frame."""
        if not frame.bayer_pattern:
            return None
        pattern, bx, by = frame.bayer_pattern, frame.bayer_offset_x, frame.bayer_offset_y
        if self._cfa is not None:
            pattern = self._cfa.get("CFA_TYPE") or pattern
            bx = _int_or(self._cfa.get("CFA_OFFSET_X", ""), bx)
            by = _int_or(self._cfa.get("CFA_OFFSET_Y", ""), by)
        return pattern, bx, by

    # ================================================================== framework hooks
    def handler(self, name: str) -> Handler | None:
        """A CCD property's handler, else the stream's (CCD_VIDEO_STREAM, RECORD_STREAM, ...)."""
        found = (super().handler(name) or self.stream.handler(name) or self.snoop.handler(name)
                 or self.config.handler(name))
        if found is None or name not in AUTOSAVED:
            return found
        handler = found

        async def then_save(client: Client, vec: Vector, values: dict[str, Any]) -> None:
            await handler(client, vec, values)
            await self.config.changed({name})  # as libindi's saveConfig(property) after the change

        return then_save

    def immediate(self, name: str) -> bool:
        """An abort must not wait behind the exposure request it aborts."""
        return name == "CCD_ABORT_EXPOSURE"

    def unknown_property_hint(self) -> str:
        """Most properties exist only while connected; say so when they are missing for that reason."""
        return "" if self._connected_defined else " (most properties exist only while connected)"

    def error_text(self, exc: Exception, vec: Vector) -> str:
        """The core's message for its errors (`CORE_ERRORS`); anything else is a bug and is logged."""
        level = core_error_level(exc)
        if level is None:
            return super().error_text(exc, vec)
        message = str(getattr(exc, "message", "") or exc)
        self.log.log(level, "INDI %s: %s refused by the camera: %s", self.name, vec.name, message)
        return message

    # ================================================================== properties
    def _vec(self, kind: str, name: str, label: str, group: str, perm: Any, members: list[Any], **kw: Any) -> Vector:
        return self.make_vector(kind, name, label, group, perm, members, **kw)

    def _get(self, name: str) -> Vector:
        """A connected-only vector a handler needs (the camera may have just disconnected)."""
        vec = self.vector(name)
        if vec is None:
            raise Reject(f"{name}: the camera is not connected")
        return vec

    def _interface(self) -> int:
        info = self.cam.info
        return CCD_INTERFACE | (GUIDER_INTERFACE if info is not None and info.has_st4 else 0)

    def _base_properties(self) -> list[Vector]:
        conn = self._vec("Switch", "CONNECTION", "Connection", MAIN, "rw",
                         [Switch("CONNECT", "Connect"), Switch("DISCONNECT", "Disconnect", True)], rule="OneOfMany")
        info = self._vec("Text", "DRIVER_INFO", "Driver Info", INFO, "ro", [
            Text("DRIVER_NAME", "Name", "ZWO CCD"),
            Text("DRIVER_EXEC", "Exec", self.driver_exec),
            Text("DRIVER_VERSION", "Version", __version__),
            Text("DRIVER_INTERFACE", "Interface", str(self._interface())),
        ])
        return [conn, info, self.config.vector, self.snoop.vector]  # libindi's order

    def _full(self) -> tuple[int, int]:
        info = self.cam.info
        return int(info.max_width), int(info.max_height)

    def _connected_properties(self, controls: dict[str, Any], values: dict[str, int],
                              auto: dict[str, bool] | None = None) -> list[Vector]:
        info = self.cam.info
        st = self.cam.settings
        fw, fh = self._full()
        x, y, w, h, b = self.frame_values()
        props: list[Vector] = []
        exp_min = float(info.exposure_min_s)
        exp_max = float(info.exposure_max_s)
        # Members' min/max below are what clients display; values are validated by the core
        # (core_validated), whose message gives the range it enforces.
        props.append(self._vec("Number", "CCD_EXPOSURE", "Expose", MAIN, "rw", [
            Number("CCD_EXPOSURE_VALUE", "Duration (s)", "%5.2f", exp_min, exp_max, 1, 1)], core_validated=True))
        props.append(self._vec("Switch", "CCD_ABORT_EXPOSURE", "Abort", MAIN, "rw", [Switch("ABORT", "Abort")],
                               rule="AtMostOne"))
        props.append(self._vec("Number", "CCD_FRAME", "Frame", IMAGE_SETTINGS, "rw", [
            Number("X", "Left ", "%4.0f", 0, fw - 1, 0, x), Number("Y", "Top", "%4.0f", 0, fh - 1, 0, y),
            Number("WIDTH", "Width", "%4.0f", 1, fw, 0, w), Number("HEIGHT", "Height", "%4.0f", 1, fh, 0, h)],
            core_validated=True))
        props.append(self._vec("Switch", "CCD_FRAME_RESET", "Frame Values", IMAGE_SETTINGS, "wo",
                               [Switch("RESET", "Reset")], rule="OneOfMany", timeout=0))
        max_bin = max(info.supported_bins or (1,))
        props.append(self._vec("Number", "CCD_BINNING", "Binning", IMAGE_SETTINGS, "rw", [
            Number("HOR_BIN", "X", "%2.0f", 1, max_bin, 1, b), Number("VER_BIN", "Y", "%2.0f", 1, max_bin, 1, b)],
            core_validated=True))
        props.append(self._vec("Text", "FITS_HEADER", "FITS Header", INFO, "wo", [
            Text("KEYWORD_NAME", "Name"), Text("KEYWORD_VALUE", "Value"), Text("KEYWORD_COMMENT", "Comment")]))
        status = self.cam.status()
        temp = status.ccd_temperature if status.ccd_temperature is not None else 0.0
        if info.has_cooler:
            lo, hi = self.cam.target_temperature_range()
            props.append(self._vec("Number", "CCD_TEMPERATURE", "Temperature", MAIN, "rw", [
                Number("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%5.2f", lo, hi, 0, round(temp, 2))],
                core_validated=True))
            props.append(self._vec("Switch", "CCD_COOLER", "Cooler", MAIN, "wo", [
                Switch("COOLER_ON", "ON", bool(status.cooler_on)), Switch("COOLER_OFF", "OFF", not status.cooler_on)],
                rule="OneOfMany", timeout=0, state=OK if status.cooler_on else IDLE))
            power = status.cooler_power or 0.0
            props.append(self._vec("Number", "CCD_COOLER_POWER", "Cooling Power", MAIN, "ro", [
                Number("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", 0, 100, 0.2, power)],
                state=BUSY if power > 0 else IDLE))
            # libindi's CCD_TEMP_RAMP; the core ramps the SDK's target (whichever front end set it).
            props.append(self._vec("Number", "CCD_TEMP_RAMP", "Temp. Ramp", MAIN, "rw", [
                Number("RAMP_SLOPE", "Max. dT (C/min)", "%.f", 0, RAMP_SLOPE_MAX, 1, st.ramp_slope),
                Number("RAMP_THRESHOLD", "Threshold (C)", "%.1f", *RAMP_THRESHOLD_RANGE, 0.1, st.ramp_threshold)],
                core_validated=True))
            props.append(self._vec("Switch", "CCD_WARM_AT_DISCONNECT", "Warm at disconnect", MAIN, "rw", [
                Switch("INDI_ENABLED", "Enabled", st.warm_at_disconnect),
                Switch("INDI_DISABLED", "Disabled", not st.warm_at_disconnect)], rule="OneOfMany"))
        else:
            # As indi_asi: uncooled cameras still report their sensor temperature, read-only.
            props.append(self._vec("Number", "CCD_TEMPERATURE", "Temperature", MAIN, "ro", [
                Number("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%5.2f", -50, 70, 0, round(temp, 2))]))
        formats = [k for k in ("RAW16", "RAW8", "RGB24") if k in info.image_types]
        props.append(self._vec("Switch", "CCD_CAPTURE_FORMAT", "Format", IMAGE_SETTINGS, "rw",
                               [Switch(FORMATS[k][0], FORMATS[k][1], k == st.image_type) for k in formats],
                               rule="OneOfMany"))
        props.append(self._vec("Switch", "CCD_TRANSFER_FORMAT", "Encode", IMAGE_SETTINGS, "rw", [
            Switch("FORMAT_FITS", "FITS", not self._native), Switch("FORMAT_NATIVE", "Native", self._native)],
            rule="OneOfMany"))
        props.append(self._vec("Number", "CCD_INFO", "CCD Information", IMAGE_INFO, "ro", [
            Number("CCD_MAX_X", "Max. Width", "%.f", 1, 16000, 0, fw),
            Number("CCD_MAX_Y", "Max. Height", "%.f", 1, 16000, 0, fh),
            Number("CCD_PIXEL_SIZE", "Pixel size (um)", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_PIXEL_SIZE_X", "Pixel size X", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_PIXEL_SIZE_Y", "Pixel size Y", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_BITSPERPIXEL", "Bits per pixel", "%.f", 8, 64, 0, 16 if st.image_type == "RAW16" else 8)]))
        props.append(self._vec("Switch", "CCD_COMPRESSION", "Compression", IMAGE_SETTINGS, "rw", [
            Switch("INDI_ENABLED", "Enabled", self._compress), Switch("INDI_DISABLED", "Disabled", not self._compress)],
            rule="OneOfMany"))
        props.append(self._vec("BLOB", "CCD1", "Image Data", IMAGE_INFO, "ro", [BLOB("CCD1", "Image")]))
        if info.has_st4:
            props.append(self._vec("Number", "TELESCOPE_TIMED_GUIDE_NS", "Guide N/S", GUIDE, "rw", [
                Number("TIMED_GUIDE_N", "North (ms)", "%.f", 0, 60000, 100, 0),
                Number("TIMED_GUIDE_S", "South (ms)", "%.f", 0, 60000, 100, 0)], core_validated=True))
            props.append(self._vec("Number", "TELESCOPE_TIMED_GUIDE_WE", "Guide E/W", GUIDE, "rw", [
                Number("TIMED_GUIDE_W", "West (ms)", "%.f", 0, 60000, 100, 0),
                Number("TIMED_GUIDE_E", "East (ms)", "%.f", 0, 60000, 100, 0)], core_validated=True))
        props.append(self._vec("Switch", "CCD_FRAME_TYPE", "Type", IMAGE_SETTINGS, "rw",
                               [Switch(k, label, k == "FRAME_LIGHT") for k, (label, _) in FRAME_TYPES.items()],
                               rule="OneOfMany"))
        if info.is_color and info.bayer_pattern:
            # The core's phase of the images the current subframe and flip deliver (driver.bayer).
            pattern, bx, by = self.cam.bayer_phase() or (info.bayer_pattern, 0, 0)
            cfa = {"CFA_OFFSET_X": str(bx), "CFA_OFFSET_Y": str(by), "CFA_TYPE": pattern, **(self._cfa or {})}
            props.append(self._vec("Text", "CCD_CFA", "Bayer Info", IMAGE_INFO, "rw", [
                Text("CFA_OFFSET_X", "X Offset", cfa["CFA_OFFSET_X"]), Text("CFA_OFFSET_Y", "Y Offset",
                                                                             cfa["CFA_OFFSET_Y"]),
                Text("CFA_TYPE", "Filter", cfa["CFA_TYPE"])]))
        props.append(self.snoop.scope_vector())
        props.append(self._vec("Switch", "UPLOAD_MODE", "Upload", OPTIONS, "rw", [
            Switch(m, label, m == self._upload_mode) for m, label in zip(UPLOAD_MODES, ("Client", "Local", "Both"))],
            rule="OneOfMany", timeout=0))
        props.append(self._vec("Text", "UPLOAD_SETTINGS", "Upload Settings", OPTIONS, "rw", [
            Text("UPLOAD_DIR", "Dir", self._upload_settings["UPLOAD_DIR"]),
            Text("UPLOAD_PREFIX", "Prefix", self._upload_settings["UPLOAD_PREFIX"])]))
        # libindi's fast exposure: the core starts the next frame as soon as one is read out.
        props.append(self._vec("Switch", "CCD_FAST_TOGGLE", "Fast Exposure", OPTIONS, "rw", [
            Switch("INDI_ENABLED", "Enabled", self._fast), Switch("INDI_DISABLED", "Disabled", not self._fast)],
            rule="OneOfMany", timeout=0))
        props.append(self._vec("Number", "CCD_FAST_COUNT", "Fast Count", OPTIONS, "rw", [
            Number("FRAMES", "Frames", "%.f", 0, 100000, 1, self._fast_count)], timeout=0))
        members = []
        for ctl in core_controls.adjustable(controls):
            step = (ctl.max - ctl.min) / 10.0 if ctl.max - ctl.min > 1 else 1
            members.append(Number(ctl.name, ctl.name, "%g", ctl.min, ctl.max, step, values.get(ctl.name, ctl.default)))
        if members:
            props.append(self._vec("Number", "CCD_CONTROLS", "Controls", CONTROLS, "rw", members, core_validated=True))
        autos = [Switch(f"AUTO_{ctl.name}", ctl.name, bool((auto or {}).get(ctl.name)))
                 for ctl in core_controls.auto_capable(controls)]
        if autos:  # as indi_asi: one AUTO_<control> per control the SDK can run automatically
            props.append(self._vec("Switch", "CCD_CONTROLS_MODE", "Set Auto", CONTROLS, "rw", autos,
                                   rule="AnyOfMany"))
        if core_controls.find(controls, core_controls.FLIP) is not None:
            flip = int(st.flip)
            props.append(self._vec("Switch", "FLIP", "Flip", CONTROLS, "rw", [
                Switch("FLIP_HORIZONTAL", "Horizontal", bool(flip & 1)),
                Switch("FLIP_VERTICAL", "Vertical", bool(flip & 2))], rule="AnyOfMany"))
        props.extend(self.stream.properties())
        return props

    def _define_connected(self, props: list[Vector]) -> None:
        for v in props:
            self.define(v)
        self._connected_defined = True
        if self._upload_mode != "UPLOAD_CLIENT":  # a kept (or saved) local mode shows its last file
            self._file_path_vector()
        if self._poller is None or self._poller.done():
            self._poller = self.loop.create_task(self._poll(), name=f"indi-poll-{self.name}")

    def _delete_connected(self) -> None:
        if not self._connected_defined:
            return
        self._connected_defined = False
        for vec in self.vectors():
            if vec.name not in ALWAYS_DEFINED:
                self.delete(vec.name)
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    # ================================================================== core events
    def attach(self) -> None:
        """Start following the camera's events (the server calls this once the loop runs)."""
        self.cam.add_listener(self._listener)
        st = self.cam.status()
        if st.connected and self.cam.info is not None:
            # Connected before the INDI server started (e.g. by Alpaca): show it connected.
            self._defining = self.loop.create_task(self._adopt_connection())

    def detach(self) -> None:
        """Stop following the camera and end this device's tasks (server shutdown)."""
        try:
            self.cam.remove_listener(self._listener)
        except Exception:  # noqa: BLE001 - shutting down: a camera that cannot take it back changes nothing
            pass
        for task in (self._countdown, self._poller, self._defining):
            if task is not None:
                task.cancel()
        for h in self._guide_timers.values():
            h.cancel()
        self.stream.shutdown()  # server stopping: a recording's file is closed before the process exits

    def _on_core_event(self, event: Any) -> None:
        """Core thread: hand the event to the loop, nothing more (the core requires listeners be quick)."""
        try:
            self.loop.call_soon_threadsafe(self._core_event, event)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _core_event(self, event: Any) -> None:
        if isinstance(event, ExposureStarted):
            self._exposure_started(event.exposure)
        elif isinstance(event, ExposureEnded):
            self._exposure_ended(event)
        elif isinstance(event, StateChanged):
            self.stream.on_core_state()
            self._off_peak_notice(event)
        elif event.kind == "connected":
            if not self._connected_defined and (self._defining is None or self._defining.done()):
                self._defining = self.loop.create_task(self._adopt_connection())
            elif self._connected_defined:
                self.message("[INFO] camera connection (re)established")
        elif event.kind == "disconnected":
            self._on_disconnected(external=not self._disconnecting)
        elif event.kind == "error":
            self.message(f"[ERROR] {event.data.get('message') or 'camera error'}")
        elif event.kind == "settings":
            self._sync_settings()

    def _off_peak_notice(self, event: StateChanged) -> None:
        """Tell clients when the capture schedule releases the camera, and when it is back.

        CONNECTION stays On meanwhile (the connection intent is kept; the core reconnects by itself
        when the window opens), and a CCD_EXPOSURE is refused in Alert with the core's message,
        which says until when (docs/indi.md, "Off-peak").
        """
        if event.new == CameraState.OFF_PEAK:
            if not self._off_peak:
                self._off_peak = True
                until = self.cam.status().off_peak_until
                when = f"until {until}" if until else "until the capture window opens"
                self.message(f"[INFO] camera released for the off-peak window {when} (capture schedule); "
                             f"exposures are refused until then and it reconnects by itself")
        elif self._off_peak and event.new in (CameraState.IDLE, CameraState.CAPTURING):
            self._off_peak = False
            self.message("[INFO] capture window open: the camera is connected again")
        elif self._off_peak and event.new in (CameraState.DISCONNECTED, CameraState.ERROR):
            self._off_peak = False  # disconnected by a client, or the reconnect failed: said elsewhere

    async def _adopt_connection(self) -> None:
        """Define the connected property set for a connection made elsewhere (Alpaca, startup)."""
        async with self.request_lock:
            if self._connected_defined or not self.cam.status().connected:
                return
            try:
                props = await self._build_connected()
            except Exception as exc:  # noqa: BLE001 - the connection stays; INDI shows it disconnected
                self.log.warning("INDI %s: cannot read camera state after connect: %s", self.name, exc)
                return
            if not self.cam.status().connected or self._connected_defined:
                return
            conn = self._get_base("CONNECTION")
            conn.set_one("CONNECT")
            conn.state = OK
            self.publish(conn)
            self._define_connected(props)

    def _get_base(self, name: str) -> Vector:
        vec = self.vector(name)
        assert vec is not None, name  # CONNECTION and DRIVER_INFO are always defined
        return vec

    def _on_disconnected(self, external: bool) -> None:
        self.generation += 1
        self.stream.on_disconnected()
        self._forget_exposure()
        self._delete_connected()
        conn = self._get_base("CONNECTION")
        if conn.on_switch() != "DISCONNECT" or conn.state != IDLE:
            conn.set_one("DISCONNECT")
            conn.state = IDLE
            self.publish(conn, "[INFO] camera disconnected" + (" (by another client)" if external else ""))

    # ---------------------------------------------------------------- exposure lifecycle (core events)
    def _exposure_started(self, exposure: Exposure) -> None:
        """The core accepted an exposure (ours, or another front end's: then Busy, but no image follows)."""
        self._exposure = exposure
        if exposure.owner is self:  # the header says what the other devices said when it started
            self._observations[exposure.id] = self.snoop.observation(datetime.now(UTC))
            for old in list(self._observations)[:-8]:  # bounded: ended exposures are popped on delivery
                del self._observations[old]
        exp = self.vector("CCD_EXPOSURE")
        if exp is None:
            return
        exp.number("CCD_EXPOSURE_VALUE").value = exposure.duration
        exp.state = BUSY
        self.publish(exp)
        self._stop_countdown()
        self._countdown = self.loop.create_task(self._count_down(exposure), name=f"indi-countdown-{self.name}")

    def _exposure_ended(self, event: ExposureEnded) -> None:
        """The core's outcome of an exposure: deliver our image, or show Idle (aborted) or Alert (failed)."""
        exposure = event.exposure
        if self._exposure is None or self._exposure.id != exposure.id:
            return  # not the one shown (e.g. of a connection since closed): its end changes nothing here
        self._forget_exposure()
        ours = exposure.owner is self
        if ours:
            self._fast_progress(event)
        if ours and event.outcome in (ExposureOutcome.COMPLETED, ExposureOutcome.STOPPED) and event.frame is not None:
            self.loop.create_task(self._deliver(event.frame, exposure, self.generation))
        elif ours and event.outcome == ExposureOutcome.FAILED:
            self._fail_exposure(event.reason or "the camera did not deliver the image")
        else:  # aborted, or another front end's exposure: no image here
            self._exposure_idle()

    def _fast_progress(self, event: ExposureEnded) -> None:
        """CCD_FAST_COUNT as libindi shows a series: Busy with the frames still to come, Idle at the end.

        A frame of a series is complete when it is read out (libindi turns CCD_EXPOSURE Ok there and
        the next frame's start Busy again). A series whose images are not yet built from the core's
        buffer one frame later (exposures shorter than the upload) is stopped, as libindi stops a fast
        series whose upload is slower than the exposure.
        """
        count = self.vector("CCD_FAST_COUNT")
        done = event.outcome in (ExposureOutcome.COMPLETED, ExposureOutcome.STOPPED)
        more = done and event.exposure.remaining > 0
        if more and self._encoding > 0:
            more = False
            self.loop.create_task(self._stop_fast_series())
        if more:
            self._fast_count = event.exposure.remaining
            exp = self.vector("CCD_EXPOSURE")
            if exp is not None:
                exp.number("CCD_EXPOSURE_VALUE").value = 0
                exp.state = OK
                self.publish(exp)
        elif (count is not None and count.state == BUSY) or event.exposure.remaining > 0:
            self._fast_count = 1  # the series ended (or was cut short): libindi leaves FRAMES at 1
        if count is not None:
            state = BUSY if more else IDLE
            if count.number("FRAMES").value != self._fast_count or count.state != state:
                count.number("FRAMES").value = self._fast_count
                count.state = state
                self.publish(count)

    async def _stop_fast_series(self) -> None:
        await self.server.call(self.cam.abort_exposure)
        self._fail_exposure("fast exposure stopped: the previous image was still being sent when the next "
                            "was read out (the upload takes longer than the exposure)")

    def _forget_exposure(self) -> None:
        self._exposure = None
        self._stop_countdown()

    def _stop_countdown(self) -> None:
        if self._countdown is not None:
            self._countdown.cancel()
            self._countdown = None

    async def _count_down(self, exposure: Exposure) -> None:
        """CCD_EXPOSURE Busy with the core's time left about once a second, on whole seconds (as indi_asi)."""
        try:
            left = float(exposure.duration)
            while True:
                if left > 1.1:
                    delay = left - math.floor(left)  # land on the next whole second
                    if delay < 0.05:
                        delay += 1.0
                else:
                    delay = left
                await asyncio.sleep(delay)
                exp = self.vector("CCD_EXPOSURE")
                if exp is None or self._exposure is not exposure:
                    return
                status = self.cam.status()
                if status.time_left is None or (status.exposure is not None and status.exposure.id != exposure.id):
                    return  # ended; its ExposureEnded sets the final state
                left = max(0.0, float(status.time_left))
                exp.number("CCD_EXPOSURE_VALUE").value = float(round(left)) if left > 1.1 else round(left, 2)
                exp.state = BUSY
                self.publish(exp)
                if left <= 0:
                    return  # reading out; the image (or a failure) sets the final state
        except asyncio.CancelledError:
            pass

    def _exposure_idle(self) -> None:
        exp = self.vector("CCD_EXPOSURE")
        if exp is not None:
            exp.number("CCD_EXPOSURE_VALUE").value = 0
            exp.state = IDLE
            self.publish(exp)

    def _fail_exposure(self, why: str) -> None:
        exp = self.vector("CCD_EXPOSURE")
        if exp is not None:
            exp.number("CCD_EXPOSURE_VALUE").value = 0
            exp.state = ALERT
            self.publish(exp, f"[ERROR] exposure failed: {why}")

    # ---------------------------------------------------------------- image delivery
    def _fits_cards(self, frame: Any, exposure: Exposure) -> list[tuple[str, object, str]]:
        info = self.cam.info
        bayer = self.cfa_for(frame) if frame.image_type != "RGB24" else None
        temp = frame.temperature
        if temp is None:
            temp = self.cam.status().ccd_temperature
        sub = (frame.start_x, frame.start_y) if (frame.start_x or frame.start_y) else None
        return camera_cards(exptime=frame.duration, start=frame.start_time, instrume=self.name,
                            frame_type=_frame_label(exposure.frame_type), xbin=frame.bin, ybin=frame.bin,
                            pixel_size_um=info.pixel_size_um if info else None, ccd_temp=temp,
                            gain=frame.gain, offset=frame.offset, bayer=bayer, subframe=sub,
                            extra=list(self._custom_fits.values()),
                            observation=self._observations.pop(exposure.id, None))

    async def _deliver(self, frame: Any, exposure: Exposure, gen: int) -> None:
        """Deliver one image, counted while it runs: the frame is a view of a buffer the core reuses
        two exposures later, which a fast exposure series reaches without waiting for us."""
        self._encoding += 1
        try:
            await self._deliver_image(frame, exposure, gen)
        finally:
            self._encoding -= 1

    async def _deliver_image(self, frame: Any, exposure: Exposure, gen: int) -> None:
        """Build the image file once, save and/or send it, then turn CCD_EXPOSURE Ok (in that order)."""
        native, mode, compress = self._native, self._upload_mode, self._compress
        size: int | None = None  # the BLOB's size attribute: the length before compression
        try:
            if native:
                data = frame.data
                payload = await self.server.compute(lambda: np.ascontiguousarray(data).view(np.uint8).reshape(-1))
                raw, ext = memoryview(payload).cast("B"), ".bin"
                if compress:  # as libindi: what is not FITS goes zlib-compressed, ".z", which its clients undo
                    size = len(raw)
                    raw, ext = memoryview(await self.server.compute(zlib.compress, raw, 1)), ".bin.z"
            elif compress:  # Rice tile-compressed FITS, as fpack writes it (zwo_common.fpack)
                cards = self._fits_cards(frame, exposure)
                fits = await self.server.compute(build_fits_fz, frame.data, cards)
                raw, ext, size = fits.memoryview(), FITS_FZ, plain_size(fits)
            else:
                cards = self._fits_cards(frame, exposure)
                fits = await self.server.compute(build_fits, frame.data, cards)
                raw, ext = fits.memoryview(), ".fits"
        except Exception as exc:
            self.log.exception("INDI %s: building the image file failed", self.name)
            if gen == self.generation:
                self._fail_exposure(f"cannot build the image file: {exc}")
            return
        if gen != self.generation:
            return  # disconnected meanwhile: never deliver into a new connection
        if mode in ("UPLOAD_CLIENT", "UPLOAD_BOTH"):
            if self.server.clients_wanting_blob(self.name, "CCD1"):
                # Encode once (in the CPU pool), then hand the same bytes to every client.
                blob = EncodedBlob(raw, ext, self.loop, size=size)
                blob.start(self.server.cpu_pool)
                if not await blob.wait():
                    self._fail_exposure(f"cannot encode the image: {blob.error}")
                    return
                if gen != self.generation:
                    return
                self.server.broadcast_blob(self.name, "CCD1", "CCD1", blob)
        if mode in ("UPLOAD_LOCAL", "UPLOAD_BOTH"):
            await self._save_local(raw, ext, gen)
            if gen != self.generation:
                return
        self.frames_delivered += 1
        exp = self.vector("CCD_EXPOSURE")
        if exp is not None and self._exposure is None:  # a newer exposure already shows Busy: leave it
            exp.number("CCD_EXPOSURE_VALUE").value = 0
            exp.state = OK
            self.publish(exp)

    def _file_path_vector(self) -> Vector:
        fp = self.vector("CCD_FILE_PATH")
        if fp is None:
            fp = self._vec("Text", "CCD_FILE_PATH", "Filename", IMAGE_INFO, "ro", [Text("FILE_PATH", "Path")])
            self.define(fp)
        return fp

    async def _save_local(self, raw: memoryview, ext: str, gen: int) -> None:
        if self._upload is None:
            self.message("[ERROR] local upload is not enabled on this server (no upload directory configured); "
                         "the image was not saved")
            return
        try:
            comps = self._upload.components(self._upload_settings["UPLOAD_DIR"])
            prefix = self._upload_settings["UPLOAD_PREFIX"]
            path = await self.server.compute(self._upload.save, comps, prefix, ext, raw)
        except (UploadError, OSError) as exc:
            self.message(f"[ERROR] cannot save the image: {exc}")
            return
        if gen != self.generation:
            return
        fp = self._file_path_vector()
        fp.text("FILE_PATH").value = path
        fp.state = OK
        self.publish(fp)
        self.message(f"[INFO] Image saved to {path}")

    # ================================================================== requests
    # ---------------------------------------------------------------- CONNECTION
    async def _new_connection(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        want = "CONNECT" if values.get("CONNECT") else "DISCONNECT"
        if want == "CONNECT":
            if self._connected_defined and self.cam.status().connected:
                vec.set_one("CONNECT")
                vec.state = OK
                self.publish(vec)
                return
            vec.state = BUSY
            self.publish(vec)
            try:
                await self.server.call(self.cam.connect)
                props = await self._build_connected()
            except Exception as exc:
                vec.set_one("DISCONNECT")
                vec.state = ALERT
                msg = getattr(exc, "message", None) or str(exc)
                self.publish(vec, f"[ERROR] connection failed: {msg}")
                if core_error_level(exc) is None:
                    self.log.exception("INDI %s: connect failed", self.name)
                return
            vec.set_one("CONNECT")
            vec.state = OK
            info = self._get_base("DRIVER_INFO")
            info.text("DRIVER_INTERFACE").value = str(self._interface())
            self.publish(info)
            self.publish(vec, "[INFO] camera connected")
            if not self._connected_defined:
                self._define_connected(props)
        else:
            self.generation += 1  # from now on, nothing of the old connection is delivered
            self.stream.on_disconnected()  # the core's teardown below stops its capture
            self._forget_exposure()
            vec.state = BUSY
            self.publish(vec)
            self._disconnecting = True
            try:
                await self.server.call(self.cam.disconnect_camera)
            finally:
                self._disconnecting = False
                self._on_disconnected(external=False)

    async def _build_connected(self) -> list[Vector]:
        def read() -> tuple[dict[str, Any], dict[str, int], dict[str, bool]]:
            controls = self.cam.controls()
            values: dict[str, int] = {}
            for ctl in core_controls.adjustable(controls):
                try:
                    values[ctl.name] = int(self.cam.control_value(ctl.name))
                except Exception:  # noqa: BLE001 - an unreadable control shows its default, as indi_asi
                    values[ctl.name] = int(ctl.default)
            auto: dict[str, bool] = {}
            for ctl in core_controls.auto_capable(controls):
                try:
                    auto[ctl.name] = self.cam.control_auto(ctl.name)  # the SDK's flag, as indi_asi reads it
                except Exception:  # noqa: BLE001 - an unreadable flag shows manual
                    auto[ctl.name] = False
            return controls, values, auto

        controls, values, auto = await self.server.call(read)
        return self._connected_properties(controls, values, auto)

    # ---------------------------------------------------------------- exposure
    async def _new_ccd_exposure(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        duration = float(values["CCD_EXPOSURE_VALUE"])
        member = self._get("CCD_FRAME_TYPE").on_switch() or "FRAME_LIGHT"
        frame_type = FRAME_TYPES.get(member, FRAME_TYPES["FRAME_LIGHT"])[1]
        if self.stream.active:
            # As indi_asi (its exposure replaces the video worker), the exposure wins; here the
            # stream is turned off visibly rather than left showing On.
            await self.stream.stop("[WARNING] video stream stopped: an exposure was requested")
        if self._exposure is not None:
            # libindi aborts a running exposure when a new one is requested.
            await self.server.call(self.cam.abort_exposure)
        # Fast exposure (libindi's CCD_FAST_TOGGLE/CCD_FAST_COUNT): with FRAMES > 1 the core starts
        # each next frame as soon as the one before is read out, without waiting for the upload.
        repeat = max(0, self._fast_count - 1) if self._fast else 0
        # The core's rules apply (the bias rule too: a bias frame exposes for the camera's minimum
        # whatever the duration); its ExposureStarted/ExposureEnded events drive CCD_EXPOSURE.
        await self.server.call(lambda: self.cam.start_exposure(
            duration, frame_type in ("light", "flat"), frame_type=frame_type, owner=self, repeat=repeat))

    async def _new_ccd_abort_exposure(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        if not values.get("ABORT", False):
            vec.state = IDLE
            self.publish(vec)
            return
        await self.server.call(self.cam.abort_exposure)
        vec.switch("ABORT").on = False
        vec.state = OK
        self.publish(vec)
        if self._exposure is None:  # nothing was running (or its ExposureEnded already said so)
            self._exposure_idle()

    # ---------------------------------------------------------------- frame, binning, format
    async def _set_frame(self, x: int, y: int, w: int, h: int, b: int) -> None:
        """Set CCD_FRAME (unbinned pixels) and binning in the core (binned pixels), which checks them
        as one subframe against the binned sensor."""
        d = max(b, 1)  # only for the conversion: the core refuses a binning below 1 with the valid ones
        fw, fh = self._full()
        full = x == 0 and y == 0 and w >= (fw // d) * d and h >= (fh // d) * d
        width, height = (None, None) if full else (w // d, h // d)
        await self.server.call(lambda: self.cam.set_subframe(x // d, y // d, width, height, bin=b))

    def _publish_frame(self) -> None:
        frame = self.vector("CCD_FRAME")
        binning = self.vector("CCD_BINNING")
        x, y, w, h, b = self.frame_values()
        if frame is not None:
            for k, v in (("X", x), ("Y", y), ("WIDTH", w), ("HEIGHT", h)):
                frame.number(k).value = v
            frame.state = OK
            self.publish(frame)
        if binning is not None:
            binning.number("HOR_BIN").value = b
            binning.number("VER_BIN").value = b
            binning.state = OK
            self.publish(binning)
        self._publish_cfa()  # an odd start shifts the mosaic phase

    async def _new_ccd_frame(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        x, y, w, h, b = self.frame_values()
        x = int(values.get("X", x))
        y = int(values.get("Y", y))
        w = int(values.get("WIDTH", w))
        h = int(values.get("HEIGHT", h))
        await self._set_frame(x, y, w, h, b)
        self._publish_frame()

    async def _new_ccd_binning(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        b = int(values.get("HOR_BIN", values.get("VER_BIN", 1)))
        x, y, w, h, _ = self.frame_values()
        # Keep the frame in unbinned pixels (as indi_asi does); shrink it to whole binned pixels.
        d = max(b, 1)
        x, y, w, h = x - x % d, y - y % d, max(d, w - w % d), max(d, h - h % d)
        await self._set_frame(x, y, w, h, b)
        self._publish_frame()

    async def _new_ccd_frame_reset(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        await self.server.call(lambda: self.cam.configure(bin=1, start_x=0, start_y=0, width=None, height=None))
        vec.switch("RESET").on = False
        vec.state = OK
        self.publish(vec)
        self._publish_frame()

    async def _new_ccd_frame_type(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        chosen = next(k for k, v in values.items() if v)
        vec.set_one(chosen)
        vec.state = OK
        self.publish(vec)
        info = self.cam.info
        if chosen in ("FRAME_DARK", "FRAME_BIAS") and info is not None and not info.has_shutter:
            self.message(f"[WARNING] The CCD does not have a shutter. Cover the camera in order to take a "
                         f"{FRAME_TYPES[chosen][0].lower()} frame.")

    async def _new_ccd_capture_format(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        chosen = next(k for k, v in values.items() if v)
        fmt = FORMAT_BY_MEMBER[chosen]
        await self.server.call(lambda: self.cam.configure(image_type=fmt))
        vec.set_one(chosen)
        vec.state = OK
        self.publish(vec)
        ccd_info = self.vector("CCD_INFO")
        if ccd_info is not None:
            ccd_info.number("CCD_BITSPERPIXEL").value = 16 if fmt == "RAW16" else 8
            self.publish(ccd_info)

    async def _new_ccd_compression(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.take_option("CCD_COMPRESSION", values)

    async def _new_ccd_transfer_format(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.take_option("CCD_TRANSFER_FORMAT", values)

    # ---------------------------------------------------------------- controls
    async def _new_ccd_controls(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        changed: dict[str, int] = {}
        for cname, v in values.items():
            if abs(v - round(v)) > 1e-9:  # the wire type: SDK controls are whole numbers
                raise Reject(f"CCD_CONTROLS.{cname} must be a whole number, got {fmt_number(v)}")
            if abs(v - vec.number(cname).value) < 0.01:
                continue  # clients send the whole vector; only changed members are applied (as indi_asi)
            changed[cname] = int(round(v))
        applied: list[str] = []

        def apply() -> None:
            for cname, v in changed.items():
                self.cam.set_control(cname, v)  # the core maps it to its setting and checks the range
                applied.append(cname)

        try:
            await self.server.call(apply)
        finally:
            for cname in applied:
                vec.number(cname).value = changed[cname]
            self._publish_autos()  # a control given a value is manual again (the core says which)
        vec.state = OK
        self.publish(vec)

    async def _new_ccd_controls_mode(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        wanted = {m.name[len("AUTO_"):]: bool(on) for m, on in
                  ((vec.switch(k), v) for k, v in values.items())}
        changed = {n: on for n, on in wanted.items() if vec.switch(f"AUTO_{n}").on != on}

        def apply() -> None:
            for cname, on in changed.items():
                self.cam.set_auto(cname, on)  # the core checks the control can run automatically

        try:
            await self.server.call(apply)
        finally:
            self._publish_autos(force=True, state=OK)

    def _publish_autos(self, force: bool = False, state: str | None = None) -> None:
        """CCD_CONTROLS_MODE from the core's settings (which controls the SDK runs automatically)."""
        vec = self.vector("CCD_CONTROLS_MODE")
        if vec is None:
            return
        autos = self.cam.settings.auto_controls
        changed = False
        for m in vec.members:
            on = bool(autos.get(m.name[len("AUTO_"):]))
            if isinstance(m, Switch) and m.on != on:
                m.on = on
                changed = True
        if state is not None:
            vec.state = state
        if changed or force:
            self.publish(vec)

    async def _new_ccd_temp_ramp(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        changes = {"ramp_slope": values.get("RAMP_SLOPE", vec.number("RAMP_SLOPE").value),
                   "ramp_threshold": values.get("RAMP_THRESHOLD", vec.number("RAMP_THRESHOLD").value)}
        new = await self.server.call(lambda: self.cam.configure(**changes))  # the core checks both
        vec.number("RAMP_SLOPE").value = new.ramp_slope
        vec.number("RAMP_THRESHOLD").value = new.ramp_threshold
        vec.state = OK
        self.publish(vec, "[INFO] Temperature ramp is disabled." if not new.ramp_slope else
                     f"[INFO] Temperature ramp is enabled: the cooler target moves at most "
                     f"{new.ramp_slope:g} C per minute.")

    async def _new_ccd_warm_at_disconnect(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        on = bool(values.get("INDI_ENABLED"))
        await self.server.call(lambda: self.cam.configure(warm_at_disconnect=on))
        vec.set_one("INDI_ENABLED" if on else "INDI_DISABLED")
        vec.state = OK
        self.publish(vec)

    async def _new_ccd_fast_toggle(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        on = bool(values.get("INDI_ENABLED"))
        if not on and self._fast and self._exposure is not None:
            await self.server.call(self.cam.abort_exposure)  # as libindi: switching it off ends the series
        if on and not self._fast:
            self.message("[WARNING] Fast exposure: after a frame is read out, the next one starts at once.")
        self.take_option("CCD_FAST_TOGGLE", values)
        count = self.vector("CCD_FAST_COUNT")
        if not on and count is not None and count.state == BUSY:
            count.state = IDLE
            self.publish(count)

    async def _new_ccd_fast_count(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        frames = float(values["FRAMES"])
        if frames != int(frames) or frames < 0:  # the wire type; the core counts the repeats it is given
            raise Reject(f"CCD_FAST_COUNT.FRAMES must be a whole number of frames, 0 or more, got {fmt_number(frames)}")
        self._fast_count = int(frames)
        vec.number("FRAMES").value = self._fast_count
        vec.state = OK
        self.publish(vec)

    async def _new_flip(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        h = values.get("FLIP_HORIZONTAL", vec.switch("FLIP_HORIZONTAL").on)
        v = values.get("FLIP_VERTICAL", vec.switch("FLIP_VERTICAL").on)
        await self.server.call(lambda: self.cam.configure(flip=(1 if h else 0) | (2 if v else 0)))
        vec.switch("FLIP_HORIZONTAL").on, vec.switch("FLIP_VERTICAL").on = bool(h), bool(v)
        vec.state = OK
        self.publish(vec)
        self._publish_cfa()  # a flip changes which filter the image starts on

    # ---------------------------------------------------------------- cooling
    async def _new_ccd_temperature(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        target = float(values["CCD_TEMPERATURE_VALUE"])
        await self.server.call(self.cam.set_cooler, True, target)
        self._target_temp = target
        # Reached within the core's ramp threshold (CCD_TEMP_RAMP RAMP_THRESHOLD), as libindi's CCD.
        vec.state = OK if self.cam.status().temperature_reached else BUSY
        self.publish(vec, f"[INFO] Setting temperature to {target:.2f} C.")
        cooler = self.vector("CCD_COOLER")
        if cooler is not None and cooler.on_switch() != "COOLER_ON":
            cooler.set_one("COOLER_ON")
            cooler.state = OK
            self.publish(cooler)

    async def _new_ccd_cooler(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.require_connected(vec)
        on = bool(values.get("COOLER_ON"))
        await self.server.call(self.cam.set_cooler, on, None)
        vec.set_one("COOLER_ON" if on else "COOLER_OFF")
        vec.state = OK if on else IDLE
        self.publish(vec)
        if not on:
            self._target_temp = None
            temp = self.vector("CCD_TEMPERATURE")
            if temp is not None and temp.state == BUSY:
                temp.state = IDLE
                self.publish(temp)

    # ---------------------------------------------------------------- guiding
    async def _new_telescope_timed_guide_ns(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        await self._guide(vec, values, ("TIMED_GUIDE_N", "N"), ("TIMED_GUIDE_S", "S"))

    async def _new_telescope_timed_guide_we(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        await self._guide(vec, values, ("TIMED_GUIDE_W", "W"), ("TIMED_GUIDE_E", "E"))

    async def _guide(self, vec: Vector, values: dict[str, Any], a: tuple[str, str], b: tuple[str, str]) -> None:
        self.require_connected(vec)
        pulses = [(member, direction, float(values.get(member, 0))) for member, direction in (a, b)]
        pulses = [p for p in pulses if p[2] != 0]
        if len(pulses) > 1:  # INDI's own rule: one vector, one axis, one direction at a time
            raise Reject(f"{vec.name}: guide in one direction at a time ({a[0]} or {b[0]})")
        old = self._guide_timers.pop(vec.name, None)
        if old is not None:
            old.cancel()
        if not pulses:
            vec.state = OK
            for m in _numbers(vec):
                m.value = 0
            self.publish(vec)
            return
        member, direction, ms = pulses[0]
        # The core checks the duration (a negative or too long pulse is refused with its range).
        await self.server.call(self.cam.pulse_guide, direction, int(round(ms)))
        for m in _numbers(vec):
            m.value = ms if m.name == member else 0
        vec.state = BUSY
        self.publish(vec)

        def done() -> None:
            self._guide_timers.pop(vec.name, None)
            if self.vector(vec.name) is vec:
                for m in _numbers(vec):
                    m.value = 0
                vec.state = OK
                self.publish(vec)

        self._guide_timers[vec.name] = self.loop.call_later(ms / 1000.0, done)

    # ---------------------------------------------------------------- upload, CFA, FITS header
    async def _new_upload_mode(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.take_option("UPLOAD_MODE", values)

    async def _new_upload_settings(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.take_option("UPLOAD_SETTINGS", values)

    async def _new_ccd_cfa(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.take_option("CCD_CFA", values)

    # ---------------------------------------------------------------- INDI-only choices (saved by config.py)
    def _default_upload_settings(self) -> dict[str, str]:
        return {"UPLOAD_DIR": str(self._upload.base) if self._upload else "", "UPLOAD_PREFIX": "IMAGE_XXX"}

    def option_values(self) -> dict[str, dict[str, Any] | None]:
        """The INDI-only choices this device keeps across connections, as member values (what
        `indi_shim.config` saves; None: nothing to save, e.g. CCD_CFA while the core's phase applies)."""
        fl, ap = self.snoop.scope
        return {
            "ACTIVE_DEVICES": dict(self.snoop.active),
            "UPLOAD_MODE": {m: m == self._upload_mode for m in UPLOAD_MODES},
            "UPLOAD_SETTINGS": dict(self._upload_settings),
            "CCD_FAST_TOGGLE": {"INDI_ENABLED": self._fast, "INDI_DISABLED": not self._fast},
            "CCD_COMPRESSION": {"INDI_ENABLED": self._compress, "INDI_DISABLED": not self._compress},
            "CCD_TRANSFER_FORMAT": {"FORMAT_FITS": not self._native, "FORMAT_NATIVE": self._native},
            "CCD_CFA": dict(self._cfa) if self._cfa is not None else None,
            "SCOPE_INFO": {"FOCAL_LENGTH": fl, "APERTURE": ap},
        }

    def take_option(self, name: str, values: dict[str, Any] | None) -> None:
        """Take one INDI-only choice, from a client's request or a saved configuration (``values``
        None: libindi's default), and publish it if the property is defined. The checks are the
        same for both; raises `Reject` with what is wrong and what is allowed."""
        if name == "ACTIVE_DEVICES":
            texts = _texts(name, values, [r.member for r in ROLES]) if values is not None else \
                {r.member: r.default for r in ROLES}
            self.snoop.set_active(texts)
        elif name == "SCOPE_INFO":
            nums = {"FOCAL_LENGTH": 0.0, "APERTURE": 0.0} if values is None else _numbers_in(name, values)
            self.snoop.set_scope(nums)
        elif name == "UPLOAD_MODE":
            chosen = "UPLOAD_CLIENT" if values is None else _one_of(name, values, UPLOAD_MODES)
            if chosen != "UPLOAD_CLIENT" and self._upload is None:
                raise Reject("local upload is not enabled on this server: start it with an upload directory "
                             "(ZWO_ALPACA_UPLOAD_DIR or the server's upload_dir option); only UPLOAD_CLIENT is "
                             "available")
            self._upload_mode = chosen
            self._show_switch(name, chosen)
            if self._connected_defined:
                if chosen == "UPLOAD_CLIENT":
                    self.delete("CCD_FILE_PATH")
                else:
                    self._file_path_vector()
        elif name == "UPLOAD_SETTINGS":
            texts = self._default_upload_settings() if values is None else \
                {**self._upload_settings, **_texts(name, values, ["UPLOAD_DIR", "UPLOAD_PREFIX"])}
            d, prefix = texts["UPLOAD_DIR"], texts["UPLOAD_PREFIX"]
            try:
                if self._upload is not None:
                    d = self._upload.display(self._upload.components(d))
                UploadTarget.check_prefix(prefix)
            except UploadError as exc:
                raise Reject(str(exc)) from None
            self._upload_settings = {"UPLOAD_DIR": d, "UPLOAD_PREFIX": prefix}
            self._show_texts(name, self._upload_settings)
        elif name in ("CCD_FAST_TOGGLE", "CCD_COMPRESSION"):
            on = values is not None and _one_of(name, values, ENABLED) == "INDI_ENABLED"
            if name == "CCD_FAST_TOGGLE":
                self._fast = on
            else:
                self._compress = on
            self._show_switch(name, "INDI_ENABLED" if on else "INDI_DISABLED")
        elif name == "CCD_TRANSFER_FORMAT":
            chosen = "FORMAT_FITS" if values is None else _one_of(name, values, TRANSFER_FORMATS)
            self._native = chosen == "FORMAT_NATIVE"
            self._show_switch(name, chosen)
        elif name == "CCD_CFA":
            self._take_cfa(values)
        else:  # pragma: no cover - config.SAVED names only these
            raise Reject(f"{name} is not an INDI-only choice")

    def _take_cfa(self, values: dict[str, Any] | None) -> None:
        if values is None:  # back to the core's phase (subframe start and flip)
            self._cfa = None
            self._publish_cfa()
            return
        texts = _texts("CCD_CFA", values, ["CFA_OFFSET_X", "CFA_OFFSET_Y", "CFA_TYPE"])
        for k in ("CFA_OFFSET_X", "CFA_OFFSET_Y"):
            if k in texts and texts[k].strip() not in ("0", "1"):
                raise Reject(f"CCD_CFA.{k} must be 0 or 1, got {texts[k][:20]!r}")
        if "CFA_TYPE" in texts and texts["CFA_TYPE"].strip().upper() not in BAYER_NAMES.values():
            raise Reject(f"CCD_CFA.CFA_TYPE must be one of {', '.join(BAYER_NAMES.values())}, "
                         f"got {texts['CFA_TYPE'][:20]!r}")
        vec = self.vector("CCD_CFA")
        members = ("CFA_OFFSET_X", "CFA_OFFSET_Y", "CFA_TYPE")
        base = self._cfa or ({k: str(vec.text(k).value) for k in members} if vec is not None else {})
        if not base and set(texts) != {"CFA_OFFSET_X", "CFA_OFFSET_Y", "CFA_TYPE"}:
            # not connected: the core's phase fills what the request leaves out
            pattern, bx, by = self.cam.bayer_phase() or (getattr(self.cam.info, "bayer_pattern", None) or "RGGB", 0, 0)
            base = {"CFA_OFFSET_X": str(bx), "CFA_OFFSET_Y": str(by), "CFA_TYPE": pattern}
        self._cfa = {**base, **{k: v.strip().upper() if k == "CFA_TYPE" else v.strip() for k, v in texts.items()}}
        self._show_texts("CCD_CFA", self._cfa)

    def _show_switch(self, name: str, on: str) -> None:
        vec = self.vector(name)
        if vec is not None:
            vec.set_one(on)
            vec.state = OK
            self.publish(vec)

    def _show_texts(self, name: str, texts: dict[str, str]) -> None:
        vec = self.vector(name)
        if vec is not None:
            for k, v in texts.items():
                vec.text(k).value = v
            vec.state = OK
            self.publish(vec)

    async def _new_fits_header(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        key = str(values.get("KEYWORD_NAME", "")).strip().upper()
        value = str(values.get("KEYWORD_VALUE", "")).strip()
        comment = str(values.get("KEYWORD_COMMENT", "")).strip()
        if key == "INDI_CLEAR":
            self._custom_fits.clear()
            vec.state = OK
            self.publish(vec, "[INFO] Custom FITS headers cleared.")
            return
        if not key:
            raise Reject("FITS_HEADER: KEYWORD_NAME is empty")
        if not valid_keyword(key) or key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                                              "BZERO", "BSCALE", "END"):
            raise Reject(f"FITS_HEADER: {key[:20]!r} is not a keyword clients may set (1-8 of A-Z 0-9 - _)")
        parsed: object = value
        try:
            parsed = int(value)
        except ValueError:
            try:
                f = float(value)
                parsed = f if math.isfinite(f) else value
            except ValueError:
                parsed = value[:68]
        if len(self._custom_fits) >= 64 and key not in self._custom_fits:
            raise Reject("FITS_HEADER: at most 64 custom keywords (send INDI_CLEAR to reset)")
        self._custom_fits[key] = (key, parsed, comment[:40])
        vec.state = OK
        self.publish(vec)

    # ================================================================== periodic state
    async def _poll(self) -> None:
        """Temperature, cooler and guide state, about once a second, pushed only when changed."""
        try:
            while True:
                await asyncio.sleep(1.0)
                if not self._connected_defined:
                    return
                st = self.cam.status()
                temp = self.vector("CCD_TEMPERATURE")
                if temp is not None and st.ccd_temperature is not None:
                    m = temp.number("CCD_TEMPERATURE_VALUE")
                    new_state = temp.state
                    if self._target_temp is not None and temp.state == BUSY and st.temperature_reached:
                        new_state = OK
                    if abs(st.ccd_temperature - m.value) > 0.05 or new_state != temp.state:
                        m.value = round(st.ccd_temperature, 2)
                        temp.state = new_state
                        self.publish(temp)
                power = self.vector("CCD_COOLER_POWER")
                if power is not None and st.cooler_power is not None:
                    m = power.number("CCD_COOLER_VALUE")
                    if abs(st.cooler_power - m.value) > 0.1:
                        m.value = float(st.cooler_power)
                        power.state = BUSY if st.cooler_power > 0 else IDLE
                        self.publish(power)
                cooler = self.vector("CCD_COOLER")
                if cooler is not None and st.cooler_on is not None and \
                        (cooler.on_switch() == "COOLER_ON") != bool(st.cooler_on):
                    cooler.set_one("COOLER_ON" if st.cooler_on else "COOLER_OFF")
                    cooler.state = OK if st.cooler_on else IDLE
                    self.publish(cooler)
        except asyncio.CancelledError:
            pass

    def _sync_settings(self) -> None:
        """Settings changed (possibly over Alpaca): publish the properties whose values differ.

        Skipped while one of our own requests runs: its handler publishes the result itself (from
        the core's current settings, so a concurrent Alpaca change is included), and publishing
        twice makes clients see values flip back and forth.
        """
        if not self._connected_defined or self.request_lock.locked():
            return
        st = self.cam.settings
        x, y, w, h, b = self.frame_values()
        frame = self.vector("CCD_FRAME")
        binning = self.vector("CCD_BINNING")
        if frame is not None and binning is not None and (
                tuple(frame.number(k).value for k in ("X", "Y", "WIDTH", "HEIGHT")) + (binning.number("HOR_BIN").value,)
                != (x, y, w, h, b)):
            self._publish_frame()
        fmt = self.vector("CCD_CAPTURE_FORMAT")
        want = FORMATS.get(st.image_type, (None,))[0]
        if fmt is not None and want and fmt.on_switch() != want and fmt.member(want) is not None:
            fmt.set_one(want)
            self.publish(fmt)
            ccd_info = self.vector("CCD_INFO")
            if ccd_info is not None:
                ccd_info.number("CCD_BITSPERPIXEL").value = 16 if st.image_type == "RAW16" else 8
                self.publish(ccd_info)
        ctl = self.vector("CCD_CONTROLS")
        if ctl is not None:
            changed = False
            for m in _numbers(ctl):
                key = core_controls.setting_for(m.name)
                val = getattr(st, key) if key is not None else st.extra_controls.get(m.name)
                if val is not None and m.value != int(val):
                    m.value = int(val)
                    changed = True
            if changed:
                self.publish(ctl)
        flip = self.vector("FLIP")
        if flip is not None:
            h_on, v_on = bool(st.flip & 1), bool(st.flip & 2)
            if (flip.switch("FLIP_HORIZONTAL").on, flip.switch("FLIP_VERTICAL").on) != (h_on, v_on):
                flip.switch("FLIP_HORIZONTAL").on, flip.switch("FLIP_VERTICAL").on = h_on, v_on
                self.publish(flip)
        self._publish_cfa()
        self._publish_autos()
        ramp = self.vector("CCD_TEMP_RAMP")
        if ramp is not None and (ramp.number("RAMP_SLOPE").value, ramp.number("RAMP_THRESHOLD").value) != \
                (st.ramp_slope, st.ramp_threshold):
            ramp.number("RAMP_SLOPE").value, ramp.number("RAMP_THRESHOLD").value = st.ramp_slope, st.ramp_threshold
            self.publish(ramp)
        warm = self.vector("CCD_WARM_AT_DISCONNECT")
        if warm is not None and (warm.on_switch() == "INDI_ENABLED") != st.warm_at_disconnect:
            warm.set_one("INDI_ENABLED" if st.warm_at_disconnect else "INDI_DISABLED")
            self.publish(warm)

    def _publish_cfa(self) -> None:
        """CCD_CFA follows the core's mosaic phase (subframe start and flip), unless a client set it."""
        cfa = self.vector("CCD_CFA")
        phase = self.cam.bayer_phase()
        if cfa is None or phase is None or self._cfa is not None:
            return
        values = {"CFA_TYPE": phase[0], "CFA_OFFSET_X": str(phase[1]), "CFA_OFFSET_Y": str(phase[2])}
        if any(cfa.text(k).value != v for k, v in values.items()):
            for k, v in values.items():
                cfa.text(k).value = v
            self.publish(cfa)


def _numbers(vec: Vector) -> list[Number]:
    """The Number members of a vector."""
    return [m for m in vec.members if isinstance(m, Number)]


def _frame_label(frame_type: str) -> str:
    """The core's frame type ("bias") as INDI's CCD_FRAME_TYPE label and FITS FRAME value ("Bias")."""
    return frame_type.capitalize()


def _one_of(name: str, values: dict[str, Any], members: Sequence[str]) -> str:
    """The one member switched On in a request or saved entry of a 1-of-many switch (raises `Reject`)."""
    unknown = [k for k in values if k not in members]
    on = [k for k, v in values.items() if v is True]
    if unknown or len(on) != 1 or any(not isinstance(v, bool) for v in values.values()):
        raise Reject(f"{name}: exactly one of {', '.join(members)} must be On, got {_show(values)}")
    return on[0]


def _texts(name: str, values: dict[str, Any], members: Sequence[str]) -> dict[str, str]:
    """The text members of a request or saved entry (raises `Reject` naming what is not one)."""
    bad = [k for k, v in values.items() if k not in members or not isinstance(v, str)]
    if bad:
        raise Reject(f"{name}: members are texts named {', '.join(members)}; got {_show(values)}")
    return dict(values)


def _numbers_in(name: str, values: dict[str, Any]) -> dict[str, float]:
    """SCOPE_INFO's members, each a number in its range (raises `Reject`)."""
    out: dict[str, float] = {}
    for k, v in values.items():
        lo, hi = SCOPE_RANGES.get(k, (math.nan, math.nan))  # an unknown member is never in range
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise Reject(f"{name}: members FOCAL_LENGTH (0 to 10000 mm) and APERTURE (0 to 3000 mm), "
                         f"got {_show(values)}")
        out[k] = float(v)
    return out


def _show(values: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text if len(text) <= 120 else text[:117] + "..."


def _int_or(text: object, default: int) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        return default
