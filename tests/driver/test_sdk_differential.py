"""Differential tests: the simulated SDK with no camera against ZWO's libASICamera2 with no camera.

pyzwoasi's wheel bundles ZWO's real library, which loads on this machine and sees no camera. Every
call that can be made without a camera is made against it and against the simulator (installed
the documented way, ``driver.simulator.install(models=())``), through the same ctypes prototypes
(``driver.simulator.library.PROTOTYPES``), with out-parameters pre-filled with a sentinel; the
return codes and what the out-parameters hold afterwards must be identical. A call the real
library answers differently is a simulator bug. The same calls go through zwoasi too (what the
core sees: exception type and message), and the real library's answers are checked against the
clauses of ``driver/sdk_contract.py`` they are the measured source of.

Each side runs in a child process: this file run as a script (``python
tests/driver/test_sdk_differential.py real LIB`` or ``... sim CONFIG``) prints its answers as JSON.
A crash or hang inside ZWO's code then cannot take pytest down, and the library's process-wide
state (its libusb context) and zwoasi's module-global library stay out of the test process.

Only calls measured safe with no camera are made (every one checks the camera ID first, before
touching any pointer or size); calls that would be unsafe with a camera attached (an oversized
``lBuffSize``, a short ``ASIGetProductIDs`` buffer) are not made at all, and with a camera attached
the test skips rather than open it.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__" and str(ROOT) not in sys.path:  # run as a script in the child
    sys.path.insert(0, str(ROOT))

from driver.simulator.library import (  # noqa: E402 - after the script-mode path fix
    ASI_CAMERA_INFO,
    ASI_CONTROL_CAPS,
    ASI_ID,
    ASI_SN,
    ASI_SUPPORTED_MODE,
    NOT_SIMULATED,
    PRODUCT_IDS,
    PROTOTYPES,
    ZWO_VENDOR_ID,
)

#: Camera IDs no camera has: ASICAMERA_ID_MAX is 256 in the header, so 255/256 are the edge.
ABSENT_IDS = (0, 1, 2, -1, 255, 256, 1000, 2**31 - 1, -(2**31))
#: Indexes for ASIGetCameraProperty with no camera.
ABSENT_INDEXES = (0, 1, -1, 1000, 2**31 - 1, -(2**31))
SENTINEL = -7  # what int/long out-parameters hold before the call
FILL = 0xAB  # what struct out-parameters hold before the call
#: Simulator configurations that must answer like the real library with no camera; for each, the
#: IDs and indexes where that must hold (a simulator with cameras: only those beyond them).
SIM_CONFIGS: dict[str, tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]] = {
    "no-camera": ({"models": ()}, ABSENT_IDS, ABSENT_INDEXES),
    "not-plugged-in-yet": ({"models": ("asi294mc-pro", "asi120mm-mini"), "unplugged": (0, 1)},
                           ABSENT_IDS, ABSENT_INDEXES),
    "ids-beyond-its-cameras": ({"models": ("asi294mc-pro", "asi120mm-mini")},
                               tuple(i for i in ABSENT_IDS if i not in (0, 1)),
                               tuple(i for i in ABSENT_INDEXES if i not in (0, 1))),
}
CHILD_TIMEOUT_S = 60


# ============================================================================ the probes (run in the child)

class Answer:
    """One probe's answer: the return codes of its calls and what their out-parameters held after."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.outs: list[Any] = []

    def code(self, value: int) -> None:
        self.codes.append(int(value))

    def out(self, *values: Any) -> None:
        for v in values:
            if isinstance(v, ctypes.Structure):
                raw = bytes(v)
                self.outs.append("untouched" if raw == bytes([FILL]) * len(raw) else raw.hex())
            elif isinstance(v, ctypes.Array):  # a data buffer
                self.outs.append("untouched" if v.raw == bytes([FILL]) * len(v) else v.raw.hex())
            else:
                self.outs.append("untouched" if v.value == SENTINEL else v.value)

    def json(self) -> dict[str, list[Any]]:
        return {"codes": self.codes, "outs": self.outs}


def _ints(n: int, kind: type = ctypes.c_int) -> list[Any]:
    return [kind(SENTINEL) for _ in range(n)]


def _filled(struct: type) -> Any:
    s = struct()
    ctypes.memset(ctypes.addressof(s), FILL, ctypes.sizeof(s))
    return s


def _buffer() -> Any:
    return ctypes.create_string_buffer(bytes([FILL]) * 64, 64)


IdProbe = Callable[[Any, int, Answer], None]
ID_PROBES: dict[str, IdProbe] = {}


def id_probe(function: str) -> Callable[[IdProbe], IdProbe]:
    """Register a per-camera-ID probe of the ASI function `function`."""
    def register(fn: IdProbe) -> IdProbe:
        ID_PROBES[function] = fn
        return fn
    return register


@id_probe("ASIGetCameraPropertyByID")
def probe_asigetcamerapropertybyid(lib: Any, i: int, a: Answer) -> None:
    info = _filled(ASI_CAMERA_INFO)
    a.code(lib.ASIGetCameraPropertyByID(i, info))
    a.out(info)
    a.code(lib.ASIGetCameraPropertyByID(i, None))


@id_probe("ASIOpenCamera")
def probe_asiopencamera(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIOpenCamera(i))
    a.code(lib.ASIOpenCamera(i))


@id_probe("ASIInitCamera")
def probe_asiinitcamera(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIInitCamera(i))


@id_probe("ASICloseCamera")
def probe_asiclosecamera(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASICloseCamera(i))
    a.code(lib.ASICloseCamera(i))


@id_probe("ASIGetNumOfControls")
def probe_asigetnumofcontrols(lib: Any, i: int, a: Answer) -> None:
    n = ctypes.c_int(SENTINEL)
    a.code(lib.ASIGetNumOfControls(i, ctypes.byref(n)))
    a.out(n)
    a.code(lib.ASIGetNumOfControls(i, None))


@id_probe("ASIGetControlCaps")
def probe_asigetcontrolcaps(lib: Any, i: int, a: Answer) -> None:
    for index in (0, 1, -1, 100):
        caps = _filled(ASI_CONTROL_CAPS)
        a.code(lib.ASIGetControlCaps(i, index, caps))
        a.out(caps)
    a.code(lib.ASIGetControlCaps(i, 0, None))


@id_probe("ASIGetControlValue")
def probe_asigetcontrolvalue(lib: Any, i: int, a: Answer) -> None:
    for control in (0, 1, 8, 17, -1, 100):  # gain, exposure, temperature, cooler on, no such types
        value, auto = ctypes.c_long(SENTINEL), ctypes.c_int(SENTINEL)
        a.code(lib.ASIGetControlValue(i, control, ctypes.byref(value), ctypes.byref(auto)))
        a.out(value, auto)
    a.code(lib.ASIGetControlValue(i, 0, None, None))


@id_probe("ASISetControlValue")
def probe_asisetcontrolvalue(lib: Any, i: int, a: Answer) -> None:
    for control, value, auto in ((0, 100, 0), (1, 1000, 1), (8, 0, 0), (-1, 0, 0), (100, 5, 0)):
        a.code(lib.ASISetControlValue(i, control, value, auto))


@id_probe("ASIGetROIFormat")
def probe_asigetroiformat(lib: Any, i: int, a: Answer) -> None:
    out = _ints(4)
    a.code(lib.ASIGetROIFormat(i, *(ctypes.byref(x) for x in out)))
    a.out(*out)
    a.code(lib.ASIGetROIFormat(i, None, None, None, None))


@id_probe("ASISetROIFormat")
def probe_asisetroiformat(lib: Any, i: int, a: Answer) -> None:
    for args in ((640, 480, 1, 0), (3, 3, 5, 9), (0, 0, 0, -1)):
        a.code(lib.ASISetROIFormat(i, *args))


@id_probe("ASIGetStartPos")
def probe_asigetstartpos(lib: Any, i: int, a: Answer) -> None:
    out = _ints(2)
    a.code(lib.ASIGetStartPos(i, *(ctypes.byref(x) for x in out)))
    a.out(*out)
    a.code(lib.ASIGetStartPos(i, None, None))


@id_probe("ASISetStartPos")
def probe_asisetstartpos(lib: Any, i: int, a: Answer) -> None:
    for x, y in ((0, 0), (-5, -5), (100000, 100000)):
        a.code(lib.ASISetStartPos(i, x, y))


@id_probe("ASIGetDroppedFrames")
def probe_asigetdroppedframes(lib: Any, i: int, a: Answer) -> None:
    n = ctypes.c_int(SENTINEL)
    a.code(lib.ASIGetDroppedFrames(i, ctypes.byref(n)))
    a.out(n)
    a.code(lib.ASIGetDroppedFrames(i, None))


@id_probe("ASIEnableDarkSubtract")
def probe_asienabledarksubtract(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIEnableDarkSubtract(i, b"/nonexistent/dark.bmp"))
    a.code(lib.ASIEnableDarkSubtract(i, None))


@id_probe("ASIDisableDarkSubtract")
def probe_asidisabledarksubtract(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIDisableDarkSubtract(i))


@id_probe("ASIStartVideoCapture")
def probe_asistartvideocapture(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIStartVideoCapture(i))


@id_probe("ASIStopVideoCapture")
def probe_asistopvideocapture(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIStopVideoCapture(i))
    a.code(lib.ASIStopVideoCapture(i))


@id_probe("ASIGetVideoData")
def probe_asigetvideodata(lib: Any, i: int, a: Answer) -> None:
    for wait_ms in (0, 10, -1):  # -1 = forever: measured to return at once for an absent ID
        buf = _buffer()
        a.code(lib.ASIGetVideoData(i, buf, len(buf), wait_ms))
        a.out(buf)
    a.code(lib.ASIGetVideoData(i, None, 0, 10))


@id_probe("ASIPulseGuideOn")
def probe_asipulseguideon(lib: Any, i: int, a: Answer) -> None:
    for direction in (0, 3, 4, -1):
        a.code(lib.ASIPulseGuideOn(i, direction))


@id_probe("ASIPulseGuideOff")
def probe_asipulseguideoff(lib: Any, i: int, a: Answer) -> None:
    for direction in (0, 3, 4, -1):
        a.code(lib.ASIPulseGuideOff(i, direction))


@id_probe("ASIStartExposure")
def probe_asistartexposure(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIStartExposure(i, 0))
    a.code(lib.ASIStartExposure(i, 1))


@id_probe("ASIStopExposure")
def probe_asistopexposure(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASIStopExposure(i))
    a.code(lib.ASIStopExposure(i))


@id_probe("ASIGetExpStatus")
def probe_asigetexpstatus(lib: Any, i: int, a: Answer) -> None:
    status = ctypes.c_int(SENTINEL)
    a.code(lib.ASIGetExpStatus(i, ctypes.byref(status)))
    a.out(status)
    a.code(lib.ASIGetExpStatus(i, None))


@id_probe("ASIGetDataAfterExp")
def probe_asigetdataafterexp(lib: Any, i: int, a: Answer) -> None:
    buf = _buffer()
    a.code(lib.ASIGetDataAfterExp(i, buf, len(buf)))
    a.out(buf)
    a.code(lib.ASIGetDataAfterExp(i, None, 0))


@id_probe("ASIGetID")
def probe_asigetid(lib: Any, i: int, a: Answer) -> None:
    out = _filled(ASI_ID)
    a.code(lib.ASIGetID(i, out))
    a.out(out)
    a.code(lib.ASIGetID(i, None))


@id_probe("ASISetID")
def probe_asisetid(lib: Any, i: int, a: Answer) -> None:
    value = ASI_ID()
    value.id[:] = list(b"H5-probe")
    a.code(lib.ASISetID(i, value))


@id_probe("ASIGetGainOffset")
def probe_asigetgainoffset(lib: Any, i: int, a: Answer) -> None:
    out = _ints(4)
    a.code(lib.ASIGetGainOffset(i, *(ctypes.byref(x) for x in out)))
    a.out(*out)
    a.code(lib.ASIGetGainOffset(i, None, None, None, None))


@id_probe("ASIGetLMHGainOffset")
def probe_asigetlmhgainoffset(lib: Any, i: int, a: Answer) -> None:
    out = _ints(4)
    a.code(lib.ASIGetLMHGainOffset(i, *(ctypes.byref(x) for x in out)))
    a.out(*out)
    a.code(lib.ASIGetLMHGainOffset(i, None, None, None, None))


@id_probe("ASIGetSerialNumber")
def probe_asigetserialnumber(lib: Any, i: int, a: Answer) -> None:
    out = _filled(ASI_SN)
    a.code(lib.ASIGetSerialNumber(i, out))
    a.out(out)
    a.code(lib.ASIGetSerialNumber(i, None))


@id_probe("ASIGetCameraSupportMode")
def probe_asigetcamerasupportmode(lib: Any, i: int, a: Answer) -> None:
    out = _filled(ASI_SUPPORTED_MODE)
    a.code(lib.ASIGetCameraSupportMode(i, out))
    a.out(out)
    a.code(lib.ASIGetCameraSupportMode(i, None))


@id_probe("ASIGetCameraMode")
def probe_asigetcameramode(lib: Any, i: int, a: Answer) -> None:
    mode = ctypes.c_int(SENTINEL)
    a.code(lib.ASIGetCameraMode(i, ctypes.byref(mode)))
    a.out(mode)
    a.code(lib.ASIGetCameraMode(i, None))


@id_probe("ASISetCameraMode")
def probe_asisetcameramode(lib: Any, i: int, a: Answer) -> None:
    for mode in (0, 1, 6, 99, -1):
        a.code(lib.ASISetCameraMode(i, mode))


@id_probe("ASISendSoftTrigger")
def probe_asisendsofttrigger(lib: Any, i: int, a: Answer) -> None:
    a.code(lib.ASISendSoftTrigger(i, 1))
    a.code(lib.ASISendSoftTrigger(i, 0))


@id_probe("ASIGetTriggerOutputIOConf")
def probe_asigettriggeroutputioconf(lib: Any, i: int, a: Answer) -> None:
    for pin in (0, 1, -1, 5):
        high, delay, duration = ctypes.c_int(SENTINEL), ctypes.c_long(SENTINEL), ctypes.c_long(SENTINEL)
        a.code(lib.ASIGetTriggerOutputIOConf(i, pin, ctypes.byref(high), ctypes.byref(delay), ctypes.byref(duration)))
        a.out(high, delay, duration)
    a.code(lib.ASIGetTriggerOutputIOConf(i, 0, None, None, None))


@id_probe("ASISetTriggerOutputIOConf")
def probe_asisettriggeroutputioconf(lib: Any, i: int, a: Answer) -> None:
    for pin in (0, 1, -1, 5):
        a.code(lib.ASISetTriggerOutputIOConf(i, pin, 1, 10, 10))


def run_id_probes(lib: Any, ids: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Every per-camera probe for every ID: {function: {str(id): answer}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in ID_PROBES.items():
        for i in ids:
            answer = Answer()
            fn(lib, i, answer)
            out.setdefault(name, {})[str(i)] = answer.json()
    return out


def run_index_probes(lib: Any, indexes: tuple[int, ...]) -> dict[str, Any]:
    out = {}
    for index in indexes:
        a, info = Answer(), _filled(ASI_CAMERA_INFO)
        a.code(lib.ASIGetCameraProperty(info, index))
        a.out(info)
        a.code(lib.ASIGetCameraProperty(None, index))
        out[str(index)] = a.json()
    return out


def run_library_probes(lib: Any) -> dict[str, Any]:
    """The calls that need no camera ID."""
    n = lib.ASIGetProductIDs(None)
    pids = (ctypes.c_int * max(n, 1))()
    again = lib.ASIGetProductIDs(pids)  # the header's protocol: NULL for the length, then the buffer
    listed = list(pids)[:n]
    probe_pids = sorted(set(listed[:3] + listed[-3:] + list(PRODUCT_IDS[:3]) + list(PRODUCT_IDS[-3:])))
    checks = {f"{vid:#06x}:{pid:#06x}": lib.ASICameraCheck(vid, pid)
              for vid in (ZWO_VENDOR_ID, 0x03C2, 0, -1) for pid in probe_pids + [0, 0xFFFF, -1]}
    all_listed_check = all(lib.ASICameraCheck(ZWO_VENDOR_ID, p) == 1 for p in listed)
    return {"num_cameras": lib.ASIGetNumOfConnectedCameras(), "sdk_version": lib.ASIGetSDKVersion().decode(),
            "product_ids_len": n, "product_ids_len_again": again, "product_ids": listed,
            "camera_check": checks, "camera_check_accepts_every_listed_pid": all_listed_check}


BUFFER = object()  # stands for a fresh 64-byte bytearray in ZWOASI_CALLS
#: zwoasi's functions (its private ones are what its Camera methods call) and their arguments after the ID.
ZWOASI_CALLS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("Camera", ()), ("_get_camera_property", ()), ("_open_camera", ()), ("_init_camera", ()),
    ("_close_camera", ()), ("_get_num_controls", ()), ("_get_control_caps", (0,)), ("_get_control_value", (0,)),
    ("_set_control_value", (0, 100, False)), ("_get_roi_format", ()), ("_set_roi_format", (640, 480, 1, 0)),
    ("_get_start_position", ()), ("_set_start_position", (0, 0)), ("_get_dropped_frames", ()),
    ("_disable_dark_subtract", ()), ("_start_video_capture", ()), ("_stop_video_capture", ()),
    ("_get_video_data", (10, BUFFER)), ("_pulse_guide_on", (0,)), ("_pulse_guide_off", (0,)),
    ("_start_exposure", (False,)), ("_stop_exposure", ()), ("_get_exposure_status", ()),
    ("_get_data_after_exposure", (BUFFER,)), ("_get_id", ()), ("_get_gain_offset", ()),
    ("_get_trigger_output_io_conf", (0,)), ("_get_camera_support_mode", ()), ("_get_camera_mode", ()),
    ("_set_camera_mode", (0,)), ("_send_soft_trigger", (True,)),
)


def run_zwoasi_probes(zwoasi: Any, ids: tuple[int, ...]) -> dict[str, Any]:
    """The same situations through zwoasi, as the core meets them: value, or exception type and message."""
    def outcome(fn: Callable[[], Any]) -> list[str]:
        try:
            return ["ok", repr(fn())]
        except Exception as exc:  # noqa: BLE001 - the exception is the answer being compared
            return [type(exc).__name__, str(exc)]

    z = zwoasi
    out: dict[str, Any] = {"get_num_cameras": outcome(z.get_num_cameras), "list_cameras": outcome(z.list_cameras)}
    for i in ids:
        for name, extra in ZWOASI_CALLS:
            args = [bytearray(64) if a is BUFFER else a for a in extra]
            out.setdefault(name, {})[str(i)] = outcome(functools.partial(getattr(z, name), i, *args))
    return out


def exported_functions(path: str, lib: Any) -> list[str]:
    """The ASI* C functions the shared library exports: names in its symbol strings that resolve."""
    data = Path(path).read_bytes()
    # ELF's dynamic string table holds "ASIOpenCamera\0", Mach-O's "_ASIOpenCamera\0".
    names = {m.decode() for m in re.findall(rb"\x00_?(ASI[A-Z][A-Za-z0-9]*)(?=\x00)", data)}
    return sorted(n for n in names if hasattr(lib, n))


def _gps_probes(lib: Any, ids: tuple[int, ...]) -> dict[str, Any]:
    """The GPS functions the simulator does not provide, with ASICamera2.h's prototypes (facts only)."""
    class DateTime(ctypes.Structure):
        _fields_ = [(n, ctypes.c_int) for n in ("Year", "Month", "Day", "Hour", "Minute", "Second", "Msecond",
                                                 "Usecond")] + [("Unused", ctypes.c_char * 64)]

    class GpsData(ctypes.Structure):
        _fields_ = [("Datetime", DateTime), ("Latitude", ctypes.c_double), ("Longitude", ctypes.c_double),
                    ("Altitude", ctypes.c_int), ("SatelliteNum", ctypes.c_int), ("Unused", ctypes.c_char * 64)]

    pg = ctypes.POINTER(GpsData)
    lib.ASIGPSGetData.restype = ctypes.c_int
    lib.ASIGPSGetData.argtypes = [ctypes.c_int, pg, pg]
    lib.ASIGetDataAfterExpGPS.restype = ctypes.c_int
    lib.ASIGetDataAfterExpGPS.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_long, pg]
    lib.ASIGetVideoDataGPS.restype = ctypes.c_int
    lib.ASIGetVideoDataGPS.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_long, ctypes.c_int, pg]
    buf = ctypes.create_string_buffer(64)
    a, b = GpsData(), GpsData()
    return {str(i): [lib.ASIGPSGetData(i, a, b), lib.ASIGetDataAfterExpGPS(i, buf, len(buf), a),
                     lib.ASIGetVideoDataGPS(i, buf, len(buf), 10, a)] for i in ids}


def zwo_usb_device_present() -> bool | None:
    """Whether Linux's sysfs lists a device with ZWO's vendor ID; None where there is no sysfs."""
    if not Path("/sys/bus").is_dir():
        return None
    devices = Path("/sys/bus/usb/devices")  # absent: no USB bus visible (a container), so no camera
    for vendor in devices.glob("*/idVendor"):
        try:
            if int(vendor.read_text().strip(), 16) == ZWO_VENDOR_ID:
                return True
        except (OSError, ValueError):
            continue
    return False


def child_main(argv: list[str]) -> None:
    """``real LIBPATH`` or ``sim CONFIG``: print one side's answers as JSON on stdout."""
    mode, arg = argv[0], argv[1]
    import zwoasi  # the child's own, so its module-global library is the child's

    lib: Any
    ids: tuple[int, ...]
    indexes: tuple[int, ...]
    if mode == "real":
        lib = ctypes.CDLL(arg)
        for name, (restype, argtypes) in PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, list(argtypes)
        ids, indexes = ABSENT_IDS, ABSENT_INDEXES
        zwoasi.zwolib = None
        zwoasi.init(arg)
    else:
        from driver import simulator

        options, ids, indexes = SIM_CONFIGS[arg]
        sim = simulator.install(lock_dir=tempfile.mkdtemp(prefix="zwo-diff-"), **options)
        lib = sim.library
    result: dict[str, Any] = {"mode": mode, "ids": list(ids), "indexes": list(indexes)}
    # Per-camera calls first, before the library has enumerated anything (the header wants
    # ASIGetNumOfConnectedCameras called first), then again after it -- but on a real library only
    # when the USB bus shows no ZWO device, so a camera is never opened by the probes.
    attached = zwo_usb_device_present() if mode == "real" else False
    if attached is False:
        result["before_enumeration"] = run_id_probes(lib, ids)
    if mode == "real" and (attached or lib.ASIGetNumOfConnectedCameras() > 0):
        print(json.dumps({"camera_attached": True}))
        return
    result["library"] = run_library_probes(lib)
    result["calls"] = run_id_probes(lib, ids)
    result["property_by_index"] = run_index_probes(lib, indexes)
    result["zwoasi"] = run_zwoasi_probes(zwoasi, ids)
    if mode == "real":
        result["exports"] = exported_functions(arg, lib)
        result["gps"] = _gps_probes(lib, ids)
    print(json.dumps(result))


if __name__ == "__main__":
    child_main(sys.argv[1:])
    sys.exit(0)


# ============================================================================ the tests (run by pytest)

import pytest  # noqa: E402 - the child needs no pytest

from driver import sdk  # noqa: E402
from driver import sdk_contract as contract  # noqa: E402
from driver.simulator.constants import SDK_VERSION  # noqa: E402

REAL_LIB = sdk._pyzwoasi_library()
SKIP_REASON = ("needs ZWO's real libASICamera2 (pyzwoasi's bundled copy, installed by scripts/bootstrap into "
               ".venv/test-sdk, for Linux x86/x64 or macOS) and libusb-1.0; "
               f"found: library {REAL_LIB}, libusb {sdk.libusb_available()}")


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, ZWO_ASI_LIB="")
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _collect(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{what} did not answer within {CHILD_TIMEOUT_S} s: a probe blocks")
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}; a negative one is a crash):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def answers() -> dict[str, dict[str, Any]]:
    """Every side's answers, the children run in parallel: {"real": ..., config: ...}."""
    if REAL_LIB is None or not sdk.libusb_available():
        pytest.skip(SKIP_REASON)
    procs = {"real": _spawn("real", str(REAL_LIB))}
    procs.update({name: _spawn("sim", name) for name in SIM_CONFIGS})
    got = {name: _collect(p, f"the {name} probe child") for name, p in procs.items()}
    if got["real"].get("camera_attached"):
        pytest.skip("a ZWO camera is attached: these probes compare against the library with no camera")
    return got


def _diff(real: Any, sim: Any, path: str = "") -> list[str]:
    """Where two JSON answers differ, as readable lines."""
    if isinstance(real, dict) and isinstance(sim, dict):
        out = []
        for key in sorted(set(real) | set(sim)):
            out += _diff(real.get(key, "<absent>"), sim.get(key, "<absent>"), f"{path}[{key}]")
        return out
    return [] if real == sim else [f"{path}: real {real!r}, simulator {sim!r}"]


def _on_ids(section: dict[str, dict[str, Any]], ids: list[int]) -> dict[str, dict[str, Any]]:
    keep = {str(i) for i in ids}
    return {name: {i: v for i, v in per_id.items() if i in keep} for name, per_id in section.items()}


@pytest.mark.parametrize("config", list(SIM_CONFIGS))
def test_every_per_camera_call_answers_like_the_real_library(answers, config):
    """Return codes and out-parameters of every per-camera function, for every absent ID, identical."""
    sim = answers[config]
    real = _on_ids(answers["real"]["calls"], sim["ids"])
    assert set(real) == set(ID_PROBES)
    differences = _diff(real, sim["calls"])
    if "before_enumeration" in answers["real"]:
        differences += _diff(_on_ids(answers["real"]["before_enumeration"], sim["ids"]), sim["before_enumeration"],
                             "(before enumeration)")
    assert not differences, f"simulator ({config}) differs from libASICamera2:\n" + "\n".join(differences[:40])


@pytest.mark.parametrize("config", list(SIM_CONFIGS))
def test_camera_property_by_index_answers_like_the_real_library(answers, config):
    sim = answers[config]
    real = {i: v for i, v in answers["real"]["property_by_index"].items() if i in {str(x) for x in sim["indexes"]}}
    assert real and not _diff(real, sim["property_by_index"]), _diff(real, sim["property_by_index"])


@pytest.mark.parametrize("config", list(SIM_CONFIGS))
def test_zwoasi_sees_the_same_errors(answers, config):
    """Through zwoasi, as the core calls it: the same exception type and message for every call."""
    sim = answers[config]
    keep = {str(i) for i in sim["ids"]}
    real = {name: ({i: v for i, v in per.items() if i in keep} if isinstance(per, dict) else per)
            for name, per in answers["real"]["zwoasi"].items()}
    if config == "ids-beyond-its-cameras":  # it has cameras, so the bus-wide answers differ by design
        real = {k: v for k, v in real.items() if isinstance(v, dict)}
        sim_z = {k: v for k, v in sim["zwoasi"].items() if isinstance(v, dict)}
    else:
        sim_z = sim["zwoasi"]
    differences = _diff(real, sim_z)
    assert not differences, "\n".join(differences[:40])


def test_the_real_library_answers_the_same_before_and_after_enumerating(answers):
    """The header says ASIGetNumOfConnectedCameras 'should be the first API to be called': with no
    camera, calling others first changes nothing (so the simulator need not model that order)."""
    real = answers["real"]
    if "before_enumeration" not in real:
        pytest.skip("no /sys/bus/usb to rule out an attached camera, so nothing was called before enumerating")
    assert real["before_enumeration"] == real["calls"]


def test_no_camera_library_calls_match(answers):
    """Camera count, SDK version format, the product-ID protocol and ASICameraCheck."""
    real = answers["real"]["library"]
    for config in ("no-camera", "not-plugged-in-yet"):
        sim = answers[config]["library"]
        assert sim["num_cameras"] == real["num_cameras"] == 0
        version_format = re.compile(r"^\d+, \d+, \d+, \d+$")
        assert version_format.match(real["sdk_version"]) and version_format.match(sim["sdk_version"]), \
            (real["sdk_version"], sim["sdk_version"])
        assert sim["sdk_version"] == SDK_VERSION
        for side in (real, sim):  # NULL gives the length; the buffer call gives it again and fills it
            assert side["product_ids_len"] == side["product_ids_len_again"] == len(side["product_ids"]) > 0
            assert side["camera_check_accepts_every_listed_pid"]
        if real["sdk_version"] == sim["sdk_version"]:
            assert sim["product_ids"] == real["product_ids"]
            check_diff = _diff(real["camera_check"], sim["camera_check"])
            assert not check_diff, check_diff
        else:  # another ZWO release (pyzwoasi is not pinned): it still supports every camera the simulator lists
            assert set(sim["product_ids"]) <= set(real["product_ids"]), \
                f"libASICamera2 {real['sdk_version']} dropped product IDs the simulator ({SDK_VERSION}) lists"
            warnings.warn(f"the simulator was checked against libASICamera2 {SDK_VERSION}, this is "
                          f"{real['sdk_version']}: update SDK_VERSION and library.PRODUCT_IDS once it passes",
                          stacklevel=1)


def test_the_simulator_provides_what_the_real_library_exports(answers):
    """Every function libASICamera2 exports is simulated or listed in NOT_SIMULATED (with the reason
    there); the simulator offers nothing the real library lacks, which a caller could not call on a rig."""
    exported = set(answers["real"]["exports"])
    simulated = set(PROTOTYPES)
    assert len(exported) > 30, f"symbol scan found too few functions: {sorted(exported)}"
    assert not simulated - exported, f"simulated but not in libASICamera2: {sorted(simulated - exported)}"
    missing = exported - simulated - NOT_SIMULATED
    assert not missing, (f"libASICamera2 {answers['real']['library']['sdk_version']} exports {sorted(missing)}, "
                         "which the simulator neither provides nor lists in library.NOT_SIMULATED")
    assert NOT_SIMULATED <= exported, f"NOT_SIMULATED names functions no longer exported: {NOT_SIMULATED - exported}"


def test_gps_functions_the_simulator_lacks_also_refuse_absent_ids(answers):
    """Not simulated (no model has GPS), but what they answer is recorded: INVALID_ID like the rest."""
    assert {tuple(v) for v in answers["real"]["gps"].values()} == {(contract.INVALID_ID,) * 3}


# ---------------------------------------------------------------------------- the contract's measured clauses

def test_the_real_library_confirms_the_contract_clauses_measured_here(answers):
    """The clauses of driver/sdk_contract.py whose source is this measurement agree with it."""
    real = answers["real"]
    per_call = [answer for per_id in real["calls"].values() for answer in per_id.values()]
    codes = {c for answer in per_call for c in answer["codes"]}
    absent = contract.clause("id.absent")
    assert codes == {contract.INVALID_ID} and all(absent.accepts_code(c) for c in codes), codes
    index_codes = {c for answer in real["property_by_index"].values() for c in answer["codes"]}
    invalid_index = contract.clause("enum.invalid_index")
    assert index_codes == {contract.INVALID_INDEX} and all(invalid_index.accepts_code(c) for c in index_codes)
    assert real["library"]["num_cameras"] == 0 and contract.clause("enum.count_none").expected == "0"
    assert re.search(r"\d+, \d+, \d+, \d+", contract.clause("sdk.version").expected)
    # A refused ID writes no out-parameter, even where a NULL pointer would have been refused anyway.
    outs = {o for answer in per_call for o in answer["outs"]}
    assert outs == {"untouched"}, outs


# ------------------------------------------------------------ the configuration itself (no real library needed)

def test_a_camera_is_unknown_until_first_plugged_in_then_removed_when_pulled(tmp_path):
    """The simulator's side of the measured INVALID_ID: a slot not plugged in since install has no
    CameraID yet; once plugged in it opens; once pulled it is CAMERA_REMOVED (not unknown again)."""
    from driver.simulator import SimulatedSDK

    sim = SimulatedSDK(("asi120mm-mini", "asi294mc-pro"), lock_dir=str(tmp_path), unplugged=(1,))
    try:
        lib = sim.library
        assert lib.ASIGetNumOfConnectedCameras() == 1
        assert [lib.ASIOpenCamera(1), lib.ASICloseCamera(1)] == [contract.INVALID_ID] * 2
        sim.replug(1)
        assert lib.ASIGetNumOfConnectedCameras() == 2
        assert [lib.ASIOpenCamera(1), lib.ASIInitCamera(1), lib.ASICloseCamera(1)] == [contract.SUCCESS] * 3
        sim.unplug(1)
        assert [lib.ASIOpenCamera(1), lib.ASICloseCamera(1)] == [contract.CAMERA_REMOVED] * 2
        sim.unplug(0)  # plugged at install: seen, so removed
        assert lib.ASIOpenCamera(0) == contract.CAMERA_REMOVED
        empty = SimulatedSDK((), lock_dir=str(tmp_path))
        with pytest.raises(ValueError, match="it has no cameras"):
            empty.replug(0)
        empty.shutdown()
    finally:
        sim.shutdown()

