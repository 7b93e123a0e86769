"""Tests of the simulated ZWO SDK (driver/simulator), driven through zwoasi's own, unchanged code.

Every call here goes zwoasi -> ctypes -> C function pointer -> simulator, as it would into
libASICamera2. Timing assertions use generous margins so a slow machine passes, but each still
fails if the modelled behaviour is wrong (e.g. no readout time, or no early end on StopExposure).
"""

from __future__ import annotations

import ctypes
import gc
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from driver import simulator
from driver.simulator import catalog
from driver.simulator.sensor import Conditions, Geometry, SensorSimulator

zwoasi = simulator._zwoasi()

REPO = Path(__file__).resolve().parents[2]
TWO = ["asi294mc-pro", "asi120mm-mini"]  # slot 0: cooled colour USB3; slot 1: ST4 mono USB2


# ----------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def lock_dir(tmp_path) -> str:
    return str(tmp_path / "locks")


@pytest.fixture
def sim(lock_dir):
    sdk = simulator.install(models=TWO, seed=0, lock_dir=lock_dir)
    yield sdk
    _teardown()


def _teardown() -> None:
    gc.collect()  # let zwoasi Camera objects run their __del__ (ASICloseCamera) while the library is there
    simulator.uninstall()


def code(exc_info) -> int:
    return exc_info.value.error_code


def lib():
    return zwoasi.zwolib


def wait_status(cam, wanted, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = cam.get_exposure_status()
        if st == wanted:
            return st
        time.sleep(0.005)
    raise AssertionError(f"status {cam.get_exposure_status()} != {wanted}")


def small_roi(cam, width=256, height=256, bins=1, image_type=zwoasi.ASI_IMG_RAW16):
    cam.set_roi(width=width, height=height, bins=bins, image_type=image_type)


def roi_around(cam, x, y, size=128):
    """A size x size RAW16 bin-1 ROI containing sensor point (x, y); returns (start_x, start_y)."""
    prop = cam.get_camera_property()
    sx = int(min(max(x - size // 2, 0), prop["MaxWidth"] - size)) & ~1
    sy = int(min(max(y - size // 2, 0), prop["MaxHeight"] - size)) & ~1
    cam.set_roi(start_x=sx, start_y=sy, width=size, height=size, bins=1, image_type=zwoasi.ASI_IMG_RAW16)
    assert cam.get_roi() == [sx, sy, size, size]
    return sx, sy


# ----------------------------------------------------------------------------- catalog

def test_model_lookup_accepts_loose_spellings():
    m = catalog.lookup("asi294mc-pro")
    for name in ("ASI294MC Pro", "zwo_asi294mc_pro", "ZWO ASI294MC Pro", "asi294mcpro", " Asi294MC-PRO "):
        assert catalog.lookup(name) is m
    with pytest.raises(ValueError) as e:
        catalog.lookup("asi9999")
    for key in ("asi120mm-mini", "asi294mc-pro", "asi2600mm-pro", "asi6200mm-pro"):
        assert key in str(e.value)


@pytest.mark.parametrize("key,w,h,px,color,bits,usb3,st4,cooled,fw", [
    ("asi120mm-mini", 1280, 960, 3.75, False, 12, False, True, False, 13_000),
    ("asi294mc-pro", 4144, 2822, 4.63, True, 14, True, False, True, 63_700),
    ("asi2600mm-pro", 6248, 4176, 3.76, False, 16, True, False, True, 50_000),
    ("asi6200mm-pro", 9576, 6388, 3.76, False, 16, True, False, True, 51_400),
])
def test_catalog_facts(key, w, h, px, color, bits, usb3, st4, cooled, fw):
    m = catalog.MODELS[key]
    assert (m.max_width, m.max_height, m.pixel_size_um, m.is_color, m.bit_depth) == (w, h, px, color, bits)
    assert (m.usb3, m.st4, m.cooled, m.full_well_e, m.mechanical_shutter) == (usb3, st4, cooled, fw, False)
    names = {c.name: c for c in m.controls}
    assert names["Exposure"].max_value == 2_000_000_000 and names["Exposure"].min_value in (32, 64)
    assert names["Temperature"].writable is False and names["Temperature"].control_type == 8
    assert ("CoolPowerPerc" in names) == cooled and ("TargetTemp" in names) == cooled
    assert ("WB_R" in names) == color and ("MonoBin" in names) == color
    if cooled:
        assert names["CoolPowerPerc"].control_type == 15 and not names["CoolPowerPerc"].writable
        assert names["TargetTemp"].control_type == 16 and names["CoolerOn"].control_type == 17
        assert names["AntiDewHeater"].control_type == 21 and m.max_cooling_delta_c == 35
    formats = set(m.supported_formats)
    assert formats == ({0, 1, 2} if color else ({0, 2, 3} if key == "asi120mm-mini" else {0, 2}))
    # conversion gain falls with gain; read noise too; unity gain near 1 e-/ADU for the 294
    assert m.elec_per_adu(0) > m.elec_per_adu(300) and m.read_noise_e(0) > m.read_noise_e(300)
    assert abs(catalog.MODELS["asi294mc-pro"].elec_per_adu(120) - 1.0) < 0.1


# ----------------------------------------------------------------------------- the library under zwoasi

def test_install_puts_c_function_pointers_under_zwoasi(lock_dir):
    sdk = simulator.install(models=TWO, lock_dir=lock_dir)
    try:
        assert simulator.current() is sdk and zwoasi.zwolib is sdk.library
        fn = zwoasi.zwolib.ASIGetCameraProperty
        assert isinstance(fn, ctypes._CFuncPtr)
        assert ctypes.cast(fn, ctypes.c_void_p).value
        assert zwoasi.get_num_cameras() == 2
        assert zwoasi.list_cameras() == ["ZWO ASI294MC Pro", "ZWO ASI120MM Mini"]
        assert zwoasi.zwolib.ASIGetSDKVersion() == simulator.SDK_VERSION.encode()
        with pytest.raises(AttributeError, match="undefined symbol"):
            zwoasi.zwolib.ASINoSuchFunction
        again = simulator.install(models=["asi2600mm-pro"], lock_dir=lock_dir)
        assert zwoasi.zwolib is again.library and zwoasi.list_cameras() == ["ZWO ASI2600MM Pro"]
        assert sdk.is_shut_down
    finally:
        simulator.uninstall()
    assert zwoasi.zwolib is None and simulator.current() is None


def test_properties_need_no_open_but_everything_else_does(sim):
    prop = zwoasi._get_camera_property(0)
    assert prop["Name"] == "ZWO ASI294MC Pro" and prop["CameraID"] == 0
    assert (prop["MaxWidth"], prop["MaxHeight"], prop["BitDepth"]) == (4144, 2822, 14)
    assert prop["IsColorCam"] and prop["BayerPattern"] == 0 and prop["IsCoolerCam"] and prop["IsUSB3Camera"]
    assert prop["SupportedBins"] == [1, 2, 3, 4] and prop["SupportedVideoFormat"] == [0, 1, 2]
    assert prop["ST4Port"] == 0 and not prop["MechanicalShutter"] and abs(prop["PixelSize"] - 4.63) < 1e-9
    mini = zwoasi._get_camera_property(1)
    assert mini["ST4Port"] == 1 and not mini["IsUSB3Camera"] and mini["SupportedVideoFormat"] == [0, 2, 3]
    assert not sim.record().open_handles

    n = ctypes.c_int()
    assert lib().ASIGetNumOfControls(0, n) == 4  # CAMERA_CLOSED
    assert lib().ASIStartExposure(0, 0) == 4
    assert lib().ASIOpenCamera(7) == 2  # INVALID_ID
    info = simulator.library.ASI_CAMERA_INFO()
    assert lib().ASIGetCameraProperty(info, 2) == 1  # INVALID_INDEX
    assert lib().ASIGetCameraPropertyByID(1, info) == 0 and info.CameraID == 1
    assert lib().ASICloseCamera(0) == 0  # closing a closed camera is harmless
    assert lib().ASIOpenCamera(0) == 0
    assert lib().ASIOpenCamera(0) == 0  # opening twice too
    assert lib().ASIStartExposure(0, 0) == 4  # opened but not initialised
    assert lib().ASIGetNumOfControls(0, n) == 0 and n.value == len(catalog.MODELS["asi294mc-pro"].controls)
    assert sim.record().open_handles == {0}
    assert lib().ASICloseCamera(0) == 0 and not sim.record().open_handles


def test_controls_through_zwoasi(sim):
    cam = zwoasi.Camera(0)
    controls = cam.get_controls()
    assert list(controls)[:2] == ["Gain", "Exposure"]
    g = controls["Gain"]
    assert (g["MinValue"], g["MaxValue"], g["DefaultValue"]) == (0, 570, 200)
    assert g["ControlType"] == 0 and g["IsAutoSupported"]
    assert controls["Offset"]["ControlType"] == 5 and controls["BandWidth"]["ControlType"] == 6
    assert controls["Exposure"]["MinValue"] == 32 and controls["HardwareBin"]["ControlType"] == 13
    assert cam.get_control_value(zwoasi.ASI_BANDWIDTHOVERLOAD) == [50, True]
    cam.set_control_value(zwoasi.ASI_GAIN, 9999)  # the SDK clamps and succeeds
    assert cam.get_control_value(zwoasi.ASI_GAIN) == [570, False]
    cam.set_control_value(zwoasi.ASI_GAIN, 120, auto=True)
    assert cam.get_control_value(zwoasi.ASI_GAIN) == [120, True]
    cam.set_control_value(zwoasi.ASI_FLIP, 3, auto=True)  # auto unsupported: stored as manual
    assert cam.get_control_value(zwoasi.ASI_FLIP) == [3, False]
    assert cam.get_control_value(zwoasi.ASI_TEMPERATURE) == [200, False]  # 20.0 C x 10
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.set_control_value(zwoasi.ASI_TEMPERATURE, 0)
    assert code(e) == 16
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.get_control_value(zwoasi.ASI_GAMMA)  # the 294 has no Gamma
    assert code(e) == 3
    assert set(cam.get_control_values()) == set(controls)
    assert zwoasi._get_gain_offset(0) == [12, 30, 120, 30]
    cam.close()


def test_roi_rules_and_start_position(sim):
    cam = zwoasi.Camera(0)
    assert cam.get_roi_format() == [4144, 2822, 1, 0] and cam.get_roi() == [0, 0, 4144, 2822]
    f = lib().ASISetROIFormat
    assert f(0, 100, 100, 1, 0) == 8  # width not a multiple of 8
    assert f(0, 104, 101, 1, 0) == 8  # odd height
    assert f(0, 104, 100, 5, 0) == 8  # unsupported bin
    assert f(0, 4144, 2822, 2, 0) == 8  # larger than the binned sensor
    assert f(0, 104, 100, 1, 3) == 9  # Y8 is not a format of this camera
    assert f(0, 640, 480, 2, 2) == 0
    assert cam.get_roi_format() == [640, 480, 2, 2]
    assert cam.get_roi_start_position() == [(2072 - 640) // 2, (1411 - 480) // 2 & ~1]  # re-centred (even: colour)
    assert lib().ASISetStartPos(0, 2072 - 640 + 2, 0) == 10  # OUTOF_BOUNDARY
    assert lib().ASISetStartPos(0, -2, 0) == 10
    cam.set_roi_start_position(100, 50)
    assert cam.get_roi() == [100, 50, 640, 480]
    mini = zwoasi.Camera(1)
    assert lib().ASISetROIFormat(1, 1000, 100, 1, 0) == 8  # ASI120: width*height % 1024 != 0
    assert lib().ASISetROIFormat(1, 1024, 100, 1, 0) == 0
    assert lib().ASISetROIFormat(1, 1024, 100, 1, 3) == 0  # Y8
    cam.close()
    mini.close()


@pytest.mark.parametrize("slot,shift", [(0, 2), (1, 4)])  # 14-bit and 12-bit data, left-aligned in RAW16
def test_raw16_is_left_aligned(sim, slot, shift):
    cam = zwoasi.Camera(slot)
    cam.set_control_value(zwoasi.ASI_GAIN, 50)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 20_000)
    small_roi(cam, 512, 256)
    img = cam.capture()
    assert img.shape == (256, 512) and img.dtype == np.uint16
    assert not np.any(img % (1 << shift)) and img.max() > 0
    assert img.std() > 0  # there is noise
    cam.close()


def test_capture_formats_binning_and_roi(sim):
    cam = zwoasi.Camera(0)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 10_000)
    cam.set_control_value(zwoasi.ASI_GAIN, 300)
    cam.set_control_value(zwoasi.ASI_OFFSET, 60)
    cam.set_roi(bins=2, image_type=zwoasi.ASI_IMG_RAW8)
    img = cam.capture()
    assert img.shape == (1410, 2072) and img.dtype == np.uint8 and 0 < img.mean() < 255
    cam.set_roi(width=320, height=240, bins=4, image_type=zwoasi.ASI_IMG_RGB24)
    rgb = cam.capture()
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    cam.set_roi(start_x=8, start_y=4, width=800, height=600, bins=1, image_type=zwoasi.ASI_IMG_RAW16)
    assert cam.get_roi() == [8, 4, 800, 600]
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 500_000)
    buf = bytearray(800 * 600 * 2)
    cam.start_exposure()
    wait_status(cam, zwoasi.ASI_EXP_SUCCESS)
    out = cam.get_data_after_exposure(buf)
    assert out is buf and any(buf)  # written straight into the caller's buffer
    # the sky is grey but the CFA's blue filter passes least: B pixels (odd, odd) are darkest
    raw = np.frombuffer(buf, np.uint16).reshape(600, 800).astype(float)
    r, g, b = raw[0::2, 0::2].mean(), raw[0::2, 1::2].mean(), raw[1::2, 1::2].mean()
    assert b + 3 < r and b + 3 < g, (r, g, b)
    cam.close()


def test_frames_are_deterministic_for_seed_and_frame_number(lock_dir):
    def two_frames(seed):
        simulator.install(models=TWO, seed=seed, lock_dir=lock_dir)
        cam = zwoasi.Camera(0)
        cam.set_control_value(zwoasi.ASI_EXPOSURE, 5_000)
        cam.set_roi(width=1024, height=768, bins=2, image_type=zwoasi.ASI_IMG_RAW16)
        frames = [cam.capture().copy(), cam.capture().copy()]
        serial = simulator.current().cameras[0].serial
        cam.close()
        del cam
        _teardown()
        return frames, serial

    (a1, a2), sa = two_frames(0)
    (b1, b2), sb = two_frames(0)
    (c1, _), sc = two_frames(1)
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2) and sa == sb
    assert not np.array_equal(a1, a2)
    assert not np.array_equal(a1, c1) and sa != sc
    assert len(sa) == 16 and int(sa, 16) >= 0


def test_darks_have_no_stars_but_keep_hot_pixels(sim):
    cam = zwoasi.Camera(0)
    sensor = sim.cameras[0].sensor
    cam.set_control_value(zwoasi.ASI_GAIN, 300)
    cam.set_control_value(zwoasi.ASI_OFFSET, 30)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 200_000)
    x, y, flux = sensor.star_positions(1)[0]
    assert flux > 1e4
    sx, sy = roi_around(cam, x, y)
    light = cam.capture().astype(float)
    cam.start_exposure(is_dark=True)
    wait_status(cam, zwoasi.ASI_EXP_SUCCESS)
    dark = np.frombuffer(cam.get_data_after_exposure(), np.uint16).reshape(128, 128).astype(float)
    px, py = int(x) - sx, int(y) - sy
    background = np.median(light)
    assert light[py - 2:py + 3, px - 2:px + 3].max() > background + 5000  # the star
    assert dark[py - 2:py + 3, px - 2:px + 3].max() < np.median(dark) + 200  # no star in the dark
    assert dark.mean() < light.mean()  # no sky either
    hx, hy, factor = max(sensor.hot_pixels(), key=lambda h: h[2])
    sx, sy = roi_around(cam, hx, hy, 64)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 500_000)
    cam.start_exposure(is_dark=True)
    wait_status(cam, zwoasi.ASI_EXP_SUCCESS)
    dark = np.frombuffer(cam.get_data_after_exposure(), np.uint16).reshape(64, 64)
    assert np.unravel_index(np.argmax(dark), dark.shape) == (hy - sy, hx - sx)
    cam.close()


def test_dark_current_grows_with_temperature(lock_dir):
    sim = simulator.install(models=["asi294mc-pro"], lock_dir=lock_dir, time_scale=2000.0)
    try:
        cam = zwoasi.Camera(0)
        cam.set_control_value(zwoasi.ASI_GAIN, 300)
        cam.set_control_value(zwoasi.ASI_OFFSET, 30)
        cam.set_control_value(zwoasi.ASI_EXPOSURE, 500_000)
        small_roi(cam, 512, 512)

        def dark_mean():
            cam.start_exposure(is_dark=True)
            wait_status(cam, zwoasi.ASI_EXP_SUCCESS)
            return np.frombuffer(cam.get_data_after_exposure(), np.uint16).astype(float).mean()

        sim.set_ambient(35.0)
        time.sleep(0.4)  # 13 time constants at this time scale
        warm = dark_mean()
        sim.set_ambient(20.0)  # the cooler reaches at most 35 C below ambient
        cam.set_control_value(zwoasi.ASI_TARGET_TEMP, -10)
        cam.set_control_value(zwoasi.ASI_COOLER_ON, 1)
        time.sleep(0.4)
        assert cam.get_control_value(zwoasi.ASI_TEMPERATURE)[0] == -100
        cold = dark_mean()
        # 1.7 e/s at 25 C doubling every 6 C: ~5.4 e/s at 35 C vs ~0.03 e/s at -10 C; 0.12 e-/ADU;
        # 0.5 s: ~22 native ADU, x4 in RAW16
        assert warm > cold + 50, (warm, cold)
        cam.close()
        cam = None  # drop the zwoasi object (its __del__ closes) before the library goes
    finally:
        _teardown()


def test_exposure_status_sequence_and_readout_time(sim):
    cam = zwoasi.Camera(0)
    cam.set_roi(bins=1, image_type=zwoasi.ASI_IMG_RAW16)  # full frame: 23.4 MB
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 200_000)
    readout = sim.camera_state(0)["readout_s"]
    assert abs(readout - 4144 * 2822 * 2 / (380e6 * 0.5)) < 1e-9  # bytes / (USB3 peak x BandWidth 50 %)
    buf = bytearray(4144 * 2822 * 2)
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.get_data_after_exposure(buf)
    assert code(e) == 11  # nothing to read
    t0 = time.monotonic()
    cam.start_exposure()
    assert cam.get_exposure_status() == zwoasi.ASI_EXP_WORKING
    time.sleep(0.2 + readout / 2)
    assert cam.get_exposure_status() == zwoasi.ASI_EXP_WORKING  # still reading out
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.start_exposure()
    assert code(e) == 15
    wait_status(cam, zwoasi.ASI_EXP_SUCCESS)
    elapsed = time.monotonic() - t0
    assert 0.2 + readout - 0.01 <= elapsed < 0.2 + readout + 1.5, elapsed  # generous: a shared 2-core machine
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.get_data_after_exposure(bytearray(100))
    assert code(e) == 13  # BUFFER_TOO_SMALL, and the image is still there
    assert cam.get_exposure_status() == zwoasi.ASI_EXP_SUCCESS
    cam.get_data_after_exposure(buf)
    assert cam.get_exposure_status() == zwoasi.ASI_EXP_IDLE
    # bandwidth, high-speed mode and 8-bit data each halve the readout
    cam.set_control_value(zwoasi.ASI_BANDWIDTHOVERLOAD, 100)
    assert abs(sim.camera_state(0)["readout_s"] - readout / 2) < 1e-9
    cam.set_control_value(zwoasi.ASI_HIGH_SPEED_MODE, 1)
    assert abs(sim.camera_state(0)["readout_s"] - readout / 4) < 1e-9
    cam.set_image_type(zwoasi.ASI_IMG_RAW8)
    assert abs(sim.camera_state(0)["readout_s"] - readout / 8) < 1e-9
    cam.close()


def test_usb2_readout_is_slow(sim):
    mini = zwoasi.Camera(1)
    mini.set_image_type(zwoasi.ASI_IMG_RAW16)
    assert abs(sim.camera_state(1)["readout_s"] - 1280 * 960 * 2 / (40e6 * 0.5)) < 1e-9
    mini.close()


def test_stop_exposure_ends_early_with_a_shorter_image(sim):
    cam = zwoasi.Camera(0)
    small_roi(cam, 512, 512)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 5_000_000)
    cam.start_exposure()
    time.sleep(0.3)
    t0 = time.monotonic()
    cam.stop_exposure()
    state = sim.camera_state(0)["exposure"]
    assert state["stopped"] and 0.25 < state["duration_s"] < 0.5
    assert not sim.record().exposures_running  # stopped: only its readout is left
    wait_status(cam, zwoasi.ASI_EXP_SUCCESS, timeout=2.0)
    assert time.monotonic() - t0 < 1.0
    img = np.frombuffer(cam.get_data_after_exposure(), np.uint16)
    assert img.size == 512 * 512
    assert cam.get_exposure_status() == zwoasi.ASI_EXP_IDLE
    cam.stop_exposure()  # harmless when idle
    # abort-and-restart: a new exposure may start while a stopped one is still reading out
    cam.start_exposure()
    cam.stop_exposure()
    cam.start_exposure()
    assert sim.record().exposures_running == {0}
    cam.close()
    assert not sim.record().exposures_running


def test_video_frames_dropped_frames_and_timeouts(sim):
    mini = zwoasi.Camera(1)
    mini.set_roi(width=640, height=480, bins=2, image_type=zwoasi.ASI_IMG_RAW8)
    mini.set_control_value(zwoasi.ASI_EXPOSURE, 10_000)
    mini.set_control_value(zwoasi.ASI_GAIN, 100)
    mini.set_control_value(zwoasi.ASI_OFFSET, 60)  # lift the black level off zero in 8 bits
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.get_video_data(timeout=100)
    assert code(e) == 12  # video not started
    mini.start_video_capture()
    mini.start_video_capture()  # already started: success
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.start_exposure()
    assert code(e) == 14  # VIDEO_MODE_ACTIVE
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.set_roi_format(320, 240, 2, zwoasi.ASI_IMG_RAW8)
    assert code(e) == 12  # stop capture first
    period = sim.camera_state(1)["video_period_s"]
    assert abs(period - 1280 * 960 / (40e6 * 0.5)) < 1e-9  # readout-bound: max(exposure, readout)
    frames = [mini.capture_video_frame(timeout=2000).copy() for _ in range(3)]
    assert all(f.shape == (480, 640) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])
    assert mini.get_dropped_frames() == 0
    time.sleep(10 * period)
    mini.capture_video_frame(timeout=2000)
    assert mini.get_dropped_frames() >= 5
    # a long exposure: the next frame is far away, so a short wait times out
    mini.set_control_value(zwoasi.ASI_EXPOSURE, 3_000_000)
    t0 = time.monotonic()
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.get_video_data(timeout=200)
    assert code(e) == 11 and 0.19 < time.monotonic() - t0 < 0.8
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.get_video_data(buffer_=bytearray(10), timeout=200)
    assert code(e) == 13
    # a caller waiting forever wakes as soon as video stops
    result = {}

    def waiter():
        try:
            mini.get_video_data(timeout=-1)
        except zwoasi.ZWO_IOError as exc:
            result["code"] = exc.error_code
            result["t"] = time.monotonic()

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.2)
    t_stop = time.monotonic()
    mini.stop_video_capture()
    th.join(2.0)
    assert not th.is_alive() and result["code"] == 11 and result["t"] - t_stop < 0.5
    assert mini.get_dropped_frames() == 0  # reset by stop
    mini.stop_video_capture()  # already stopped: success
    mini.close()


def test_video_with_rgb24_and_exposure_bound_period(sim):
    cam = zwoasi.Camera(0)
    cam.set_roi(width=256, height=256, bins=2, image_type=zwoasi.ASI_IMG_RGB24)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 100_000)
    cam.start_video_capture()
    assert abs(sim.camera_state(0)["video_period_s"] - 0.1) < 1e-9
    t0 = time.monotonic()
    for _ in range(3):
        f = cam.capture_video_frame(timeout=1000)
        assert f.shape == (256, 256, 3)
    assert 0.25 < time.monotonic() - t0 < 1.2  # ~0.1 s a frame after the first (exposure + readout)
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.start_exposure()
    assert code(e) == 14
    cam.stop_video_capture()
    cam.start_exposure()
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.start_video_capture()
    assert code(e) == 15  # snap mode is working
    cam.close()


def test_pulse_guiding_on_st4_only(sim):
    mini = zwoasi.Camera(1)
    cam = zwoasi.Camera(0)
    mini.pulse_guide_on(zwoasi.ASI_GUIDE_NORTH)
    mini.pulse_guide_on(zwoasi.ASI_GUIDE_WEST)
    assert sim.record().pulse_guiding == {1: {0, 3}}
    mini.pulse_guide_off(zwoasi.ASI_GUIDE_NORTH)
    assert sim.record().pulse_guiding == {1: {3}}
    mini.pulse_guide_off(zwoasi.ASI_GUIDE_WEST)
    assert sim.record().pulse_guiding == {}
    hist = sim.camera_state(1)["pulse_history"]
    assert [h[0] for h in hist] == [0, 3] and all(end >= start for _, start, end in hist)
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.pulse_guide_on(zwoasi.ASI_GUIDE_NORTH)
    assert code(e) == 16  # no ST4 port
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.pulse_guide_on(7)
    assert code(e) == 16
    mini.pulse_guide_on(zwoasi.ASI_GUIDE_SOUTH)
    mini.close()  # closing ends the pulse
    assert sim.record().pulse_guiding == {}
    cam.close()


def test_cooler_approaches_target_exponentially(lock_dir):
    sim = simulator.install(models=["asi294mc-pro", "asi120mm-mini"], lock_dir=lock_dir, time_scale=600.0)
    try:  # time constant 60 s / 600 = 0.1 s
        cam = zwoasi.Camera(0)
        temp = lambda: cam.get_control_value(zwoasi.ASI_TEMPERATURE)[0]  # noqa: E731
        power = lambda: cam.get_control_value(zwoasi.ASI_COOLER_POWER_PERC)[0]  # noqa: E731
        assert temp() == 200 and power() == 0
        cam.set_control_value(zwoasi.ASI_TARGET_TEMP, -10)
        cam.set_control_value(zwoasi.ASI_COOLER_ON, 1)
        time.sleep(0.03)
        mid = temp()
        assert -100 < mid < 200 and power() == 100  # on its way, cooler flat out
        time.sleep(1.2)
        assert temp() == -100
        assert abs(power() - 100 * 30 / 35) <= 1  # holding 30 C below ambient of a 35 C maximum
        cam.set_control_value(zwoasi.ASI_TARGET_TEMP, -40)  # beyond reach: ambient - 35 C
        time.sleep(1.2)
        assert temp() == -150 and power() == 100
        cam.set_control_value(zwoasi.ASI_COOLER_ON, 0)
        time.sleep(1.2)
        assert temp() == 200 and power() == 0
        st = sim.camera_state(0)
        assert st["target_c"] == -40 and not st["cooler_on"] and abs(st["temperature_c"] - 20) < 0.01
        mini = zwoasi.Camera(1)
        with pytest.raises(zwoasi.ZWO_IOError) as e:
            mini.set_control_value(zwoasi.ASI_COOLER_ON, 1)
        assert code(e) == 3  # an uncooled camera has no such control
        cam.close()
        mini.close()
        cam = mini = None
    finally:
        _teardown()


def test_cooler_time_constant_at_real_speed(sim):
    cam = zwoasi.Camera(0)
    cam.set_control_value(zwoasi.ASI_TARGET_TEMP, -10)
    cam.set_control_value(zwoasi.ASI_COOLER_ON, 1)
    time.sleep(0.5)
    t = sim.camera_state(0)["temperature_c"]
    expected = -10 + 30 * np.exp(-0.5 / 60)
    assert abs(t - expected) < 0.1, t  # 60 s time constant: barely moved
    cam.close()
    assert not sim.camera_state(0)["cooler_on"]  # closing the camera stops its cooler


# ----------------------------------------------------------------------------- faults

def test_unplug_and_replug(sim):
    cam = zwoasi.Camera(0)
    cam.set_control_value(zwoasi.ASI_GAIN, 250)
    sim.unplug(0)
    assert zwoasi.get_num_cameras() == 1
    prop = zwoasi._get_camera_property(0)
    assert prop["Name"] == "ZWO ASI120MM Mini" and prop["CameraID"] == 1
    rec = sim.record()
    assert rec.plugged == {1} and not rec.open_handles
    for call in (lambda: cam.get_control_value(zwoasi.ASI_GAIN), cam.get_exposure_status, cam.start_exposure,
                 cam.close):
        with pytest.raises(zwoasi.ZWO_IOError) as e:
            call()
        assert code(e) == 5
    assert lib().ASIOpenCamera(0) == 5
    info = simulator.library.ASI_CAMERA_INFO()
    assert lib().ASIGetCameraPropertyByID(0, info) == 5
    sim.replug(0)
    assert zwoasi.get_num_cameras() == 2 and zwoasi._get_camera_property(0)["CameraID"] == 0
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.get_control_value(zwoasi.ASI_GAIN)
    assert code(e) == 4  # closed: handles were dropped
    del cam  # (zwoasi's Camera.__del__ closes by CameraID: drop the old object before reopening)
    cam = zwoasi.Camera(0)
    assert cam.get_control_value(zwoasi.ASI_GAIN) == [200, False]  # a fresh open starts from defaults
    assert sim.record().open_handles == {0}
    cam.close()


@pytest.mark.parametrize("phase,delay,lo,hi", [
    ("exposure", 0.05, 0.04, 0.25),
    ("readout", 0.02, 0.31, 0.55),
    ("readout", 5.0, 0.31, 0.70),  # clamped to the end of readout: the frame is lost all the same
])
def test_unplug_after_loses_the_frame(sim, phase, delay, lo, hi):
    cam = zwoasi.Camera(0)
    cam.set_roi(bins=4, image_type=zwoasi.ASI_IMG_RAW16)  # software bin: the whole sensor is read out
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 300_000)
    assert sim.camera_state(0)["readout_s"] > 0.1
    sim.unplug_after(0, phase=phase, delay=delay)
    t0 = time.monotonic()
    cam.start_exposure()
    seen = []
    while True:
        try:
            seen.append(cam.get_exposure_status())
        except zwoasi.ZWO_IOError as exc:
            assert exc.error_code == 5
            break
        assert time.monotonic() - t0 < 3
        time.sleep(0.003)
    gone = time.monotonic() - t0
    assert lo <= gone <= hi, gone
    assert set(seen) == {zwoasi.ASI_EXP_WORKING}
    assert sim.camera_state(0)["exposure_status"] == zwoasi.ASI_EXP_FAILED
    assert 0 not in sim.record().plugged and not sim.record().open_handles
    sim.replug(0)
    del cam
    cam = zwoasi.Camera(0)  # and the next exposure is not affected
    cam.set_roi(width=64, height=64, bins=1)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 1_000)
    assert cam.capture().shape == (64, 64)
    cam.close()


def test_unplug_after_applies_to_video_start(sim):
    mini = zwoasi.Camera(1)
    mini.set_roi(width=256, height=256, bins=2)
    sim.unplug_after(1, phase="exposure", delay=0.1)
    mini.start_video_capture()
    t0 = time.monotonic()
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        while True:
            mini.get_video_data(timeout=500)
    assert code(e) == 5 and time.monotonic() - t0 < 1.0
    sim.replug(1)
    with pytest.raises(ValueError):
        sim.unplug_after(1, phase="download")
    del mini
    again = zwoasi.Camera(1)
    again.close()


def test_inject_errors(sim):
    cam = zwoasi.Camera(0)
    mini = zwoasi.Camera(1)
    sim.inject("ASICloseCamera", 16)
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.close()
    assert code(e) == 16
    assert sim.record().open_handles == {0, 1}  # the failed call did nothing
    cam.close()
    assert sim.record().open_handles == {1}
    sim.inject("ASIStopVideoCapture", 16, count=2, slot=1)
    del cam
    cam = zwoasi.Camera(0)
    cam.stop_video_capture()  # slot 0 is not targeted
    for _ in range(2):
        with pytest.raises(zwoasi.ZWO_IOError) as e:
            mini.stop_video_capture()
        assert code(e) == 16
    mini.stop_video_capture()
    sim.inject("ASIGetCameraProperty", 5, slot=1)
    assert zwoasi._get_camera_property(0)["CameraID"] == 0
    with pytest.raises(zwoasi.ZWO_IOError):
        zwoasi._get_camera_property(1)
    with pytest.raises(ValueError, match="unknown ASI function"):
        sim.inject("ASIFly", 16)
    with pytest.raises(ValueError):
        sim.inject("ASIGetNumOfConnectedCameras", 16)
    calls = sim.record().calls
    assert calls["ASICloseCamera"] >= 2 and calls["ASIStopVideoCapture"] == 4
    cam.close()
    mini.close()


def test_video_timeouts_fault(sim):
    mini = zwoasi.Camera(1)
    mini.set_roi(width=256, height=256, bins=2)
    mini.set_control_value(zwoasi.ASI_EXPOSURE, 1_000)
    sim.video_timeouts(1, 2)
    mini.start_video_capture()
    for _ in range(2):
        t0 = time.monotonic()
        with pytest.raises(zwoasi.ZWO_IOError) as e:
            mini.get_video_data(timeout=300)
        assert code(e) == 11 and 0.29 < time.monotonic() - t0 < 0.8
    assert mini.capture_video_frame(timeout=1000).shape == (256, 256)
    sim.video_timeouts(1, 1)
    t0 = time.monotonic()
    with pytest.raises(zwoasi.ZWO_IOError):
        mini.get_video_data(timeout=-1)  # "forever" is capped for a forced timeout
    assert time.monotonic() - t0 < sim.video_timeout_cap_s + 0.5
    mini.stop_video_capture()
    mini.close()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError("the hold process printed nothing")
    return proc.stdout.readline().strip()


def test_camera_held_by_another_process_is_busy_until_it_dies(sim, lock_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "driver.simulator", "hold", "asi294mc-pro", "--lock-dir", lock_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    try:
        line = _read_line(proc, 30)
        assert line == f"holding {sim.cameras[0].serial}"
        with pytest.raises(zwoasi.ZWO_IOError) as e:
            zwoasi.Camera(0)
        assert code(e) == 16 and not sim.record().open_handles
        del e  # its traceback keeps the failed Camera alive; its __del__ would close camera 0 later
        gc.collect()
        mini = zwoasi.Camera(1)  # other cameras are unaffected
        mini.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        cam = zwoasi.Camera(0)  # the kernel dropped the lock with the process
        assert time.monotonic() - t0 < 0.5
        assert sim.record().open_handles == {0}
        cam.close()
        cam2 = zwoasi.Camera(0)  # and our close released it again
        cam2.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_hold_for_seconds_then_release(lock_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "driver.simulator", "hold", "asi120mm-mini", "--seconds", "0.1",
                           "--seed", "3", "--lock-dir", lock_dir],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=60)
    assert proc.returncode == 0, proc.stderr
    serial = simulator.camera.make_serial(catalog.MODELS["asi120mm-mini"], 0, 3)
    assert proc.stdout.strip() == f"holding {serial}"


def test_reinstall_releases_the_previous_simulators_cameras(lock_dir):
    first = simulator.install(models=TWO, lock_dir=lock_dir)
    assert first.library.ASIOpenCamera(0) == 0
    second = simulator.install(models=TWO, lock_dir=lock_dir)
    try:
        assert first.is_shut_down and first.library.ASIGetExpStatus(0, ctypes.c_int()) == 5
        assert second.library.ASIOpenCamera(0) == 0  # same serial, lock released by the shutdown
        assert second.library.ASICloseCamera(0) == 0
    finally:
        _teardown()


# ----------------------------------------------------------------------------- identity and misc API

def test_serial_id_modes_and_record(sim):
    cam = zwoasi.Camera(0)
    fn = lib().ASIGetSerialNumber
    sn = fn.argtypes[1]._type_()  # the struct type the prototype declares
    assert fn(0, sn) == 0
    assert bytes(sn.id).hex().upper() == sim.cameras[0].serial
    raw = (ctypes.c_ubyte * 8)()
    assert fn(0, ctypes.byref(raw)) == 0 and bytes(raw) == bytes(sn.id)
    cam.set_id("Scope-A")
    assert cam.get_id().rstrip("\0") == "Scope-A"
    mini = zwoasi.Camera(1)
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        mini.get_id()  # USB3 cameras only
    assert code(e) == 16
    assert cam.get_camera_support_mode()["SupportedCameraMode"][:2] == [0, -1]
    assert cam.get_camera_mode() == 0
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.set_camera_mode(zwoasi.ASI_MODE_TRIG_SOFT_EDGE)
    assert code(e) == 17
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.send_soft_trigger(True)
    assert code(e) == 17
    with pytest.raises(zwoasi.ZWO_IOError) as e:
        cam.get_trigger_output_io_conf(0)
    assert code(e) == 16
    assert lib().ASIEnableDarkSubtract(0, ctypes.create_string_buffer(b"/no/such/file.bmp")) == 6
    cam.disable_dark_subtract()
    rec = sim.record()
    assert rec.open_handles == {0, 1} and rec.calls["ASIOpenCamera"] == 2 and rec.plugged == {0, 1}
    cam.close()
    mini.close()
    assert not sim.record().open_handles


def test_concurrent_calls_are_safe(sim):
    cam = zwoasi.Camera(0)
    small_roi(cam, 256, 256)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 20_000)
    stop = threading.Event()
    errors = []

    def poll():
        while not stop.is_set():
            try:
                t = cam.get_control_value(zwoasi.ASI_TEMPERATURE)[0]
                assert t == 200
                assert cam.get_exposure_status() in (0, 1, 2)
                sim.record()
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        for _ in range(5):
            cam.start_exposure()
            while cam.get_exposure_status() == zwoasi.ASI_EXP_WORKING:
                time.sleep(0.002)
            # another thread may observe SUCCESS first; only this thread reads the data
            assert cam.get_data_after_exposure().__len__() == 256 * 256 * 2
    finally:
        stop.set()
        for th in threads:
            th.join(5)
    assert not errors
    cam.close()


# ----------------------------------------------------------------------------- performance

def test_full_frame_generation_is_fast():
    """A full ASI6200 RAW16 frame (122 MB) must be produced far faster than the camera reads it out."""
    m = catalog.MODELS["asi6200mm-pro"]
    sensor = SensorSimulator(m, seed=0, slot=0)
    geom = Geometry(m.max_width, m.max_height, 1, int(simulator.ImgType.RAW16))
    out = np.empty(m.max_width * m.max_height, np.uint16)
    t0 = time.perf_counter()
    sensor.prepare(geom, Conditions(1.0, 100, 10, 20.0), 0).render_array(out)
    cold = time.perf_counter() - t0
    steady = []
    for i in range(1, 4):
        t0 = time.perf_counter()
        sensor.prepare(geom, Conditions(1.0, 100, 10, 20.0), i).render_array(out)
        steady.append(time.perf_counter() - t0)
    readout_full_bandwidth = m.max_width * m.max_height * 2 / 380e6
    assert min(steady) < readout_full_bandwidth, steady  # faster than the fastest readout (0.32 s)
    assert cold < 2.0, cold
    assert out.min() > 0 and out.std() > 1


def test_end_to_end_6200_capture_takes_about_the_readout(lock_dir):
    simulator.install(models=["asi6200mm-pro"], lock_dir=lock_dir)
    try:
        cam = zwoasi.Camera(0)
        cam.set_control_value(zwoasi.ASI_BANDWIDTHOVERLOAD, 100)
        cam.set_control_value(zwoasi.ASI_EXPOSURE, 32)
        cam.set_image_type(zwoasi.ASI_IMG_RAW16)
        buf = bytearray(9576 * 6388 * 2)
        cam.capture(buffer_=buf)  # warm: layout and noise pool
        readout = simulator.current().camera_state(0)["readout_s"]
        t0 = time.monotonic()
        img = cam.capture(buffer_=buf)
        elapsed = time.monotonic() - t0
        assert img.shape == (6388, 9576)
        assert readout <= elapsed < readout + 0.6, (elapsed, readout)
        cam.close()
        del cam, img
    finally:
        _teardown()


def _centroid_of_brightest(img: np.ndarray) -> tuple[float, float]:
    a = img.astype(float) - np.median(img)
    ys, xs = np.nonzero(a > a.max() / 2)
    w = a[ys, xs]
    return float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())


def test_flip_mirrors_the_scene(sim):
    cam = zwoasi.Camera(0)
    cam.set_control_value(zwoasi.ASI_GAIN, 100)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 50_000)
    x, y, _ = sim.cameras[0].sensor.star_positions(1)[0]
    roi_around(cam, x + 20, y + 10, 128)  # off-centre so that mirroring moves it
    cx0, cy0 = _centroid_of_brightest(cam.capture())
    cam.set_control_value(zwoasi.ASI_FLIP, 1)
    cx1, cy1 = _centroid_of_brightest(cam.capture())
    cam.set_control_value(zwoasi.ASI_FLIP, 2)
    cx2, cy2 = _centroid_of_brightest(cam.capture())
    assert abs(cx1 - (127 - cx0)) < 1.0 and abs(cy1 - cy0) < 1.0
    assert abs(cx2 - cx0) < 1.0 and abs(cy2 - (127 - cy0)) < 1.0
    assert abs(cx0 - 63.5) > 5
    cam.close()


def test_mono_bin_removes_the_bayer_mosaic(sim):
    cam = zwoasi.Camera(0)
    cam.set_control_value(zwoasi.ASI_GAIN, 300)
    cam.set_control_value(zwoasi.ASI_OFFSET, 30)
    cam.set_control_value(zwoasi.ASI_EXPOSURE, 400_000)
    cam.set_roi(width=512, height=512, bins=2, image_type=zwoasi.ASI_IMG_RAW16)

    def blue_deficit():
        img = cam.capture().astype(float)
        return (img[0::2, 1::2].mean() - img[1::2, 1::2].mean())  # G - B positions of the binned mosaic

    assert blue_deficit() > 3  # bin 2 keeps an RGGB mosaic of binned pixels
    cam.set_control_value(zwoasi.ASI_MONO_BIN, 1)
    assert abs(blue_deficit()) < 2  # MonoBin sums R, G, G, B into grey pixels
    cam.close()


def test_y8_on_the_mini(sim):
    mini = zwoasi.Camera(1)
    mini.set_roi(width=512, height=256, bins=1, image_type=zwoasi.ASI_IMG_Y8)
    mini.set_control_value(zwoasi.ASI_EXPOSURE, 1_000)
    img = mini.capture()
    assert img.shape == (256, 512) and img.dtype == np.uint8
    mini.close()
