"""ICameraV4 and the common ASCOM members, translated onto one device-core ``ZWOCamera``.

This module holds no camera logic: each member reads the core's status/settings/info or calls one
core method, and converts units and errors. Handlers run on the event loop and must not block; a
handler that needs a core call which may touch the SDK (or take the core's lock) returns
:class:`Blocking`, and the dispatcher runs that callable in the SDK thread pool.

Polling members (CameraState, ImageReady, PercentCompleted, DeviceState, CCDTemperature,
CoolerPower, IsPulseGuiding, Connected, Connecting) only read ``cam.status()``, which never waits,
so they answer on the loop at once even while an exposure, an SDK call or a download is running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from driver import controls
from driver.bayer import shifted as bayer_shifted
from driver.events import ExposureEnded
from driver.model_facts import facts as model_facts
from zwo_common import history

from . import imagecodec
from .protocol import (
    ACTION_NOT_IMPLEMENTED,
    CAMERA_GONE,
    DRIVER_ERROR,
    INVALID_OPERATION,
    INVALID_VALUE,
    NOT_CONNECTED,
    NOT_IMPLEMENTED,
    TIMEOUT,
    AlpacaError,
    AlpacaRequest,
    not_implemented,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import CameraInfo, CameraStatus, ControlInfo, Frame, ZWOCamera

INTERFACE_VERSION = 4
DEVICE_TYPE = "camera"

# ASCOM CameraState values.
CAMERA_IDLE = 0
CAMERA_EXPOSING = 2
CAMERA_READING = 3
CAMERA_ERROR = 5

# The SDK's image types offered as ASCOM readout modes, in this order (index = ReadoutMode).
READOUT_MODES = ("RAW16", "RAW8")
# ZWO exposure times are set in microseconds.
EXPOSURE_RESOLUTION_S = 1e-6
# Fault-injection actions of simulated cameras (Action names, matched in any case).
SIM_ACTIONS = ("sim.unplug", "sim.replug", "sim.record", "sim.unplug_after", "sim.inject", "sim.video_timeouts",
               "sim.camera_state", "sim.counters", "sim.threads")
# Core settings ASCOM has no member for, as Actions with JSON Parameters (docs/alpaca.md): action ->
# {Parameters key: CameraSettings field}. Cooler ones are offered on cooled models only.
SETTING_ACTIONS: dict[str, dict[str, str]] = {
    "cooler.ramp": {"slope": "ramp_slope", "threshold": "ramp_threshold"},
    "cooler.warmup": {"enabled": "warm_at_disconnect"},
}

# Bayer pattern -> ASCOM (BayerOffsetX, BayerOffsetY): where the red pixel of the RGGB cell sits.
BAYER_OFFSETS: dict[str, tuple[int, int]] = {"RGGB": (0, 0), "GRBG": (1, 0), "GBRG": (0, 1), "BGGR": (1, 1)}


@dataclass(frozen=True)
class Blocking:
    """A handler's answer meaning "run ``fn`` in the SDK pool; its return value is the Value".

    ``member`` names the ASCOM member whose value the core checks: an InvalidValue from the core is
    then reported as ``"<member>: <the core's message>"`` (see ``protocol.error_from_exception``).
    """

    fn: Callable[[], Any]
    member: str | None = None


@dataclass
class ImageSlot:
    """One frame's prepared image and how many downloads are using it right now."""

    seq: int
    future: concurrent.futures.Future
    users: int = 0
    retired: bool = False  # a newer frame replaced it; its buffer is recycled when users reach 0


_DROPPED: concurrent.futures.Future = concurrent.futures.Future()
_DROPPED.cancel()


@dataclass(frozen=True)
class NoValue:
    """A handler's answer for methods: success without a ``Value`` field."""


NO_VALUE = NoValue()


def method(fn: Callable[[], Any], member: str | None = None) -> Blocking:
    """A Blocking call for an ASCOM method or property setter: ``fn``'s result is not a Value.

    Setters and methods pass their ``member`` name; the core validates the value.
    """

    def run() -> NoValue:
        fn()
        return NO_VALUE

    return Blocking(run, member)

# State name (CameraState enum value) -> ASCOM CameraState.
# ASCOM has no off-peak state. While the capture schedule has released the camera (another program
# may be using it) no exposure can start, which is what cameraError means ("an error condition
# serious enough to prevent further operations"); cameraIdle would promise "available to start an
# exposure". So OFF_PEAK reads cameraError, Connected stays true (the intent is kept), and a
# StartExposure is refused with InvalidOperation (0x40B) carrying the core's message, which says
# until when (docs/alpaca.md, "Off-peak"). The camera is not gone: no 0x501 here (camera_gone).
_ASCOM_STATE = {
    "idle": CAMERA_IDLE,
    "image_ready": CAMERA_IDLE,
    "capturing": CAMERA_IDLE,
    "off_peak": CAMERA_ERROR,
    "connecting": CAMERA_IDLE,
    "disconnected": CAMERA_IDLE,
    "disconnecting": CAMERA_IDLE,
    "exposing": CAMERA_EXPOSING,
    "reading": CAMERA_READING,
    "error": CAMERA_ERROR,
}


def _state_name(status: CameraStatus) -> str:
    state = status.state
    return str(getattr(state, "value", state))


def ascom_camera_state(status: CameraStatus) -> int:
    """ASCOM CameraState for a core status; Error (5) while the core is recovering a removed camera."""
    name = _state_name(status)
    if name == "connecting" and status.connected and status.error:
        return CAMERA_ERROR  # an automatic reconnect attempt after an unplug, not a client's Connect
    return _ASCOM_STATE.get(name, CAMERA_IDLE)


def camera_gone(status: CameraStatus) -> bool:
    """Whether cameraError means the camera was removed or failed and the core is reconnecting
    (not the off-peak release, which also reads cameraError but is planned and has an end)."""
    return ascom_camera_state(status) == CAMERA_ERROR and _state_name(status) != "off_peak"


def format_fits_time(when: _dt.datetime) -> str:
    """UTC time in the FITS form ``yyyy-mm-ddThh:mm:ss.fff`` (no zone suffix, as ASCOM specifies)."""
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def format_iso_utc(when: _dt.datetime) -> str:
    """UTC time as ISO 8601 with a ``Z`` suffix (DeviceState ``TimeStamp``)."""
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CameraDevice:
    """One Alpaca camera device (``/api/v1/camera/{number}/...``) backed by one ``ZWOCamera``.

    Handlers are methods named ``get_<member>`` / ``put_<member>``; :data:`MEMBERS` is built from
    them, so the set of URLs and the methods they allow always match the code.
    """

    # Members that work while disconnected (everything else answers NotConnected, 0x407).
    NO_CONNECTION = frozenset(
        {
            "action",
            "commandblind",
            "commandbool",
            "commandstring",
            "connect",
            "connected",
            "connecting",
            "description",
            "devicestate",
            "disconnect",
            "driverinfo",
            "driverversion",
            "interfaceversion",
            "name",
            "supportedactions",
        }
    )

    MEMBERS: dict[str, frozenset[str]] = {}

    def __init__(
        self,
        number: int,
        camera: ZWOCamera,
        *,
        unique_id: str,
        key: str,
        driver_info: str,
        driver_version: str,
        simulated: bool = False,
        sim_note: str | None = None,
        codec_pool: concurrent.futures.Executor | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.number = number
        self.cam = camera
        self.unique_id = unique_id
        self.key = key
        self.simulated = simulated
        self._sim_note = sim_note
        self._driver_info = driver_info
        self._driver_version = driver_version
        self._codec_pool = codec_pool
        self.log = logger or logging.getLogger(f"zwo_alpaca.camera{number}")
        # One prepared (transposed) image per camera, shared by every client: (frame seq, future).
        self._prep_lock = threading.Lock()
        self._prep: ImageSlot | None = None
        self._spare: Any = None  # a recycled array (numpy) for the next prepared image
        # Exposures started here carry this device as their owner: their image is transposed as soon
        # as the core reports it read out, so the download can start at once. Frames nobody here
        # asked for (INDI's, the web page's) are left alone.
        camera.add_listener(self._on_event)

    # ------------------------------------------------------------------ identity

    @property
    def info(self) -> CameraInfo:
        """The core's cached CameraInfo (filled at start-up by ``describe()``, refreshed on connect)."""
        info = self.cam.info
        if info is None:
            raise AlpacaError(DRIVER_ERROR, "camera properties are not known yet (the SDK has not described it)")
        return info

    def _absent_name(self) -> str:
        """The model name the config knows, for a camera not plugged in (no SDK facts yet)."""
        return str(getattr(self.cam, "model_name", None) or "ZWO camera")

    @property
    def name(self) -> str:
        """The device name clients show, e.g. ``ZWO ASI294MC Pro`` (``(simulated)`` for the simulator)."""
        info = self.cam.info
        base = info.name if info is not None else self._absent_name()
        return f"{base} (simulated)" if self.simulated else base

    @property
    def description(self) -> str:
        """A one-line description, at most 68 characters (ConformU: FITS header compatibility)."""
        info = self.cam.info
        base = info.name if info is not None else self._absent_name()
        if self.simulated:
            text = f"{base} (simulated{': ' + self._sim_note if self._sim_note else ''})"
        elif info is not None:
            kind = "colour" if info.is_color else "mono"
            text = f"{base} {kind} {info.max_width}x{info.max_height} {info.pixel_size_um:g}um"
        else:
            text = base
        return _truncate(text, 68)

    def status(self) -> CameraStatus:
        """The core's status snapshot (never blocks)."""
        return self.cam.status()

    # ------------------------------------------------------------------ dispatch support

    def require_connected(self, member: str) -> None:
        """NotConnected (0x407) unless a client has connected the camera (intent kept across unplugs)."""
        if member in self.NO_CONNECTION:
            return
        if not self.cam.status().connected:
            raise AlpacaError(NOT_CONNECTED, f"camera {self.number} is not connected: set Connected=true first")

    def handler(self, member: str, method: str) -> Callable[[AlpacaRequest], Any] | None:
        """The bound handler for ``method`` (GET/PUT) on ``member``, or None."""
        return getattr(self, f"{method.lower()}_{member}", None)

    # ------------------------------------------------------------------ helpers

    def _control(self, *names: str) -> ControlInfo | None:
        controls = self.info.controls or {}
        for name in names:
            ctl = controls.get(name)
            if ctl is not None:
                return ctl
        return None

    def _settings(self) -> Any:
        return self.cam.settings

    def _readout_modes(self) -> list[str]:
        types = tuple(self.info.image_types or ())
        modes = [m for m in READOUT_MODES if m in types]
        return modes or ["RAW16"]

    def _bit_depth(self) -> int:
        return int(self.info.bit_depth or 16)

    def _readout_mode_name(self, index: int) -> str:
        """ReadoutMode index -> the core's image type name (the one wire translation of it).

        The index space is Alpaca's own (ReadoutModes), so an index outside it is refused here; the
        core validates the name it maps to.
        """
        modes = self._readout_modes()
        if not 0 <= index < len(modes):
            raise AlpacaError(INVALID_VALUE, f"ReadoutMode: readout mode {index} is not supported: "
                                             f"valid 0 to {len(modes) - 1} ({', '.join(modes)})")
        return modes[index]

    def _gone_or(self, status: CameraStatus, fallback: AlpacaError) -> AlpacaError:
        if camera_gone(status):
            return AlpacaError(CAMERA_GONE, status.error or "camera error; the server is reconnecting")
        return fallback

    # ------------------------------------------------------------------ common members

    def put_action(self, req: AlpacaRequest) -> Any:
        """Action: ``telemetry`` (the camera's history, JSON) and the ``sim.*`` fault-injection actions on
        simulated cameras (names any case)."""
        action = req.get_str("Action")
        params = req.get_str("Parameters", "")
        name = action.strip().lower()
        if self.simulated and name in SIM_ACTIONS:
            return Blocking(lambda: self._sim_action(name, params))
        if name == "telemetry":  # the camera's recorded history: zwo_common/history.py (JSON; {"hours": n})
            return Blocking(lambda: history.telemetry_json(self.cam, params))
        if name in self.supported_actions() and (name in SETTING_ACTIONS or name == "controls.auto"):
            args = _json_params(name, params)
            if name == "controls.auto":
                return Blocking(lambda: self._auto_action(args), name)
            return Blocking(lambda: self._setting_action(name, args), name)
        supported = ", ".join(self.supported_actions()) or "none"
        raise AlpacaError(ACTION_NOT_IMPLEMENTED, f"action {action!r} is not supported (supported: {supported})")

    def _setting_action(self, name: str, args: dict[str, Any]) -> str:
        """``cooler.ramp`` ``{"slope": C/min, "threshold": C}``, ``cooler.warmup`` ``{"enabled": bool}``:
        the given keys go to ``configure()`` (the core validates them); empty Parameters only read.
        The reply is the JSON of the settings after the change, plus the ramp's live state."""
        fields = SETTING_ACTIONS[name]
        unknown = sorted(set(args) - set(fields))
        if unknown:
            raise AlpacaError(INVALID_VALUE, f"{name}: unknown Parameters key(s) {', '.join(unknown)}: "
                                             f"valid {', '.join(fields)}")
        if args:
            self.cam.configure(**{fields[k]: v for k, v in args.items()})
        st = self.cam.settings
        body: dict[str, Any] = {k: getattr(st, f) for k, f in fields.items()}
        if name == "cooler.ramp":
            status = self.cam.status()
            body.update(target=st.target_temperature, setpoint=status.ramp_setpoint,
                        reached=status.temperature_reached)
        return orjson.dumps(body).decode()

    def _auto_action(self, args: dict[str, Any]) -> str:
        """``controls.auto`` ``{"Gain": true, "WB_R": false}``: ``set_auto()`` per SDK control name
        (the core refuses controls without an automatic mode); empty Parameters only read. Replies
        ``{"available": [names], "auto": {name: true}}``."""
        for cname, on in args.items():
            if not isinstance(on, bool):
                raise AlpacaError(INVALID_VALUE, f"controls.auto: {cname} must be true or false, got {on!r}")
            self.cam.set_auto(cname, on)
        info = self.cam.info
        available = [c.name for c in controls.auto_capable(info.controls if info is not None else None)]
        return orjson.dumps({"available": available, "auto": dict(self.cam.settings.auto_controls)}).decode()

    def _sim_action(self, name: str, params: str) -> str:
        from driver import simulator  # noqa: PLC0415 - only simulated cameras get here

        sim = simulator.current()
        if sim is None:
            raise AlpacaError(DRIVER_ERROR, "the simulator is not installed")
        slot = self.cam.sim_slot
        if slot is None:
            raise AlpacaError(DRIVER_ERROR, "this camera is not a simulated one")
        if name == "sim.unplug":
            sim.unplug(slot)
            return "unplugged"
        if name == "sim.replug":
            # Parameters {"slot": n} plug in another simulated camera: one that started unplugged
            # ($ZWO_ALPACA_SIM_UNPLUGGED), as if connected after the server started (hotplug).
            try:
                args = orjson.loads(params) if params.strip() else {}
                target = int(args.get("slot", slot)) if isinstance(args, dict) else slot
                sim.replug(target)
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                raise AlpacaError(INVALID_VALUE, f"sim.replug: Parameters must be empty or {{\"slot\": n}} with a "
                                                 f"simulated camera's slot (0..{len(sim.cameras) - 1}): "
                                                 f"{exc}") from None
            return "replugged"
        if name in SIM_ACTIONS[3:]:
            return self._sim_fault(sim, slot, name, params)
        # The whole simulator's record, plus which slot is this device's (to pick it out).
        record = _jsonable(sim.record())
        body = {"slot": slot, **record} if isinstance(record, dict) else {"slot": slot, "record": record}
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()

    def _sim_fault(self, sim: Any, slot: int, name: str, params: str) -> str:
        """The fault-injection actions taking JSON Parameters (docs/reliability.md), and two readouts.

        ``sim.unplug_after`` ``{"phase": "exposure"|"readout", "delay": s}``; ``sim.inject``
        ``{"function": "ASICloseCamera", "code": 16, "count": 1}`` (on this camera);
        ``sim.video_timeouts`` ``{"count": n}``; ``sim.camera_state``: the simulated camera's SDK-side
        state (controls, ROI, cooler...); ``sim.counters``: the device core's counters; ``sim.threads``:
        the names of the server's threads (bench/soak.py tells pool workers from leaks with them).
        """
        args = _json_params(name, params)
        try:
            if name == "sim.unplug_after":
                sim.unplug_after(slot, str(args.get("phase", "exposure")), float(args.get("delay", 0.0)))
                return "armed"
            if name == "sim.inject":
                sim.inject(str(args["function"]), int(args.get("code", 16)), int(args.get("count", 1)), slot)
                return "injected"
            if name == "sim.video_timeouts":
                sim.video_timeouts(slot, int(args.get("count", 1)))
                return "armed"
        except (KeyError, TypeError, ValueError) as exc:
            raise AlpacaError(INVALID_VALUE, f"{name}: invalid Parameters {params[:80]!r}: {exc}") from None
        if name == "sim.threads":
            return orjson.dumps(sorted(t.name for t in threading.enumerate())).decode()
        body = sim.camera_state(slot) if name == "sim.camera_state" else self.cam.counters()
        return orjson.dumps(_jsonable(body), option=orjson.OPT_NON_STR_KEYS).decode()

    def supported_actions(self) -> list[str]:
        """What :meth:`put_action` accepts: the cooler ones on cooled models only."""
        info = self.cam.info
        cooled = [n for n in SETTING_ACTIONS if n.startswith("cooler.")] if info is not None and info.has_cooler else []
        return ["telemetry", *cooled, "controls.auto", *(SIM_ACTIONS if self.simulated else ())]

    def _command(self, req: AlpacaRequest) -> Any:
        req.get_str("Command")
        req.get_bool("Raw")
        raise AlpacaError(NOT_IMPLEMENTED, "Command* methods are not implemented: use Action (see SupportedActions)")

    put_commandblind = _command
    put_commandbool = _command
    put_commandstring = _command

    def put_connect(self, req: AlpacaRequest) -> Any:
        """Connect (asynchronous): Connecting is true until the core has opened the camera."""
        return method(lambda: self.cam.begin_connect())

    def put_disconnect(self, req: AlpacaRequest) -> Any:
        """Disconnect (asynchronous): the core's graceful teardown; Connecting is true until done."""
        return method(lambda: self.cam.begin_disconnect())

    def get_connected(self, req: AlpacaRequest) -> Any:
        """Connected: the connection intent (stays true while the core reconnects after an unplug)."""
        return bool(self.cam.status().connected)

    def put_connected(self, req: AlpacaRequest) -> Any:
        """Connected=true connects (blocking); Connected=false tears down (< 1 s, even mid-exposure)."""
        value = req.get_bool("Connected")
        if value:
            return method(lambda: self.cam.connect())
        return method(lambda: self.cam.disconnect_camera())

    def get_connecting(self, req: AlpacaRequest) -> Any:
        """Connecting: true while an asynchronous Connect/Disconnect is under way."""
        return bool(self.cam.status().connecting)

    def get_description(self, req: AlpacaRequest) -> Any:
        """Description (at most 68 characters)."""
        return self.description

    def get_devicestate(self, req: AlpacaRequest) -> Any:
        """DeviceState: the operational properties that have a value now (empty list if none)."""
        status = self.cam.status()
        if not status.connected:
            return []
        info = self.cam.info
        items: list[dict[str, Any]] = [{"Name": "CameraState", "Value": ascom_camera_state(status)}]
        if status.ccd_temperature is not None:
            items.append({"Name": "CCDTemperature", "Value": float(status.ccd_temperature)})
        if info is not None and info.has_cooler:
            items.append({"Name": "CoolerPower", "Value": float(status.cooler_power or 0.0)})
        items.append({"Name": "ImageReady", "Value": bool(status.image_ready)})
        items.append({"Name": "IsPulseGuiding", "Value": bool(status.is_pulse_guiding)})
        items.append({"Name": "PercentCompleted", "Value": int(status.percent_completed)})
        items.append({"Name": "TimeStamp", "Value": format_iso_utc(_dt.datetime.now(_dt.UTC))})
        return items

    def get_driverinfo(self, req: AlpacaRequest) -> Any:
        """DriverInfo."""
        return self._driver_info

    def get_driverversion(self, req: AlpacaRequest) -> Any:
        """DriverVersion (``major.minor``)."""
        return self._driver_version

    def get_interfaceversion(self, req: AlpacaRequest) -> Any:
        """InterfaceVersion: ICameraV4."""
        return INTERFACE_VERSION

    def get_name(self, req: AlpacaRequest) -> Any:
        """Name."""
        return self.name

    def get_supportedactions(self, req: AlpacaRequest) -> Any:
        """SupportedActions."""
        return self.supported_actions()

    # ------------------------------------------------------------------ sensor geometry

    def get_bayeroffsetx(self, req: AlpacaRequest) -> Any:
        """BayerOffsetX (NotImplemented on mono sensors)."""
        return self._bayer_offset()[0]

    def get_bayeroffsety(self, req: AlpacaRequest) -> Any:
        """BayerOffsetY (NotImplemented on mono sensors)."""
        return self._bayer_offset()[1]

    def _bayer_offset(self) -> tuple[int, int]:
        info = self.info
        if not info.is_color:
            raise not_implemented("BayerOffset (monochrome sensor)")
        # The core's phase of the whole sensor as read with the current flip (ASCOM's offsets do not
        # follow the subframe); the flip turns RGGB into GRBG, GBRG or BGGR, i.e. other offsets.
        phase = self.cam.bayer_phase(full_frame=True)
        pattern = bayer_shifted(*phase) if phase else (info.bayer_pattern or "RGGB")
        return BAYER_OFFSETS.get(pattern.upper(), (0, 0))

    def get_cameraxsize(self, req: AlpacaRequest) -> Any:
        """CameraXSize: sensor width in unbinned pixels."""
        return int(self.info.max_width)

    def get_cameraysize(self, req: AlpacaRequest) -> Any:
        """CameraYSize: sensor height in unbinned pixels."""
        return int(self.info.max_height)

    def get_pixelsizex(self, req: AlpacaRequest) -> Any:
        """PixelSizeX in microns."""
        return float(self.info.pixel_size_um)

    def get_pixelsizey(self, req: AlpacaRequest) -> Any:
        """PixelSizeY in microns (ZWO pixels are square)."""
        return float(self.info.pixel_size_um)

    def get_sensorname(self, req: AlpacaRequest) -> Any:
        """SensorName: the sensor part number when known, else ""."""
        return model_facts(self.info.model).sensor

    def get_sensortype(self, req: AlpacaRequest) -> Any:
        """SensorType: 0 monochrome, 2 Bayer (offsets in BayerOffsetX/Y)."""
        return 2 if self.info.is_color else 0

    def get_maxbinx(self, req: AlpacaRequest) -> Any:
        """MaxBinX: the largest bin the SDK supports."""
        return max(self.info.supported_bins or (1,))

    def get_maxbiny(self, req: AlpacaRequest) -> Any:
        """MaxBinY (= MaxBinX: ZWO binning is symmetric)."""
        return max(self.info.supported_bins or (1,))

    def get_canasymmetricbin(self, req: AlpacaRequest) -> Any:
        """CanAsymmetricBin: false (setting BinX or BinY sets both)."""
        return False

    def get_hasshutter(self, req: AlpacaRequest) -> Any:
        """HasShutter."""
        return bool(self.info.has_shutter)

    # ------------------------------------------------------------------ binning and subframe

    def get_binx(self, req: AlpacaRequest) -> Any:
        """BinX."""
        return Blocking(lambda: int(self._settings().bin))

    def get_biny(self, req: AlpacaRequest) -> Any:
        """BinY (always equal to BinX)."""
        return Blocking(lambda: int(self._settings().bin))

    def put_binx(self, req: AlpacaRequest) -> Any:
        """BinX: sets BinY too (CanAsymmetricBin is false); the core checks the supported bins."""
        value = req.get_int("BinX")
        return method(lambda: self.cam.configure(bin=value), "BinX")

    def put_biny(self, req: AlpacaRequest) -> Any:
        """BinY: sets BinX too (CanAsymmetricBin is false); the core checks the supported bins."""
        value = req.get_int("BinY")
        return method(lambda: self.cam.configure(bin=value), "BinY")

    def get_numx(self, req: AlpacaRequest) -> Any:
        """NumX: subframe width in binned pixels (full binned width until set)."""
        return Blocking(lambda: self._num(True))

    def get_numy(self, req: AlpacaRequest) -> Any:
        """NumY: subframe height in binned pixels (full binned height until set)."""
        return Blocking(lambda: self._num(False))

    def _num(self, x: bool) -> int:
        s = self._settings()
        info = self.info
        value = s.width if x else s.height
        if value is None:
            value = (info.max_width if x else info.max_height) // max(1, int(s.bin))
        return int(value)

    def put_numx(self, req: AlpacaRequest) -> Any:
        """NumX: checked against the binned sensor at StartExposure (ASCOM sets them one by one)."""
        value = req.get_int("NumX")
        return method(lambda: self.cam.configure(width=value), "NumX")

    def put_numy(self, req: AlpacaRequest) -> Any:
        """NumY: checked against the binned sensor at StartExposure."""
        value = req.get_int("NumY")
        return method(lambda: self.cam.configure(height=value), "NumY")

    def get_startx(self, req: AlpacaRequest) -> Any:
        """StartX in binned pixels."""
        return Blocking(lambda: int(self._settings().start_x))

    def get_starty(self, req: AlpacaRequest) -> Any:
        """StartY in binned pixels."""
        return Blocking(lambda: int(self._settings().start_y))

    def put_startx(self, req: AlpacaRequest) -> Any:
        """StartX: checked against the binned sensor at StartExposure."""
        value = req.get_int("StartX")
        return method(lambda: self.cam.configure(start_x=value), "StartX")

    def put_starty(self, req: AlpacaRequest) -> Any:
        """StartY: checked against the binned sensor at StartExposure."""
        value = req.get_int("StartY")
        return method(lambda: self.cam.configure(start_y=value), "StartY")

    # ------------------------------------------------------------------ capabilities

    def get_canabortexposure(self, req: AlpacaRequest) -> Any:
        """CanAbortExposure."""
        return True

    def get_canstopexposure(self, req: AlpacaRequest) -> Any:
        """CanStopExposure."""
        return True

    def get_canfastreadout(self, req: AlpacaRequest) -> Any:
        """CanFastReadout: the camera has ZWO's HighSpeedMode control."""
        return self._control("HighSpeedMode") is not None

    def get_canpulseguide(self, req: AlpacaRequest) -> Any:
        """CanPulseGuide: the camera has an ST4 port."""
        return bool(self.info.has_st4)

    def get_cansetccdtemperature(self, req: AlpacaRequest) -> Any:
        """CanSetCCDTemperature: cooled (Pro) models."""
        return bool(self.info.has_cooler)

    def get_cangetcoolerpower(self, req: AlpacaRequest) -> Any:
        """CanGetCoolerPower: cooled models."""
        return bool(self.info.has_cooler)

    # ------------------------------------------------------------------ exposure parameters

    def get_exposuremin(self, req: AlpacaRequest) -> Any:
        """ExposureMin in seconds (the SDK's Exposure control minimum)."""
        return float(self.info.exposure_min_s)

    def get_exposuremax(self, req: AlpacaRequest) -> Any:
        """ExposureMax in seconds."""
        return float(self.info.exposure_max_s)

    def get_exposureresolution(self, req: AlpacaRequest) -> Any:
        """ExposureResolution: 1 µs (the SDK's unit)."""
        return EXPOSURE_RESOLUTION_S

    def get_maxadu(self, req: AlpacaRequest) -> Any:
        """MaxADU of the data served: 65535 for RAW16 (left-aligned), 255 for 8-bit modes."""
        return Blocking(lambda: 65535 if self._settings().image_type == "RAW16" else 255)

    def get_electronsperadu(self, req: AlpacaRequest) -> Any:
        """ElectronsPerADU at the SDK's reference gain, in units of the data served (see docs)."""

        def compute() -> float:
            info = self.info
            depth = self._bit_depth()
            epa = float(info.e_per_adu or 1.0)
            if self._settings().image_type == "RAW16":
                return epa / float(2 ** max(0, 16 - depth))
            return epa * float(2 ** max(0, depth - 8))

        return Blocking(compute)

    def get_fullwellcapacity(self, req: AlpacaRequest) -> Any:
        """FullWellCapacity in electrons (the SDK's figure, else e/ADU x native ADC range)."""
        info = self.info
        if info.full_well_e:
            return float(info.full_well_e)
        return float(info.e_per_adu or 1.0) * float(2 ** self._bit_depth() - 1)

    def get_readoutmodes(self, req: AlpacaRequest) -> Any:
        """ReadoutModes: the SDK image types, ``["RAW16", "RAW8"]``."""
        return self._readout_modes()

    def get_readoutmode(self, req: AlpacaRequest) -> Any:
        """ReadoutMode: index into ReadoutModes of the current image type."""

        def current() -> int:
            modes = self._readout_modes()
            kind = self._settings().image_type
            return modes.index(kind) if kind in modes else 0

        return Blocking(current)

    def put_readoutmode(self, req: AlpacaRequest) -> Any:
        """ReadoutMode: selects the SDK image type (RAW16 or RAW8) for the next exposure."""
        name = self._readout_mode_name(req.get_int("ReadoutMode"))
        return method(lambda: self.cam.configure(image_type=name), "ReadoutMode")

    def get_fastreadout(self, req: AlpacaRequest) -> Any:
        """FastReadout: ZWO HighSpeedMode (NotImplemented when the camera has none)."""
        if self._control("HighSpeedMode") is None:
            raise not_implemented("FastReadout (no HighSpeedMode)")
        return Blocking(lambda: bool(self._settings().high_speed))

    def put_fastreadout(self, req: AlpacaRequest) -> Any:
        """FastReadout: sets ZWO HighSpeedMode."""
        value = req.get_bool("FastReadout")
        if self._control("HighSpeedMode") is None:
            raise not_implemented("FastReadout (no HighSpeedMode)")
        return method(lambda: self.cam.configure(high_speed=value), "FastReadout")

    def get_subexposureduration(self, req: AlpacaRequest) -> Any:
        """SubExposureDuration: ZWO cameras do not stack on board."""
        raise not_implemented("SubExposureDuration")

    def put_subexposureduration(self, req: AlpacaRequest) -> Any:
        """SubExposureDuration: not implemented (the parameter is still parsed)."""
        req.get_float("SubExposureDuration")
        raise not_implemented("SubExposureDuration")

    # ------------------------------------------------------------------ gain and offset (value mode)

    def _gain_control(self) -> ControlInfo:
        ctl = self._control("Gain")
        if ctl is None:
            raise not_implemented("Gain")
        return ctl

    def _offset_control(self) -> ControlInfo:
        ctl = self._control("Offset", "Brightness")
        if ctl is None:
            raise not_implemented("Offset")
        return ctl

    def get_gain(self, req: AlpacaRequest) -> Any:
        """Gain (value mode: the SDK's Gain control value)."""
        ctl = self._gain_control()
        return Blocking(lambda: _or_default(self.cam.reported("gain"), ctl.default))

    def put_gain(self, req: AlpacaRequest) -> Any:
        """Gain: GainMin..GainMax (checked by the core)."""
        value = req.get_int("Gain")
        self._gain_control()
        return method(lambda: self.cam.configure(gain=value), "Gain")

    def get_gainmin(self, req: AlpacaRequest) -> Any:
        """GainMin."""
        return int(self._gain_control().min)

    def get_gainmax(self, req: AlpacaRequest) -> Any:
        """GainMax."""
        return int(self._gain_control().max)

    def get_gains(self, req: AlpacaRequest) -> Any:
        """Gains: NotImplemented (gain is in value mode)."""
        raise not_implemented("Gains (Gain is in value mode: use GainMin/GainMax)")

    def get_offset(self, req: AlpacaRequest) -> Any:
        """Offset (value mode: the SDK's Offset control value)."""
        ctl = self._offset_control()
        return Blocking(lambda: _or_default(self.cam.reported("offset"), ctl.default))

    def put_offset(self, req: AlpacaRequest) -> Any:
        """Offset: OffsetMin..OffsetMax (checked by the core)."""
        value = req.get_int("Offset")
        self._offset_control()
        return method(lambda: self.cam.configure(offset=value), "Offset")

    def get_offsetmin(self, req: AlpacaRequest) -> Any:
        """OffsetMin."""
        return int(self._offset_control().min)

    def get_offsetmax(self, req: AlpacaRequest) -> Any:
        """OffsetMax."""
        return int(self._offset_control().max)

    def get_offsets(self, req: AlpacaRequest) -> Any:
        """Offsets: NotImplemented (offset is in value mode)."""
        raise not_implemented("Offsets (Offset is in value mode: use OffsetMin/OffsetMax)")

    # ------------------------------------------------------------------ temperature and cooler

    def get_ccdtemperature(self, req: AlpacaRequest) -> Any:
        """CCDTemperature: the sensor temperature the SDK reports (°C)."""
        status = self.cam.status()
        if status.ccd_temperature is not None:
            return float(status.ccd_temperature)
        if self._control("Temperature") is None and not self.info.has_cooler:
            raise not_implemented("CCDTemperature")
        raise self._gone_or(status, AlpacaError(DRIVER_ERROR, "the sensor temperature has not been read yet"))

    def get_heatsinktemperature(self, req: AlpacaRequest) -> Any:
        """HeatSinkTemperature: the ZWO SDK has no heat-sink sensor."""
        raise not_implemented("HeatSinkTemperature")

    def _require_cooler(self, what: str) -> None:
        if not self.info.has_cooler:
            raise not_implemented(f"{what} (this camera has no cooler)")

    def get_cooleron(self, req: AlpacaRequest) -> Any:
        """CoolerOn (cooled models)."""
        self._require_cooler("CoolerOn")
        status = self.cam.status()
        if status.cooler_on is not None:
            return bool(status.cooler_on)
        return Blocking(lambda: bool(self._settings().cooler_on))

    def put_cooleron(self, req: AlpacaRequest) -> Any:
        """CoolerOn: switches ZWO's CoolerOn control."""
        value = req.get_bool("CoolerOn")
        self._require_cooler("CoolerOn")
        return method(lambda: self.cam.set_cooler(value), "CoolerOn")

    def get_coolerpower(self, req: AlpacaRequest) -> Any:
        """CoolerPower in percent (ZWO's CoolerPowerPerc)."""
        self._require_cooler("CoolerPower")
        status = self.cam.status()
        return float(status.cooler_power or 0.0)

    def get_setccdtemperature(self, req: AlpacaRequest) -> Any:
        """SetCCDTemperature: the cooler set point (°C)."""
        self._require_cooler("SetCCDTemperature")
        status = self.cam.status()
        if status.target_temperature is not None:
            return float(status.target_temperature)

        def stored() -> float:
            target = self._settings().target_temperature
            if target is not None:
                return float(target)
            ctl = self._control("TargetTemp")
            return float(ctl.default) if ctl is not None else 0.0

        return Blocking(stored)

    def put_setccdtemperature(self, req: AlpacaRequest) -> Any:
        """SetCCDTemperature: within the camera's TargetTemp range (checked by the core)."""
        value = req.get_float("SetCCDTemperature")
        self._require_cooler("SetCCDTemperature")
        return method(lambda: self.cam.configure(target_temperature=value), "SetCCDTemperature")

    # ------------------------------------------------------------------ state polling

    def get_camerastate(self, req: AlpacaRequest) -> Any:
        """CameraState: 0 idle, 2 exposing, 3 reading, 5 error (camera removed / failed, or released
        off-peak by the capture schedule: then StartExposure's InvalidOperation says until when)."""
        return ascom_camera_state(self.cam.status())

    def get_imageready(self, req: AlpacaRequest) -> Any:
        """ImageReady."""
        return bool(self.cam.status().image_ready)

    def get_percentcompleted(self, req: AlpacaRequest) -> Any:
        """PercentCompleted (0..100) of the current exposure and readout."""
        return max(0, min(100, int(self.cam.status().percent_completed)))

    def get_ispulseguiding(self, req: AlpacaRequest) -> Any:
        """IsPulseGuiding."""
        return bool(self.cam.status().is_pulse_guiding)

    def get_lastexposureduration(self, req: AlpacaRequest) -> Any:
        """LastExposureDuration in seconds (InvalidOperation before the first exposure)."""
        value = self.cam.status().last_exposure_duration
        if value is None:
            raise AlpacaError(INVALID_OPERATION, "no exposure has been taken yet")
        return float(value)

    def get_lastexposurestarttime(self, req: AlpacaRequest) -> Any:
        """LastExposureStartTime, UTC ``yyyy-mm-ddThh:mm:ss.fff`` (InvalidOperation before the first)."""
        when = self.cam.status().last_exposure_start
        if when is None:
            raise AlpacaError(INVALID_OPERATION, "no exposure has been taken yet")
        return format_fits_time(when)

    # ------------------------------------------------------------------ exposure methods

    def put_startexposure(self, req: AlpacaRequest) -> Any:
        """StartExposure: returns at once; the core validates duration, binning and subframe.

        ``Light=false`` is a dark (ASCOM has no bias frame: a 0 s dark is the camera's shortest).
        """
        duration = req.get_float("Duration")
        light = req.get_bool("Light")
        return method(lambda: self.cam.start_exposure(duration, light, owner=self), "StartExposure")

    def put_abortexposure(self, req: AlpacaRequest) -> Any:
        """AbortExposure: discards the exposure; harmless when idle."""
        return method(lambda: self.cam.abort_exposure())

    def put_stopexposure(self, req: AlpacaRequest) -> Any:
        """StopExposure: ends the exposure early and keeps the image; harmless when idle."""
        return method(lambda: self.cam.stop_exposure())

    def put_pulseguide(self, req: AlpacaRequest) -> Any:
        """PulseGuide(Direction 0..3 = N,S,E,W; Duration ms) through the ST4 port (non-blocking).

        ASCOM's GuideDirection numbers are the SDK's, so the core takes (and checks) them as they are.
        """
        direction = req.get_int("Direction")
        duration = req.get_int("Duration")
        if not self.info.has_st4:
            raise not_implemented("PulseGuide (this camera has no ST4 port)")
        return method(lambda: self.cam.pulse_guide(direction, duration), "PulseGuide")

    # ------------------------------------------------------------------ images

    def _on_event(self, event: Any) -> None:
        # Called from core threads: only hand the frame to the codec pool (quick, never blocks).
        try:
            if isinstance(event, ExposureEnded) and event.frame is not None and event.exposure.owner is self:
                self.prepare(event.frame)
        except Exception:  # a listener must never raise into the core
            self.log.debug("eager image preparation failed", exc_info=True)

    def prepare(self, frame: Frame) -> concurrent.futures.Future[imagecodec.PreparedImage]:
        """The shared, transposed image of ``frame`` (started once per frame, in the codec pool)."""
        with self._prep_lock:
            return self._slot_for(frame).future

    def acquire(self, frame: Frame) -> ImageSlot:
        """The prepared-image slot of ``frame``, held until :meth:`release` (its buffer is not reused)."""
        with self._prep_lock:
            slot = self._slot_for(frame)
            slot.users += 1
            return slot

    def release(self, slot: ImageSlot) -> None:
        """A download of ``slot`` finished; a replaced image's buffer becomes reusable."""
        with self._prep_lock:
            slot.users -= 1
            if slot.retired and slot.users == 0:
                self._recycle(slot)

    def _slot_for(self, frame: Frame) -> ImageSlot:
        # Called with _prep_lock held.
        current = self._prep
        if current is not None and current.seq == frame.seq:
            return current
        # Retire the replaced image first: when nobody is downloading it, its (finished) array is
        # reused for this frame at once, so one array serves a whole session of exposures.
        if current is not None:
            current.retired = True
            if current.users == 0:
                self._recycle(current)
        spare, self._spare = self._spare, None
        bgr = frame.image_type == "RGB24"
        if self._codec_pool is not None:
            # Resolves as soon as the bands are scheduled: downloads stream each band when it is final.
            fut = self._codec_pool.submit(imagecodec.start_prepare, frame.data, frame.seq, bgr=bgr, out=spare)
        else:
            fut = concurrent.futures.Future()
            try:
                fut.set_result(imagecodec.prepare_image(frame.data, frame.seq, bgr=bgr, out=spare))
            except Exception as exc:  # noqa: BLE001 - delivered through the future
                fut.set_exception(exc)
        slot = ImageSlot(frame.seq, fut)
        self._prep = slot
        return slot

    def _recycle(self, slot: ImageSlot) -> None:
        # Keep the replaced image's array for the next frame: allocating (and page-faulting) a fresh
        # 100+ MB array per frame costs more than transposing into it. Called with _prep_lock held.
        fut = slot.future
        # Only a finished image: the transpose threads may still be writing into a replaced one.
        if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result().complete:
            self._spare = fut.result().array
        slot.future = _DROPPED

    def image_frame(self) -> Frame:
        """The frame ImageArray serves (runs in the SDK pool: ``last_frame`` may take the core's lock).

        An image is served when ImageReady is true, or - after the camera was removed - when one was
        read out before; otherwise InvalidOperation (0x40B).
        """
        status = self.cam.status()
        frame = self.cam.last_frame()
        if frame is None:
            raise AlpacaError(INVALID_OPERATION, "no image is available: take an exposure first")
        if not status.image_ready and not camera_gone(status):
            state = ascom_camera_state(status)
            if state in (CAMERA_EXPOSING, CAMERA_READING):
                raise AlpacaError(INVALID_OPERATION, "no image is ready: an exposure is in progress")
            raise AlpacaError(INVALID_OPERATION, "no image is ready: the last exposure was aborted or failed")
        return frame


def _or_default(value: int | None, default: int) -> int:
    return int(value if value is not None else default)


def _json_params(name: str, params: str) -> dict[str, Any]:
    """An Action's Parameters as a JSON object (empty text: {}); InvalidValue naming the action otherwise."""
    try:
        args = orjson.loads(params) if params.strip() else {}
    except orjson.JSONDecodeError:
        raise AlpacaError(INVALID_VALUE, f"{name}: Parameters must be a JSON object, got {params[:60]!r}") from None
    if not isinstance(args, dict):
        raise AlpacaError(INVALID_VALUE, f"{name}: Parameters must be a JSON object, got {params[:60]!r}")
    return args


def _jsonable(obj: Any) -> Any:
    """A JSON-friendly view of a simulator record (dataclass, object or mapping)."""
    import dataclasses  # noqa: PLC0415

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "__dict__"):
        return {k: _jsonable(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


def _build_members() -> dict[str, frozenset[str]]:
    members: dict[str, set[str]] = {}
    for attr in dir(CameraDevice):
        for prefix, method in (("get_", "GET"), ("put_", "PUT")):
            if attr.startswith(prefix) and callable(getattr(CameraDevice, attr)):
                members.setdefault(attr[len(prefix) :], set()).add(method)
    # ImageArray is answered by the streaming image path in app.py, not by a get_ handler.
    members["imagearray"] = {"GET"}
    members["imagearrayvariant"] = {"GET"}
    return {k: frozenset(v) for k, v in members.items()}


CameraDevice.MEMBERS = _build_members()


async def run_blocking(pool: concurrent.futures.Executor, fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in ``pool`` without blocking the loop; a hung core call becomes a driver error."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(pool, fn), timeout)
    except TimeoutError:
        raise AlpacaError(TIMEOUT, f"the camera did not answer within {timeout:g} s") from None
