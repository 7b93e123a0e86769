"""The simulator's ZWO line-up (driver/simulator/catalog.py): coverage, sources, and the consistency of
every model's SDK-visible properties, read back through zwoasi exactly as a driver reads them.

Each model is checked where a real camera would show an inconsistency: supported bins against the
ROI the SDK accepts, ROI alignment (8 x 2, and the USB 2.0 ASI120's area multiple of 1024), the
ADC depth against the values RAW16 delivers, the Bayer pattern against IsColorCam and the mosaic
actually delivered, the ST4 port against ASIPulseGuideOn, the cooler against the cooler controls.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from driver import model_facts, simulator
from driver.simulator import catalog
from driver.simulator.constants import AsiError, BayerPattern, ControlType, ImgType
from driver.simulator.sensor import Conditions, Geometry, SensorSimulator

zwoasi = simulator._zwoasi()

REPO = Path(__file__).resolve().parents[2]
ORIGINAL = ["asi120mm-mini", "asi294mc-pro", "asi2600mm-pro", "asi6200mm-pro"]  # contracts: never renamed
MODELS = catalog.model_names()


@pytest.fixture
def installed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[simulator.SimulatedSDK]:
    """The simulator with one camera of the model the test is parametrised with (`model`)."""
    model = request.getfixturevalue("model")
    sdk = simulator.install(models=[model], seed=0, lock_dir=str(tmp_path / "locks"))
    yield sdk
    gc.collect()  # zwoasi Camera objects close in __del__, while the library is still there
    simulator.uninstall()


def _lib():
    return zwoasi.zwolib


def _roi_code(w: int, h: int, b: int, img: int = ImgType.RAW16) -> int:
    return int(_lib().ASISetROIFormat(0, w, h, b, img))


def _blue_phase(img: np.ndarray) -> tuple[int, int]:
    """(row, column) parity of the weakest 2x2 phase: where the blue filter sits (blue passes least sky)."""
    means = {(r, c): float(img[r::2, c::2].mean()) for r in (0, 1) for c in (0, 1)}
    return min(means, key=means.__getitem__)


#: ASI_BAYER_PATTERN -> the name the core reports (driver.models.BAYER_NAMES, FITS BAYERPAT, INDI CFA_TYPE).
CFA_NAMES = {BayerPattern.RG: "RGGB", BayerPattern.BG: "BGGR", BayerPattern.GR: "GRBG", BayerPattern.GB: "GBRG"}
#: Where blue sits in the 2x2 cell at the origin, per ASI_BAYER_PATTERN.
BLUE_AT = {BayerPattern.RG: (1, 1), BayerPattern.BG: (0, 0), BayerPattern.GR: (1, 0), BayerPattern.GB: (0, 1)}


def _sky_frame(m: catalog.CameraModel, img_type: int = ImgType.RAW16, *, width: int = 256, height: int = 256,
               start: tuple[int, int] = (0, 0), exposure_s: float = 2000.0, gain: int = 0) -> np.ndarray:
    """A long light exposure of a corner of the sensor, straight from the sensor model (no real waiting)."""
    sensor = SensorSimulator(m, seed=0, slot=0)
    geom = Geometry(width, height, 1, int(img_type), start_x=start[0], start_y=start[1])
    offset = m.control("Offset").default
    return sensor.render(geom, Conditions(exposure_s, gain, offset, 20.0), 1).reshape(height, width)


# ----------------------------------------------------------------------------- the line-up as a whole


def test_line_up_covers_every_distinct_sdk_behaviour() -> None:
    ms = list(catalog.MODELS.values())
    assert len(ms) >= 16
    assert MODELS[:4] == ORIGINAL and all(catalog.lookup(k).key == k for k in ORIGINAL)
    assert {m.usb3 for m in ms} == {True, False}
    assert {m.st4 for m in ms} == {True, False} and {m.cooled for m in ms} == {True, False}
    assert {(m.usb3, m.st4) for m in ms} >= {(False, True), (True, True), (True, False)}
    assert {m.is_color for m in ms} == {True, False}
    assert {m.bit_depth for m in ms} >= {10, 12, 14, 16}
    assert {BayerPattern(m.bayer_pattern) for m in ms if m.is_color} >= {BayerPattern.RG, BayerPattern.GR}
    assert any(m.size_multiple_1024 and not m.usb3 for m in ms)
    assert any(m.size_multiple_1024 and m.is_color for m in ms) and any(m.size_multiple_1024 and not m.is_color
                                                                        for m in ms)
    assert any(not m.size_multiple_1024 and not m.usb3 for m in ms)  # USB 2.0 without the ASI120 rule
    hw = {ControlType.HARDWARE_BIN in m.control_by_type for m in ms}
    assert hw == {True, False}
    by_area = sorted(ms, key=lambda m: m.max_width * m.max_height)
    assert by_area[0].key.startswith("asi120") and by_area[-1].key.startswith("asi6200")
    by_pixel = sorted(ms, key=lambda m: m.pixel_size_um)
    assert by_pixel[-1].key == "asi432mm" and by_pixel[0].key == "asi715mc"
    for key in ("asi2400mc-pro", "asi6200mc-pro", "asi676mc", "asi678mc", "asi183mc-pro", "asi533mc-pro",
                "asi1600mm-pro", "asi174mm-mini", "asi178mm", "asi290mm-mini", "asi462mc", "asi585mc", "asi715mc",
                "asi2600mc-pro", "asi071mc-pro", "asi120mc"):
        assert key in catalog.MODELS, key


def test_unknown_model_error_lists_the_line_up() -> None:
    with pytest.raises(ValueError) as e:
        catalog.lookup("asi9999")
    assert all(k in str(e.value) for k in MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_every_figure_names_its_source(model: str) -> None:
    m = catalog.MODELS[model]
    refs = dict(m.sources)
    assert tuple(refs) == catalog.FIGURES, "every figure has an entry, in FIGURES order"
    for figure, ref in refs.items():
        assert ref == catalog.ESTIMATE or ref in catalog.SOURCES, f"{model} {figure}: unknown source {ref!r}"
    assert m.sensor and re.fullmatch(r"ZWO ASI\w+( \w+)?", m.name)


@pytest.mark.parametrize("model", MODELS)
def test_core_facts_agree_with_the_catalog(model: str) -> None:
    """driver/model_facts.py (what the core reports for real cameras too) and the catalog say the same."""
    m = catalog.MODELS[model]
    f = model_facts.facts(m.name)
    assert f.sensor == m.sensor
    if f.full_well_e is not None:
        assert f.full_well_e == m.full_well_e
    else:
        assert dict(m.sources)["full_well"] == catalog.ESTIMATE
    assert f.area_multiple == (1024 if m.size_multiple_1024 else 1)


def test_docs_table_is_the_generated_one() -> None:
    """docs/simulator.md shows exactly what markdown_table() generates (regenerate with
    `python -m driver.simulator list --write docs/simulator.md`)."""
    text = (REPO / "docs" / "simulator.md").read_text(encoding="utf-8")
    assert f"\n{len(MODELS)} models, chosen so that" in text, "the Catalog section's model count"
    a, b = text.index(catalog.DOC_BEGIN) + len(catalog.DOC_BEGIN), text.index(catalog.DOC_END)
    assert text[a:b].strip() == catalog.markdown_table().strip(), \
        "docs/simulator.md's catalog table is stale: run python -m driver.simulator list --write docs/simulator.md"


# ----------------------------------------------------------------------------- each model, through zwoasi


@pytest.mark.parametrize("model", MODELS)
def test_camera_property_is_the_catalog(model: str, installed: simulator.SimulatedSDK) -> None:
    m = catalog.MODELS[model]
    p = zwoasi.Camera(0).get_camera_property()
    assert p["Name"] == m.name and (p["MaxWidth"], p["MaxHeight"]) == (m.max_width, m.max_height)
    assert p["PixelSize"] == pytest.approx(m.pixel_size_um) and p["BitDepth"] == m.bit_depth
    assert tuple(p["SupportedBins"]) == m.supported_bins and p["SupportedBins"][0] == 1
    assert bool(p["IsColorCam"]) == m.is_color and bool(p["ST4Port"]) == m.st4
    assert bool(p["IsCoolerCam"]) == m.cooled and bool(p["IsUSB3Camera"]) == m.usb3
    assert p["ElecPerADU"] == pytest.approx(m.full_well_e / m.max_adu, rel=0.01)
    if m.is_color:
        assert p["BayerPattern"] in (0, 1, 2, 3) and ImgType.RGB24 in p["SupportedVideoFormat"]
    else:
        assert p["BayerPattern"] == 0 and ImgType.RGB24 not in p["SupportedVideoFormat"]
    assert {ImgType.RAW8, ImgType.RAW16} <= set(p["SupportedVideoFormat"])


@pytest.mark.parametrize("model", MODELS)
def test_controls_match_the_properties(model: str, installed: simulator.SimulatedSDK) -> None:
    m = catalog.MODELS[model]
    cam = zwoasi.Camera(0)
    try:
        controls = cam.get_controls()
        by_type = {c["ControlType"]: c for c in controls.values()}
        cooler = {ControlType.COOLER_ON, ControlType.TARGET_TEMP, ControlType.COOLER_POWER_PERC}
        assert (cooler <= set(by_type)) == m.cooled and (not m.cooled) == (not cooler & set(by_type))
        assert ({ControlType.WB_R, ControlType.WB_B, ControlType.MONO_BIN} <= set(by_type)) == m.is_color
        if ControlType.HARDWARE_BIN in by_type:
            assert max(m.supported_bins) >= 2
        for c in controls.values():
            assert c["MinValue"] <= c["DefaultValue"] <= c["MaxValue"], c["Name"]
        assert by_type[ControlType.EXPOSURE]["MinValue"] > 0
        # The cooler answers exactly when the camera has one.
        rc = _lib().ASISetControlValue(0, ControlType.COOLER_ON, 1, 0)
        assert rc == (AsiError.SUCCESS if m.cooled else AsiError.INVALID_CONTROL_TYPE)
        # ST4 pulses are accepted exactly when the camera has the port.
        rc = _lib().ASIPulseGuideOn(0, 0)
        assert rc == (AsiError.SUCCESS if m.st4 else AsiError.GENERAL_ERROR)
        _lib().ASIPulseGuideOff(0, 0)
        assert (installed.record().pulse_guiding == {}) or m.st4
    finally:
        cam.close()


@pytest.mark.parametrize("model", MODELS)
def test_roi_alignment_at_every_bin(model: str, installed: simulator.SimulatedSDK) -> None:
    m = catalog.MODELS[model]
    cam = zwoasi.Camera(0)
    try:
        for b in m.supported_bins:
            w, h = m.max_width // b, m.max_height // b
            w, h = w - w % 8, h - h % 2
            while m.size_multiple_1024 and (w * h) % 1024:
                h -= 2
            assert _roi_code(w, h, b) == AsiError.SUCCESS, f"bin {b}: {w}x{h}"
            assert _roi_code(w + 8, h, b) == AsiError.INVALID_SIZE  # wider than the binned sensor
            assert _roi_code(w - 4, h, b) == AsiError.INVALID_SIZE  # width not a multiple of 8
            assert _roi_code(w, h - 1, b) == AsiError.INVALID_SIZE  # odd height
        # 64 x 2 = 128 pixels: fine anywhere but on the USB 2.0 ASI120 (area multiple of 1024).
        assert _roi_code(64, 2, 1) == (AsiError.INVALID_SIZE if m.size_multiple_1024 else AsiError.SUCCESS)
        assert _roi_code(64, 16, 1) == AsiError.SUCCESS  # 1024 pixels
        assert _roi_code(64, 16, max(m.supported_bins) + 1) == AsiError.INVALID_SIZE
        assert _roi_code(64, 16, 1, ImgType.RGB24) == (AsiError.SUCCESS if m.is_color else AsiError.INVALID_IMGTYPE)
    finally:
        cam.close()


# ----------------------------------------------------------------------------- what the sensor delivers


@pytest.mark.parametrize("model", MODELS)
def test_raw16_is_the_adc_depth_left_aligned(model: str) -> None:
    m = catalog.MODELS[model]
    shift = 16 - m.bit_depth
    dim = _sky_frame(m, exposure_s=0.001)
    assert dim.dtype == np.uint16 and not (dim % (1 << shift)).any()
    full = _sky_frame(m, exposure_s=1e6, gain=m.control("Gain").max_value)  # saturates every pixel
    assert int(full.max()) == m.max_adu << shift
    raw8 = _sky_frame(m, ImgType.RAW8, exposure_s=1e6, gain=m.control("Gain").max_value)
    assert raw8.dtype == np.uint8 and int(raw8.max()) == 255


@pytest.mark.parametrize("model", [k for k in MODELS if catalog.MODELS[k].is_color])
def test_mosaic_is_the_reported_bayer_pattern(model: str) -> None:
    m = catalog.MODELS[model]
    assert _blue_phase(_sky_frame(m, exposure_s=200.0).astype(np.float64)) == BLUE_AT[BayerPattern(m.bayer_pattern)]


@pytest.mark.parametrize("pattern", list(BayerPattern), ids=lambda p: p.name)
def test_every_sdk_bayer_pattern_is_delivered_as_reported(pattern: BayerPattern, tmp_path: Path) -> None:
    """All four ASI_BAYER_PATTERN values work (a model added at run time), also from odd start positions
    (the simulator keeps colour ROIs on even coordinates, so the delivered phase never changes)."""
    m = dataclasses.replace(catalog.MODELS["asi294mc-pro"], key=f"test-{pattern.name.lower()}",
                            name=f"ZWO TEST{pattern.name}", bayer_pattern=int(pattern))
    assert _blue_phase(_sky_frame(m, exposure_s=200.0).astype(np.float64)) == BLUE_AT[pattern]
    sdk = simulator.install(models=[m], lock_dir=str(tmp_path / "locks"))  # type: ignore[list-item]
    try:
        cam = zwoasi.Camera(0)
        assert cam.get_camera_property()["BayerPattern"] == int(pattern)
        cam.set_roi(start_x=3, start_y=5, width=64, height=32, bins=1, image_type=zwoasi.ASI_IMG_RAW16)
        assert cam.get_roi()[:2] == [2, 4]
        cam.close()
        del cam
        assert sdk.cameras[0].model.bayer_pattern == int(pattern)
    finally:
        gc.collect()
        simulator.uninstall()


def test_an_8_bit_adc_model_fills_raw8_and_shifts_raw16_by_8() -> None:
    """No current ZWO model has an 8-bit ADC; the simulator still handles one (a model added at run time)."""
    m = dataclasses.replace(catalog.MODELS["asi120mm-mini"], key="test-8bit", bit_depth=8)
    dim = _sky_frame(m, exposure_s=0.001)
    assert not (dim % 256).any()
    assert int(_sky_frame(m, exposure_s=1e6, gain=100).max()) == 255 << 8
    raw8 = _sky_frame(m, ImgType.RAW8, exposure_s=0.001)
    assert np.array_equal(raw8.astype(np.uint16) << 8, dim)  # same frame, same native values


def test_simulated_sdk_name_round_trips_through_lookup() -> None:
    for key in MODELS:
        m = catalog.MODELS[key]
        assert catalog.lookup(m.name) is m and catalog.lookup(key.upper()) is m



def test_every_key_and_sdk_name_works_on_the_command_line(tmp_path: Path) -> None:
    """`--simulator` takes every catalog key (and the SDK name), and the core reports each camera's
    properties and the facts it keeps (driver/model_facts.py) as the catalog has them."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               ZWO_ALPACA_SIM_LOCK_DIR=str(tmp_path / "locks"))
    env.pop("ZWO_ASI_LIB", None)
    spec = ",".join(MODELS[:-1] + [catalog.MODELS[MODELS[-1]].name])  # the last one by its SDK name
    r = subprocess.run([sys.executable, "-m", "zwo_runtime", "list", "--simulator", spec, "--json"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cams = json.loads(r.stdout)["cameras"]
    assert [c["name"] for c in cams] == [catalog.MODELS[k].name for k in MODELS]
    for c, key in zip(cams, MODELS, strict=True):
        m = catalog.MODELS[key]
        assert (c["max_width"], c["max_height"], c["has_cooler"], c["supported_bins"]) == \
            (m.max_width, m.max_height, m.cooled, list(m.supported_bins)), key
        assert c["bayer_pattern"] == (CFA_NAMES[BayerPattern(m.bayer_pattern)] if m.is_color else None), key
