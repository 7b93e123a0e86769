"""The SDK contract: every libASICamera2 behaviour the device core relies on, with its source.

Each `Clause` is one call in one situation and what the SDK does then. `source` names where that
comes from: ZWO's `ASICamera2.h` comments (the copy in indi-3rdparty `libasi/ASICamera2.h`), a
measurement of the real library (pyzwoasi's bundled libASICamera2 1.41, no camera attached), or how
INDI's own ZWO driver (indi-3rdparty `indi-asi`, file and function) handles it. `assumed=True`
marks what no source says: the simulator behaves so and the core copes, but only a real camera can
confirm it -- `zwo-alpaca selftest` checks those on the user's camera and flags a contradiction by
the clause's `key`.

Machine-checkable expectations: `codes` lists the ASI_ERROR_CODE values the call may return in
that situation (empty: no code is checked), `statuses` the ASI_EXPOSURE_STATUS values a status poll
may then show. `applies` says which cameras the clause is about (see `APPLIES`).

This table is the single source for docs/simulator.md "The SDK contract" (`markdown_table()`;
tests/driver/test_sdk_contract.py keeps the two identical), for the simulator's tests against it and
for the self-test. It imports nothing, so every part of the project may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# ASI_ERROR_CODE (ASICamera2.h), named here so the table needs no binding.
SUCCESS, INVALID_INDEX, INVALID_ID, INVALID_CONTROL_TYPE, CAMERA_CLOSED, CAMERA_REMOVED = 0, 1, 2, 3, 4, 5
INVALID_PATH, INVALID_FILEFORMAT, INVALID_SIZE, INVALID_IMGTYPE, OUTOF_BOUNDARY, TIMEOUT = 6, 7, 8, 9, 10, 11
INVALID_SEQUENCE, BUFFER_TOO_SMALL, VIDEO_MODE_ACTIVE, EXPOSURE_IN_PROGRESS, GENERAL_ERROR = 12, 13, 14, 15, 16
INVALID_MODE = 17
ERROR_NAMES: dict[int, str] = {
    0: "SUCCESS", 1: "INVALID_INDEX", 2: "INVALID_ID", 3: "INVALID_CONTROL_TYPE", 4: "CAMERA_CLOSED",
    5: "CAMERA_REMOVED", 6: "INVALID_PATH", 7: "INVALID_FILEFORMAT", 8: "INVALID_SIZE", 9: "INVALID_IMGTYPE",
    10: "OUTOF_BOUNDARY", 11: "TIMEOUT", 12: "INVALID_SEQUENCE", 13: "BUFFER_TOO_SMALL", 14: "VIDEO_MODE_ACTIVE",
    15: "EXPOSURE_IN_PROGRESS", 16: "GENERAL_ERROR", 17: "INVALID_MODE",
}
# ASI_EXPOSURE_STATUS
EXP_IDLE, EXP_WORKING, EXP_SUCCESS, EXP_FAILED = 0, 1, 2, 3
STATUS_NAMES: dict[int, str] = {0: "IDLE", 1: "WORKING", 2: "SUCCESS", 3: "FAILED"}

#: Which cameras a clause is about.
APPLIES: dict[str, str] = {
    "all": "every camera",
    "sdk": "the library itself (no camera needed)",
    "st4": "cameras with an ST4 guide port",
    "no-st4": "cameras without an ST4 guide port",
    "cooled": "cameras with a cooler",
    "colour": "colour cameras",
    "asi120": "the ASI120 family (USB 2.0)",
    "asi120_130": "the ASI120 and ASI130 families",
    "usb2": "USB 2.0 cameras",
    "no-serial": "cameras that report no serial number",
}

HEADER = "ASICamera2.h"  # ZWO's header, as in indi-3rdparty libasi/ASICamera2.h
MEASURED = "measured: pyzwoasi's libASICamera2 1.41 with no camera (tests/driver differential test)"
INDI = "indi-3rdparty indi-asi/asi_base.cpp"


@dataclass(frozen=True)
class Clause:
    """One SDK behaviour the core relies on.

    `key` is stable (reports and tests name clauses by it); `call` the ASI function(s); `situation`
    when; `expected` what the SDK does then; `source` where that is written or seen; `assumed` True
    when no source says so; `codes` / `statuses` the machine-checkable expectation; `applies` which
    cameras (a key of `APPLIES`); `core` what in this project depends on it.
    """

    key: str
    call: str
    situation: str
    expected: str
    source: str
    assumed: bool
    codes: tuple[int, ...] = ()
    statuses: tuple[int, ...] = ()
    applies: str = "all"
    core: str = ""

    def accepts_code(self, code: int) -> bool:
        """Whether `code` agrees with the clause (any code when the clause lists none)."""
        return not self.codes or int(code) in self.codes

    def accepts_status(self, status: int) -> bool:
        """Whether the exposure status `status` agrees with the clause (any when it lists none)."""
        return not self.statuses or int(status) in self.statuses

    def expectation(self) -> str:
        """The machine-checkable part in words, e.g. 'INVALID_SIZE (8)'."""
        parts = []
        if self.codes:
            parts.append(" or ".join(f"{ERROR_NAMES.get(c, c)} ({c})" for c in self.codes))
        if self.statuses:
            parts.append("status " + " or ".join(STATUS_NAMES.get(s, str(s)) for s in self.statuses))
        return "; ".join(parts)


def _c(key: str, call: str, situation: str, expected: str, source: str, assumed: bool = False, *,
       codes: tuple[int, ...] = (), statuses: tuple[int, ...] = (), applies: str = "all", core: str = "") -> Clause:
    return Clause(key, call, situation, expected, source, assumed, codes, statuses, applies, core)


CLAUSES: tuple[Clause, ...] = (
    # ---------------------------------------------------------------- enumeration, IDs
    _c("sdk.version", "ASIGetSDKVersion", "any time, no camera needed",
       "a version string such as \"1, 41, 0, 0\"", f"{HEADER} (ASIGetSDKVersion: 'like \"1, 13, 0503\"'); {MEASURED}",
       applies="sdk", core="zwo-alpaca doctor / list"),
    _c("enum.count_none", "ASIGetNumOfConnectedCameras", "no camera attached", "0",
       f"{HEADER}; {MEASURED}", applies="sdk", core="driver/sdk.py enumerate_cameras"),
    _c("enum.invalid_index", "ASIGetCameraProperty", "index < 0 or >= the camera count",
       "INVALID_INDEX", f"{HEADER} (ASIGetCameraProperty); {MEASURED}", codes=(INVALID_INDEX,), applies="sdk",
       core="driver/sdk.py camera_info"),
    _c("id.absent", "every per-camera call (open, init, close, controls, ROI, exposure, video, guiding)",
       "a CameraID no attached camera has (never connected, or out of range)",
       "INVALID_ID for every call", f"{HEADER} ('no camera of this ID is connected or ID value is out of "
       f"boundary'); {MEASURED}: all 24 calls tried return 2", codes=(INVALID_ID,), applies="sdk",
       core="driver/handle.py GONE_CODES (2 = camera gone)"),
    _c("id.property_without_open", "ASIGetCameraProperty", "camera attached, not opened",
       "SUCCESS: properties are readable without opening", f"{HEADER} (ASIGetCameraProperty: 'you can do "
       "this without open the camera')", codes=(SUCCESS,), core="driver/sdk.py camera_info, zwo-alpaca list"),
    # ---------------------------------------------------------------- open / init / close
    _c("open.ok", "ASIOpenCamera + ASIInitCamera", "camera attached and free", "SUCCESS for both",
       f"{HEADER} (suggested procedure: open, then init)", codes=(SUCCESS,), core="driver/handle.py open_handle"),
    _c("open.removed", "ASIOpenCamera", "the camera is listed but cannot be reached (removed, or no USB permission)",
       "CAMERA_REMOVED", f"{HEADER} (ASIOpenCamera: 'failed to find the camera, maybe camera has been removed'); "
       "python-zwoasi issue #21 and PHD2 issue #864 (5 when the udev rules are missing)",
       codes=(CAMERA_REMOVED, INVALID_ID), core="driver/handle.py open_verified (2, 5 -> CameraGoneError)"),
    _c("open.busy_elsewhere", "ASIOpenCamera", "another process has the camera open",
       "the open fails; the simulator answers GENERAL_ERROR (16), which the core reports as 'is another "
       "program using the camera?'", "assumed: no source names the code", True,
       codes=(GENERAL_ERROR, CAMERA_REMOVED), core="driver/handle.py open_verified"),
    _c("open.twice", "ASIOpenCamera", "this process already has the camera open",
       "SUCCESS (the existing handle is kept)", "assumed", True, codes=(SUCCESS,),
       core="driver/sdk.py probe_serial must not open+close a camera in use"),
    _c("call.closed", "ASIGetNumOfControls, ASIGetControlValue, ASISetROIFormat, ASIStartExposure, ...",
       "camera attached but not opened (or closed again)", "CAMERA_CLOSED",
       f"{HEADER} (every per-camera function: 'ASI_ERROR_CAMERA_CLOSED : camera didn't open')",
       codes=(CAMERA_CLOSED,), core="driver/handle.py GONE_CODES (4: the handle was dropped)"),
    _c("close.twice", "ASICloseCamera", "camera already closed", "SUCCESS",
       f"{HEADER} (ASICloseCamera: 'it will return success even the camera already closed')",
       codes=(SUCCESS,), core="driver/handle.py SdkIO.close"),
    _c("close_open.settings", "ASIOpenCamera after ASICloseCamera", "controls and ROI set before the close",
       "not relied on: the simulator resets controls to defaults and the ROI to full frame; the core "
       "sets every setting again after each open", "assumed", True,
       core="driver/camera.py _apply_settings / _apply_roi after every connect"),
    _c("close.cooler", "ASICloseCamera", "cooler on", "the cooler stops with the handle (simulator); the core "
       "does not keep a cooler running across a close", "assumed", True, applies="cooled"),
    _c("asi_id.flash", "ASIGetID / ASISetID", "after close/open or unplug", "the 8-byte ID survives (it is in "
       "the camera's flash); USB 3.0 cameras only", f"{HEADER} (ASIGetID: 'get camera id stored in flash, only "
       "available for USB3.0 camera')"),
    _c("serial.none", "ASIGetSerialNumber", "camera has no serial number", "GENERAL_ERROR",
       f"{HEADER} (ASIGetSerialNumber: 'ASI_ERROR_GENERAL_ERROR : camera does not have Serial Number')",
       codes=(GENERAL_ERROR,), applies="no-serial", core="driver/_zwo.py read_serial"),
    # ---------------------------------------------------------------- controls
    _c("controls.caps_by_index", "ASIGetControlCaps", "index 0 .. ASIGetNumOfControls-1",
       "SUCCESS; the index is a position, not the control type", f"{HEADER} (ASIGetControlCaps: 'index of "
       "control, NOT control type'); {INDI} createControls", codes=(SUCCESS,), core="driver/camera.py controls()"),
    _c("controls.readback", "ASISetControlValue then ASIGetControlValue", "a writable control, value inside "
       "its range, auto off", "SUCCESS; reads back the value set", "assumed (the header promises nothing more "
       "than SUCCESS)", True, codes=(SUCCESS,), core="driver/camera.py _read_back (held gain/offset)"),
    _c("controls.clamp", "ASISetControlValue", "value beyond MinValue/MaxValue",
       "SUCCESS, and the control holds the nearest bound", f"{HEADER} (ASISetControlValue: 'it will return "
       "success and set the max value or min value if the value is beyond the boundary')",
       codes=(SUCCESS,), core="driver/validation.py refuses out-of-range values before the SDK sees them"),
    _c("controls.invalid_type", "ASIGetControlValue / ASISetControlValue", "a control type the camera lacks",
       "INVALID_CONTROL_TYPE", f"{HEADER}; {INDI} isMonoBinActive (expects it for a missing MonoBin)",
       codes=(INVALID_CONTROL_TYPE,), core="driver/controls.py: only controls the camera lists are used"),
    _c("controls.read_only", "ASISetControlValue", "a control with IsWritable = 0 (Temperature, CoolerPowerPerc)",
       "refused with GENERAL_ERROR", f"{HEADER} (IsWritable: 'some control like temperature can only be read'); "
       "the code is assumed", True, codes=(GENERAL_ERROR,), core="driver/validation.py refuses read-only "
       "controls, so a 16 from a validated call means a hardware failure (GONE_CODES)"),
    _c("controls.auto", "ASISetControlValue(auto=TRUE) then ASIGetControlValue", "a control with "
       "IsAutoSupported = 1", "SUCCESS; the auto flag reads back TRUE (and FALSE again after setting it off)",
       f"{HEADER} (IsAutoSupported); {INDI} ISNewSwitch CCD_CONTROLS_MODE; the read-back is assumed", True,
       codes=(SUCCESS,), core="driver/camera.py set_control (the core always sets auto off)"),
    _c("controls.temperature_x10", "ASIGetControlValue(ASI_TEMPERATURE)", "any time while open",
       "ten times the sensor temperature in C (e.g. 215 = 21.5 C)", f"{HEADER} (ASI_TEMPERATURE: 'return "
       f"10*temperature'); {INDI} temperatureTimerTimeout divides by 10", codes=(SUCCESS,),
       core="driver/camera.py _read_telemetry"),
    _c("controls.target_temp_c", "ASISetControlValue(ASI_TARGET_TEMP)", "cooled camera",
       "whole degrees C, not times ten", f"{HEADER} (ASI_TARGET_TEMP: 'not need *10'); {INDI} SetTemperature",
       codes=(SUCCESS,), applies="cooled", core="driver/camera.py set_cooler"),
    _c("controls.cooler_on_off", "ASISetControlValue(ASI_COOLER_ON, 1/0)", "cooled camera",
       "SUCCESS; CoolerOn reads back the value; CoolerPowerPerc is read-only", f"{INDI} SetCoolerEnabled",
       codes=(SUCCESS,), applies="cooled", core="driver/camera.py set_cooler"),
    _c("controls.exposure_us", "ASISetControlValue(ASI_EXPOSURE)", "before ASIStartExposure",
       "the exposure time in microseconds", f"{HEADER} (ASI_AUTO_MAX_EXP 'micro second'); {INDI} workerExposure "
       "(duration * 1000 * 1000)", codes=(SUCCESS,), core="driver/camera.py _set_exposure_time"),
    # ---------------------------------------------------------------- ROI and binning
    _c("roi.binned_size", "ASISetROIFormat", "width/height given after binning, <= MaxWidth/bin x MaxHeight/bin",
       "SUCCESS", f"{HEADER} (ASISetROIFormat: 'the width and height is the value after binning')",
       codes=(SUCCESS,), core="driver/roi.py plan"),
    _c("roi.width_multiple_8", "ASISetROIFormat", "width % 8 != 0", "refused with INVALID_SIZE",
       f"{HEADER} ('Make sure iWidth%8 == 0'; INVALID_SIZE 'wrong video format size'); {INDI} UpdateCCDFrame "
       "rounds the width down", codes=(INVALID_SIZE,), core="driver/roi.py reads a wider aligned region and crops"),
    _c("roi.height_multiple_2", "ASISetROIFormat", "height % 2 != 0", "refused with INVALID_SIZE",
       f"{HEADER} ('Make sure iHeight%2 == 0'); {INDI} UpdateCCDFrame", codes=(INVALID_SIZE,),
       core="driver/roi.py"),
    _c("roi.asi120_area_1024", "ASISetROIFormat", "ASI120: width * height % 1024 != 0",
       "refused with INVALID_SIZE", f"{HEADER} ('ASI120's data size must be times of 1024')",
       codes=(INVALID_SIZE,), applies="asi120", core="driver/roi.py plan(area_multiple), driver/model_facts.py"),
    _c("roi.asi120_raw16", "ASISetROIFormat(RAW16) + an exposure", "ASI120 or ASI130, RAW16 listed in "
       "SupportedVideoFormat", "the RAW16 exposure succeeds (as the simulator and the core, whose default is "
       "RAW16, assume)", "assumed; contradicted by indi-asi asi_base.cpp setVideoFormat, which switches these "
       "models to RAW8 ('16bit is not supported', 2022-11-30)", True, codes=(SUCCESS,), statuses=(EXP_SUCCESS,),
       applies="asi120_130", core="driver/models.py CameraSettings.image_type default RAW16"),
    _c("roi.too_large", "ASISetROIFormat", "width > MaxWidth/bin or height > MaxHeight/bin",
       "refused with INVALID_SIZE", f"{HEADER} (INVALID_SIZE)", codes=(INVALID_SIZE,), core="driver/validation.py"),
    _c("roi.bin_unsupported", "ASISetROIFormat", "a bin not in SupportedBins", "refused with INVALID_SIZE",
       "assumed (the header lists no code for it)", True, codes=(INVALID_SIZE,),
       core="driver/validation.py allows only SupportedBins"),
    _c("roi.imgtype_unsupported", "ASISetROIFormat", "an image type not in SupportedVideoFormat",
       "refused with INVALID_IMGTYPE", f"{HEADER} (INVALID_IMGTYPE 'unsupported image format')",
       codes=(INVALID_IMGTYPE,), core="driver/validation.py image_type"),
    _c("roi.raw8_raw16", "ASISetROIFormat + ASIGetROIFormat", "RAW8 and RAW16 (every camera lists both)",
       "SUCCESS; ASIGetROIFormat reads back the size, bin and type set", "assumed", True, codes=(SUCCESS,),
       core="driver/roi.py Roi.nbytes sizes the buffer from what was set"),
    _c("roi.start_bounds", "ASISetStartPos", "start + size outside the binned sensor",
       "refused with OUTOF_BOUNDARY", f"{HEADER} (ASISetStartPos: 'the start x and start y make the image out "
       "of boundary'; 'relative to the image after binning')", codes=(OUTOF_BOUNDARY,), core="driver/roi.py"),
    _c("roi.start_after_format", "ASISetROIFormat then ASIGetStartPos", "after a format change",
       "not relied on: the simulator centres the ROI (the header: 'the camera will set the ROI area to the "
       "center of the full image as default'); the core sets the start after every format change",
       f"{HEADER} (ASISetStartPos)", True, core="driver/camera.py _apply_roi"),
    _c("roi.colour_even_start", "ASISetStartPos", "colour camera, odd start", "not relied on: the simulator "
       "rounds it down to even (Bayer phase kept); the core asks only for even starts", "assumed", True,
       applies="colour", core="driver/roi.py _axis (even SDK start)"),
    _c("roi.stop_capture_first", "ASISetROIFormat", "video capture running",
       "refused with INVALID_SEQUENCE ('stop capture first')", f"{HEADER} (ASISetROIFormat: 'you must stop "
       "capture before call it'; INVALID_SEQUENCE 'stop capture first')", codes=(INVALID_SEQUENCE,),
       core="driver/camera.py sets the ROI before starting video"),
    # ---------------------------------------------------------------- snapshot exposures
    _c("exp.sequence", "ASIStartExposure, ASIGetExpStatus, ASIGetDataAfterExp", "a normal exposure",
       "status WORKING during exposure and readout, then SUCCESS; ASIGetDataAfterExp then gives the image",
       f"{HEADER} (ASI_EXPOSURE_STATUS; ASIGetExpStatus 'you can read the data if get ASI_EXP_SUCCESS'); "
       f"{INDI} workerExposure", codes=(SUCCESS,), statuses=(EXP_SUCCESS,), core="driver/exposure.py wait_exposed"),
    _c("exp.idle_after_open", "ASIGetExpStatus", "after open + init, nothing started", "status IDLE",
       f"{HEADER} (ASI_EXP_IDLE: 'idle states, you can start exposure now')", codes=(SUCCESS,),
       statuses=(EXP_IDLE,)),
    _c("exp.poll_fast_at_end", "ASIGetExpStatus", "the last moments of an exposure",
       "poll often: some cameras fail the exposure when the status is not read soon enough",
       f"{INDI} workerExposure ('exposure can fail in some cases if we don't call this fast enough'; "
       "indi-3rdparty PR #898)", core="driver/exposure.py polls every 5 ms after the exposure time"),
    _c("exp.failed_restart", "ASIGetExpStatus", "the camera failed the exposure", "status FAILED; start a new "
       "exposure", f"{HEADER} (ASI_EXP_FAILED: 'you need to start exposure again'); {INDI} workerExposure "
       "retries (MAX_EXP_RETRIES 2) after ASIStopExposure; python-zwoasi issue #20 (RAW16 full frames of an "
       "ASI6200 ended FAILED: the usbfs limit, see zwo-alpaca doctor)", statuses=(EXP_FAILED,),
       core="driver/camera.py ends the exposure FAILED and reports it (no silent retry)"),
    _c("exp.not_ready", "ASIGetDataAfterExp", "status is not SUCCESS", "TIMEOUT ('no image get')",
       f"{HEADER} (ASIGetDataAfterExp: 'ASI_ERROR_TIMEOUT: no image get and timeout')", codes=(TIMEOUT,),
       core="driver/handle.py GONE_CODES (11 after SUCCESS = the transfer failed)"),
    _c("exp.buffer_size", "ASIGetDataAfterExp / ASIGetVideoData", "buffer smaller than width*height*bytes",
       "never do it: the real library may crash; the simulator answers BUFFER_TOO_SMALL to catch the defect",
       f"{HEADER} ('please make sure the buffer size is biger enough to hold one image otherwise the this API "
       "will crash')", core="driver/roi.py Roi.nbytes; never tried on a real camera"),
    _c("exp.start_in_video", "ASIStartExposure", "video capture running", "refused with VIDEO_MODE_ACTIVE",
       f"{HEADER} (ASIStartExposure: 'video mode is working, you need to stop video capture first')",
       codes=(VIDEO_MODE_ACTIVE,)),
    _c("exp.start_while_working", "ASIStartExposure", "an exposure is WORKING", "refused with "
       "EXPOSURE_IN_PROGRESS", "assumed (the header lists the code but not for this call)", True,
       codes=(EXPOSURE_IN_PROGRESS,), core="driver/camera.py never starts a second exposure"),
    _c("exp.stop_idle", "ASIStopExposure", "no exposure running", "SUCCESS", f"{HEADER}; {INDI} Disconnect "
       "calls it unconditionally", codes=(SUCCESS,), core="driver/camera.py teardown and capture cleanup"),
    _c("exp.stop_keeps_image", "ASIStopExposure then ASIGetExpStatus / ASIGetDataAfterExp",
       "mid-exposure (StopExposure)", "SUCCESS; the status becomes SUCCESS and ASIGetDataAfterExp gives the "
       "shorter image", "assumed; indirect evidence: indi-asi asi_base.cpp workerExposure (2021-09-11 fix: "
       "after an abort the status loop ended as for a finished exposure and the driver sent an image)", True,
       codes=(SUCCESS,), statuses=(EXP_SUCCESS,), core="driver/camera.py stop_exposure / _on_exposure_stop "
       "(ASCOM StopExposure, INDI has none)"),
    _c("exp.stop_may_block", "ASIStopExposure", "another camera on the same SDK is streaming video",
       "the call may block for minutes (seen once: 5 min 16 s)", "INDIGO issue #325 (ccd_asi: ASI294MC "
       "StopExposure while an ASI120MM-mini streamed)", core="not handled: the core's teardown calls it in the "
       "caller's thread (driver/camera.py _cancel_exposure); core.teardown_bounded assumes it returns"),
    _c("exp.abort_restart", "ASIStopExposure then ASIStartExposure", "abort mid-exposure, image not read",
       "both SUCCESS: a new exposure may start at once", "assumed; indi-asi workerExposure retries a failed "
       "start 3 times 100 ms apart", True, codes=(SUCCESS,), core="driver/camera.py abort_exposure"),
    _c("exp.unplug", "ASIGetExpStatus", "camera unplugged mid-exposure", "an error (CAMERA_REMOVED, or "
       "INVALID_ID once the SDK forgot the ID) or status FAILED", "assumed", True,
       codes=(CAMERA_REMOVED, INVALID_ID, SUCCESS), statuses=(EXP_FAILED,),
       core="driver/handle.py GONE_CODES; the supervisor's health check for a FAILED status"),
    # ---------------------------------------------------------------- video
    _c("video.start_twice", "ASIStartVideoCapture", "already started", "SUCCESS",
       f"{HEADER} ('it will return success if already started')", codes=(SUCCESS,)),
    _c("video.stop_twice", "ASIStopVideoCapture", "already stopped (or never started)", "SUCCESS",
       f"{HEADER} ('it will return success if already stopped'); {INDI} setupParams calls it after connect",
       codes=(SUCCESS,), core="driver/camera.py capture cleanup"),
    _c("video.start_while_exposing", "ASIStartVideoCapture", "a snapshot exposure is WORKING",
       "refused with EXPOSURE_IN_PROGRESS", f"{HEADER} ('snap mode is working, you need to stop snap first')",
       codes=(EXPOSURE_IN_PROGRESS,)),
    _c("video.frame", "ASIGetVideoData(wait_ms = exposure*2+500 ms)", "video running", "SUCCESS with a frame "
       "within wait_ms", f"{HEADER} (iWaitms: 'this value is recommend set to exposure*2+500ms'); {INDI} "
       "workerStreamVideo", codes=(SUCCESS,), core="driver/camera.py _capture_loop (exposure*2000+500)"),
    _c("video.timeout", "ASIGetVideoData", "no frame within wait_ms", "TIMEOUT; video goes on",
       f"{HEADER} ('ASI_ERROR_TIMEOUT: no image get and timeout'); {INDI} workerStreamVideo continues on TIMEOUT "
       "and stops on any other error", codes=(TIMEOUT,), core="driver/camera.py tolerates 5 timeouts in a row"),
    _c("video.not_started", "ASIGetVideoData", "video not started", "an error at once (the simulator: "
       "INVALID_SEQUENCE), never a wait", "assumed", True, codes=(INVALID_SEQUENCE, TIMEOUT, GENERAL_ERROR)),
    _c("video.stop_wakes", "ASIStopVideoCapture from another thread", "ASIGetVideoData waiting",
       "the waiter returns within its wait_ms", "assumed (docs/architecture.md: GetVideoData is made without "
       "the I/O lock so a stop can reach it)", True, core="driver/camera.py _stop_capture_thread"),
    _c("video.dropped_reset", "ASIGetDroppedFrames", "after ASIStopVideoCapture", "0",
       f"{HEADER} (ASIGetDroppedFrames: 'it will reset to 0 after stop capture')", codes=(SUCCESS,)),
    # ---------------------------------------------------------------- guiding
    _c("st4.pulse", "ASIPulseGuideOn / ASIPulseGuideOff", "camera with an ST4 port, directions 0..3",
       "SUCCESS for both", f"{HEADER} ('only work on the module which have ST4 port'; 'make sure where is "
       f"ASIPulseGuideOn and there is ASIPulseGuideOff'); {INDI} guidePulse", codes=(SUCCESS,), applies="st4",
       core="driver/camera.py pulse_guide"),
    _c("st4.absent", "ASIPulseGuideOn", "camera without an ST4 port", "refused (the simulator: GENERAL_ERROR)",
       "assumed", True, codes=(GENERAL_ERROR,), applies="no-st4",
       core="driver/validation.py refuses guiding without ST4 before the SDK"),
    # ---------------------------------------------------------------- modes
    _c("mode.unsupported", "ASISetCameraMode", "a mode the camera does not support", "INVALID_MODE",
       f"{HEADER} (ASISetCameraMode: 'mode is out of boundary or this camera do not support this mode')",
       codes=(INVALID_MODE,)),
    # ---------------------------------------------------------------- loss of the camera
    _c("gone.unplugged", "any per-camera call", "the camera's cable was pulled",
       "CAMERA_REMOVED (or INVALID_ID once the SDK re-enumerated)", f"{HEADER} (CAMERA_REMOVED 'maybe the camera "
       "has been removed'); the code for calls other than open is assumed", True,
       codes=(CAMERA_REMOVED, INVALID_ID), core="driver/handle.py GONE_CODES"),
    _c("gone.replug", "ASIGetNumOfConnectedCameras, ASIOpenCamera", "the camera is plugged in again",
       "it enumerates again (its CameraID may differ) and opens after ASIOpenCamera + ASIInitCamera",
       "assumed", True, codes=(SUCCESS,), core="driver/camera.py _try_reconnect finds the unit by serial"),
    _c("core.teardown_bounded", "ZWOCamera.disconnect_camera()", "an exposure running", "returns within 2 s "
       "and leaves the camera closed", "this project's contract (docs/reliability.md, docs/architecture.md)",
       core="driver/camera.py _teardown / _cancel_exposure"),
)

BY_KEY: dict[str, Clause] = {c.key: c for c in CLAUSES}
if len(BY_KEY) != len(CLAUSES):  # pragma: no cover - a duplicate key is a defect in this table
    raise RuntimeError("duplicate clause key in driver/sdk_contract.py")


def clause(key: str) -> Clause:
    """The clause called `key`; KeyError names the valid keys."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"no SDK contract clause {key!r}; known: {', '.join(BY_KEY)}") from None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


TABLE_COLUMNS = ("key", "call", "situation", "expected", "checked", "source")


def markdown_table() -> str:
    """The contract as the Markdown table in docs/simulator.md (which a test keeps identical)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    for c in CLAUSES:
        source = ("**assumed** " if c.assumed else "") + c.source
        checked = c.expectation() or "-"
        if c.applies != "all":
            checked += f" ({APPLIES[c.applies]})"
        lines.append("| " + " | ".join(_cell(x) for x in (f"`{c.key}`", c.call, c.situation, c.expected,
                                                            checked, source)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m driver.sdk_contract` prints the docs table
    print(markdown_table(), end="")
