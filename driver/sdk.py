"""Choosing and loading the SDK beneath zwoasi: ZWO's libASICamera2, or the simulated SDK.

Search order for the real library (the first that exists wins, and the report says which):
an explicit path, $ZWO_ASI_LIB, the system library path (where INDI's libasi package or ZWO's own
installer puts it), and the copy bundled in the `pyzwoasi` wheel (found by file, not by import,
because importing pyzwoasi loads the library itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _zwo
from .errors import SdkError, SdkNotFoundError
from .models import BAYER_NAMES, IMAGE_TYPE_NAMES, CameraInfo

log = logging.getLogger("zwo_alpaca.sdk")

DEFAULT_SIM_MODEL = "asi294mc-pro"
LIBUSB_HINT = ("libusb-1.0 is missing: install it with 'sudo apt-get install libusb-1.0-0' "
               "(Debian, Raspberry Pi OS, Ubuntu)")
_SYSTEM_DIRS = (
    "/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf", "/usr/lib64", "/opt/zwo/lib",
)


@dataclass(frozen=True)
class SdkInfo:
    """Which SDK is installed beneath zwoasi, and how it was chosen."""

    kind: str  # "real" or "simulator"
    path: str | None
    tried: list[str] = field(default_factory=list)
    reason: str = ""
    models: list[str] = field(default_factory=list)
    #: When the simulator stands in because the real SDK saw no camera: that SDK's path, so that a
    #: camera plugged in later can be noticed (driver.hotplug.AttachProbe).
    real_path: str | None = None

    def describe(self) -> str:
        """One line for logs and `zwo-alpaca list`."""
        if self.kind == "real":
            return f"ZWO SDK {self.path}"
        why = f" ({self.reason})" if self.reason else ""
        return f"simulated SDK: {', '.join(self.models)}{why}"


_current: SdkInfo | None = None


def current() -> SdkInfo | None:
    """The SDK installed by the last `load()`, if any."""
    return _current


def _pyzwoasi_library() -> Path | None:
    spec = importlib.util.find_spec("pyzwoasi")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "i386": "x86"}.get(machine)
    system = platform.system()
    for base in spec.submodule_search_locations:
        if system == "Linux" and arch:
            folder = Path(base) / "lib" / "Linux" / arch
            hits = sorted(folder.glob("libASICamera2.so*"))
            if hits:
                return hits[-1]
        elif system == "Darwin":
            hits = sorted((Path(base) / "lib" / "MacOS").glob("*/libASICamera2.dylib*"))
            if hits:
                return hits[-1]
    return None


def candidate_paths(sdk_path: str | None = None) -> list[tuple[str, str | None]]:
    """Every place looked at, in order, as (description, path-or-None-when-absent)."""
    out: list[tuple[str, str | None]] = []
    if sdk_path:
        out.append((f"--sdk {sdk_path}", sdk_path if Path(sdk_path).exists() else None))
    env = os.environ.get("ZWO_ASI_LIB")
    if env:
        out.append((f"$ZWO_ASI_LIB={env}", env if Path(env).exists() else None))
    found = ctypes.util.find_library("ASICamera2")
    if found:
        out.append(("system library path", found))
    else:
        hit = None
        for d in _SYSTEM_DIRS:
            matches = sorted(Path(d).glob("libASICamera2.so*")) if Path(d).is_dir() else []
            if matches:
                hit = str(matches[-1])
                break
        out.append(("system library path (" + ", ".join(_SYSTEM_DIRS) + ")", hit))
    bundled = _pyzwoasi_library()
    out.append(("pyzwoasi's bundled copy (pip install 'zwo-alpaca[sdk]')", str(bundled) if bundled else None))
    return out


def libusb_available() -> bool:
    """Whether libusb-1.0, which libASICamera2 links against, can be loaded."""
    for name in ("libusb-1.0.so.0", ctypes.util.find_library("usb-1.0")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def find_sdk(sdk_path: str | None = None) -> tuple[str, str, list[str]]:
    """Locate libASICamera2: returns (path, where-it-was-found, places-tried); raises SdkNotFoundError."""
    tried: list[str] = []
    for where, path in candidate_paths(sdk_path):
        if path:
            return path, where, tried + [where]
        tried.append(f"{where}: not found")
    raise SdkNotFoundError("ZWO SDK libASICamera2 not found; tried: " + "; ".join(tried))


def _install_real(path: str) -> None:
    zwo = _zwo.zwoasi()
    zwo.zwolib = None  # type: ignore[attr-defined]  # zwoasi is untyped; init() sets this global too
    try:
        zwo.init(path)
    except OSError as exc:
        if "libusb" in str(exc):
            raise SdkNotFoundError(f"cannot load {path}: {LIBUSB_HINT}") from exc
        raise SdkNotFoundError(f"cannot load {path}: {exc}") from exc


def load(sdk_path: str | None = None, simulator: list[str] | None = None,
         fallback_to_simulator: bool = True, default_sim_model: str = DEFAULT_SIM_MODEL,
         sim_options: dict[str, Any] | None = None) -> SdkInfo:
    """Install an SDK beneath zwoasi and report which one.

    `simulator` forces simulated cameras of those models, in that order. Otherwise the real SDK is
    searched for; when it is missing or sees no camera, `fallback_to_simulator` installs one
    simulated `default_sim_model` and says why. `sim_options` go to `simulator.install` (seed,
    lock_dir, time_scale); $ZWO_ALPACA_SIM_LOCK_DIR sets the lock directory when they don't.
    """
    global _current
    if simulator:
        return _install_simulator(list(simulator), "--simulator given", [], sim_options)
    tried: list[str] = []
    reason = ""
    try:
        path, where, tried = find_sdk(sdk_path)
        if not libusb_available():
            raise SdkNotFoundError(LIBUSB_HINT)
        _install_real(path)
        count = _zwo.zwoasi().get_num_cameras()
        if count > 0 or not fallback_to_simulator:
            _current = SdkInfo("real", path, tried, f"found at {where}; {count} camera(s)")
            log.info("using ZWO SDK %s (%s); %d camera(s) attached", path, where, count)
            return _current
        reason = f"no camera attached to the ZWO SDK at {path}"
        real_path = path
    except SdkNotFoundError as exc:
        if not fallback_to_simulator:
            raise
        reason = exc.message
        real_path = None
    return _install_simulator([default_sim_model], reason, tried, sim_options, real_path)


def _install_simulator(models: list[str], reason: str, tried: list[str], options: dict[str, Any] | None,
                       real_path: str | None = None) -> SdkInfo:
    global _current
    from . import simulator  # noqa: PLC0415 - only needed when simulating

    options = dict(options or {})
    if "lock_dir" not in options and os.environ.get("ZWO_ALPACA_SIM_LOCK_DIR"):
        options["lock_dir"] = os.environ["ZWO_ALPACA_SIM_LOCK_DIR"]
    if "unplugged" not in options and os.environ.get("ZWO_ALPACA_SIM_UNPLUGGED"):
        # Slots that start unplugged ("1" or "1,2"): to try hotplug with `sim.replug`.
        try:
            options["unplugged"] = [int(x) for x in os.environ["ZWO_ALPACA_SIM_UNPLUGGED"].split(",") if x.strip()]
        except ValueError:
            raise SdkError(f"ZWO_ALPACA_SIM_UNPLUGGED={os.environ['ZWO_ALPACA_SIM_UNPLUGGED']!r}: "
                           "expected slot numbers such as 1 or 1,2") from None
    sim = simulator.install(models=models, **options)
    names = [cam.model.name for cam in sim.cameras]
    _current = SdkInfo("simulator", None, tried, reason, names, real_path)
    log.warning("using the SIMULATED camera SDK with %s (%s)", ", ".join(names), reason)
    return _current


def camera_info(index: int, serial: str | None = None) -> CameraInfo:
    """Describe the camera at SDK index `index` from its properties (does not open it)."""
    zwo = _zwo.zwoasi()
    try:
        prop = zwo._get_camera_property(index)  # noqa: SLF001 - zwoasi's only by-index property call
    except zwo.ZWO_IOError as exc:
        raise SdkError(f"cannot read properties of camera {index}: {exc}", getattr(exc, "error_code", None)) from exc
    name = prop["Name"]
    model = name[4:] if name.startswith("ZWO ") else name
    is_color = bool(prop["IsColorCam"])
    return CameraInfo(
        index=index,
        camera_id=int(prop["CameraID"]),
        name=name,
        model=model,
        serial=serial,
        max_width=int(prop["MaxWidth"]),
        max_height=int(prop["MaxHeight"]),
        pixel_size_um=float(prop["PixelSize"]),
        is_color=is_color,
        bayer_pattern=BAYER_NAMES.get(int(prop["BayerPattern"])) if is_color else None,
        bit_depth=int(prop["BitDepth"]),
        e_per_adu=float(prop["ElecPerADU"]),
        supported_bins=tuple(int(b) for b in prop["SupportedBins"]),
        image_types=tuple(IMAGE_TYPE_NAMES[t] for t in prop["SupportedVideoFormat"] if t in IMAGE_TYPE_NAMES),
        has_st4=bool(prop["ST4Port"]),
        has_cooler=bool(prop["IsCoolerCam"]),
        has_shutter=bool(prop["MechanicalShutter"]),
        usb3=bool(prop["IsUSB3Camera"]),
    )


# Camera IDs this process holds open (ZWOCamera handles) and their serials. probe_serial must never
# open and close one of them: ASIOpenCamera on an open camera succeeds, and ASICloseCamera then closes
# the handle its owner is using (with two cameras of one model, connecting one broke the other).
_in_use: dict[int, str | None] = {}
_in_use_lock = threading.RLock()


def claim(camera_id: int, serial: str | None = None) -> None:
    """Record that this process has `camera_id` open (call with `in_use_lock()` held around the open)."""
    with _in_use_lock:
        _in_use[camera_id] = serial or _in_use.get(camera_id)


def release(camera_id: int) -> None:
    """This process closed `camera_id` (or lost it)."""
    with _in_use_lock:
        _in_use.pop(camera_id, None)


def claimed(camera_id: int) -> bool:
    """Whether this process has `camera_id` open."""
    with _in_use_lock:
        return camera_id in _in_use


def in_use_lock() -> threading.RLock:
    """Held while opening a camera, so a serial probe never opens/closes it in between."""
    return _in_use_lock


def probe_serial(camera_id: int) -> str | None:
    """Open the camera briefly to read its serial number; None when it is busy or has none.

    A camera this process already has open is not touched: its recorded serial is returned.
    """
    zwo = _zwo.zwoasi()
    with _in_use_lock:
        if camera_id in _in_use:
            return _in_use[camera_id]
        try:
            zwo._open_camera(camera_id)  # noqa: SLF001
        except zwo.ZWO_Error:
            return None
        try:
            return _zwo.read_serial(camera_id)
        finally:
            try:
                zwo._close_camera(camera_id)  # noqa: SLF001
            except zwo.ZWO_Error:
                pass


def enumerate_cameras(read_serials: bool = True) -> list[CameraInfo]:
    """Every connected camera in SDK index order, with serial numbers where they can be read."""
    zwo = _zwo.zwoasi()
    if zwo.zwolib is None:
        raise SdkNotFoundError("no SDK loaded: call driver.sdk.load() first")
    out = []
    for index in range(zwo.get_num_cameras()):
        info = camera_info(index)
        if read_serials:
            serial = probe_serial(info.camera_id)
            if serial:
                from dataclasses import replace  # noqa: PLC0415

                info = replace(info, serial=serial)
        out.append(info)
    return out
