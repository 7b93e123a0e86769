"""The simulated libASICamera2: a table of real C function pointers.

Each `ASIxxx` attribute of SimulatedLibrary is a `ctypes.CFUNCTYPE` object built around a Python
implementation, with the C prototype of the SDK function (the same prototypes zwoasi declares in
`zwoasi.init()`). Calling it goes Python -> libffi -> C thunk -> Python, exactly like calling into
the real shared library, so argument marshalling (struct pointers, out-parameters, `c_long`
sizes, raw buffers) is exercised for real.

The only liberty taken is on the Python side of struct parameters: the per-function `argtypes`
accept our own structs *and* any ctypes Structure with a byte-identical layout (zwoasi's
`_ASI_CAMERA_INFO` and friends, whose classes are not ours), mirroring what the real CDLL accepts
once zwoasi has declared its argtypes. Every other parameter keeps the exact ctypes type zwoasi
declares, so a call the real library would reject is rejected here too.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from ctypes import POINTER, c_char, c_char_p, c_int, c_long
from typing import TYPE_CHECKING, Any, Protocol

from .constants import SDK_VERSION, ImgType
from .constants import AsiError as E

if TYPE_CHECKING:  # pragma: no cover
    from ctypes import _Pointer

    from .camera import SimCamera
    from .faults import FaultPlan

    # What the C thunks receive for pointer parameters (POINTER(x) instances; NULL is falsy).
    IntOut = _Pointer[c_int]
    LongOut = _Pointer[c_long]
    CharPtr = _Pointer[c_char]

log = logging.getLogger(__name__)

__all__ = ["ASI_CAMERA_INFO", "ASI_CONTROL_CAPS", "ASI_ID", "ASI_SN", "ASI_SUPPORTED_MODE", "NOT_SIMULATED",
           "PRODUCT_IDS", "PROTOTYPES", "SimulatedLibrary", "ZWO_VENDOR_ID"]


# ----------------------------------------------------------------------------- C structures (ASICamera2.h)

class ASI_CAMERA_INFO(ctypes.Structure):
    """ASI_CAMERA_INFO; `long` fields are the platform's C long, as in the header."""

    _fields_ = [
        ("Name", c_char * 64),
        ("CameraID", c_int),
        ("MaxHeight", c_long),
        ("MaxWidth", c_long),
        ("IsColorCam", c_int),
        ("BayerPattern", c_int),
        ("SupportedBins", c_int * 16),
        ("SupportedVideoFormat", c_int * 8),
        ("PixelSize", ctypes.c_double),
        ("MechanicalShutter", c_int),
        ("ST4Port", c_int),
        ("IsCoolerCam", c_int),
        ("IsUSB3Host", c_int),
        ("IsUSB3Camera", c_int),
        ("ElecPerADU", ctypes.c_float),
        ("BitDepth", c_int),
        ("IsTriggerCam", c_int),
        ("Unused", c_char * 16),
    ]


class ASI_CONTROL_CAPS(ctypes.Structure):
    """ASI_CONTROL_CAPS."""

    _fields_ = [
        ("Name", c_char * 64),
        ("Description", c_char * 128),
        ("MaxValue", c_long),
        ("MinValue", c_long),
        ("DefaultValue", c_long),
        ("IsAutoSupported", c_int),
        ("IsWritable", c_int),
        ("ControlType", c_int),
        ("Unused", c_char * 32),
    ]


class ASI_ID(ctypes.Structure):
    """ASI_ID: 8 bytes stored in the camera's flash."""

    _fields_ = [("id", ctypes.c_ubyte * 8)]


class ASI_SN(ctypes.Structure):
    """ASI_SN (a typedef of ASI_ID in the header): the 8-byte serial number."""

    _fields_ = [("id", ctypes.c_ubyte * 8)]


class ASI_SUPPORTED_MODE(ctypes.Structure):
    """ASI_SUPPORTED_MODE: camera modes, terminated by ASI_MODE_END (-1)."""

    _fields_ = [("SupportedCameraMode", c_int * 16)]


_Layout = tuple[int, tuple[tuple[str, int, int], ...]]


def _layout(struct: type) -> _Layout | None:
    if not (isinstance(struct, type) and issubclass(struct, ctypes.Structure)):
        return None
    try:
        return ctypes.sizeof(struct), tuple((f[0], getattr(struct, f[0]).offset, getattr(struct, f[0]).size)
                                           for f in struct._fields_)
    except (AttributeError, TypeError):
        return None


def _same_layout(a: type, b: type) -> bool:
    la = _layout(a)
    return la is not None and la == _layout(b)


def _struct_pointer(struct: type[ctypes.Structure]) -> type:
    """An argtypes entry for `struct *` that also accepts byte-identical foreign structs."""
    ptr_t: type[_Pointer[ctypes.Structure]] = POINTER(struct)

    class _Arg:
        _type_ = struct  # lets callers create the pointee, as with a POINTER type

        @classmethod
        def from_param(cls, obj: object) -> object:
            if obj is None:
                return None
            if isinstance(obj, struct):
                return ctypes.byref(obj)
            if isinstance(obj, ptr_t):
                return obj
            if isinstance(obj, ctypes.Structure) and _same_layout(type(obj), struct):
                return ctypes.byref(obj)
            if isinstance(obj, ctypes._Pointer) and _same_layout(obj._type_, struct):  # noqa: SLF001
                return ctypes.cast(obj, ptr_t)
            if isinstance(obj, ctypes.Array) and ctypes.sizeof(obj) >= ctypes.sizeof(struct):
                return ctypes.byref(obj)
            if type(obj).__name__ == "CArgObject":  # ctypes.byref(x): an address, trusted as C would
                return obj
            raise TypeError(f"expected {struct.__name__} or a byte-identical structure, not {type(obj).__name__}")

    _Arg.__name__ = _Arg.__qualname__ = f"LP_{struct.__name__}"
    return _Arg


def _struct_value(struct: type[ctypes.Structure]) -> type:
    """An argtypes entry for a `struct` passed by value that also accepts byte-identical foreign structs."""

    class _Arg:
        _type_ = struct

        @classmethod
        def from_param(cls, obj: object) -> object:
            if isinstance(obj, struct):
                return obj
            if isinstance(obj, ctypes.Structure) and _same_layout(type(obj), struct):
                return struct.from_buffer_copy(obj)
            raise TypeError(f"expected {struct.__name__} or a byte-identical structure, not {type(obj).__name__}")

    _Arg.__name__ = _Arg.__qualname__ = struct.__name__
    return _Arg


PI = POINTER(c_int)
PL = POINTER(c_long)
PC = POINTER(c_char)

#: name -> (restype, C argument types). These are the prototypes zwoasi declares in zwoasi.init(),
#: plus those of ASICamera2.h it does not declare: ASIGetProductIDs, ASICameraCheck,
#: ASIGetCameraPropertyByID, ASIGetLMHGainOffset, ASIGetSerialNumber and ASIGetSDKVersion.
PROTOTYPES: dict[str, tuple[type, tuple[type, ...]]] = {
    "ASIGetNumOfConnectedCameras": (c_int, ()),
    "ASIGetProductIDs": (c_int, (PI,)),
    "ASICameraCheck": (c_int, (c_int, c_int)),  # returns ASI_BOOL
    "ASIGetCameraProperty": (c_int, (POINTER(ASI_CAMERA_INFO), c_int)),
    "ASIGetCameraPropertyByID": (c_int, (c_int, POINTER(ASI_CAMERA_INFO))),
    "ASIOpenCamera": (c_int, (c_int,)),
    "ASIInitCamera": (c_int, (c_int,)),
    "ASICloseCamera": (c_int, (c_int,)),
    "ASIGetNumOfControls": (c_int, (c_int, PI)),
    "ASIGetControlCaps": (c_int, (c_int, c_int, POINTER(ASI_CONTROL_CAPS))),
    "ASIGetControlValue": (c_int, (c_int, c_int, PL, PI)),
    "ASISetControlValue": (c_int, (c_int, c_int, c_long, c_int)),
    "ASIGetROIFormat": (c_int, (c_int, PI, PI, PI, PI)),
    "ASISetROIFormat": (c_int, (c_int, c_int, c_int, c_int, c_int)),
    "ASIGetStartPos": (c_int, (c_int, PI, PI)),
    "ASISetStartPos": (c_int, (c_int, c_int, c_int)),
    "ASIGetDroppedFrames": (c_int, (c_int, PI)),
    "ASIEnableDarkSubtract": (c_int, (c_int, PC)),
    "ASIDisableDarkSubtract": (c_int, (c_int,)),
    "ASIStartVideoCapture": (c_int, (c_int,)),
    "ASIStopVideoCapture": (c_int, (c_int,)),
    "ASIGetVideoData": (c_int, (c_int, PC, c_long, c_int)),
    "ASIPulseGuideOn": (c_int, (c_int, c_int)),
    "ASIPulseGuideOff": (c_int, (c_int, c_int)),
    "ASIStartExposure": (c_int, (c_int, c_int)),
    "ASIStopExposure": (c_int, (c_int,)),
    "ASIGetExpStatus": (c_int, (c_int, PI)),
    "ASIGetDataAfterExp": (c_int, (c_int, PC, c_long)),
    "ASIGetID": (c_int, (c_int, POINTER(ASI_ID))),
    "ASISetID": (c_int, (c_int, ASI_ID)),
    "ASIGetGainOffset": (c_int, (c_int, PI, PI, PI, PI)),
    "ASIGetLMHGainOffset": (c_int, (c_int, PI, PI, PI, PI)),
    "ASIGetSerialNumber": (c_int, (c_int, POINTER(ASI_SN))),
    "ASIGetCameraSupportMode": (c_int, (c_int, POINTER(ASI_SUPPORTED_MODE))),
    "ASIGetCameraMode": (c_int, (c_int, PI)),
    "ASISetCameraMode": (c_int, (c_int, c_int)),
    "ASISendSoftTrigger": (c_int, (c_int, c_int)),
    "ASIGetTriggerOutputIOConf": (c_int, (c_int, c_int, PI, PL, PL)),
    "ASISetTriggerOutputIOConf": (c_int, (c_int, c_int, c_int, c_long, c_long)),
    "ASIGetSDKVersion": (c_char_p, ()),
}

#: Functions that return no ASI_ERROR_CODE and so cannot have errors injected.
NOT_INJECTABLE = frozenset({"ASIGetNumOfConnectedCameras", "ASIGetSDKVersion", "ASIGetProductIDs",
                            "ASICameraCheck"})

#: ZWO's USB vendor ID, the one ASICameraCheck accepts.
ZWO_VENDOR_ID = 0x03C3

#: The USB product IDs libASICamera2 1.41 supports, in the order its ASIGetProductIDs lists them
#: (read from pyzwoasi's bundled libASICamera2.so.1.41 with no camera attached; ASICameraCheck
#: accepts exactly these with ZWO's vendor ID). A property of the library, not of attached cameras.
PRODUCT_IDS: tuple[int, ...] = (
    0x130A, 0x120A, 0x120B, 0x035B, 0x035A, 0x030A, 0x034B, 0x031B, 0x031A, 0x071A, 0x071B, 0x094B, 0x120D,
    0x120E, 0x120C, 0x120F, 0x128F, 0x136A, 0x136C, 0x136D, 0x174B, 0x174A, 0x174D, 0x174C, 0x174F, 0x174E,
    0x1749, 0x178C, 0x178A, 0x178D, 0x178B, 0x178E, 0x178F, 0x183A, 0x183B, 0x183E, 0x183F, 0x183C, 0x185A,
    0x185B, 0x1602, 0x1600, 0x1603, 0x1601, 0x1604, 0x1605, 0x1606, 0x200F, 0x2209, 0x208D, 0x208F, 0x224A,
    0x224B, 0x224C, 0x224D, 0x226A, 0x252B, 0x269B, 0x269F, 0x271B, 0x271F, 0x273A, 0x273E, 0x290B, 0x290A,
    0x290D, 0x290C, 0x291A, 0x291B, 0x290F, 0x294A, 0x294B, 0x294E, 0x294F, 0x2979, 0x2405, 0x260E, 0x260A,
    0x2601, 0x2602, 0x220A, 0x220B, 0x334B, 0x334F, 0x335B, 0x335F, 0x385B, 0x385D, 0x385F, 0x440F, 0x411E,
    0x4309, 0x430E, 0x432A, 0x432B, 0x432E, 0x433E, 0x4339, 0x461E, 0x462A, 0x462B, 0x462C, 0x462F, 0x4629,
    0x464B, 0x464F, 0x472F, 0x482B, 0x482F, 0x485B, 0x485F, 0x492A, 0x492E, 0x430A, 0x503E, 0x503F, 0x533A,
    0x533B, 0x533E, 0x533F, 0x5828, 0x5859, 0x585C, 0x585B, 0x585E, 0x585F, 0x5858, 0x620A, 0x620B, 0x662C,
    0x662B, 0x6629, 0x662E, 0x662F, 0x664C, 0x664D, 0x664E, 0x664F, 0x675C, 0x675D, 0x675E, 0x675F, 0x676C,
    0x676D, 0x676E, 0x676F, 0x678A, 0x678B, 0x678F, 0x715C, 0x715D, 0x715E, 0x715F, 0x991E, 0x992E, 0x990E,
)

#: Exported by libASICamera2 1.41 but not simulated, because neither zwoasi nor the core calls them:
#: the GPS functions (no simulated model has GPS) and the undocumented debug-log functions (absent from
#: ASICamera2.h, signatures unpublished). tests/driver/test_sdk_differential.py checks that the real
#: library exports nothing else the simulator lacks.
NOT_SIMULATED = frozenset({"ASIGPSGetData", "ASIGetDataAfterExpGPS", "ASIGetVideoDataGPS", "ASIEnableDebugLog",
                           "ASIGetDebugLogIsEnabled", "ASIGetDebugLogPath"})


def _python_argtypes(argtypes: tuple[type, ...]) -> list[type]:
    out: list[type] = []
    for t in argtypes:
        if isinstance(t, type) and issubclass(t, ctypes._Pointer) and issubclass(t._type_, ctypes.Structure):  # noqa: SLF001
            out.append(_struct_pointer(t._type_))
        elif isinstance(t, type) and issubclass(t, ctypes.Structure):
            out.append(_struct_value(t))
        else:
            out.append(t)
    return out


def _addr(p: CharPtr) -> int | None:
    return ctypes.cast(p, ctypes.c_void_p).value


class _Refused(Exception):
    """Raised inside an implementation to return an error code (no such camera, unplugged) at once."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class LibraryHost(Protocol):
    """What the library table needs from the SimulatedSDK that owns it (declared here, so this
    module does not import the SDK that imports it)."""

    cameras: list[SimCamera]  #: by slot (= ASI CameraID)
    faults: FaultPlan  #: forced errors and due unplugs, consulted before every call
    _shut_down: bool  #: after shutdown() every call fails

    def _count(self, name: str) -> None:
        """Count one call of the ASI function ``name``."""

    def _plugged_slots(self) -> list[int]:
        """Slots currently enumerated, in enumeration order."""

    def _seen(self, slot: int) -> bool:
        """Whether the SDK has seen the camera in ``slot`` on the bus since install."""


class SimulatedLibrary:
    """Stands where zwoasi expects the CDLL: `zwoasi.zwolib = SimulatedLibrary(sdk)`.

    Holds strong references to every CFUNCTYPE object (a collected thunk would crash the caller).
    Unknown attributes raise AttributeError like a missing symbol in a CDLL.
    """

    def __init__(self, sdk: LibraryHost):
        self._sdk = sdk
        self._version = ctypes.create_string_buffer(SDK_VERSION.encode())
        self._functions: dict[str, Any] = {}
        for name, (restype, argtypes) in PROTOTYPES.items():
            impl = getattr(self, "_" + name)
            fn = ctypes.CFUNCTYPE(restype, *argtypes)(self._thunk(name, impl, restype))
            fn.argtypes = _python_argtypes(argtypes)
            self._functions[name] = fn
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"simulated libASICamera2: undefined symbol: {name}")

    def __repr__(self) -> str:
        return f"<SimulatedLibrary of {self._sdk!r}>"

    @property
    def function_names(self) -> list[str]:
        return list(self._functions)

    # ------------------------------------------------------------------ dispatch

    def _thunk(self, name: str, impl: Callable[..., int], restype: type) -> Callable[..., int]:
        sdk = self._sdk
        fail: int = E.GENERAL_ERROR
        if name in ("ASIGetNumOfConnectedCameras", "ASIGetProductIDs", "ASICameraCheck"):
            fail = 0  # no cameras, no product IDs, ASI_FALSE
        elif restype is c_char_p:
            fail = ctypes.addressof(self._version)

        def thunk(*args: Any) -> int:
            try:
                sdk._count(name)  # noqa: SLF001 - the SDK's side of the LibraryHost protocol (same package)
                if sdk._shut_down:  # noqa: SLF001
                    return fail if name in NOT_INJECTABLE else E.CAMERA_REMOVED
                sdk.faults.process_due(time.monotonic())
                if name not in NOT_INJECTABLE:
                    code = sdk.faults.take(name, self._slot_of(name, args))
                    if code is not None:
                        return code
                return impl(*args)
            except _Refused as refused:
                return refused.code
            except Exception:  # an exception must never cross into C: ctypes would return garbage
                log.exception("simulated %s failed", name)
                return fail

        thunk.__name__ = name
        return thunk

    def _slot_of(self, name: str, args: tuple[Any, ...]) -> int | None:
        if name == "ASIGetCameraProperty":
            plugged = self._sdk._plugged_slots()  # noqa: SLF001
            idx = args[1]
            return plugged[idx] if 0 <= idx < len(plugged) else None
        return args[0] if args else None

    def _cam(self, cid: int) -> SimCamera:
        """The camera in slot ``cid``; raises _Refused (answered by the thunk) when there is none."""
        cams = self._sdk.cameras
        if not 0 <= cid < len(cams):
            raise _Refused(E.INVALID_ID)
        cam = cams[cid]
        if not cam.plugged:
            # A camera not plugged in since start is no camera at all to the SDK (measured: with no
            # camera attached, libASICamera2 1.41 answers INVALID_ID for every ID and every call).
            raise _Refused(E.CAMERA_REMOVED if self._sdk._seen(cid) else E.INVALID_ID)  # noqa: SLF001
        return cam

    # ------------------------------------------------------------------ enumeration

    def _ASIGetNumOfConnectedCameras(self) -> int:
        return len(self._sdk._plugged_slots())  # noqa: SLF001

    def _ASIGetProductIDs(self, out: IntOut) -> int:
        # The header's protocol: call with NULL for the length, then with a buffer that long.
        if out:
            for i, pid in enumerate(PRODUCT_IDS):
                out[i] = pid
        return len(PRODUCT_IDS)

    def _ASICameraCheck(self, vid: int, pid: int) -> int:
        return int(vid == ZWO_VENDOR_ID and pid in PRODUCT_IDS)

    def _fill_info(self, info: ASI_CAMERA_INFO, cam: SimCamera) -> None:
        m = cam.model
        ctypes.memset(ctypes.addressof(info), 0, ctypes.sizeof(info))
        info.Name = m.name.encode()[:63]
        info.CameraID = cam.slot
        info.MaxHeight = m.max_height
        info.MaxWidth = m.max_width
        info.IsColorCam = int(m.is_color)
        info.BayerPattern = int(m.bayer_pattern)
        for i, b in enumerate(m.supported_bins[:15]):
            info.SupportedBins[i] = b
        fmts = list(m.supported_formats[:7])
        for i, f in enumerate(fmts):
            info.SupportedVideoFormat[i] = int(f)
        info.SupportedVideoFormat[len(fmts)] = int(ImgType.END)
        info.PixelSize = m.pixel_size_um
        info.MechanicalShutter = int(m.mechanical_shutter)
        info.ST4Port = int(m.st4)
        info.IsCoolerCam = int(m.cooled)
        info.IsUSB3Host = int(m.usb3)
        info.IsUSB3Camera = int(m.usb3)
        info.ElecPerADU = m.elec_per_adu_gain0
        info.BitDepth = m.bit_depth
        info.IsTriggerCam = int(m.trigger)

    def _ASIGetCameraProperty(self, info: _Pointer[ASI_CAMERA_INFO], index: int) -> int:
        plugged = self._sdk._plugged_slots()  # noqa: SLF001
        if not 0 <= index < len(plugged):
            return E.INVALID_INDEX
        if not info:
            return E.GENERAL_ERROR
        self._fill_info(info.contents, self._sdk.cameras[plugged[index]])
        return E.SUCCESS

    def _ASIGetCameraPropertyByID(self, cid: int, info: _Pointer[ASI_CAMERA_INFO]) -> int:
        cam = self._cam(cid)
        if not info:
            return E.GENERAL_ERROR
        self._fill_info(info.contents, cam)
        return E.SUCCESS

    # ------------------------------------------------------------------ open / close

    def _ASIOpenCamera(self, cid: int) -> int:
        return self._cam(cid).open()

    def _ASIInitCamera(self, cid: int) -> int:
        return self._cam(cid).init()

    def _ASICloseCamera(self, cid: int) -> int:
        return self._cam(cid).close()

    # ------------------------------------------------------------------ controls

    def _ASIGetNumOfControls(self, cid: int, out: IntOut) -> int:
        cam = self._cam(cid)
        err, n = cam.num_controls()
        if not err:
            out[0] = n
        return err

    def _ASIGetControlCaps(self, cid: int, index: int, caps: _Pointer[ASI_CONTROL_CAPS]) -> int:
        cam = self._cam(cid)
        err, spec = cam.control_caps(index)
        if err:
            return err
        assert spec is not None  # success always comes with the control's caps
        if not caps:
            return E.GENERAL_ERROR
        c = caps.contents
        ctypes.memset(ctypes.addressof(c), 0, ctypes.sizeof(c))
        c.Name = spec.name.encode()[:63]
        c.Description = spec.description.encode()[:127]
        c.MaxValue = spec.max_value
        c.MinValue = spec.min_value
        c.DefaultValue = spec.default
        c.IsAutoSupported = int(spec.auto_supported)
        c.IsWritable = int(spec.writable)
        c.ControlType = int(spec.control_type)
        return E.SUCCESS

    def _ASIGetControlValue(self, cid: int, ctype: int, value: LongOut, auto: IntOut) -> int:
        cam = self._cam(cid)
        err, v, a = cam.get_control(ctype)
        if not err:
            if value:
                value[0] = v
            if auto:
                auto[0] = int(a)
        return err

    def _ASISetControlValue(self, cid: int, ctype: int, value: int, auto: int) -> int:
        return self._cam(cid).set_control(ctype, value, bool(auto))

    # ------------------------------------------------------------------ ROI

    def _ASIGetROIFormat(self, cid: int, w: IntOut, h: IntOut, b: IntOut, t: IntOut) -> int:
        cam = self._cam(cid)
        err, roi = cam.get_roi()
        if not err:
            for p, v in zip((w, h, b, t), roi, strict=True):
                if p:
                    p[0] = v
        return err

    def _ASISetROIFormat(self, cid: int, w: int, h: int, b: int, t: int) -> int:
        return self._cam(cid).set_roi(w, h, b, t)

    def _ASIGetStartPos(self, cid: int, x: IntOut, y: IntOut) -> int:
        cam = self._cam(cid)
        err, (sx, sy) = cam.get_start()
        if not err:
            if x:
                x[0] = sx
            if y:
                y[0] = sy
        return err

    def _ASISetStartPos(self, cid: int, x: int, y: int) -> int:
        return self._cam(cid).set_start(x, y)

    # ------------------------------------------------------------------ capture

    def _ASIStartExposure(self, cid: int, is_dark: int) -> int:
        return self._cam(cid).start_exposure(bool(is_dark))

    def _ASIStopExposure(self, cid: int) -> int:
        return self._cam(cid).stop_exposure()

    def _ASIGetExpStatus(self, cid: int, out: IntOut) -> int:
        cam = self._cam(cid)
        err, status = cam.exp_status()
        if not err and out:
            out[0] = status
        return err

    def _ASIGetDataAfterExp(self, cid: int, buf: CharPtr, size: int) -> int:
        cam = self._cam(cid)
        address = _addr(buf)
        if address is None:
            return E.GENERAL_ERROR
        return cam.data_after_exp(address, int(size))

    def _ASIStartVideoCapture(self, cid: int) -> int:
        return self._cam(cid).start_video()

    def _ASIStopVideoCapture(self, cid: int) -> int:
        return self._cam(cid).stop_video()

    def _ASIGetVideoData(self, cid: int, buf: CharPtr, size: int, wait_ms: int) -> int:
        cam = self._cam(cid)
        address = _addr(buf)
        if address is None:
            return E.GENERAL_ERROR
        return cam.video_data(address, int(size), int(wait_ms))

    def _ASIGetDroppedFrames(self, cid: int, out: IntOut) -> int:
        cam = self._cam(cid)
        err, n = cam.dropped_frames()
        if not err and out:
            out[0] = n
        return err

    # ------------------------------------------------------------------ guiding, identity, modes

    def _ASIPulseGuideOn(self, cid: int, direction: int) -> int:
        return self._cam(cid).pulse(direction, True)

    def _ASIPulseGuideOff(self, cid: int, direction: int) -> int:
        return self._cam(cid).pulse(direction, False)

    def _ASIGetID(self, cid: int, out: _Pointer[ASI_ID]) -> int:
        cam = self._cam(cid)
        err, value = cam.get_id()
        if not err and out:
            ctypes.memmove(ctypes.addressof(out.contents), value, 8)
        return err

    def _ASISetID(self, cid: int, value: ASI_ID) -> int:
        return self._cam(cid).set_id(bytes(value.id))

    def _ASIGetGainOffset(self, cid: int, a: IntOut, b: IntOut, c: IntOut, d: IntOut) -> int:
        cam = self._cam(cid)
        err, vals = cam.gain_offset()
        if not err:
            for p, v in zip((a, b, c, d), vals, strict=True):
                if p:
                    p[0] = v
        return err

    def _ASIGetLMHGainOffset(self, cid: int, low: IntOut, mid: IntOut, high: IntOut, high_offset: IntOut) -> int:
        # The header: high gain and its offset are those of the lowest read noise (ASIGetGainOffset's
        # last two); low and middle gain are estimates: 0 (highest dynamic range) and unity gain.
        cam = self._cam(cid)
        err, (_, _, gain_lowest_rn, offset_lowest_rn) = cam.gain_offset()
        if not err:
            for p, v in zip((low, mid, high, high_offset), (0, cam.model.unity_gain, gain_lowest_rn, offset_lowest_rn),
                            strict=True):
                if p:
                    p[0] = v
        return err

    def _ASIGetSerialNumber(self, cid: int, out: _Pointer[ASI_SN]) -> int:
        cam = self._cam(cid)
        err, value = cam.serial_number()
        if not err:
            if not out:
                return E.GENERAL_ERROR
            ctypes.memmove(ctypes.addressof(out.contents), value, 8)
        return err

    def _ASIGetCameraSupportMode(self, cid: int, out: _Pointer[ASI_SUPPORTED_MODE]) -> int:
        cam = self._cam(cid)
        err, modes = cam.supported_modes()
        if not err and out:
            arr = out.contents.SupportedCameraMode
            for i in range(16):
                arr[i] = modes[i] if i < len(modes) else -1
        return err

    def _ASIGetCameraMode(self, cid: int, out: IntOut) -> int:
        cam = self._cam(cid)
        err, mode = cam.get_mode()
        if not err and out:
            out[0] = mode
        return err

    def _ASISetCameraMode(self, cid: int, mode: int) -> int:
        return self._cam(cid).set_mode(mode)

    def _ASISendSoftTrigger(self, cid: int, start: int) -> int:
        return self._cam(cid).soft_trigger(bool(start))

    def _ASIGetTriggerOutputIOConf(self, cid: int, pin: int, high: IntOut, delay: LongOut, duration: LongOut) -> int:
        cam = self._cam(cid)
        err, conf = cam.trigger_output(pin)
        if not err:
            outs: tuple[IntOut | LongOut, ...] = (high, delay, duration)
            for p, v in zip(outs, conf, strict=True):
                if p:
                    p[0] = v
        return err

    def _ASISetTriggerOutputIOConf(self, cid: int, pin: int, high: int, delay: int, duration: int) -> int:
        cam = self._cam(cid)
        return cam.trigger_output(pin, (int(bool(high)), int(delay), int(duration)))[0]

    def _ASIEnableDarkSubtract(self, cid: int, path: CharPtr) -> int:
        cam = self._cam(cid)
        if not path:
            return E.INVALID_PATH
        raw = ctypes.cast(path, c_char_p).value or b""
        return cam.dark_subtract(raw.decode(errors="surrogateescape"))

    def _ASIDisableDarkSubtract(self, cid: int) -> int:
        return self._cam(cid).dark_subtract(None)

    def _ASIGetSDKVersion(self) -> int:
        # Returned as an address: a bytes object would have to be kept alive by ctypes (a leak).
        return ctypes.addressof(self._version)
