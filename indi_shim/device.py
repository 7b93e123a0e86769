"""One ZWO camera as an INDI CCD device, with the standard CCD property set KStars/Ekos expect.

Property names, members, permissions and tabs follow libindi's INDI::CCD and INDI's own ZWO driver
(indi_asi_ccd): CCD_CONTROLS has one member per writable SDK control under the SDK's name and
limits, CCD_CAPTURE_FORMAT members are ASI_IMG_RAW16/ASI_IMG_RAW8/ASI_IMG_RGB24, the device is
named "ZWO CCD <model>", and everything except CONNECTION and DRIVER_INFO exists only while
connected (defined on connect, deleted on disconnect).

State is the device core's: an exposure started over Alpaca shows CCD_EXPOSURE Busy here, and a
disconnect over Alpaca deletes the properties here. Only exposures started over INDI produce a BLOB
(that is what the INDI client asked for); each INDI exposure is tracked by a ticket holding the
connection generation and the core's frame sequence number at start, so an image can never be
delivered for an exposure of an earlier connection.

Requests that are rejected (unknown member, out-of-range number, bad path) are answered to the
requesting client only, with the property in Alert and a message saying what was wrong and what is
allowed; the property's shared state is untouched, so one client's typo cannot make another
client's capture sequence see an Alert.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from . import protocol as P
from .blob import EncodedBlob
from .fits import build_fits, camera_cards, valid_keyword
from .protocol import ALERT, BUSY, IDLE, OK, Number, Switch, Text, Vector
from .stream import StreamError, VideoStream
from .upload import UploadError, UploadTarget
from .xmlparse import Element

if TYPE_CHECKING:
    from .server import ClientConnection, IndiServer

MAIN, IMAGE_SETTINGS, IMAGE_INFO, OPTIONS, INFO, CONTROLS, GUIDE = (
    "Main Control", "Image Settings", "Image Info", "Options", "General Info", "Controls", "Guider Control")

CCD_INTERFACE, GUIDER_INTERFACE = 2, 4

# CCD_CAPTURE_FORMAT members, named as indi_asi names them (Helpers::toString(ASI_IMG_TYPE)).
FORMATS = {"RAW16": ("ASI_IMG_RAW16", "Raw 16 bit"), "RAW8": ("ASI_IMG_RAW8", "Raw 8 bit"),
           "RGB24": ("ASI_IMG_RGB24", "RGB 24")}
FORMAT_BY_MEMBER = {m: k for k, (m, _) in FORMATS.items()}
FRAME_TYPES = {"FRAME_LIGHT": "Light", "FRAME_BIAS": "Bias", "FRAME_DARK": "Dark", "FRAME_FLAT": "Flat"}
# SDK controls that CCD_CONTROLS does not carry (indi_asi excludes them too): they have their own
# properties (CCD_EXPOSURE, CCD_TEMPERATURE/CCD_COOLER, FLIP) or are read-only.
EXCLUDED_CONTROLS = {"Exposure", "TargetTemp", "CoolerOn", "Flip", "Temperature", "CoolPowerPerc", "CoolerPowerPerc"}
# SDK control name -> CameraSettings field, for the controls the device core persists.
CONTROL_SETTING = {"Gain": "gain", "Offset": "offset", "BandWidth": "usb_bandwidth",
                   "HighSpeedMode": "high_speed", "HardwareBin": "hardware_bin"}
BOOL_SETTINGS = {"high_speed", "hardware_bin"}
TEMP_THRESHOLD = 0.5  # C: CCD_TEMPERATURE turns Ok within this of the target, as libindi's default


def device_names(cameras: Sequence[Any], log: logging.Logger) -> list[str]:
    """INDI device names as indi_asi makes them: "ZWO CCD " + the model, " 1", " 2"... for repeats."""
    used: set[str] = set()
    out: list[str] = []
    for cam in cameras:
        model = None
        info = getattr(cam, "info", None)
        if info is None:
            try:
                info = cam.describe()
            except Exception as exc:  # an absent camera still gets a device (it may be plugged in later)
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


@dataclass
class _Ticket:
    """One exposure started over INDI."""

    generation: int
    seq_before: int
    duration: float
    frame_type: str
    started: float
    cancelled: bool = False


class _Reject(Exception):
    """A client request is refused; `message` goes back to that client with the property in Alert."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CameraDevice:
    """The INDI face of one `ZWOCamera`. All methods run on the server's event loop."""

    def __init__(self, server: "IndiServer", cam: Any, name: str) -> None:
        self.server = server
        self.cam = cam
        self.name = name
        self.log = server.log
        self.loop = server.loop
        self.props: dict[str, Vector] = {}  # every property currently defined, in definition order
        self.generation = 0
        self._op_lock = asyncio.Lock()
        self._ticket: _Ticket | None = None
        self._starting = False
        self._external_exposure = False
        self._countdown: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._defining: asyncio.Task[None] | None = None
        self._connected_defined = False
        self._listener = self._on_core_event
        self._custom_fits: dict[str, tuple[str, object, str]] = {}
        self._cfa_override = False
        self._guide_timers: dict[str, asyncio.TimerHandle] = {}
        self._target_temp: float | None = None
        self._pending_fail: asyncio.TimerHandle | None = None
        self._disconnecting = False
        self._upload = UploadTarget(server.upload_dir) if server.upload_dir else None
        self.frames_delivered = 0
        self.stream = VideoStream(self)  # libindi's streaming properties (CCD_VIDEO_STREAM, ...)
        self._base = self._base_properties()

    # ================================================================== properties
    def _vec(self, kind: str, name: str, label: str, group: str, perm: P.Perm, members: list[Any], *,
             rule: str | None = None, timeout: float = 60, state: str = IDLE) -> Vector:
        return Vector(kind, self.name, name, label, group, perm, state, timeout, rule, members)

    def _interface(self) -> int:
        info = self.cam.info
        return CCD_INTERFACE | (GUIDER_INTERFACE if info is not None and info.has_st4 else 0)

    def _base_properties(self) -> dict[str, Vector]:
        conn = self._vec("Switch", "CONNECTION", "Connection", MAIN, "rw",
                         [Switch("CONNECT", "Connect"), Switch("DISCONNECT", "Disconnect", True)], rule="OneOfMany")
        info = self._vec("Text", "DRIVER_INFO", "Driver Info", INFO, "ro", [
            Text("DRIVER_NAME", "Name", "ZWO CCD"),
            Text("DRIVER_EXEC", "Exec", self.server.driver_exec),
            Text("DRIVER_VERSION", "Version", __version__),
            Text("DRIVER_INTERFACE", "Interface", str(self._interface())),
        ])
        return {"CONNECTION": conn, "DRIVER_INFO": info}

    def _full(self) -> tuple[int, int]:
        info = self.cam.info
        return int(info.max_width), int(info.max_height)

    def _frame_values(self) -> tuple[int, int, int, int, int]:
        """(x, y, w, h, bin) in unbinned pixels, as INDI's CCD_FRAME expresses them."""
        st = self.cam.settings
        b = int(st.bin)
        fw, fh = self._full()
        w = st.width if st.width is not None else fw // b
        h = st.height if st.height is not None else fh // b
        return st.start_x * b, st.start_y * b, w * b, h * b, b

    def _connected_properties(self, controls: dict[str, Any], values: dict[str, int]) -> list[Vector]:
        info = self.cam.info
        st = self.cam.settings
        fw, fh = self._full()
        x, y, w, h, b = self._frame_values()
        props: list[Vector] = []
        exp_min = float(info.exposure_min_s)
        exp_max = float(info.exposure_max_s)
        props.append(self._vec("Number", "CCD_EXPOSURE", "Expose", MAIN, "rw", [
            Number("CCD_EXPOSURE_VALUE", "Duration (s)", "%5.2f", exp_min, exp_max, 1, 1)]))
        props.append(self._vec("Switch", "CCD_ABORT_EXPOSURE", "Abort", MAIN, "rw", [Switch("ABORT", "Abort")],
                               rule="AtMostOne"))
        props.append(self._vec("Number", "CCD_FRAME", "Frame", IMAGE_SETTINGS, "rw", [
            Number("X", "Left ", "%4.0f", 0, fw - 1, 0, x), Number("Y", "Top", "%4.0f", 0, fh - 1, 0, y),
            Number("WIDTH", "Width", "%4.0f", 1, fw, 0, w), Number("HEIGHT", "Height", "%4.0f", 1, fh, 0, h)]))
        props.append(self._vec("Switch", "CCD_FRAME_RESET", "Frame Values", IMAGE_SETTINGS, "wo",
                               [Switch("RESET", "Reset")], rule="OneOfMany", timeout=0))
        max_bin = max(info.supported_bins or (1,))
        props.append(self._vec("Number", "CCD_BINNING", "Binning", IMAGE_SETTINGS, "rw", [
            Number("HOR_BIN", "X", "%2.0f", 1, max_bin, 1, b), Number("VER_BIN", "Y", "%2.0f", 1, max_bin, 1, b)]))
        props.append(self._vec("Text", "FITS_HEADER", "FITS Header", INFO, "wo", [
            Text("KEYWORD_NAME", "Name"), Text("KEYWORD_VALUE", "Value"), Text("KEYWORD_COMMENT", "Comment")]))
        status = self.cam.status()
        temp = status.ccd_temperature if status.ccd_temperature is not None else 0.0
        if info.has_cooler:
            lo, hi = self.cam.target_temperature_range()
            props.append(self._vec("Number", "CCD_TEMPERATURE", "Temperature", MAIN, "rw", [
                Number("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%5.2f", lo, hi, 0, round(temp, 2))]))
            props.append(self._vec("Switch", "CCD_COOLER", "Cooler", MAIN, "wo", [
                Switch("COOLER_ON", "ON", bool(status.cooler_on)), Switch("COOLER_OFF", "OFF", not status.cooler_on)],
                rule="OneOfMany", timeout=0, state=OK if status.cooler_on else IDLE))
            power = status.cooler_power or 0.0
            props.append(self._vec("Number", "CCD_COOLER_POWER", "Cooling Power", MAIN, "ro", [
                Number("CCD_COOLER_VALUE", "Cooling Power (%)", "%+06.2f", 0, 100, 0.2, power)],
                state=BUSY if power > 0 else IDLE))
        else:
            # As indi_asi: uncooled cameras still report their sensor temperature, read-only.
            props.append(self._vec("Number", "CCD_TEMPERATURE", "Temperature", MAIN, "ro", [
                Number("CCD_TEMPERATURE_VALUE", "Temperature (C)", "%5.2f", -50, 70, 0, round(temp, 2))]))
        formats = [k for k in ("RAW16", "RAW8", "RGB24") if k in info.image_types]
        props.append(self._vec("Switch", "CCD_CAPTURE_FORMAT", "Format", IMAGE_SETTINGS, "rw",
                               [Switch(FORMATS[k][0], FORMATS[k][1], k == st.image_type) for k in formats],
                               rule="OneOfMany"))
        props.append(self._vec("Switch", "CCD_TRANSFER_FORMAT", "Encode", IMAGE_SETTINGS, "rw", [
            Switch("FORMAT_FITS", "FITS", True), Switch("FORMAT_NATIVE", "Native")], rule="OneOfMany"))
        props.append(self._vec("Number", "CCD_INFO", "CCD Information", IMAGE_INFO, "ro", [
            Number("CCD_MAX_X", "Max. Width", "%.f", 1, 16000, 0, fw),
            Number("CCD_MAX_Y", "Max. Height", "%.f", 1, 16000, 0, fh),
            Number("CCD_PIXEL_SIZE", "Pixel size (um)", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_PIXEL_SIZE_X", "Pixel size X", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_PIXEL_SIZE_Y", "Pixel size Y", "%.2f", 1, 40, 0, info.pixel_size_um),
            Number("CCD_BITSPERPIXEL", "Bits per pixel", "%.f", 8, 64, 0, 16 if st.image_type == "RAW16" else 8)]))
        props.append(self._vec("BLOB", "CCD1", "Image Data", IMAGE_INFO, "ro", [P.BLOB("CCD1", "Image")]))
        if info.has_st4:
            props.append(self._vec("Number", "TELESCOPE_TIMED_GUIDE_NS", "Guide N/S", GUIDE, "rw", [
                Number("TIMED_GUIDE_N", "North (ms)", "%.f", 0, 60000, 100, 0),
                Number("TIMED_GUIDE_S", "South (ms)", "%.f", 0, 60000, 100, 0)]))
            props.append(self._vec("Number", "TELESCOPE_TIMED_GUIDE_WE", "Guide E/W", GUIDE, "rw", [
                Number("TIMED_GUIDE_W", "West (ms)", "%.f", 0, 60000, 100, 0),
                Number("TIMED_GUIDE_E", "East (ms)", "%.f", 0, 60000, 100, 0)]))
        props.append(self._vec("Switch", "CCD_FRAME_TYPE", "Type", IMAGE_SETTINGS, "rw",
                               [Switch(k, v, k == "FRAME_LIGHT") for k, v in FRAME_TYPES.items()], rule="OneOfMany"))
        if info.is_color and info.bayer_pattern:
            props.append(self._vec("Text", "CCD_CFA", "Bayer Info", IMAGE_INFO, "rw", [
                Text("CFA_OFFSET_X", "X Offset", "0"), Text("CFA_OFFSET_Y", "Y Offset", "0"),
                Text("CFA_TYPE", "Filter", info.bayer_pattern)]))
        props.append(self._vec("Switch", "UPLOAD_MODE", "Upload", OPTIONS, "rw", [
            Switch("UPLOAD_CLIENT", "Client", True), Switch("UPLOAD_LOCAL", "Local"), Switch("UPLOAD_BOTH", "Both")],
            rule="OneOfMany", timeout=0))
        props.append(self._vec("Text", "UPLOAD_SETTINGS", "Upload Settings", OPTIONS, "rw", [
            Text("UPLOAD_DIR", "Dir", str(self._upload.base) if self._upload else ""),
            Text("UPLOAD_PREFIX", "Prefix", "IMAGE_XXX")]))
        members = []
        for cname, ctl in controls.items():
            if not ctl.writable or cname in EXCLUDED_CONTROLS:
                continue
            step = (ctl.max - ctl.min) / 10.0 if ctl.max - ctl.min > 1 else 1
            members.append(Number(cname, cname, "%g", ctl.min, ctl.max, step, values.get(cname, ctl.default)))
        if members:
            props.append(self._vec("Number", "CCD_CONTROLS", "Controls", CONTROLS, "rw", members))
        if "Flip" in controls:
            flip = int(st.flip)
            props.append(self._vec("Switch", "FLIP", "Flip", CONTROLS, "rw", [
                Switch("FLIP_HORIZONTAL", "Horizontal", bool(flip & 1)),
                Switch("FLIP_VERTICAL", "Vertical", bool(flip & 2))], rule="AnyOfMany"))
        props.extend(self.stream.properties())
        return props

    # ================================================================== definitions to clients
    def send_definitions(self, client: "ClientConnection", name: str | None = None) -> None:
        for vec in list(self._base.values()) + list(self.props.values()):
            if name is None or vec.name == name:
                client.send(vec.def_xml(), self.name, vec.name)

    def _broadcast(self, payload: bytes, prop: str | None = None) -> None:
        self.server.broadcast(payload, self.name, prop)

    def _set(self, vec: Vector, message: str | None = None, **kw: Any) -> None:
        """Publish a property's current values to every interested client."""
        if vec.name in self.props or vec.name in self._base:
            self._broadcast(vec.set_xml(message, **kw), vec.name)

    def message(self, text: str, client: "ClientConnection | None" = None) -> None:
        payload = P.message_xml(text, self.name)
        if client is None:
            self._broadcast(payload)
        else:
            client.send(payload, self.name, force=True)

    def _reject(self, client: "ClientConnection", vec: Vector | None, why: str) -> None:
        """Answer a refused request: that client sees the property in Alert with the reason."""
        self.log.info("INDI %s: rejected request from %s: %s", self.name, client.peer, why)
        if vec is not None:
            client.send(vec.set_xml(f"[ERROR] {why}", state=ALERT), self.name, vec.name, force=True)
        else:
            self.message(f"[ERROR] {why}", client)

    def _define_connected(self, props: list[Vector]) -> None:
        self.props = {v.name: v for v in props}
        for v in props:
            self._broadcast(v.def_xml(), v.name)
        self._connected_defined = True
        if self._poller is None or self._poller.done():
            self._poller = self.loop.create_task(self._poll(), name=f"indi-poll-{self.name}")

    def _delete_connected(self) -> None:
        if not self._connected_defined:
            return
        self._connected_defined = False
        for name in list(self.props):
            self._broadcast(P.del_property_xml(self.name, name), name)
        self.props = {}
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    # ================================================================== core events
    def attach(self) -> None:
        self.cam.add_listener(self._listener)
        st = self.cam.status()
        if st.connected and self.cam.info is not None:
            # Connected before the INDI server started (e.g. by Alpaca): show it connected.
            self._defining = self.loop.create_task(self._adopt_connection())

    def detach(self) -> None:
        try:
            self.cam.remove_listener(self._listener)
        except Exception:
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
        kind = event.kind
        data = event.data
        if kind == "state":
            self._on_state(data.get("old"), data.get("new"))
            self.stream.on_core_state()
        elif kind == "frame":
            self._on_frame(data.get("frame"))
        elif kind == "connected":
            if not self._connected_defined and (self._defining is None or self._defining.done()):
                self._defining = self.loop.create_task(self._adopt_connection())
            elif self._connected_defined:
                self.message("[INFO] camera connection (re)established")
        elif kind == "disconnected":
            self._on_disconnected(external=not self._disconnecting)
        elif kind == "error":
            msg = data.get("message") or "camera error"
            self.message(f"[ERROR] {msg}")
            if self._pending_fail is not None:
                # Our exposure just ended without an image; this error says why.
                self._pending_fail.cancel()
                self._pending_fail = None
                self._fail_exposure(str(msg))
        elif kind == "settings":
            self._sync_settings()

    async def _adopt_connection(self) -> None:
        """Define the connected property set for a connection made elsewhere (Alpaca, startup)."""
        async with self._op_lock:
            if self._connected_defined or not self.cam.status().connected:
                return
            try:
                props = await self._build_connected()
            except Exception as exc:
                self.log.warning("INDI %s: cannot read camera state after connect: %s", self.name, exc)
                return
            if not self.cam.status().connected or self._connected_defined:
                return
            conn = self._base["CONNECTION"]
            conn.set_one("CONNECT")
            conn.state = OK
            self._set(conn)
            self._define_connected(props)

    def _on_disconnected(self, external: bool) -> None:
        self.generation += 1
        self.stream.on_disconnected()
        self._clear_ticket()
        self._stop_countdown()
        self._external_exposure = False
        self._delete_connected()
        conn = self._base["CONNECTION"]
        if conn.on_switch() != "DISCONNECT" or conn.state != IDLE:
            conn.set_one("DISCONNECT")
            conn.state = IDLE
            self._set(conn, "[INFO] camera disconnected" + (" (by another client)" if external else ""))

    def _on_state(self, old: Any, new: Any) -> None:
        new_v = getattr(new, "value", new)
        old_v = getattr(old, "value", old)
        exp = self.props.get("CCD_EXPOSURE")
        if new_v == "exposing" and self._ticket is None and not self._starting and exp is not None:
            # Started elsewhere (Alpaca): show the camera busy, with a countdown, but no image follows.
            self._external_exposure = True
            st = self.cam.status()
            duration = st.last_exposure_duration or 0.0
            self._start_countdown(duration, time.monotonic())
        elif new_v in ("idle", "image_ready", "error", "disconnected", "disconnecting") and \
                old_v in ("exposing", "reading"):
            if self._external_exposure:
                self._external_exposure = False
                self._stop_countdown()
                if exp is not None:
                    exp["CCD_EXPOSURE_VALUE"].value = 0
                    exp.state = IDLE
                    self._set(exp)
            elif self._ticket is not None and new_v != "image_ready" and not self._ticket.cancelled:
                # Our exposure ended without an image: aborted elsewhere, or failed. The core emits the
                # reason as an "error" event right after the state change; wait a moment for it.
                ticket = self._ticket
                self._clear_ticket()
                self._stop_countdown()

                def fail() -> None:
                    self._pending_fail = None
                    if ticket.generation == self.generation:
                        self._fail_exposure("the exposure was aborted (by another client or the camera)")

                if self._pending_fail is not None:
                    self._pending_fail.cancel()
                self._pending_fail = self.loop.call_later(0.05, fail)

    # ================================================================== requests
    def handle_new(self, client: "ClientConnection", el: Element) -> None:
        name = el.get("name") or ""
        vec = self._base.get(name) or self.props.get(name)
        if vec is None:
            known = ", ".join(list(self._base) + list(self.props))
            hint = "" if self._connected_defined else " (most properties exist only while connected)"
            self._reject(client, None, f"unknown property {name!r}{hint}; properties: {known}")
            return
        kind = el.tag[3:-6]  # newXxxVector -> Xxx
        if kind != vec.kind:
            self._reject(client, vec, f"{name} is a {vec.kind} property, not {kind}")
            return
        if vec.perm == "ro":
            self._reject(client, vec, f"{name} is read-only")
            return
        try:
            values = self._parse_members(vec, el)
        except _Reject as exc:
            self._reject(client, vec, exc.message)
            return
        if name == "CCD_ABORT_EXPOSURE":  # must not wait behind a long operation
            self.loop.create_task(self._guarded(client, vec, self._abort(client, vec, values)))
            return
        self.loop.create_task(self._serialized(client, vec, values))

    def _parse_members(self, vec: Vector, el: Element) -> dict[str, Any]:
        values: dict[str, Any] = {}
        expect = "one" + vec.kind
        for child in el.children:
            if child.tag != expect:
                raise _Reject(f"<{child.tag}> is not a member element of a {vec.kind} vector (expected <{expect}>)")
            mname = child.get("name") or ""
            m = vec.member(mname)
            if m is None:
                raise _Reject(f"{vec.name} has no member {mname!r}; members: {', '.join(x.name for x in vec.members)}")
            if isinstance(m, Number):
                try:
                    v = P.parse_number(child.text)
                except ValueError as exc:
                    raise _Reject(f"{vec.name}.{mname}: {exc}") from None
                if not (m.min <= v <= m.max) and not (m.min == m.max == 0):
                    raise _Reject(f"{vec.name}.{mname} = {P.fmt_number(v)} is out of range "
                                  f"[{P.fmt_number(m.min)}, {P.fmt_number(m.max)}]")
                values[mname] = v
            elif isinstance(m, Switch):
                t = child.text.strip()
                if t not in ("On", "Off"):
                    raise _Reject(f"{vec.name}.{mname}: switch state must be On or Off, got {t[:40]!r}")
                values[mname] = t == "On"
            elif isinstance(m, Text):
                values[mname] = child.text
            else:
                raise _Reject(f"{vec.name} cannot be set by clients")
        if not values:
            raise _Reject(f"{vec.name}: the request names no members")
        if vec.kind == "Switch" and vec.rule == "OneOfMany":
            on = [k for k, v in values.items() if v]
            if len(on) > 1:
                raise _Reject(f"{vec.name}: only one of {', '.join(m.name for m in vec.members)} may be On")
            if not on:
                raise _Reject(f"{vec.name}: one of {', '.join(m.name for m in vec.members)} must be On")
        return values

    async def _serialized(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        async with self._op_lock:
            handler = getattr(self, "_new_" + vec.name.lower(), None) or self.stream.handler(vec.name)
            if handler is None:  # pragma: no cover - every writable property has a handler
                self._reject(client, vec, f"{vec.name} cannot be set")
                return
            await self._guarded(client, vec, handler(client, vec, values))

    async def _guarded(self, client: "ClientConnection", vec: Vector, coro: Any) -> None:
        try:
            await coro
        except (_Reject, StreamError) as exc:
            self._reject(client, vec, exc.message)
        except Exception as exc:
            msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if not _is_camera_error(exc):
                self.log.exception("INDI %s: %s failed", self.name, vec.name)
            self._reject(client, vec, msg)

    def _require_connected(self, vec: Vector) -> None:
        if not self._connected_defined:
            raise _Reject(f"{vec.name}: the camera is not connected")

    # ---------------------------------------------------------------- CONNECTION
    async def _new_connection(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        want = "CONNECT" if values.get("CONNECT") else "DISCONNECT"
        if want == "CONNECT":
            if self._connected_defined and self.cam.status().connected:
                vec.set_one("CONNECT")
                vec.state = OK
                self._set(vec)
                return
            vec.state = BUSY
            self._set(vec)
            try:
                await self.server.call(self.cam.connect)
                props = await self._build_connected()
            except Exception as exc:
                vec.set_one("DISCONNECT")
                vec.state = ALERT
                msg = getattr(exc, "message", None) or str(exc)
                self._set(vec, f"[ERROR] connection failed: {msg}")
                if not _is_camera_error(exc):
                    self.log.exception("INDI %s: connect failed", self.name)
                return
            vec.set_one("CONNECT")
            vec.state = OK
            self._base["DRIVER_INFO"]["DRIVER_INTERFACE"].value = str(self._interface())
            self._set(self._base["DRIVER_INFO"])
            self._set(vec, "[INFO] camera connected")
            if not self._connected_defined:
                self._define_connected(props)
        else:
            self.generation += 1  # from now on, nothing of the old connection is delivered
            self.stream.on_disconnected()  # the core's teardown below stops its capture
            self._clear_ticket()
            self._stop_countdown()
            vec.state = BUSY
            self._set(vec)
            self._disconnecting = True
            try:
                await self.server.call(self.cam.disconnect_camera)
            finally:
                self._disconnecting = False
                self._on_disconnected(external=False)

    async def _build_connected(self) -> list[Vector]:
        def read() -> tuple[dict[str, Any], dict[str, int]]:
            controls = self.cam.controls()
            values: dict[str, int] = {}
            for cname, ctl in controls.items():
                if ctl.writable and cname not in EXCLUDED_CONTROLS:
                    try:
                        values[cname] = int(self.cam.control_value(cname))
                    except Exception:
                        values[cname] = int(ctl.default)
            return controls, values

        controls, values = await self.server.call(read)
        return self._connected_properties(controls, values)

    # ---------------------------------------------------------------- exposure
    async def _new_ccd_exposure(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        duration = float(values["CCD_EXPOSURE_VALUE"])
        frame_type = FRAME_TYPES.get(self.props["CCD_FRAME_TYPE"].on_switch() or "FRAME_LIGHT", "Light")
        if frame_type == "Bias":
            duration = float(vec["CCD_EXPOSURE_VALUE"].min)
        if self.stream.active:
            # As indi_asi (its exposure replaces the video worker), the exposure wins; here the
            # stream is turned off visibly rather than left showing On.
            await self.stream.stop("[WARNING] video stream stopped: an exposure was requested")
        if self._ticket is not None or self._external_exposure:
            # libindi aborts a running exposure when a new one is requested.
            await self._do_abort()
        light = frame_type in ("Light", "Flat")
        # The ticket exists before the call: a very short exposure can finish (and its frame event
        # arrive) before start_exposure's result reaches this coroutine.
        ticket = _Ticket(self.generation, self.cam.status().frame_seq, duration, frame_type, time.monotonic())
        self._ticket = ticket
        self._starting = True
        try:
            await self.server.call(self.cam.start_exposure, duration, light)
        except BaseException:
            if self._ticket is ticket:
                self._ticket = None
            raise
        finally:
            self._starting = False
        if self._ticket is not ticket:
            # It already ended (read out, failed - e.g. the camera was just unplugged -, aborted or
            # disconnected) while this call was on its way back, and that outcome was or is being
            # published: Busy now could land after it and would never be cleared.
            return
        vec["CCD_EXPOSURE_VALUE"].value = duration
        vec.state = BUSY
        self._set(vec)
        self._start_countdown(duration, ticket.started)

    def _start_countdown(self, duration: float, started: float) -> None:
        self._stop_countdown()
        self._countdown = self.loop.create_task(self._count_down(duration, started))

    def _stop_countdown(self) -> None:
        if self._countdown is not None:
            self._countdown.cancel()
            self._countdown = None

    async def _count_down(self, duration: float, started: float) -> None:
        """CCD_EXPOSURE Busy with the time left about once a second, on whole seconds (as indi_asi)."""
        try:
            while True:
                exp = self.props.get("CCD_EXPOSURE")
                if exp is None:
                    return
                left = max(0.0, duration - (time.monotonic() - started))
                if left > 1.1:
                    shown = float(round(left))
                    delay = left - math.floor(left)  # land on the next whole second
                    if delay < 0.05:
                        delay += 1.0
                else:
                    shown = round(left, 2)
                    delay = left
                exp["CCD_EXPOSURE_VALUE"].value = shown
                exp.state = BUSY
                self._set(exp)
                if left <= 0:
                    return  # reading out; the image (or a failure) sets the final state
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass

    async def _abort(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        if not values.get("ABORT", False):
            vec.state = IDLE
            self._set(vec)
            return
        await self._do_abort()
        vec["ABORT"].on = False
        vec.state = OK
        exp = self.props.get("CCD_EXPOSURE")
        if exp is not None:
            exp["CCD_EXPOSURE_VALUE"].value = 0
            exp.state = IDLE
        self._set(vec)
        if exp is not None:
            self._set(exp)

    async def _do_abort(self) -> None:
        t = self._ticket
        if t is not None:
            t.cancelled = True
        self._ticket = None
        self._external_exposure = False
        self._stop_countdown()
        await self.server.call(self.cam.abort_exposure)

    def _clear_ticket(self) -> None:
        if self._ticket is not None:
            self._ticket.cancelled = True
        self._ticket = None

    def _fail_exposure(self, why: str) -> None:
        self._clear_ticket()
        self._stop_countdown()
        exp = self.props.get("CCD_EXPOSURE")
        if exp is not None:
            exp["CCD_EXPOSURE_VALUE"].value = 0
            exp.state = ALERT
            self._set(exp, f"[ERROR] exposure failed: {why}")

    def _on_frame(self, frame: Any) -> None:
        t = self._ticket
        if frame is None or t is None or t.cancelled or t.generation != self.generation or frame.seq <= t.seq_before:
            return  # not ours (Alpaca's, continuous capture, or from before a disconnect)
        self._ticket = None
        self._stop_countdown()
        self.loop.create_task(self._deliver(frame, t))

    def _fits_cards(self, frame: Any, t: _Ticket) -> list[tuple[str, object, str]]:
        info = self.cam.info
        bayer = None
        if frame.bayer_pattern and frame.image_type != "RGB24":
            pattern, bx, by = frame.bayer_pattern, frame.bayer_offset_x, frame.bayer_offset_y
            cfa = self.props.get("CCD_CFA")
            if self._cfa_override and cfa is not None:
                pattern = cfa["CFA_TYPE"].value or pattern
                bx = _int_or(cfa["CFA_OFFSET_X"].value, bx)
                by = _int_or(cfa["CFA_OFFSET_Y"].value, by)
            bayer = (pattern, bx, by)
        temp = frame.temperature
        if temp is None:
            temp = self.cam.status().ccd_temperature
        sub = (frame.start_x, frame.start_y) if (frame.start_x or frame.start_y) else None
        return camera_cards(exptime=frame.duration, start=frame.start_time, instrume=self.name,
                            frame_type=t.frame_type, xbin=frame.bin, ybin=frame.bin,
                            pixel_size_um=info.pixel_size_um if info else None, ccd_temp=temp,
                            gain=frame.gain, offset=frame.offset, bayer=bayer, subframe=sub,
                            extra=list(self._custom_fits.values()))

    async def _deliver(self, frame: Any, t: _Ticket) -> None:
        """Build the image file once, save and/or send it, then turn CCD_EXPOSURE Ok (in that order)."""
        gen = t.generation
        native = self.props.get("CCD_TRANSFER_FORMAT") is not None and \
            self.props["CCD_TRANSFER_FORMAT"].on_switch() == "FORMAT_NATIVE"
        mode = (self.props.get("UPLOAD_MODE") or Vector("Switch", "", "", "", "")).on_switch() or "UPLOAD_CLIENT"
        try:
            if native:
                data = frame.data
                payload = await self.server.compute(lambda: np.ascontiguousarray(data).view(np.uint8).reshape(-1))
                raw, ext = memoryview(payload).cast("B"), ".bin"
            else:
                cards = self._fits_cards(frame, t)
                fits = await self.server.compute(build_fits, frame.data, cards)
                raw, ext = fits.memoryview(), ".fits"
        except Exception as exc:
            self.log.exception("INDI %s: building the image file failed", self.name)
            if gen == self.generation:
                self._fail_exposure(f"cannot build the image file: {exc}")
            return
        if gen != self.generation:
            return  # disconnected meanwhile: never deliver into a new connection
        sent = 0
        if mode in ("UPLOAD_CLIENT", "UPLOAD_BOTH"):
            if self.server.clients_wanting_blob(self.name, "CCD1"):
                # Encode once (in the CPU pool), then hand the same bytes to every client.
                blob = EncodedBlob(raw, ext, self.loop)
                blob.start(self.server.cpu_pool)
                if not await blob.wait():
                    self._fail_exposure(f"cannot encode the image: {blob.error}")
                    return
                if gen != self.generation:
                    return
                sent = self.server.broadcast_blob(self.name, "CCD1", "CCD1", blob)
        if mode in ("UPLOAD_LOCAL", "UPLOAD_BOTH"):
            await self._save_local(raw, ext, gen)
            if gen != self.generation:
                return
        self.frames_delivered += 1
        exp = self.props.get("CCD_EXPOSURE")
        if exp is not None:
            exp["CCD_EXPOSURE_VALUE"].value = 0
            exp.state = OK
            self._set(exp)

    async def _save_local(self, raw: memoryview, ext: str, gen: int) -> None:
        settings = self.props.get("UPLOAD_SETTINGS")
        if self._upload is None or settings is None:
            self.message("[ERROR] local upload is not enabled on this server (no upload directory configured); "
                         "the image was not saved")
            return
        try:
            comps = self._upload.components(str(settings["UPLOAD_DIR"].value))
            prefix = str(settings["UPLOAD_PREFIX"].value)
            path = await self.server.compute(self._upload.save, comps, prefix, ext, raw)
        except (UploadError, OSError) as exc:
            self.message(f"[ERROR] cannot save the image: {exc}")
            return
        if gen != self.generation:
            return
        fp = self.props.get("CCD_FILE_PATH")
        if fp is None:
            fp = self._vec("Text", "CCD_FILE_PATH", "Filename", IMAGE_INFO, "ro", [Text("FILE_PATH", "Path")])
            self.props[fp.name] = fp
            self._broadcast(fp.def_xml(), fp.name)
        fp["FILE_PATH"].value = path
        fp.state = OK
        self._set(fp)
        self.message(f"[INFO] Image saved to {path}")

    # ---------------------------------------------------------------- frame, binning, format
    def _apply_frame(self, x: int, y: int, w: int, h: int, b: int) -> dict[str, Any]:
        fw, fh = self._full()
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise _Reject(f"invalid frame ({x},{y}) {w}x{h}: X and Y must be >= 0, WIDTH and HEIGHT > 0")
        if x + w > fw or y + h > fh:
            raise _Reject(f"frame ({x},{y}) {w}x{h} exceeds the {fw}x{fh} sensor: need X+WIDTH <= {fw} and "
                          f"Y+HEIGHT <= {fh}")
        bw, bh = w // b, h // b
        if bw < 1 or bh < 1:
            raise _Reject(f"frame {w}x{h} is smaller than one {b}x{b} binned pixel")
        full = x == 0 and y == 0 and w >= (fw // b) * b and h >= (fh // b) * b
        return {"bin": b, "start_x": x // b, "start_y": y // b,
                "width": None if full else bw, "height": None if full else bh}

    def _publish_frame(self) -> None:
        frame = self.props.get("CCD_FRAME")
        binning = self.props.get("CCD_BINNING")
        x, y, w, h, b = self._frame_values()
        if frame is not None:
            for k, v in (("X", x), ("Y", y), ("WIDTH", w), ("HEIGHT", h)):
                frame[k].value = v
            frame.state = OK
            self._set(frame)
        if binning is not None:
            binning["HOR_BIN"].value = b
            binning["VER_BIN"].value = b
            binning.state = OK
            self._set(binning)

    async def _new_ccd_frame(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        x, y, w, h, b = self._frame_values()
        x = int(values.get("X", x))
        y = int(values.get("Y", y))
        w = int(values.get("WIDTH", w))
        h = int(values.get("HEIGHT", h))
        changes = self._apply_frame(x, y, w, h, b)
        await self.server.call(lambda: self.cam.configure(**changes))
        self._publish_frame()

    async def _new_ccd_binning(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        b = int(values.get("HOR_BIN", values.get("VER_BIN", 1)))
        bins = tuple(self.cam.info.supported_bins)
        if b not in bins:
            raise _Reject(f"binning {b}x{b} is not supported by this camera; supported: "
                          f"{', '.join(f'{v}x{v}' for v in bins)}")
        x, y, w, h, _ = self._frame_values()
        fw, fh = self._full()
        # Keep the frame in unbinned pixels (as indi_asi does); shrink it to whole binned pixels.
        changes = self._apply_frame(x - x % b, y - y % b, max(b, w - w % b), max(b, h - h % b), b)
        await self.server.call(lambda: self.cam.configure(**changes))
        self._publish_frame()

    async def _new_ccd_frame_reset(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        await self.server.call(lambda: self.cam.configure(bin=1, start_x=0, start_y=0, width=None, height=None))
        vec["RESET"].on = False
        vec.state = OK
        self._set(vec)
        self._publish_frame()

    async def _new_ccd_frame_type(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        chosen = next(k for k, v in values.items() if v)
        vec.set_one(chosen)
        vec.state = OK
        self._set(vec)
        info = self.cam.info
        if chosen in ("FRAME_DARK", "FRAME_BIAS") and info is not None and not info.has_shutter:
            self.message(f"[WARNING] The CCD does not have a shutter. Cover the camera in order to take a "
                         f"{FRAME_TYPES[chosen].lower()} frame.")

    async def _new_ccd_capture_format(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        chosen = next(k for k, v in values.items() if v)
        fmt = FORMAT_BY_MEMBER[chosen]
        await self.server.call(lambda: self.cam.configure(image_type=fmt))
        vec.set_one(chosen)
        vec.state = OK
        self._set(vec)
        ccd_info = self.props.get("CCD_INFO")
        if ccd_info is not None:
            ccd_info["CCD_BITSPERPIXEL"].value = 16 if fmt == "RAW16" else 8
            self._set(ccd_info)

    async def _new_ccd_transfer_format(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        chosen = next(k for k, v in values.items() if v)
        vec.set_one(chosen)
        vec.state = OK
        self._set(vec)

    # ---------------------------------------------------------------- controls
    async def _new_ccd_controls(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        changes: dict[str, Any] = {}
        direct: dict[str, int] = {}
        for cname, v in values.items():
            if abs(v - round(v)) > 1e-9:
                raise _Reject(f"CCD_CONTROLS.{cname} must be a whole number, got {P.fmt_number(v)}")
            if abs(v - vec[cname].value) < 0.01:  # type: ignore[union-attr]
                continue  # clients send the whole vector; only changed members are applied (as indi_asi)
            key = CONTROL_SETTING.get(cname)
            if key is not None:
                changes[key] = bool(round(v)) if key in BOOL_SETTINGS else int(round(v))
            elif hasattr(self.cam, "set_control"):
                direct[cname] = int(round(v))
            else:
                raise _Reject(f"CCD_CONTROLS.{cname} cannot be changed through this server yet; adjustable here: "
                              f"{', '.join(k for k in CONTROL_SETTING if vec.member(k) is not None)}")

        def apply() -> None:
            if changes:
                self.cam.configure(**changes)
            for cname, v in direct.items():
                self.cam.set_control(cname, v)

        await self.server.call(apply)
        for cname, v in values.items():
            vec[cname].value = int(round(v))
        vec.state = OK
        self._set(vec)

    async def _new_flip(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        h = values.get("FLIP_HORIZONTAL", vec["FLIP_HORIZONTAL"].on)
        v = values.get("FLIP_VERTICAL", vec["FLIP_VERTICAL"].on)
        await self.server.call(lambda: self.cam.configure(flip=(1 if h else 0) | (2 if v else 0)))
        vec["FLIP_HORIZONTAL"].on, vec["FLIP_VERTICAL"].on = bool(h), bool(v)
        vec.state = OK
        self._set(vec)

    # ---------------------------------------------------------------- cooling
    async def _new_ccd_temperature(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        target = float(values["CCD_TEMPERATURE_VALUE"])
        await self.server.call(self.cam.set_cooler, True, target)
        self._target_temp = target
        cur = self.cam.status().ccd_temperature
        vec.state = OK if cur is not None and abs(cur - target) <= TEMP_THRESHOLD else BUSY
        self._set(vec, f"[INFO] Setting temperature to {target:.2f} C.")
        cooler = self.props.get("CCD_COOLER")
        if cooler is not None and cooler.on_switch() != "COOLER_ON":
            cooler.set_one("COOLER_ON")
            cooler.state = OK
            self._set(cooler)

    async def _new_ccd_cooler(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        self._require_connected(vec)
        on = bool(values.get("COOLER_ON"))
        await self.server.call(self.cam.set_cooler, on, None)
        vec.set_one("COOLER_ON" if on else "COOLER_OFF")
        vec.state = OK if on else IDLE
        self._set(vec)
        if not on:
            self._target_temp = None
            temp = self.props.get("CCD_TEMPERATURE")
            if temp is not None and temp.state == BUSY:
                temp.state = IDLE
                self._set(temp)

    # ---------------------------------------------------------------- guiding
    async def _new_telescope_timed_guide_ns(self, client: "ClientConnection", vec: Vector,
                                            values: dict[str, Any]) -> None:
        await self._guide(vec, values, ("TIMED_GUIDE_N", "N"), ("TIMED_GUIDE_S", "S"))

    async def _new_telescope_timed_guide_we(self, client: "ClientConnection", vec: Vector,
                                            values: dict[str, Any]) -> None:
        await self._guide(vec, values, ("TIMED_GUIDE_W", "W"), ("TIMED_GUIDE_E", "E"))

    async def _guide(self, vec: Vector, values: dict[str, Any], a: tuple[str, str], b: tuple[str, str]) -> None:
        self._require_connected(vec)
        va, vb = float(values.get(a[0], 0)), float(values.get(b[0], 0))
        if va > 0 and vb > 0:
            raise _Reject(f"{vec.name}: guide in one direction at a time ({a[0]} or {b[0]})")
        member, direction, ms = (a[0], a[1], va) if va > 0 else (b[0], b[1], vb)
        old = self._guide_timers.pop(vec.name, None)
        if old is not None:
            old.cancel()
        if ms <= 0:
            vec.state = OK
            for m in vec.members:
                m.value = 0  # type: ignore[union-attr]
            self._set(vec)
            return
        await self.server.call(self.cam.pulse_guide, direction, int(round(ms)))
        for m in vec.members:
            m.value = ms if m.name == member else 0  # type: ignore[union-attr]
        vec.state = BUSY
        self._set(vec)

        def done() -> None:
            self._guide_timers.pop(vec.name, None)
            if vec.name in self.props:
                for m in vec.members:
                    m.value = 0  # type: ignore[union-attr]
                vec.state = OK
                self._set(vec)

        self._guide_timers[vec.name] = self.loop.call_later(ms / 1000.0, done)

    # ---------------------------------------------------------------- upload, CFA, FITS header
    async def _new_upload_mode(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        chosen = next(k for k, v in values.items() if v)
        if chosen != "UPLOAD_CLIENT" and self._upload is None:
            raise _Reject("local upload is not enabled on this server: start it with an upload directory "
                          "(ZWO_ALPACA_UPLOAD_DIR or the server's upload_dir option); only UPLOAD_CLIENT is available")
        vec.set_one(chosen)
        vec.state = OK
        self._set(vec)
        if chosen == "UPLOAD_CLIENT":
            fp = self.props.pop("CCD_FILE_PATH", None)
            if fp is not None:
                self._broadcast(P.del_property_xml(self.name, fp.name), fp.name)
        elif "CCD_FILE_PATH" not in self.props:
            fp = self._vec("Text", "CCD_FILE_PATH", "Filename", IMAGE_INFO, "ro", [Text("FILE_PATH", "Path")])
            self.props[fp.name] = fp
            self._broadcast(fp.def_xml(), fp.name)

    async def _new_upload_settings(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        d = str(values.get("UPLOAD_DIR", vec["UPLOAD_DIR"].value))
        prefix = str(values.get("UPLOAD_PREFIX", vec["UPLOAD_PREFIX"].value))
        if self._upload is not None:
            try:
                comps = self._upload.components(d)
                UploadTarget.check_prefix(prefix)
            except UploadError as exc:
                raise _Reject(str(exc)) from None
            d = self._upload.display(comps)
        else:
            try:
                UploadTarget.check_prefix(prefix)
            except UploadError as exc:
                raise _Reject(str(exc)) from None
        vec["UPLOAD_DIR"].value = d
        vec["UPLOAD_PREFIX"].value = prefix
        vec.state = OK
        self._set(vec)

    async def _new_ccd_cfa(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        for k in ("CFA_OFFSET_X", "CFA_OFFSET_Y"):
            if k in values and values[k].strip() not in ("0", "1"):
                raise _Reject(f"CCD_CFA.{k} must be 0 or 1, got {values[k][:20]!r}")
        if "CFA_TYPE" in values and values["CFA_TYPE"].strip().upper() not in ("RGGB", "BGGR", "GRBG", "GBRG"):
            raise _Reject(f"CCD_CFA.CFA_TYPE must be RGGB, BGGR, GRBG or GBRG, got {values['CFA_TYPE'][:20]!r}")
        for k, v in values.items():
            vec[k].value = v.strip().upper() if k == "CFA_TYPE" else v.strip()
        self._cfa_override = True
        vec.state = OK
        self._set(vec)

    async def _new_fits_header(self, client: "ClientConnection", vec: Vector, values: dict[str, Any]) -> None:
        key = str(values.get("KEYWORD_NAME", "")).strip().upper()
        value = str(values.get("KEYWORD_VALUE", "")).strip()
        comment = str(values.get("KEYWORD_COMMENT", "")).strip()
        if key == "INDI_CLEAR":
            self._custom_fits.clear()
            vec.state = OK
            self._set(vec, "[INFO] Custom FITS headers cleared.")
            return
        if not key:
            raise _Reject("FITS_HEADER: KEYWORD_NAME is empty")
        if not valid_keyword(key) or key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                                              "BZERO", "BSCALE", "END"):
            raise _Reject(f"FITS_HEADER: {key[:20]!r} is not a keyword clients may set (1-8 of A-Z 0-9 - _)")
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
            raise _Reject("FITS_HEADER: at most 64 custom keywords (send INDI_CLEAR to reset)")
        self._custom_fits[key] = (key, parsed, comment[:40])
        vec.state = OK
        self._set(vec)

    # ================================================================== periodic state
    async def _poll(self) -> None:
        """Temperature, cooler and guide state, about once a second, pushed only when changed."""
        try:
            while True:
                await asyncio.sleep(1.0)
                if not self._connected_defined:
                    return
                st = self.cam.status()
                temp = self.props.get("CCD_TEMPERATURE")
                if temp is not None and st.ccd_temperature is not None:
                    m = temp["CCD_TEMPERATURE_VALUE"]
                    new_state = temp.state
                    if self._target_temp is not None and temp.state == BUSY and \
                            abs(st.ccd_temperature - self._target_temp) <= TEMP_THRESHOLD:
                        new_state = OK
                    if abs(st.ccd_temperature - m.value) > 0.05 or new_state != temp.state:
                        m.value = round(st.ccd_temperature, 2)
                        temp.state = new_state
                        self._set(temp)
                power = self.props.get("CCD_COOLER_POWER")
                if power is not None and st.cooler_power is not None:
                    m = power["CCD_COOLER_VALUE"]
                    if abs(st.cooler_power - m.value) > 0.1:
                        m.value = float(st.cooler_power)
                        power.state = BUSY if st.cooler_power > 0 else IDLE
                        self._set(power)
                cooler = self.props.get("CCD_COOLER")
                if cooler is not None and st.cooler_on is not None and \
                        (cooler.on_switch() == "COOLER_ON") != bool(st.cooler_on):
                    cooler.set_one("COOLER_ON" if st.cooler_on else "COOLER_OFF")
                    cooler.state = OK if st.cooler_on else IDLE
                    self._set(cooler)
        except asyncio.CancelledError:
            pass

    def _sync_settings(self) -> None:
        """Settings changed (possibly over Alpaca): publish the properties whose values differ.

        Skipped while one of our own requests runs: its handler publishes the result itself (from
        the core's current settings, so a concurrent Alpaca change is included), and publishing
        twice makes clients see values flip back and forth.
        """
        if not self._connected_defined or self._op_lock.locked():
            return
        st = self.cam.settings
        x, y, w, h, b = self._frame_values()
        frame = self.props.get("CCD_FRAME")
        binning = self.props.get("CCD_BINNING")
        if frame is not None and binning is not None and (
                (frame["X"].value, frame["Y"].value, frame["WIDTH"].value, frame["HEIGHT"].value,
                 binning["HOR_BIN"].value) != (x, y, w, h, b)):
            self._publish_frame()
        fmt = self.props.get("CCD_CAPTURE_FORMAT")
        want = FORMATS.get(st.image_type, (None,))[0]
        if fmt is not None and want and fmt.on_switch() != want and fmt.member(want) is not None:
            fmt.set_one(want)
            self._set(fmt)
            ccd_info = self.props.get("CCD_INFO")
            if ccd_info is not None:
                ccd_info["CCD_BITSPERPIXEL"].value = 16 if st.image_type == "RAW16" else 8
                self._set(ccd_info)
        ctl = self.props.get("CCD_CONTROLS")
        if ctl is not None:
            changed = False
            for cname, key in CONTROL_SETTING.items():
                m = ctl.member(cname)
                val = getattr(st, key)
                if m is not None and val is not None:
                    v = int(val)
                    if m.value != v:  # type: ignore[union-attr]
                        m.value = v  # type: ignore[union-attr]
                        changed = True
            if changed:
                self._set(ctl)
        flip = self.props.get("FLIP")
        if flip is not None:
            h_on, v_on = bool(st.flip & 1), bool(st.flip & 2)
            if (flip["FLIP_HORIZONTAL"].on, flip["FLIP_VERTICAL"].on) != (h_on, v_on):
                flip["FLIP_HORIZONTAL"].on, flip["FLIP_VERTICAL"].on = h_on, v_on
                self._set(flip)


def _int_or(text: str, default: int) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        return default


def _is_camera_error(exc: BaseException) -> bool:
    try:
        from driver.errors import CameraError
    except Exception:  # pragma: no cover
        return False
    return isinstance(exc, CameraError)
