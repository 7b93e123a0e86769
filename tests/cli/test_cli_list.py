"""`zwo-alpaca list`: the SDK line and the cameras with their properties, through the real entry point."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands run in-process install log handlers on this process's stderr; remove them afterwards."""
    yield
    from zwo_runtime import logsetup

    logsetup.reset()


def zwo(*args: str, tmp: Path, timeout: float = 30.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m zwo_runtime ARGS` (the `zwo-alpaca` console script's main) with a private lock dir."""
    full = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                ZWO_ALPACA_SIM_LOCK_DIR=str(tmp / "sim-locks"))
    full.pop("JOURNAL_STREAM", None)
    full.pop("ZWO_ASI_LIB", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "zwo_runtime", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_simulated_cameras_are_listed_with_properties(tmp_path):
    r = zwo("list", "--simulator", "asi294mc-pro,asi120mm-mini", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("SDK: simulated (--simulator given): ZWO ASI294MC Pro, ZWO ASI120MM Mini")
    assert "Camera 0: ZWO ASI294MC Pro" in out and "Camera 1: ZWO ASI120MM Mini" in out
    assert "4144 x 2822 px, 4.63 um pixels, colour (RGGB), 14-bit ADC" in out
    assert "1280 x 960 px, 3.75 um pixels, mono, 12-bit ADC" in out
    # Serial numbers are read (the camera is opened briefly) and shown.
    assert out.count("  serial          ") == 2 and "unknown" not in out
    assert "Traceback" not in r.stderr


def test_json_output(tmp_path):
    r = zwo("list", "--simulator", "asi294mc-pro,asi120mm-mini", "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["sdk"]["kind"] == "simulator" and doc["sdk"]["path"] is None
    assert [c["name"] for c in doc["cameras"]] == ["ZWO ASI294MC Pro", "ZWO ASI120MM Mini"]
    cam = doc["cameras"][0]
    assert cam["max_width"] == 4144 and cam["has_cooler"] is True and cam["bayer_pattern"] == "RGGB"
    assert cam["supported_bins"] == [1, 2, 3, 4] and len(cam["serial"]) == 16


def test_controls_are_listed_with_ranges(tmp_path):
    r = zwo("list", "--simulator", "asi294mc-pro", "--controls", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    gain = [ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["Gain"]]
    assert gain, r.stdout
    lo, hi = int(gain[0].split()[1]), int(gain[0].split()[2])
    assert lo == 0 and hi > 100


def test_real_sdk_without_camera_names_the_library_and_no_fallback(tmp_path):
    """This machine has pyzwoasi's bundled SDK (test extras) and no camera attached: serve would not
    simulate one."""
    r = zwo("list", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("SDK: ZWO libASICamera2 at ") and "pyzwoasi" in first and "0 camera(s)" in first
    assert "No cameras found" in r.stdout
    assert "never a simulated camera while ZWO's SDK is installed" in r.stdout
    assert "would fall back" not in r.stdout


def test_a_wrong_sdk_path_is_named_with_the_path_fix(tmp_path):
    missing = tmp_path / "nowhere" / "libASICamera2.so"
    r = zwo("list", "--sdk", str(missing), tmp=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"SDK: cannot be used: --sdk names {missing}, which does not exist (a wrong SDK path is an " \
                       "error: no other copy of the SDK is used instead)"
    assert lines[1].startswith("  fix: give the full path of libASICamera2.so*"), r.stdout
    assert "would stop with this error" in r.stdout
    r = zwo("list", "--json", tmp=tmp_path, env={"ZWO_ASI_LIB": str(missing)})
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["sdk"]["missing"] == "path" and report["fallback"] is None
    assert f"$ZWO_ASI_LIB names {missing}" in report["sdk"]["error"]


def test_missing_libusb_is_named_as_the_missing_piece(monkeypatch, capsys):
    """As doctor does: the advice names libusb, not the SDK (which is installed here)."""
    from driver import sdk
    from zwo_runtime import cmd_list

    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    monkeypatch.setattr(sdk, "libusb_available", lambda: False)
    rc = cmd_list.run(argparse.Namespace(sdk=None, simulator=None, json=False, controls=False))
    out = capsys.readouterr().out
    assert rc == 1
    assert out.startswith("SDK: cannot be used: cannot load ") and "libusb-1.0 is missing" in out
    fix = [ln for ln in out.splitlines() if ln.startswith("  fix: ")]
    assert fix == ["  fix: sudo apt-get install libusb-1.0-0   (Debian, Ubuntu, Raspberry Pi OS)"], out
    assert "armv8" not in out  # not the advice to install the SDK, which is there


def test_unknown_simulator_model_is_a_clear_usage_error(tmp_path):
    r = zwo("list", "--simulator", "asi9999", tmp=tmp_path)
    assert r.returncode == 2
    assert "asi9999" in r.stderr and "asi294mc-pro" in r.stderr  # says what is valid
    assert "Traceback" not in r.stderr


def test_no_sdk_found_says_why_and_what_serve_would_do(monkeypatch, capsys):
    """In-process, so the search can be pointed at nothing (pyzwoasi is installed here)."""
    from driver import sdk
    from zwo_runtime import cmd_list

    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    monkeypatch.setattr(sdk, "candidate_paths", lambda p=None: [("system library path", None),
                                                                 ("pyzwoasi's bundled copy", None)])
    rc = cmd_list.run(argparse.Namespace(sdk=None, simulator=None, json=False, controls=False))
    out = capsys.readouterr().out
    assert rc == 1
    assert out.startswith("SDK: none found: ZWO SDK libASICamera2 not found; tried: system library path")
    assert "fix: " in out and "pip install" in out and "armv8" in out
    # No SDK installed at all: the one case where serve simulates a camera (for a demo).
    assert "would serve a simulated camera" in out


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"]])
def test_help_works(tmp_path, argv):
    r = zwo(*argv, tmp=tmp_path)
    assert r.returncode == 0 and "list" in r.stdout
