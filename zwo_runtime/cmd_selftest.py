"""`zwo-alpaca selftest`: run the SDK contract (driver/sdk_contract.py) on one camera and report.

Every step calls the SDK through zwoasi (the binding the core uses) and compares what the camera
answers with the contract clause it exercises, so a camera whose SDK behaves differently from what
the core and the simulator assume is found in two minutes and named by clause key. One step, the
disconnect while exposing, goes through `ZWOCamera` to time the core's own teardown.

The unplug step needs the user's consent: asked at a prompt on a terminal, given by
``--yes-unplug`` in scripts, refused by ``--no-unplug`` or when stdin is not a terminal. With the
simulator the "user" is simulated: the camera is unplugged and plugged back in by the simulator's
own hooks.

The report is printed and written as JSON (``--json PATH``, default
``zwo-alpaca-selftest-<model>-<time>.json`` in the current folder). Exit status: 0 when nothing
contradicts the contract, 1 when something does (each contradiction is listed by clause key),
2 for bad options or an unknown camera, 3 when the test could not run (no SDK, no camera, busy).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from driver import sdk
from driver import sdk_contract as K
from driver.errors import CameraError, SdkNotFoundError
from driver.models import CameraInfo

from . import logsetup
from .cmd_capture import camera_selector
from .cmd_list import SDK_FIX, add_sdk_arguments, error, load_simulator

SCHEMA = "zwo-alpaca-selftest/1"
# ASI_CONTROL_TYPE values used by name below (ASICamera2.h).
GAIN, EXPOSURE, OFFSET, TEMPERATURE, COOLER_POWER, TARGET_TEMP, COOLER_ON = 0, 1, 5, 8, 15, 16, 17
RAW8, RGB24, RAW16, Y8 = 0, 1, 2, 3
BPP = {RAW8: 1, RGB24: 3, RAW16: 2, Y8: 1}
#: Image side used for the exposure steps: small, so every model's steps take the same short time.
SMALL = 256
UNPLUG_WAIT_S = 30.0  #: how long the unplug step waits for the cable to be pulled, and again for it to return
TEARDOWN_BOUND_S = 2.0  #: clause core.teardown_bounded
HOLDER_WAIT_S = 15.0  #: longest the busy step waits for the helper process to hold the camera


@dataclasses.dataclass
class Timing:
    """Exposure lengths of one run (``--quick`` shortens them for the test suite)."""

    short: float
    long: float
    abort: float  #: exposure started and then stopped/aborted
    stop_after: float  #: when the stop comes
    teardown: float  #: exposure running while ZWOCamera disconnects
    video_slow: float  #: a video exposure long enough that a short wait must time out
    simulated_unplug_after: float
    settle: float  #: pause before reading back the cooler state
    teardown_after: float  #: how far into its exposure the teardown comes

    @classmethod
    def for_run(cls, quick: bool, long: float | None) -> Timing:
        if quick:
            # Margins against a loaded machine: what must still be running when the next call comes
            # (the long exposure, the slow video frame) runs far longer than the call takes to come.
            return cls(0.01, long or 0.5, 0.4, 0.1, 2.0, 1.5, 0.1, 0.02, 0.15)
        return cls(0.01, long or 3.0, 2.0, 0.5, 5.0, 1.0, 1.0, 0.2, 0.3)


@dataclasses.dataclass
class Result:
    """One observation: `verdict` is "agrees", "contradicts" (the clause says otherwise), "info"
    (recorded, nothing to compare), "skipped" (not applicable here) or "error" (the step broke)."""

    step: str
    check: str
    verdict: str
    clause: str | None = None
    expected: str = ""
    observed: str = ""
    code: int | None = None
    status: int | None = None
    seconds: float | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


def _name(code: int | None) -> str:
    return "no code" if code is None else f"{K.ERROR_NAMES.get(code, 'code')} ({code})"


class Report:
    """The results of one self-test run, printed as they come and kept for the JSON file."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.results: list[Result] = []
        self.step = ""

    def add(self, r: Result) -> Result:
        self.results.append(r)
        mark = {"agrees": "ok  ", "contradicts": "FAIL", "info": "info", "skipped": "skip", "error": "ERR "}[r.verdict]
        key = f" [{r.clause}]" if r.clause else ""
        timing = f" ({r.seconds:.2f} s)" if r.seconds is not None else ""
        line = f"  {mark} {r.check}{key}: {r.observed}{timing}"
        if r.verdict == "contradicts":
            line += f"\n         the contract says: {r.expected}"
        print(line, file=self.out, flush=True)
        return r

    def expect_code(self, check: str, key: str, code: int, seconds: float | None = None, **detail: Any) -> bool:
        """Compare an ASI return code with clause `key`; True when it agrees."""
        c = K.clause(key)
        ok = c.accepts_code(code)
        self.add(Result(self.step, check, "agrees" if ok else "contradicts", key, c.expectation() or c.expected,
                        f"returned {_name(code)}", code=code, seconds=seconds, detail=detail))
        return ok

    def expect(self, check: str, key: str, ok: bool, observed: str, seconds: float | None = None,
               code: int | None = None, status: int | None = None, **detail: Any) -> bool:
        """Record a judged observation against clause `key`."""
        c = K.clause(key)
        self.add(Result(self.step, check, "agrees" if ok else "contradicts", key, c.expected, observed, code=code,
                        status=status, seconds=seconds, detail=detail))
        return ok

    def info(self, check: str, observed: str, clause: str | None = None, seconds: float | None = None,
             **detail: Any) -> None:
        self.add(Result(self.step, check, "info", clause, "", observed, seconds=seconds, detail=detail))

    def skip(self, check: str, why: str, clause: str | None = None) -> None:
        self.add(Result(self.step, check, "skipped", clause, "", why))

    def fail(self, check: str, why: str, clause: str | None = None) -> None:
        self.add(Result(self.step, check, "error", clause, "", why))

    def contradictions(self) -> list[str]:
        seen: list[str] = []
        for r in self.results:
            if r.verdict == "contradicts" and r.clause and r.clause not in seen:
                seen.append(r.clause)
        return seen

    def summary(self) -> dict[str, int]:
        out = {v: 0 for v in ("agrees", "contradicts", "info", "skipped", "error")}
        for r in self.results:
            out[r.verdict] += 1
        return out


class _StepFailed(Exception):
    """A step cannot go on (its camera stopped answering); the next step starts afresh."""


class Asi:
    """The raw SDK through zwoasi: each call returns the ASI error code (0 = success) and its value."""

    def __init__(self) -> None:
        from driver import _zwo  # noqa: PLC0415 - the binding the core uses

        self.zwo: Any = _zwo.zwoasi()

    def call(self, fn: str, *args: Any) -> tuple[int, Any]:
        """Call zwoasi's wrapper `fn` (e.g. "_get_exposure_status"); (code, value)."""
        try:
            return 0, getattr(self.zwo, fn)(*args)
        except self.zwo.ZWO_IOError as exc:
            return int(getattr(exc, "error_code", None) or -1), None

    def lib(self, fn: str, *args: Any) -> int:
        """Call an ASI function of the library zwoasi loaded (for calls whose wrapper would check
        arguments itself, such as ASISetROIFormat); returns its code."""
        return int(getattr(self.zwo.zwolib, fn)(*args))

    def set_roi(self, cid: int, w: int, h: int, b: int, t: int) -> int:
        return self.lib("ASISetROIFormat", cid, w, h, b, t)

    def data(self, cid: int, nbytes: int) -> tuple[int, bytearray | None]:
        return self.call("_get_data_after_exposure", cid, bytearray(nbytes))


class SelfTest:
    """One self-test run on one camera."""

    def __init__(self, info: CameraInfo, args: argparse.Namespace, report: Report, timing: Timing,
                 sim: Any = None) -> None:
        self.info = info
        self.args = args
        self.report = report
        self.t = timing
        self.sim = sim  # the SimulatedSDK when simulated (its hooks play the user in the unplug step)
        self.asi = Asi()
        self.cid = info.camera_id
        self.controls: list[dict[str, Any]] = []
        self.caps_by_type: dict[int, dict[str, Any]] = {}
        self.opened = False
        self.measured: dict[str, Any] = {}
        from driver import model_facts  # noqa: PLC0415

        self.area_multiple = model_facts.facts(info.model).area_multiple

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        self.report.step = name
        print(f"\n{title}", file=self.report.out, flush=True)
        t0 = time.monotonic()
        try:
            yield
        except _StepFailed as exc:
            self.report.fail(name, str(exc))
        except CameraError as exc:
            self.report.fail(name, exc.message)
        except Exception as exc:  # noqa: BLE001 - one broken step must not lose the rest of the report
            self.report.fail(name, f"{type(exc).__name__}: {exc}")
        finally:
            self.measured.setdefault("step_seconds", {})[name] = round(time.monotonic() - t0, 3)

    def open(self) -> None:
        if self.opened:
            return
        for fn in ("_open_camera", "_init_camera"):
            code, _ = self.asi.call(fn, self.cid)
            if code:
                raise _StepFailed(f"{fn.strip('_').replace('_', ' ')} returned {_name(code)}")
        self.opened = True

    def close(self) -> int:
        code, _ = self.asi.call("_close_camera", self.cid)
        self.opened = False
        return code

    def set_exposure(self, seconds: float) -> None:
        code, _ = self.asi.call("_set_control_value", self.cid, EXPOSURE, max(1, int(seconds * 1e6)), False)
        if code:
            raise _StepFailed(f"setting the exposure time returned {_name(code)}")

    def small_roi(self, img_type: int = RAW16) -> tuple[int, int]:
        """A small centred ROI, valid for every model (the ASI120's area rule included)."""
        w = min(SMALL, self.info.max_width - self.info.max_width % 8)
        h = min(SMALL, self.info.max_height - self.info.max_height % 2)
        while self.area_multiple > 1 and (w * h) % self.area_multiple:
            h -= 2
        code = self.asi.set_roi(self.cid, w, h, 1, img_type)
        if code:
            raise _StepFailed(f"setting a {w} x {h} ROI returned {_name(code)}")
        return w, h

    def wait_status(self, limit: float, poll: float = 0.005) -> tuple[int, int, list[int], float]:
        """Poll ASIGetExpStatus until it is not WORKING or `limit` seconds pass.
        Returns (code, last status, the distinct statuses seen in order, seconds)."""
        t0 = time.monotonic()
        seen: list[int] = []
        status = K.EXP_WORKING
        while True:
            code, value = self.asi.call("_get_exposure_status", self.cid)
            if code:
                return code, status, seen, time.monotonic() - t0
            status = int(value)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status != K.EXP_WORKING or time.monotonic() - t0 > limit:
                return 0, status, seen, time.monotonic() - t0
            time.sleep(poll)

    def readout_limit(self, seconds: float, nbytes: int) -> float:
        from driver.exposure import deadline_for  # noqa: PLC0415 - the core's own bound

        return deadline_for(seconds, nbytes)

    # ------------------------------------------------------------------ the steps
    def run(self) -> None:
        steps: list[tuple[str, str, Callable[[], None]]] = [
            ("enumerate", "Enumeration and IDs", self.enumerate),
            ("open_close", "Open and close, twice", self.open_close),
            ("controls", "Controls: ranges, set and read back", self.controls_step),
            ("roi", "Image formats, binning and ROI alignment", self.roi_step),
            ("exposure", "Exposures", self.exposure_step),
            ("stop_abort", "StopExposure and abort mid-exposure", self.stop_abort_step),
            ("video", "Video capture", self.video_step),
            ("cooler", "Cooler", self.cooler_step),
            ("st4", "ST4 guide port", self.st4_step),
            ("busy", "Busy in another process", self.busy_step),
            ("teardown", "Disconnect while exposing (ZWOCamera)", self.teardown_step),
            ("unplug", "Unplug and replug", self.unplug_step),
        ]
        only = set(self.args.only or [])
        for name, title, fn in steps:
            if only and name not in only:
                continue
            with self.step(name, title):
                fn()
        if self.opened:
            self.close()

    def enumerate(self) -> None:
        r = self.report
        asi = self.asi
        n = int(asi.zwo.get_num_cameras())
        r.info("camera count", f"{n} camera(s) attached")
        code, _ = asi.call("_get_camera_property", n)
        r.expect_code(f"property of index {n} (one past the last)", "enum.invalid_index", code)
        code, _ = asi.call("_get_camera_property", -1)
        r.expect_code("property of index -1", "enum.invalid_index", code)
        code, prop = asi.call("_get_camera_property", self.info.index)
        r.expect_code("property of the camera without opening it", "id.property_without_open", code)
        version = getattr(asi.zwo.zwolib, "ASIGetSDKVersion", None)
        if version is not None:
            fn = asi.zwo.zwolib.ASIGetSDKVersion
            if getattr(fn, "restype", None) is not ctypes.c_char_p:
                fn.restype = ctypes.c_char_p
            text = fn()
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            self.measured["sdk_version"] = text
            r.expect("SDK version string", "sdk.version", text.count(",") >= 2, repr(text))
        ids = {int(c.camera_id) for c in sdk.enumerate_cameras(read_serials=False)}
        absent = next(i for i in range(127, -1, -1) if i not in ids)
        if self.sim is not None and absent < len(self.sim.cameras):
            absent = len(self.sim.cameras) + 1  # a slot the simulator never had
        for fn in ("_open_camera", "_get_exposure_status", "_get_num_controls"):
            code, _ = asi.call(fn, absent)
            r.expect_code(f"{fn.strip('_').replace('_', ' ')} on absent ID {absent}", "id.absent", code)
        code, _ = asi.call("_close_camera", absent)
        r.expect_code(f"close camera on absent ID {absent}", "id.absent", code)

    def open_close(self) -> None:
        r = self.report
        asi = self.asi
        # Closed first (enumeration may have opened it to read the serial): calls need an open camera.
        r.expect_code("close an already closed camera", "close.twice", self.close())
        code, _ = asi.call("_get_num_controls", self.cid)
        r.expect_code("number of controls before opening", "call.closed", code)
        for attempt in (1, 2):
            t0 = time.monotonic()
            code, _ = asi.call("_open_camera", self.cid)
            r.expect_code(f"open #{attempt}", "open.ok", code, time.monotonic() - t0)
            if code:
                raise _StepFailed("the camera does not open")
            t0 = time.monotonic()
            code, _ = asi.call("_init_camera", self.cid)
            r.expect_code(f"init #{attempt}", "open.ok", code, time.monotonic() - t0)
            if attempt == 1:
                code, _ = asi.call("_open_camera", self.cid)
                r.expect_code("open again while open", "open.twice", code)
                code, value = asi.call("_get_exposure_status", self.cid)
                r.expect("exposure status after open", "exp.idle_after_open", code == 0 and value == K.EXP_IDLE,
                         f"{_name(code)}, status {K.STATUS_NAMES.get(value, value)}", code=code, status=value)
                code, _ = asi.call("_stop_exposure", self.cid)
                r.expect_code("StopExposure with nothing running", "exp.stop_idle", code)
                code, _ = asi.call("_stop_video_capture", self.cid)
                r.expect_code("StopVideoCapture with no video", "video.stop_twice", code)
                # What survives a close/open: not relied on, recorded for the report (the gain is put back).
                _, gain0 = asi.call("_get_control_value", self.cid, GAIN)
                asi.call("_set_control_value", self.cid, GAIN, 1, False)
                w, h = self.small_roi(RAW8)
                t0 = time.monotonic()
                code = self.close()
                r.expect_code("close #1", "close.twice", code, time.monotonic() - t0)
                self.opened = False
            else:
                self.opened = True
        code, gain = asi.call("_get_control_value", self.cid, GAIN)
        code2, roi = asi.call("_get_roi_format", self.cid)
        r.info("what survived the close/open", f"gain {gain[0] if gain else '?'} (was set to 1), ROI "
               f"{roi[:2] if roi else '?'} type {roi[3] if roi else '?'} (was {w} x {h} RAW8)",
               "close_open.settings", gain=gain, roi=roi)
        if gain0:
            asi.call("_set_control_value", self.cid, GAIN, int(gain0[0]), bool(gain0[1]))

    def controls_step(self) -> None:
        r = self.report
        asi = self.asi
        self.open()
        code, n = asi.call("_get_num_controls", self.cid)
        if code:
            raise _StepFailed(f"number of controls returned {_name(code)}")
        ok_caps = True
        for i in range(int(n)):
            code, caps = asi.call("_get_control_caps", self.cid, i)
            if code:
                ok_caps = r.expect_code(f"caps of control index {i}", "controls.caps_by_index", code)
                continue
            caps = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in caps.items()}
            code, value = asi.call("_get_control_value", self.cid, caps["ControlType"])
            caps["Value"], caps["Auto"] = (value if value else (None, None))
            self.controls.append(caps)
            self.caps_by_type[int(caps["ControlType"])] = caps
        if ok_caps:
            r.expect("caps of every control index", "controls.caps_by_index", True, f"{n} controls",
                     controls=[c["Name"] for c in self.controls])
        for c in self.controls:
            r.info(f"range of {c['Name']}", f"{c['MinValue']} .. {c['MaxValue']}, default {c['DefaultValue']}, "
                   f"{'writable' if c['IsWritable'] else 'read-only'}, auto {'yes' if c['IsAutoSupported'] else 'no'}"
                   f", now {c['Value']}")
        for c in self.controls:
            if not c["IsWritable"] or c["ControlType"] in (COOLER_ON, TARGET_TEMP):
                continue  # the cooler has its own step
            self._set_read_back(c)
        for ctype in (GAIN, OFFSET, EXPOSURE):
            cap = self.caps_by_type.get(ctype)
            if cap is None or not cap["IsWritable"]:
                continue
            orig = cap["Value"]
            for beyond, bound in ((cap["MaxValue"] + 1, cap["MaxValue"]), (cap["MinValue"] - 1, cap["MinValue"])):
                if beyond < 0 and ctype == EXPOSURE:
                    continue
                code, _ = asi.call("_set_control_value", self.cid, ctype, int(beyond), False)
                _, got = asi.call("_get_control_value", self.cid, ctype)
                held = got[0] if got else None
                r.expect(f"{cap['Name']} set to {beyond} (beyond the range)", "controls.clamp",
                         code == 0 and held == bound, f"returned {_name(code)}, holds {held}", code=code)
            asi.call("_set_control_value", self.cid, ctype, int(orig), False)
        auto = next((c for c in self.controls if c["IsAutoSupported"] and c["IsWritable"]
                     and c["ControlType"] in (GAIN, EXPOSURE)), None)
        if auto is None:
            r.skip("auto flag", "no control supports auto", "controls.auto")
        else:
            code, _ = asi.call("_set_control_value", self.cid, auto["ControlType"], int(auto["Value"]), True)
            _, on = asi.call("_get_control_value", self.cid, auto["ControlType"])
            code2, _ = asi.call("_set_control_value", self.cid, auto["ControlType"], int(auto["Value"]), False)
            _, off = asi.call("_get_control_value", self.cid, auto["ControlType"])
            r.expect(f"{auto['Name']} auto on, then off", "controls.auto",
                     code == 0 and code2 == 0 and bool(on and on[1]) and not (off and off[1]),
                     f"returned {_name(code)} / {_name(code2)}; auto read back {on[1] if on else '?'} / "
                     f"{off[1] if off else '?'}")
        ro = next((c for c in self.controls if not c["IsWritable"]), None)
        if ro is None:
            r.skip("set a read-only control", "every control is writable", "controls.read_only")
        else:
            code, _ = asi.call("_set_control_value", self.cid, ro["ControlType"], int(ro["Value"] or 0), False)
            r.expect_code(f"set read-only {ro['Name']}", "controls.read_only", code)
        missing = next((t for t in range(22) if t not in self.caps_by_type), None)
        if missing is None:
            r.skip("a control the camera lacks", "the camera has all 22 control types", "controls.invalid_type")
        else:
            code, _ = asi.call("_get_control_value", self.cid, missing)
            r.expect_code(f"read control type {missing} (not listed by this camera)", "controls.invalid_type", code)
        if TEMPERATURE in self.caps_by_type:
            code, value = asi.call("_get_control_value", self.cid, TEMPERATURE)
            celsius = value[0] / 10.0 if value else None
            r.expect("Temperature is ten times degrees C", "controls.temperature_x10",
                     code == 0 and celsius is not None and -60.0 <= celsius <= 90.0,
                     f"read {value[0] if value else '?'} = {celsius} C", code=code)
        exp_caps = self.caps_by_type.get(EXPOSURE)
        if exp_caps is not None:
            self.measured["exposure_range_s"] = (exp_caps["MinValue"] / 1e6, exp_caps["MaxValue"] / 1e6)

    def _set_read_back(self, c: dict[str, Any]) -> None:
        asi = self.asi
        ctype, orig = int(c["ControlType"]), c["Value"]
        lo, hi, default = int(c["MinValue"]), int(c["MaxValue"]), int(c["DefaultValue"])
        target = default if default != orig else (lo if lo != orig else hi)
        code, _ = asi.call("_set_control_value", self.cid, ctype, target, False)
        code2, got = asi.call("_get_control_value", self.cid, ctype)
        held = got[0] if got else None
        self.report.expect(f"{c['Name']} = {target}", "controls.readback", code == 0 and held == target,
                           f"returned {_name(code)}, reads back {held}", code=code)
        if orig is not None:
            asi.call("_set_control_value", self.cid, ctype, int(orig), bool(c["Auto"]))

    def roi_step(self) -> None:
        r = self.report
        asi = self.asi
        info = self.info
        self.open()
        cid = self.cid
        for t, name in ((RAW8, "RAW8"), (RAW16, "RAW16")):
            w = info.max_width - info.max_width % 8
            h = info.max_height - info.max_height % 2
            while self.area_multiple > 1 and (w * h) % self.area_multiple:
                h -= 2
            code = asi.set_roi(cid, w, h, 1, t)
            _, got = asi.call("_get_roi_format", cid)
            r.expect(f"full frame {w} x {h} {name}", "roi.raw8_raw16", code == 0 and got == [w, h, 1, t],
                     f"returned {_name(code)}, reads back {got}", code=code)
        types = {RAW8: "RAW8", RGB24: "RGB24", RAW16: "RAW16", Y8: "Y8"}
        listed = {t for t, n in types.items() if n in info.image_types}
        unsupported = next((t for t in types if t not in listed), None)
        if unsupported is None:
            r.skip("an image type the camera lacks", "all four are supported", "roi.imgtype_unsupported")
        else:
            code = asi.set_roi(cid, 64, 32, 1, unsupported)
            r.expect_code(f"image type {types[unsupported]} (not listed)", "roi.imgtype_unsupported", code)
        for b in info.supported_bins:
            bw, bh = info.max_width // b, info.max_height // b
            w, h = bw - bw % 8, bh - bh % 2
            while self.area_multiple > 1 and (w * h) % self.area_multiple:
                h -= 2
            code = asi.set_roi(cid, w, h, b, RAW16)
            _, got = asi.call("_get_roi_format", cid)
            r.expect(f"bin {b}: {w} x {h} (the binned size)", "roi.binned_size", code == 0 and got == [w, h, b, RAW16],
                     f"returned {_name(code)}, reads back {got}", code=code)
        bad_bin = max(info.supported_bins) + 1
        r.expect_code(f"bin {bad_bin} (not supported)", "roi.bin_unsupported", asi.set_roi(cid, 64, 32, bad_bin, RAW16))
        r.expect_code("width 68 (not a multiple of 8)", "roi.width_multiple_8", asi.set_roi(cid, 68, 64, 1, RAW16))
        r.expect_code("height 63 (odd)", "roi.height_multiple_2", asi.set_roi(cid, 64, 63, 1, RAW16))
        aw = info.max_width - info.max_width % 8
        r.expect_code(f"width {aw + 8} (wider than the sensor)", "roi.too_large",
                      asi.set_roi(cid, aw + 8, 64, 1, RAW16))
        if self.area_multiple > 1:
            code = asi.set_roi(cid, 648, 480, 1, RAW16)
            r.expect_code("648 x 480 (area not a multiple of 1024)", "roi.asi120_area_1024", code)
        # The core's alignment (driver/roi.py) on odd requests: the SDK must take every region it plans.
        from driver import roi as _roi  # noqa: PLC0415
        from driver.models import CameraSettings  # noqa: PLC0415

        odd = [(13, 7, 101, 77, 1), (1, 1, 33, 5, 1), (info.max_width - 9, info.max_height - 3, 9, 3, 1)]
        if 2 in info.supported_bins:
            odd.append((5, 3, 99, 51, 2))
        for x, y, w, h, b in odd:
            plan = _roi.plan(CameraSettings(bin=b, start_x=x, start_y=y, width=w, height=h, image_type="RAW16"),
                             info, self.area_multiple)
            c1 = asi.set_roi(cid, plan.sdk_w, plan.sdk_h, b, RAW16)
            c2, _ = asi.call("_set_start_position", cid, plan.sdk_x, plan.sdk_y)
            _, got = asi.call("_get_start_position", cid)
            r.expect(f"odd request {w} x {h} at ({x}, {y}) bin {b} -> SDK {plan.sdk_w} x {plan.sdk_h} at "
                     f"({plan.sdk_x}, {plan.sdk_y})", "roi.binned_size", c1 == 0 and c2 == 0 and got == [plan.sdk_x,
                                                                                                         plan.sdk_y],
                     f"returned {_name(c1)} / {_name(c2)}, start reads back {got}", code=c1 or c2)
        w, h = self.small_roi()
        _, start = asi.call("_get_start_position", cid)
        r.info("start position after a format change", f"{start} for {w} x {h}", "roi.start_after_format")
        bw = info.max_width
        code, _ = asi.call("_set_start_position", cid, bw - w // 2, 0)
        r.expect_code(f"start ({bw - w // 2}, 0): ROI past the right edge", "roi.start_bounds", code)
        code, _ = asi.call("_set_start_position", cid, 9, 9)
        _, got = asi.call("_get_start_position", cid)
        if info.is_color:
            r.info("odd start (9, 9) on a colour sensor", f"returned {_name(code)}, reads back {got}",
                   "roi.colour_even_start")
        else:
            r.info("odd start (9, 9)", f"returned {_name(code)}, reads back {got}")

    def exposure_step(self) -> None:
        r = self.report
        asi = self.asi
        self.open()
        cid = self.cid
        w, h = self.small_roi()
        nbytes = w * h * 2
        for seconds, label in ((self.t.short, "short"), (self.t.long, "long")):
            self.set_exposure(seconds)
            t0 = time.monotonic()
            code, _ = asi.call("_start_exposure", cid, False)
            if code:
                r.expect_code(f"{label} exposure start", "exp.sequence", code)
                continue
            if label == "long":
                time.sleep(min(0.05, seconds / 10))
                code2, _ = asi.call("_start_exposure", cid, False)
                r.expect_code("start again while exposing", "exp.start_while_working", code2)
                code3, _ = asi.data(cid, nbytes)
                r.expect_code("read the image before it is ready", "exp.not_ready", code3)
            code, status, seen, _ = self.wait_status(self.readout_limit(seconds, nbytes))
            elapsed = time.monotonic() - t0
            names = " -> ".join(K.STATUS_NAMES.get(s, str(s)) for s in seen)
            ok = code == 0 and status == K.EXP_SUCCESS and seen[:1] in ([K.EXP_WORKING], [K.EXP_SUCCESS])
            r.expect(f"{label} exposure {seconds:g} s: status sequence", "exp.sequence", ok, names or _name(code),
                     elapsed, code=code, status=status)
            if label == "long":
                r.expect(f"{label} exposure took at least its length (Exposure set in microseconds)",
                         "controls.exposure_us", elapsed >= seconds * 0.98, f"{elapsed:.2f} s for {seconds:g} s")
            if status == K.EXP_SUCCESS:
                t1 = time.monotonic()
                code, buf = asi.data(cid, nbytes)
                r.expect_code(f"{label} exposure: read the image", "exp.sequence", code, time.monotonic() - t1)
                self.measured[f"{label}_exposure_s"] = round(elapsed, 3)
            if label == "short" and any(m in self.info.name for m in ("ASI120", "ASI130")):
                r.expect("RAW16 exposure on an ASI120/ASI130", "roi.asi120_raw16",
                         ok and code == 0, f"status {names}, image read {_name(code)}", code=code, status=status)
        r.info("status polling", "polled every 5 ms once the exposure time was over", "exp.poll_fast_at_end")
        if not self.args.quick:
            # One full frame: the whole USB transfer, as a night's images do it.
            fw = self.info.max_width - self.info.max_width % 8
            fh = self.info.max_height - self.info.max_height % 2
            while self.area_multiple > 1 and (fw * fh) % self.area_multiple:
                fh -= 2
            if asi.set_roi(cid, fw, fh, 1, RAW16) == 0:
                self.set_exposure(self.t.short)
                t0 = time.monotonic()
                asi.call("_start_exposure", cid, False)
                code, status, _, _ = self.wait_status(self.readout_limit(self.t.short, fw * fh * 2))
                if status == K.EXP_SUCCESS:
                    code, _ = asi.data(cid, fw * fh * 2)
                r.expect(f"full frame {fw} x {fh} RAW16 ({fw * fh * 2 / 1e6:.0f} MB)", "exp.sequence",
                         code == 0 and status == K.EXP_SUCCESS, f"{_name(code)}, status "
                         f"{K.STATUS_NAMES.get(status, status)}", time.monotonic() - t0, code=code, status=status)

    def stop_abort_step(self) -> None:
        r = self.report
        asi = self.asi
        self.open()
        cid = self.cid
        w, h = self.small_roi()
        nbytes = w * h * 2
        # StopExposure: does the image survive?
        self.set_exposure(self.t.abort)
        asi.call("_start_exposure", cid, False)
        time.sleep(self.t.stop_after)
        t0 = time.monotonic()
        code, _ = asi.call("_stop_exposure", cid)
        code2, status, seen, _ = self.wait_status(self.readout_limit(self.t.abort, nbytes))
        names = " -> ".join(K.STATUS_NAMES.get(s, str(s)) for s in seen)
        survived = code == 0 and code2 == 0 and status == K.EXP_SUCCESS
        data_code = None
        if status == K.EXP_SUCCESS:
            data_code, _ = asi.data(cid, nbytes)
            survived = survived and data_code == 0
        r.expect(f"StopExposure after {self.t.stop_after:g} s of {self.t.abort:g} s", "exp.stop_keeps_image", survived,
                 f"stop returned {_name(code)}; status then {names or _name(code2)}"
                 + (f"; image read: {_name(data_code)}" if data_code is not None else "; no image"),
                 time.monotonic() - t0, code=code, status=status)
        # Abort: stop and start again at once without reading the image.
        asi.call("_start_exposure", cid, False)
        time.sleep(self.t.stop_after)
        code, _ = asi.call("_stop_exposure", cid)
        self.set_exposure(self.t.short)
        code2, _ = asi.call("_start_exposure", cid, False)
        r.expect("abort, then start a new exposure at once", "exp.abort_restart", code == 0 and code2 == 0,
                 f"stop returned {_name(code)}, start {_name(code2)}", code=code2)
        code, status, _, _ = self.wait_status(self.readout_limit(self.t.abort, nbytes))
        if status == K.EXP_SUCCESS:
            asi.data(cid, nbytes)
        r.info("the exposure after the abort", f"{_name(code)}, status {K.STATUS_NAMES.get(status, status)}")

    def video_step(self) -> None:
        r = self.report
        asi = self.asi
        self.open()
        cid = self.cid
        w, h = self.small_roi(RAW8)
        nbytes = w * h
        self.set_exposure(self.t.short)
        wait_ms = int(self.t.short * 2000 + 500)
        code, _ = asi.call("_start_video_capture", cid)
        r.expect_code("start video", "video.frame", code)
        if code:
            raise _StepFailed("video does not start")
        try:
            code, _ = asi.call("_start_video_capture", cid)
            r.expect_code("start video again", "video.start_twice", code)
            code, _ = asi.call("_start_exposure", cid, False)
            r.expect_code("start an exposure during video", "exp.start_in_video", code)
            r.expect_code("change the ROI during video", "roi.stop_capture_first", asi.set_roi(cid, 64, 32, 1, RAW8))
            t0 = time.monotonic()
            codes = [asi.call("_get_video_data", cid, wait_ms, bytearray(nbytes))[0] for _ in range(3)]
            r.expect(f"3 frames, wait {wait_ms} ms each (exposure*2+500)", "video.frame", codes == [0, 0, 0],
                     ", ".join(_name(c) for c in codes), time.monotonic() - t0)
        finally:
            code, _ = asi.call("_stop_video_capture", cid)
        r.expect_code("stop video", "video.stop_twice", code)
        code, dropped = asi.call("_get_dropped_frames", cid)
        r.expect("dropped frames after the stop", "video.dropped_reset", code == 0 and dropped == 0,
                 f"{_name(code)}, {dropped}", code=code)
        # A slow exposure: a short wait must time out, and a stop from another thread must wake a waiter.
        self.set_exposure(self.t.video_slow)
        asi.call("_start_video_capture", cid)
        try:
            t0 = time.monotonic()
            code, _ = asi.call("_get_video_data", cid, 100, bytearray(nbytes))
            r.expect_code(f"wait 100 ms for a {self.t.video_slow:g} s frame", "video.timeout", code,
                          time.monotonic() - t0)
            wait = int(self.t.video_slow * 2000 + 500)
            box: dict[str, Any] = {}

            def waiter() -> None:
                t1 = time.monotonic()
                box["code"] = asi.call("_get_video_data", cid, wait, bytearray(nbytes))[0]
                box["s"] = time.monotonic() - t1

            th = threading.Thread(target=waiter, daemon=True, name="selftest-video-waiter")
            th.start()
            time.sleep(0.1)
        finally:
            asi.call("_stop_video_capture", cid)
        th.join(wait / 1000.0 + 2.0)
        r.expect(f"stop video while a {wait} ms wait is under way", "video.stop_wakes",
                 not th.is_alive() and box.get("s", 99.0) <= wait / 1000.0 + 0.5,
                 "the waiter is still waiting" if th.is_alive() else
                 f"the waiter returned {_name(box.get('code'))} after {box.get('s', 0):.2f} s")
        t0 = time.monotonic()
        code, _ = asi.call("_get_video_data", cid, 200, bytearray(nbytes))
        r.expect_code("read a video frame with video stopped", "video.not_started", code, time.monotonic() - t0)
        self.set_exposure(self.t.teardown)  # long, so it is surely still running; stopped at once below
        asi.call("_start_exposure", cid, False)
        code, _ = asi.call("_start_video_capture", cid)
        r.expect_code("start video during an exposure", "video.start_while_exposing", code)
        if code == 0:
            asi.call("_stop_video_capture", cid)
        asi.call("_stop_exposure", cid)
        self.wait_status(self.readout_limit(self.t.teardown, w * h))
        self.small_roi()

    def cooler_step(self) -> None:
        r = self.report
        asi = self.asi
        if not self.info.has_cooler:
            r.skip("cooler on/off", "this camera has no cooler", "controls.cooler_on_off")
            return
        self.open()
        cid = self.cid
        _, orig = asi.call("_get_control_value", cid, COOLER_ON)
        _, target0 = asi.call("_get_control_value", cid, TARGET_TEMP)
        _, temp = asi.call("_get_control_value", cid, TEMPERATURE)
        set_point = int(round(temp[0] / 10.0)) if temp else 0
        code, _ = asi.call("_set_control_value", cid, TARGET_TEMP, set_point, False)
        _, got = asi.call("_get_control_value", cid, TARGET_TEMP)
        r.expect(f"target {set_point} C (today's temperature, whole degrees)", "controls.target_temp_c",
                 code == 0 and bool(got) and got[0] == set_point, f"returned {_name(code)}, reads back "
                 f"{got[0] if got else '?'}", code=code)
        results = []
        for value in (1, 0):
            code, _ = asi.call("_set_control_value", cid, COOLER_ON, value, False)
            time.sleep(self.t.settle)
            _, got = asi.call("_get_control_value", cid, COOLER_ON)
            _, power = asi.call("_get_control_value", cid, COOLER_POWER)
            results.append((value, code, got[0] if got else None, power[0] if power else None))
        r.expect("cooler on, then off", "controls.cooler_on_off",
                 all(code == 0 and got == value for value, code, got, _ in results),
                 "; ".join(f"set {v}: {_name(c)}, reads {g}, power {p}%" for v, c, g, p in results))
        if orig:
            asi.call("_set_control_value", cid, COOLER_ON, int(orig[0]), False)
        if target0:
            asi.call("_set_control_value", cid, TARGET_TEMP, int(target0[0]), False)

    def st4_step(self) -> None:
        r = self.report
        asi = self.asi
        self.open()
        cid = self.cid
        if not self.info.has_st4:
            code, _ = asi.call("_pulse_guide_on", cid, 0)
            asi.call("_pulse_guide_off", cid, 0)
            r.expect_code("pulse north on a camera without ST4", "st4.absent", code)
            return
        if self.args.no_guide:
            r.skip("ST4 pulses", "--no-guide given", "st4.pulse")
            return
        codes = []
        for d in range(4):
            on, _ = asi.call("_pulse_guide_on", cid, d)
            time.sleep(0.02)  # 20 ms: too short to move a mount noticeably
            off, _ = asi.call("_pulse_guide_off", cid, d)
            codes.append((on, off))
        r.expect("20 ms pulse north, south, east, west", "st4.pulse", all(c == (0, 0) for c in codes),
                 ", ".join(f"{_name(a)}/{_name(b)}" for a, b in codes))

    def busy_step(self) -> None:
        r = self.report
        if self.args.no_busy:
            r.skip("open while another process holds it", "--no-busy given", "open.busy_elsewhere")
            return
        if self.opened:
            self.close()
        cmd = self._holder_command()
        if cmd is None:
            r.skip("open while another process holds it", "the SDK's path is unknown", "open.busy_elsewhere")
            return
        env = dict(os.environ)
        env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            line = _read_line(proc, HOLDER_WAIT_S)
            if not line.startswith("holding"):
                err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                r.fail("open while another process holds it",
                       f"the helper process could not open the camera: {line or err.strip() or 'no answer'}",
                       "open.busy_elsewhere")
                return
            t0 = time.monotonic()
            code, _ = self.asi.call("_open_camera", self.cid)
            if code == 0:
                self.asi.call("_init_camera", self.cid)
                ncode, _ = self.asi.call("_get_num_controls", self.cid)
                r.expect_code("open while another process holds it", "open.busy_elsewhere", code,
                              time.monotonic() - t0, then_controls=ncode)
                self.close()
            else:
                r.expect_code("open while another process holds it", "open.busy_elsewhere", code,
                              time.monotonic() - t0)
        finally:
            _stop_process(proc)
        t0 = time.monotonic()
        deadline = t0 + 5.0
        while True:
            code, _ = self.asi.call("_open_camera", self.cid)
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        r.expect_code("open once the other process has let go", "open.ok", code, time.monotonic() - t0)
        if code == 0:
            self.asi.call("_init_camera", self.cid)
            self.opened = True

    def _holder_command(self) -> list[str] | None:
        if self.sim is not None:
            slot = self.cid
            models = [c.model.key for c in self.sim.cameras]
            return [sys.executable, "-m", "driver.simulator", "hold", *models, "--camera", str(slot),
                    "--seed", str(self.sim.seed), "--lock-dir", self.sim.lock_dir, "--seconds", "30"]
        current = sdk.current()
        if current is None or not current.path:
            return None
        return [sys.executable, "-m", "zwo_runtime.cmd_selftest", "hold", current.path, str(self.info.index)]

    def teardown_step(self) -> None:
        r = self.report
        from driver import ReconnectPolicy, ZWOCamera  # noqa: PLC0415

        if self.opened:
            self.close()
        cam = ZWOCamera(self.info, reconnect=ReconnectPolicy(enabled=False), name=f"selftest {self.info.name}")
        try:
            cam.connect()
            cam.configure(width=min(SMALL, self.info.max_width), height=min(SMALL, self.info.max_height))
            cam.start_exposure(self.t.teardown)
            time.sleep(self.t.teardown_after)
            t0 = time.monotonic()
            cam.disconnect_camera()
            took = time.monotonic() - t0
        finally:
            cam.disconnect_camera()
        code, _ = self.asi.call("_get_num_controls", self.cid)
        r.expect(f"disconnect {self.t.teardown_after:g} s into a {self.t.teardown:g} s exposure",
                 "core.teardown_bounded",
                 took <= TEARDOWN_BOUND_S and code == K.CAMERA_CLOSED,
                 f"took {took:.2f} s; the camera then answers {_name(code)}", took)
        self.measured["teardown_s"] = round(took, 3)

    def unplug_step(self) -> None:
        r = self.report
        consent = self._unplug_consent()
        if consent is not True:
            r.skip("unplug and replug", consent or "not agreed", "gone.unplugged")
            return
        asi = self.asi
        self.open()
        cid = self.cid
        w, h = self.small_roi()
        self.set_exposure(UNPLUG_WAIT_S + 30.0)
        code, _ = asi.call("_start_exposure", cid, False)
        if code:
            raise _StepFailed(f"the exposure for the unplug step does not start: {_name(code)}")
        if self.sim is None:
            print(f"  >>> Unplug the camera's USB cable NOW (waiting up to {UNPLUG_WAIT_S:.0f} s) ...",
                  file=self.report.out, flush=True)
        else:
            print("  (simulated user: pulling the cable)", file=self.report.out, flush=True)
            threading.Timer(self.t.simulated_unplug_after, self.sim.unplug, args=(cid,)).start()
        t0 = time.monotonic()
        status_code, status = 0, K.EXP_WORKING
        while time.monotonic() - t0 < UNPLUG_WAIT_S:
            status_code, value = asi.call("_get_exposure_status", cid)
            status = int(value) if value is not None else status
            if status_code or status != K.EXP_WORKING:
                break
            time.sleep(0.05)
        noticed = time.monotonic() - t0
        if not status_code and status == K.EXP_WORKING:
            r.fail("unplug", f"nothing changed within {UNPLUG_WAIT_S:.0f} s: was the cable pulled?", "exp.unplug")
            asi.call("_stop_exposure", cid)
            return
        c = K.clause("exp.unplug")
        r.expect("exposure status once unplugged", "exp.unplug",
                 c.accepts_code(status_code) and (status_code != 0 or c.accepts_status(status)),
                 _name(status_code) + ("" if status_code else f", status {K.STATUS_NAMES.get(status, status)}"),
                 noticed, code=status_code, status=status)
        code, _ = asi.call("_get_num_controls", cid)
        r.expect_code("a call on the unplugged camera", "gone.unplugged", code)
        code, _ = asi.call("_open_camera", cid)
        r.expect_code("open the unplugged camera", "open.removed", code)
        self.opened = False
        if self.sim is None:
            print(f"  >>> Plug it back in NOW (waiting up to {UNPLUG_WAIT_S:.0f} s) ...", file=self.report.out,
                  flush=True)
        else:
            print("  (simulated user: plugging it back in)", file=self.report.out, flush=True)
            threading.Timer(self.t.simulated_unplug_after, self.sim.replug, args=(cid,)).start()
        t1 = time.monotonic()
        found: CameraInfo | None = None
        while time.monotonic() - t1 < UNPLUG_WAIT_S and found is None:
            time.sleep(0.2)
            try:
                for cam in sdk.enumerate_cameras(read_serials=False):
                    if cam.name == self.info.name:
                        found = cam
                        break
            except CameraError:
                continue
        if found is None:
            r.expect("the camera enumerates again", "gone.replug", False,
                     f"not back within {UNPLUG_WAIT_S:.0f} s")
            return
        back = time.monotonic() - t1
        old_close = self.close()
        self.cid = found.camera_id
        t2 = time.monotonic()
        codes = [asi.call(fn, self.cid)[0] for fn in ("_open_camera", "_init_camera")]
        r.expect("back on the bus, open + init", "gone.replug", codes == [0, 0],
                 f"enumerated after {back:.2f} s (ID {found.camera_id}, was {cid}); old ID close: {_name(old_close)}; "
                 f"open/init: {', '.join(_name(c) for c in codes)}", back + (time.monotonic() - t2))
        self.measured["unplug"] = {"noticed_s": round(noticed, 3), "back_s": round(back, 3),
                                   "code": status_code, "status": status, "new_id": found.camera_id}
        self.opened = codes == [0, 0]

    def _unplug_consent(self) -> bool | str:
        if self.args.unplug is False:
            return "--no-unplug given"
        if self.args.unplug is True:
            return True
        stdin = sys.stdin
        if stdin is None or not stdin.isatty():
            return "stdin is not a terminal (give --yes-unplug to include it)"
        print("\n  The last step asks you to pull the camera's USB cable during an exposure and plug it back in "
              f"within {UNPLUG_WAIT_S:.0f} s.\n  Nothing is saved or changed on the camera. Do it? [y/N] ",
              end="", file=self.report.out, flush=True)
        answer = stdin.readline().strip().lower()
        return True if answer in ("y", "yes") else "not agreed at the prompt"


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []

    def read() -> None:
        if proc.stdout is not None:
            box.append(proc.stdout.readline())

    th = threading.Thread(target=read, daemon=True)
    th.start()
    th.join(timeout)
    return box[0].strip() if box else ""


def _stop_process(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.terminate()
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def hold_main(argv: list[str]) -> int:
    """``python -m zwo_runtime.cmd_selftest hold SDK_PATH INDEX``: open the camera at INDEX with the
    library at SDK_PATH, print ``holding``, keep it until stdin closes or 30 s pass (the busy step)."""
    if len(argv) != 2:
        print("usage: python -m zwo_runtime.cmd_selftest hold SDK_PATH INDEX", file=sys.stderr)
        return 2
    from driver import _zwo  # noqa: PLC0415

    zwo = _zwo.zwoasi()
    try:
        zwo.init(argv[0])
        prop = zwo._get_camera_property(int(argv[1]))  # noqa: SLF001
        cid = int(prop["CameraID"])
        zwo._open_camera(cid)  # noqa: SLF001
        zwo._init_camera(cid)  # noqa: SLF001
    except (zwo.ZWO_Error, OSError, ValueError) as exc:
        print(f"cannot hold the camera: {exc}", flush=True)
        return 1
    print("holding", flush=True)
    t = threading.Thread(target=sys.stdin.read, daemon=True)
    t.start()
    t.join(30.0)
    zwo._close_camera(cid)  # noqa: SLF001
    return 0


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

STEPS = ("enumerate", "open_close", "controls", "roi", "exposure", "stop_abort", "video", "cooler", "st4", "busy",
         "teardown", "unplug")


def add_parser(subparsers: Any) -> None:
    """Register `zwo-alpaca selftest`."""
    p = subparsers.add_parser(
        "selftest", help="check a camera against the SDK contract the server relies on (about two minutes)",
        description="Run the SDK contract (docs/simulator.md, 'The SDK contract') on one camera: open and close, "
                    "every control's range and a set/read-back, RAW8/RAW16, binning and ROI alignment, exposures, "
                    "StopExposure and abort mid-exposure, video, cooler, ST4, a disconnect while exposing and, "
                    "if you agree, an unplug and replug. Prints a report, writes it as JSON and flags every result "
                    "that contradicts the contract. Exit status 0: all agree; 1: something contradicts; 2: bad "
                    "options; 3: could not run. Stop other programs using the camera first; ST4 pulses are 20 ms "
                    "(use --no-guide if a mount is connected and must not move).",
        epilog="examples:\n"
               "  zwo-alpaca selftest                      # the first camera; asks before the unplug step\n"
               "  zwo-alpaca selftest --camera ASI120MM-S --no-unplug --json ~/asi120-selftest.json\n"
               "  zwo-alpaca selftest --simulator asi294mc-pro --quick --yes-unplug\n"
               "Attach the JSON file to a bug report (see docs/troubleshooting.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camera", default="0", metavar="N|SERIAL",
                   help="which camera: its index in 'zwo-alpaca list', its serial number or model name (default 0)")
    add_sdk_arguments(p, "test a simulated camera of this model instead of a real one (with several, --camera "
                         "chooses)")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON report (default: "
                   "zwo-alpaca-selftest-<model>-<time>.json in the current folder)")
    unplug = p.add_mutually_exclusive_group()
    unplug.add_argument("--yes-unplug", dest="unplug", action="store_const", const=True, default=None,
                        help="include the unplug/replug step without asking (you pull the cable when told)")
    unplug.add_argument("--no-unplug", dest="unplug", action="store_const", const=False,
                        help="leave out the unplug/replug step (the default when stdin is not a terminal)")
    p.add_argument("--quick", action="store_true", help="short exposures (0.5 s instead of 3 s) and no full-frame "
                   "download: for the test suite, or a first look")
    p.add_argument("--long", type=float, metavar="S",
                   help="length of the long exposure (default 3 s, 0.5 s with --quick)")
    p.add_argument("--no-guide", action="store_true", help="send no ST4 pulses (a mount is connected)")
    p.add_argument("--no-busy", action="store_true", help="leave out the step that opens the camera from a second "
                   "process")
    p.add_argument("--only", action="append", choices=STEPS, metavar="STEP",
                   help=f"run only this step (repeatable): {', '.join(STEPS)}")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


def _choose(cameras: list[CameraInfo], selector: int | str) -> CameraInfo | None:
    if isinstance(selector, int):
        return next((c for c in cameras if c.index == selector), None)
    want = selector.strip().lower()
    for c in cameras:
        if c.serial and c.serial.lower() == want:
            return c
    norm = want.replace(" ", "").replace("-", "").replace("_", "")
    for c in cameras:
        for name in (c.name, c.model):
            if name.lower().replace(" ", "").replace("-", "").replace("_", "") in (norm, "zwo" + norm):
                return c
    return None


def default_json_path(info: CameraInfo, now: _dt.datetime) -> Path:
    """``zwo-alpaca-selftest-<model>-<YYYYmmdd-HHMMSS>.json`` in the current folder."""
    from zwo_common.capture_files import slug  # noqa: PLC0415

    return Path(f"zwo-alpaca-selftest-{slug(info.model)}-{now.strftime('%Y%m%d-%H%M%S')}.json")


def build_document(report: Report, info: CameraInfo, sdk_info: sdk.SdkInfo, test: SelfTest | None,
                   args: argparse.Namespace, started: _dt.datetime, seconds: float) -> dict[str, Any]:
    """The JSON report (schema "zwo-alpaca-selftest/1", described in docs/troubleshooting.md)."""
    from zwo_common.version import package_version  # noqa: PLC0415

    camera = dataclasses.asdict(info)
    camera.pop("controls", None)
    return {
        "schema": SCHEMA,
        "zwo_alpaca_version": package_version(),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(seconds, 2),
        "host": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                 "python": platform.python_version()},
        "sdk": {"kind": sdk_info.kind, "path": sdk_info.path,
                "version": test.measured.get("sdk_version") if test else None},
        "camera": camera,
        "controls": test.controls if test else [],
        "options": {"quick": bool(args.quick), "unplug": args.unplug, "no_guide": bool(args.no_guide),
                    "only": list(args.only or [])},
        "measured": test.measured if test else {},
        "results": [dataclasses.asdict(r) for r in report.results],
        "summary": report.summary(),
        "contradictions": [
            {"clause": key, "expected": K.clause(key).expected, "source": K.clause(key).source,
             "assumed": K.clause(key).assumed,
             "observed": [r.observed for r in report.results if r.clause == key and r.verdict == "contradicts"]}
            for key in report.contradictions()],
    }


def run(args: argparse.Namespace) -> int:
    """Run the self-test; see the module docstring for the exit status."""
    logsetup.setup_from_args(args)
    out = sys.stdout
    started = _dt.datetime.now().astimezone()
    t_start = time.monotonic()
    try:
        if args.simulator:
            sdk_info = load_simulator(args.simulator)
        else:
            sdk_info = sdk.load(sdk_path=args.sdk, fallback_to_simulator=False)
    except ValueError as exc:
        error("selftest", str(exc))
        return 2
    except SdkNotFoundError as exc:
        error("selftest", f"{exc.message}\n  fix: {SDK_FIX}")
        return 3
    try:
        cameras = sdk.enumerate_cameras()
    except CameraError as exc:
        error("selftest", exc.message)
        return 3
    if not cameras:
        error("selftest", "no ZWO camera found: check the USB cable and the camera's power, then run "
                          "'zwo-alpaca doctor' (or try '--simulator asi294mc-pro')")
        return 3
    info = _choose(cameras, camera_selector(args.camera))
    if info is None:
        names = ", ".join(f"{c.index}: {c.name} (serial {c.serial or '?'})" for c in cameras)
        error("selftest", f"no camera {args.camera!r}; attached: {names}")
        return 2
    sim = None
    if sdk_info.kind == "simulator":
        from driver import simulator  # noqa: PLC0415

        sim = simulator.current()
    print(f"zwo-alpaca selftest: {info.name} (serial {info.serial or 'unknown'}, camera ID {info.camera_id}) on "
          f"{sdk_info.describe()}", file=out)
    print(f"{len(K.CLAUSES)} contract clauses; each result names the one it checks.", file=out, flush=True)
    report = Report(out)
    test = SelfTest(info, args, report, Timing.for_run(bool(args.quick), args.long), sim)
    try:
        test.run()
    except KeyboardInterrupt:
        report.fail("interrupted", "stopped by Ctrl-C; the report below is incomplete")
    finally:
        if test.opened:
            test.close()
    seconds = time.monotonic() - t_start
    doc = build_document(report, info, sdk_info, test, args, started, seconds)
    path = Path(os.path.expanduser(args.json)) if args.json else default_json_path(info, started)
    written = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        written = False
        error("selftest", f"cannot write the JSON report to {path}: {exc.strerror or exc}")
    s = report.summary()
    print(f"\nSummary: {s['agrees']} agree, {s['contradicts']} contradict, {s['info']} recorded, "
          f"{s['skipped']} skipped, {s['error']} could not run ({seconds:.1f} s)", file=out)
    bad = report.contradictions()
    if bad:
        print("Contradicts the SDK contract:", file=out)
        for key in bad:
            c = K.clause(key)
            print(f"  {key}: the contract says {c.expected!r} ({'assumed' if c.assumed else c.source})", file=out)
    if written:
        print(f"Report written to {path}", file=out)
        print(f"To report a problem: attach {path.name} to the bug report, with the output of 'zwo-alpaca doctor "
              "--json' (docs/troubleshooting.md, 'Reporting a problem'). It holds the camera model and serial, the "
              "SDK version and every result; no images.", file=out)
    return 1 if bad else (3 if s["error"] and not s["agrees"] else 0)


if __name__ == "__main__":  # pragma: no cover - the busy step's helper process
    if len(sys.argv) > 1 and sys.argv[1] == "hold":
        sys.exit(hold_main(sys.argv[2:]))
    print("usage: python -m zwo_runtime.cmd_selftest hold SDK_PATH INDEX", file=sys.stderr)
    sys.exit(2)
