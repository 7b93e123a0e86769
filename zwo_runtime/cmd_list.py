"""`zwo-alpaca list`: which SDK is in use, and the cameras it finds with their properties.

Without ``--simulator`` the real SDK is loaded *without* the server's fallback to a simulated
camera, so the report says plainly whether ZWO's library was found (and where) or why not, with
the fix for the piece actually missing (libusb, the SDK, or a wrong ``--sdk`` / ``ZWO_ASI_LIB``
path), as `zwo-alpaca doctor` does; it then says what `zwo-alpaca serve` would do. Exit status: 0
when an SDK was loaded (even with no camera attached), 1 when none could be, 2 for bad options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from driver import sdk
from driver.errors import CameraError, SdkNotFoundError
from driver.models import CameraInfo

from . import logsetup

SDK_FIX = ("install ZWO's SDK: on x86-64 'pip install \"zwo-alpaca[sdk]\"' (pyzwoasi bundles it); on a "
           "Raspberry Pi or other ARM board, copy lib/armv8/libASICamera2.so* from ZWO's "
           "ASI_linux_mac_SDK to /usr/local/lib and run 'sudo ldconfig', or install INDI's libasi "
           "package; or point ZWO_ASI_LIB / --sdk PATH at the library (see docs/raspberry-pi.md)")


def fix_for(exc: SdkNotFoundError) -> str:
    """The advice for why the SDK cannot be used: install libusb, fix the path named, or install the SDK."""
    missing = sdk.missing_piece(exc)
    if missing == "libusb":
        return sdk.LIBUSB_FIX
    if missing == "path":
        return sdk.PATH_FIX
    if missing == "sdk" and isinstance(exc, sdk.SdkUnusableError):
        return ("that file is not a libASICamera2 this computer can load: " + SDK_FIX
                + "; 'zwo-alpaca doctor' checks the library's architecture")
    return SDK_FIX


def serve_would(exc: SdkNotFoundError) -> str:
    """What `zwo-alpaca serve` does when the SDK cannot be loaded this way."""
    if isinstance(exc, sdk.SdkUnusableError):
        return "'zwo-alpaca serve' would stop with this error (it never serves a simulated camera instead)."
    return (f"'zwo-alpaca serve' would serve a simulated camera ({sdk.DEFAULT_SIM_MODEL}) for a demo, as no ZWO "
            "SDK is installed; 'zwo-alpaca list --simulator MODELS' lists simulated cameras.")


def add_sdk_arguments(parser: argparse.ArgumentParser, simulator_help: str) -> None:
    """The SDK selection options shared by `list` and `capture`."""
    parser.add_argument("--sdk", metavar="PATH", help="path of libASICamera2 (default: $ZWO_ASI_LIB, the system "
                        "library path, then pyzwoasi's bundled copy)")
    parser.add_argument("--simulator", metavar="MODELS", type=_model_list, help=simulator_help)


def _model_list(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give at least one model, e.g. asi294mc-pro,asi6200mm-pro")
    return models


def error(command: str, message: str) -> None:
    """Print an expected error the way argparse does: one line, on stderr, no traceback."""
    print(f"zwo-alpaca {command}: error: {message}", file=sys.stderr)


def load_simulator(models: list[str]) -> sdk.SdkInfo:
    """Install simulated cameras; raises ValueError naming the valid models for an unknown one."""
    return sdk.load(simulator=models)


def add_parser(subparsers: Any) -> None:
    """Register `zwo-alpaca list`."""
    p = subparsers.add_parser(
        "list", help="show the ZWO SDK in use and the cameras it finds",
        description="Show which ZWO SDK library is used (or why none was found) and every camera it finds, "
                    "with its properties. Exit status 0 when an SDK was loaded, 1 when none could be.")
    add_sdk_arguments(p, "list simulated cameras of these models instead (comma-separated, e.g. "
                         "asi294mc-pro,asi6200mm-pro)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--controls", action="store_true",
                   help="also open each camera briefly and list its controls with their ranges (gain, offset, ...)")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


def _camera_dict(info: CameraInfo) -> dict[str, Any]:
    d = dataclasses.asdict(info)
    d["supported_bins"] = list(info.supported_bins)
    d["image_types"] = list(info.image_types)
    return d


def _controls_of(info: CameraInfo) -> tuple[CameraInfo | None, str | None]:
    """Open the camera briefly to learn its controls; (None, reason) when it can't be opened."""
    from driver import ReconnectPolicy, ZWOCamera  # noqa: PLC0415 - only needed with --controls

    cam = ZWOCamera(info, reconnect=ReconnectPolicy(enabled=False))
    try:
        with cam:
            return cam.info, None
    except CameraError as exc:
        return None, exc.message


def _describe(info: CameraInfo) -> list[str]:
    colour = f"colour ({info.bayer_pattern})" if info.is_color else "mono"
    yes = {True: "yes", False: "no"}
    lines = [
        f"Camera {info.index}: {info.name}",
        f"  serial          {info.serial or 'unknown (busy or not reported)'}",
        f"  sensor          {info.max_width} x {info.max_height} px, {info.pixel_size_um:g} um pixels, {colour}, "
        f"{info.bit_depth}-bit ADC",
        f"  e-/ADU (gain 0) {info.e_per_adu:.3g}",
        f"  binning         {', '.join(map(str, info.supported_bins))}",
        f"  image types     {', '.join(info.image_types)}",
        f"  cooler          {yes[info.has_cooler]}    ST4 guide port: {yes[info.has_st4]}    "
        f"mechanical shutter: {yes[info.has_shutter]}    USB: {'3' if info.usb3 else '2'}",
    ]
    if info.controls:
        lines.append(f"  exposure        {info.exposure_min_s:g} .. {info.exposure_max_s:g} s")
        lines.append("  controls        name                 min      max  default  writable")
        for c in sorted(info.controls.values(), key=lambda c: c.name):
            lines.append(f"                  {c.name:<18} {c.min:>6} {c.max:>8} {c.default:>8}  "
                         f"{'yes' if c.writable else 'no'}")
    return lines


def run(args: argparse.Namespace) -> int:
    """List the SDK and cameras; see the module docstring for the exit status."""
    logsetup.setup_from_args(args)
    as_json = bool(getattr(args, "json", False))
    report: dict[str, Any] = {"sdk": None, "cameras": [], "fallback": None}
    text: list[str] = []
    models = getattr(args, "simulator", None)
    try:
        if models:
            info = load_simulator(models)
            text.append(f"SDK: simulated ({info.reason}): {', '.join(info.models)}")
        else:
            # No fallback: the point of `list` is to say whether the real SDK is usable.
            info = sdk.load(sdk_path=getattr(args, "sdk", None), fallback_to_simulator=False)
            text.append(f"SDK: ZWO libASICamera2 at {info.path} ({info.reason})")
    except ValueError as exc:  # unknown simulator model; the message lists the valid ones
        error("list", str(exc))
        return 2
    except SdkNotFoundError as exc:
        unusable = isinstance(exc, sdk.SdkUnusableError)
        report["sdk"] = {"kind": None, "path": getattr(exc, "path", None), "error": exc.message,
                         "missing": sdk.missing_piece(exc), "fix": fix_for(exc)}
        report["fallback"] = None if unusable else f"simulator: {sdk.DEFAULT_SIM_MODEL}"
        if as_json:
            print(json.dumps(report, indent=2))
        else:
            print(f"SDK: {'cannot be used' if unusable else 'none found'}: {exc.message}")
            print(f"  fix: {fix_for(exc)}")
            print(serve_would(exc))
        return 1
    report["sdk"] = {"kind": info.kind, "path": info.path, "tried": info.tried, "reason": info.reason,
                     "models": info.models, "error": None}
    try:
        cameras = sdk.enumerate_cameras()
    except CameraError as exc:
        error("list", exc.message)
        return 1
    for cam in cameras:
        detail = cam
        problem = None
        if getattr(args, "controls", False):
            opened, problem = _controls_of(cam)
            detail = opened or cam
        entry = _camera_dict(detail)
        if problem:
            entry["controls_error"] = problem
        report["cameras"].append(entry)
        text.append("")
        text.extend(_describe(detail))
        if problem:
            text.append(f"  controls        not available: {problem}")
    if not cameras:
        text.append("No cameras found. Check the USB cable and the camera's 12 V power (cooled models), "
                    "then run 'zwo-alpaca doctor'.")
        if info.kind == "real":
            text.append("'zwo-alpaca serve' would serve the cameras its config file knows, as not plugged in until "
                        "they are, or no device at all; never a simulated camera while ZWO's SDK is installed.")
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(text))
    return 0
