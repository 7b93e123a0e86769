"""Choosing and loading the SDK beneath zwoasi: ZWO's libASICamera2, or the simulated SDK.

A library named explicitly (``--sdk PATH``, else ``$ZWO_ASI_LIB``) is the only one considered: a
path that does not exist or does not load is an error naming the path and the reason, never a
silent fall-through to another copy or to the simulator. Without one, the library is searched for
(the first that exists wins, and the report says which): the system library path (where INDI's
libasi package or ZWO's own installer puts it), then the copy bundled in the `pyzwoasi` wheel
(found by file, not by import, because importing pyzwoasi loads the library itself). A library that
is found but does not load (libusb missing, built for another computer) is an error too.

The simulator stands in only when asked for (``--simulator``) or when no ZWO SDK is installed at
all (`load(fallback_to_simulator=True)` and nothing found): a server on a rig with the SDK serves
its real cameras, or none, never a simulated one.
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

    def describe(self) -> str:
        """One line for logs and `zwo-alpaca list`."""
        if self.kind == "real":
            return f"ZWO SDK {self.path}"
        why = f" ({self.reason})" if self.reason else ""
        return f"simulated SDK: {', '.join(self.models)}{why}"


class SdkUnusableError(SdkNotFoundError):
    """ZWO's SDK was named or found but cannot be used: ``missing`` says what to fix.

    ``"path"``: the file named by ``--sdk`` / ``$ZWO_ASI_LIB`` does not exist; ``"libusb"``:
    libusb-1.0, which libASICamera2 links against, is not installed; ``"sdk"``: the file exists but
    does not load (not a library, built for another computer, a dependency missing).
    """

    def __init__(self, message: str, missing: str, path: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.path = path


LIBUSB_FIX = "sudo apt-get install libusb-1.0-0   (Debian, Ubuntu, Raspberry Pi OS)"
PATH_FIX = ("give the full path of libASICamera2.so* (e.g. /usr/local/lib/libASICamera2.so.1.36), or leave out "
            "--sdk and ZWO_ASI_LIB to use the SDK installed on this computer")


def missing_piece(exc: SdkNotFoundError) -> str:
    """What is missing, for advice: "libusb", "path" (a wrong --sdk / ZWO_ASI_LIB), or "sdk"."""
    return exc.missing if isinstance(exc, SdkUnusableError) else "sdk"


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


def explicit_path(sdk_path: str | None = None) -> tuple[str, str] | None:
    """The library named by the user, as (how it was named, path): ``--sdk`` first, else a non-empty
    ``$ZWO_ASI_LIB``; None when neither names one (then the SDK is searched for)."""
    if sdk_path:
        return "--sdk", sdk_path
    env = os.environ.get("ZWO_ASI_LIB")
    if env:
        return "$ZWO_ASI_LIB", env
    return None


def candidate_paths(sdk_path: str | None = None) -> list[tuple[str, str | None]]:
    """Every place looked at, in order, as (description, path-or-None-when-absent).

    A library named with ``--sdk`` (else ``$ZWO_ASI_LIB``) is the only place; otherwise the system
    library path, then pyzwoasi's bundled copy.
    """
    named = explicit_path(sdk_path)
    if named is not None:
        how, path = named
        where = f"{how} {path}" if how == "--sdk" else f"{how}={path}"
        return [(where, path if Path(path).exists() else None)]
    out: list[tuple[str, str | None]] = []
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
    """Locate libASICamera2: returns (path, where-it-was-found, places-tried).

    An explicit path (``--sdk``, else ``$ZWO_ASI_LIB``) is the only place looked at: when it does not
    exist, SdkUnusableError (``missing="path"``). Otherwise the system library path and pyzwoasi's
    copy are searched; when neither has it, SdkNotFoundError naming every place tried.
    """
    named = explicit_path(sdk_path)
    if named is not None:
        how, path = named
        where = f"{how} {path}" if how == "--sdk" else f"{how}={path}"
        if not Path(path).exists():
            raise SdkUnusableError(f"{how} names {path}, which does not exist (a wrong SDK path is an error: no "
                                   "other copy of the SDK is used instead)", "path", path)
        if Path(path).is_dir():
            raise SdkUnusableError(f"{how} names {path}, which is a directory: name the libASICamera2.so* file "
                                   "inside it", "path", path)
        return path, where, [where]
    tried: list[str] = []
    for place, found in candidate_paths(None):
        if found:
            return found, place, tried + [place]
        tried.append(f"{place}: not found")
    raise SdkNotFoundError("ZWO SDK libASICamera2 not found; tried: " + "; ".join(tried))


def _install_real(path: str, where: str) -> None:
    zwo = _zwo.zwoasi()
    zwo.zwolib = None  # type: ignore[attr-defined]  # zwoasi is untyped; init() sets this global too
    try:
        zwo.init(path)
    except OSError as exc:
        zwo.zwolib = None  # type: ignore[attr-defined]
        if "libusb" in str(exc):
            raise SdkUnusableError(f"cannot load {path} ({where}): {LIBUSB_HINT}", "libusb", path) from exc
        raise SdkUnusableError(f"cannot load {path} ({where}): {exc}", "sdk", path) from exc
    except AttributeError as exc:  # a library, but not ZWO's: zwoasi binds the ASI functions in init()
        zwo.zwolib = None  # type: ignore[attr-defined]
        raise SdkUnusableError(f"{path} ({where}) is not ZWO's libASICamera2: {exc}", "sdk", path) from exc


def load(sdk_path: str | None = None, simulator: list[str] | None = None,
         fallback_to_simulator: bool = True, default_sim_model: str = DEFAULT_SIM_MODEL,
         sim_options: dict[str, Any] | None = None) -> SdkInfo:
    """Install an SDK beneath zwoasi and report which one.

    `simulator` forces simulated cameras of those models, in that order. Otherwise the real SDK is
    loaded (see the module docstring for where it is looked for); with no camera attached it is
    still the one used. Only when no SDK is installed at all (nothing named, nothing found) does
    `fallback_to_simulator` install one simulated `default_sim_model` and say why; otherwise that
    raises SdkNotFoundError. A named path that does not exist or does not load, and a library found
    that does not load, raise SdkUnusableError whatever `fallback_to_simulator` says.
    `sim_options` go to `simulator.install` (seed, lock_dir, time_scale);
    $ZWO_ALPACA_SIM_LOCK_DIR sets the lock directory when they don't.
    """
    global _current
    if simulator:
        return _install_simulator(list(simulator), "--simulator given", [], sim_options)
    try:
        path, where, tried = find_sdk(sdk_path)
    except SdkUnusableError:
        raise
    except SdkNotFoundError as exc:
        if not fallback_to_simulator:
            raise
        return _install_simulator([default_sim_model], f"no ZWO SDK installed: {exc.message}", [], sim_options)
    if not libusb_available():
        raise SdkUnusableError(f"cannot load {path} ({where}): {LIBUSB_HINT}", "libusb", path)
    _install_real(path, where)
    count = _zwo.zwoasi().get_num_cameras()
    _current = SdkInfo("real", path, tried, f"found at {where}; {count} camera(s)")
    log.info("using ZWO SDK %s (%s); %d camera(s) attached", path, where, count)
    return _current


def _install_simulator(models: list[str], reason: str, tried: list[str], options: dict[str, Any] | None) -> SdkInfo:
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
    _current = SdkInfo("simulator", None, tried, reason, names)
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
