"""Finding and loading the real ZWO SDK, and the clear errors when it can't be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driver import SdkNotFoundError, sdk

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real SDK is process-global inside zwoasi, so load it in a child process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=60)


def test_explicit_path_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    missing = tmp_path / "libASICamera2.so"
    places = [where for where, _ in sdk.candidate_paths(str(missing))]
    assert places[0] == f"--sdk {missing}"
    assert any("system library path" in p for p in places)
    assert any("pyzwoasi" in p for p in places)


def test_env_variable_is_second(tmp_path, monkeypatch):
    lib = tmp_path / "libASICamera2.so.1"
    lib.write_bytes(b"")
    monkeypatch.setenv("ZWO_ASI_LIB", str(lib))
    order = sdk.candidate_paths(str(tmp_path / "nope.so"))
    assert order[0][1] is None
    assert order[1] == (f"$ZWO_ASI_LIB={lib}", str(lib))
    path, where, _ = sdk.find_sdk(str(tmp_path / "nope.so"))
    assert path == str(lib) and where.startswith("$ZWO_ASI_LIB")


def test_not_found_error_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    monkeypatch.setattr(sdk, "_pyzwoasi_library", lambda: None)
    monkeypatch.setattr(sdk.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(sdk, "_SYSTEM_DIRS", (str(tmp_path),))
    with pytest.raises(SdkNotFoundError) as err:
        sdk.find_sdk(str(tmp_path / "given.so"))
    msg = err.value.message
    for place in ("--sdk", "system library path", "pyzwoasi"):
        assert place in msg


def test_missing_libusb_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sdk, "libusb_available", lambda: False)
    monkeypatch.setattr(sdk, "find_sdk", lambda p=None: ("/x/libASICamera2.so", "test", ["test"]))
    with pytest.raises(SdkNotFoundError, match="apt-get install libusb-1.0-0"):
        sdk.load(fallback_to_simulator=False)


def test_fallback_to_simulator_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(sdk, "find_sdk", lambda p=None: (_ for _ in ()).throw(SdkNotFoundError("nothing here")))
    info = sdk.load(sim_options={"lock_dir": str(tmp_path)})
    assert info.kind == "simulator" and info.models == ["ZWO ASI294MC Pro"]
    assert "nothing here" in info.reason
    assert "simulated" in info.describe()


@pytest.mark.skipif(sdk._pyzwoasi_library() is None, reason="pyzwoasi's bundled SDK has no copy for this platform")
def test_real_sdk_loads_and_sees_no_camera():
    """CI has no camera: ZWO's real libASICamera2 (pyzwoasi's copy, with Debian's libusb) reports 0."""
    assert sdk.libusb_available(), "libusb-1.0-0 must be installed by scripts/bootstrap"
    res = run_py("from driver import sdk; from driver import _zwo\n"
                 "info = sdk.load(fallback_to_simulator=False)\n"
                 "print(info.kind, info.path)\n"
                 "print('cameras', _zwo.zwoasi().get_num_cameras())\n"
                 "print('enumerated', len(sdk.enumerate_cameras()))", env={"ZWO_ASI_LIB": ""})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("real ") and "libASICamera2" in lines[0]
    assert "cameras 0" in lines and "enumerated 0" in lines


@pytest.mark.skipif(sdk._pyzwoasi_library() is None, reason="pyzwoasi's bundled SDK has no copy for this platform")
def test_real_sdk_without_camera_falls_back_to_simulator():
    res = run_py("from driver import sdk\ninfo = sdk.load()\nprint(info.kind); print(info.reason)",
                 env={"ZWO_ASI_LIB": ""})
    assert res.returncode == 0, res.stderr
    kind, reason = res.stdout.splitlines()[:2]
    assert kind == "simulator" and "no camera attached" in reason
