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


def test_explicit_path_that_does_not_exist_is_an_error_naming_it(tmp_path, monkeypatch):
    """A wrong --sdk is the only place looked at: no fall-through to another copy (pyzwoasi's is here)."""
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    missing = tmp_path / "libASICamera2.so"
    assert [where for where, _ in sdk.candidate_paths(str(missing))] == [f"--sdk {missing}"]
    with pytest.raises(sdk.SdkUnusableError) as err:
        sdk.find_sdk(str(missing))
    assert err.value.missing == "path" and err.value.path == str(missing)
    assert f"--sdk names {missing}, which does not exist" in err.value.message
    with pytest.raises(sdk.SdkUnusableError):  # whatever the fallback says: never the simulator
        sdk.load(sdk_path=str(missing), fallback_to_simulator=True)
    assert sdk.missing_piece(err.value) == "path"


def test_env_variable_is_used_without_sdk_and_is_the_only_place(tmp_path, monkeypatch):
    lib = tmp_path / "libASICamera2.so.1"
    lib.write_bytes(b"")
    monkeypatch.setenv("ZWO_ASI_LIB", str(lib))
    assert sdk.candidate_paths() == [(f"$ZWO_ASI_LIB={lib}", str(lib))]
    path, where, _ = sdk.find_sdk()
    assert path == str(lib) and where.startswith("$ZWO_ASI_LIB")
    # --sdk wins over the variable, and a wrong --sdk does not fall through to it.
    with pytest.raises(sdk.SdkUnusableError, match="--sdk names"):
        sdk.find_sdk(str(tmp_path / "nope.so"))
    monkeypatch.setenv("ZWO_ASI_LIB", str(tmp_path / "gone.so"))
    with pytest.raises(sdk.SdkUnusableError, match=r"\$ZWO_ASI_LIB names .*gone.so, which does not exist"):
        sdk.load()
    monkeypatch.setenv("ZWO_ASI_LIB", "")  # empty: not set
    assert not sdk.candidate_paths()[0][0].startswith("$ZWO_ASI_LIB")


def test_an_explicit_file_that_does_not_load_is_an_error(tmp_path):
    broken = tmp_path / "libASICamera2.so"
    broken.write_bytes(b"not a library")
    # In a child: loading touches zwoasi's process-wide library.
    res = run_py("from driver import sdk\n"
                 f"try:\n    sdk.load(sdk_path={str(broken)!r})\n"
                 "except sdk.SdkUnusableError as exc:\n    print(exc.missing); print(exc.message)\n",
                 env={"ZWO_ASI_LIB": ""})
    assert res.returncode == 0, res.stderr
    missing, message = res.stdout.splitlines()[:2]
    assert missing == "sdk" and f"cannot load {broken}" in message


def test_not_found_error_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    monkeypatch.setattr(sdk, "_pyzwoasi_library", lambda: None)
    monkeypatch.setattr(sdk.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(sdk, "_SYSTEM_DIRS", (str(tmp_path),))
    with pytest.raises(SdkNotFoundError) as err:
        sdk.find_sdk()
    assert not isinstance(err.value, sdk.SdkUnusableError)  # nothing installed: the one case for the simulator
    msg = err.value.message
    for place in ("system library path", "pyzwoasi"):
        assert place in msg


def test_missing_libusb_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sdk, "libusb_available", lambda: False)
    monkeypatch.setattr(sdk, "find_sdk", lambda p=None: ("/x/libASICamera2.so", "test", ["test"]))
    with pytest.raises(SdkNotFoundError, match="apt-get install libusb-1.0-0"):
        sdk.load(fallback_to_simulator=False)
    # An SDK that is installed but cannot load is an error, not a reason to simulate a camera.
    with pytest.raises(sdk.SdkUnusableError) as err:
        sdk.load(fallback_to_simulator=True)
    assert sdk.missing_piece(err.value) == "libusb"


def test_fallback_to_simulator_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(sdk, "find_sdk", lambda p=None: (_ for _ in ()).throw(SdkNotFoundError("nothing here")))
    info = sdk.load(sim_options={"lock_dir": str(tmp_path)})
    assert info.kind == "simulator" and info.models == ["ZWO ASI294MC Pro"]
    assert "nothing here" in info.reason and "no ZWO SDK installed" in info.reason
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
def test_real_sdk_without_camera_is_still_the_sdk_used():
    """No fake camera on a real rig: with the SDK installed and no camera, the fallback does not apply."""
    res = run_py("from driver import sdk\ninfo = sdk.load()\nprint(info.kind); print(info.reason)",
                 env={"ZWO_ASI_LIB": ""})
    assert res.returncode == 0, res.stderr
    kind, reason = res.stdout.splitlines()[:2]
    assert kind == "real" and "0 camera(s)" in reason
