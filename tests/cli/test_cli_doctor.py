"""`zwo-alpaca doctor`: each check on this machine and on prepared inputs, and the command as a whole."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from zwo_runtime import cmd_doctor as doc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands run in-process install log handlers on this process's stderr; remove them afterwards."""
    yield
    from zwo_runtime import logsetup

    logsetup.reset()


def test_libusb_is_found_on_this_machine():
    r = doc.check_libusb()
    assert r.status == "ok", r


def test_sdk_is_found_through_pyzwoasi_and_loads(monkeypatch):
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    r = doc.check_sdk()
    assert r.status == "ok", r
    assert "pyzwoasi" in r.detail and "libASICamera2" in r.detail
    assert "version 1." in r.detail  # read from the library itself, so it really loaded


def test_missing_sdk_fails_with_a_fix(monkeypatch):
    from driver import sdk

    monkeypatch.setattr(sdk, "candidate_paths", lambda p=None: [("system library path", None)])
    r = doc.check_sdk()
    assert r.status == "fail" and not r.ok
    assert "not found" in r.detail and "pip install" in r.fix and "armv8" in r.fix


def test_sdk_for_the_wrong_architecture_is_named(tmp_path, monkeypatch):
    lib = tmp_path / "libASICamera2.so"
    machine = 0xB7 if os.uname().machine == "x86_64" else 0x3E  # the other one
    lib.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 3, machine) + b"\0" * 64)
    r = doc.check_sdk(str(lib))
    assert r.status == "fail"
    assert "built for" in r.detail and "this computer is" in r.detail and "docs/raspberry-pi.md" in r.fix


def test_udev_rules(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = doc.check_udev_rules([str(empty), str(tmp_path / "absent")])
    assert r.status == "fail" and "03c3" in r.detail and "udev" in r.fix

    ours = tmp_path / "etc"
    ours.mkdir()
    shutil.copy(REPO / "packaging" / "99-zwo-asi.rules", ours)
    r = doc.check_udev_rules([str(empty), str(ours)])
    assert r.status == "ok" and "99-zwo-asi.rules" in r.detail

    weak = tmp_path / "weak"
    weak.mkdir()
    (weak / "50-zwo.rules").write_text('# SUBSYSTEM=="usb", ATTR{idVendor}=="03c3", MODE="0666"\n'
                                       'ACTION=="add", ATTR{idVendor}=="03C3", RUN+="/bin/true"\n')
    r = doc.check_udev_rules([str(weak)])
    assert r.status == "warn" and "no MODE, GROUP" in r.detail


@pytest.mark.parametrize("content,status", [("16\n", "fail"), ("199", "fail"), ("200", "ok"), ("1024", "ok"),
                                            ("0", "ok"), (None, "warn")])
def test_usbfs_memory(tmp_path, content, status):
    f = tmp_path / "usbfs_memory_mb"
    if content is not None:
        f.write_text(content)
    r = doc.check_usbfs_memory(str(f))
    assert r.status == status, r
    if status == "fail":
        assert "200" in r.detail and "usbcore.usbfs_memory_mb" in r.fix and "tee" in r.fix


def test_a_taken_port_is_reported_and_a_free_one_is_not():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        r = doc.check_port(port, "tcp", "127.0.0.1", "Alpaca HTTP")
        assert r.status == "fail"
        assert f"TCP port {port} (Alpaca HTTP) is in use" in r.detail
        assert f"pid {os.getpid()}" in r.detail  # names who holds it
        assert "ss -lpn" in r.fix
    r = doc.check_port(port, "tcp", "127.0.0.1")
    assert r.status == "ok", r  # free again once closed


def test_a_taken_udp_port_is_reported_but_a_shared_one_is_fine():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        r = doc.check_port(port, "udp", "127.0.0.1")
        assert r.status == "fail" and "without Alpaca discovery" in r.fix
    assert doc.check_port(port, "udp", "127.0.0.1").status == "ok"
    # Another Alpaca server that, like ours, sets SO_REUSEPORT: both can answer discovery.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        r = doc.check_port(port, "udp", "127.0.0.1")
        assert r.status == "ok" and f"shared with pid {os.getpid()}" in r.detail


def test_groups():
    me = doc.check_groups()
    if os.getuid() == 0:
        assert me.status == "ok" and "root" in me.detail
    r = doc.check_groups("nobody")  # a system user in neither group
    assert r.status == "fail" and "plugdev" in r.detail and r.fix.startswith("sudo usermod -aG plugdev")
    assert doc.check_groups("no-such-user-zwo").status == "fail"


def test_usb_devices_from_sysfs(tmp_path):
    sysfs = tmp_path / "devices"
    cam = sysfs / "2-1"
    cam.mkdir(parents=True)
    for name, value in {"idVendor": "03c3", "idProduct": "294a", "product": "ASI294MC Pro", "busnum": "2",
                        "devnum": "5", "speed": "480", "version": " 3.00"}.items():
        (cam / name).write_text(value + "\n")
    (sysfs / "1-1").mkdir()
    (sysfs / "1-1" / "idVendor").write_text("1d6b\n")
    r = doc.check_usb_devices(str(sysfs), str(tmp_path / "dev"))
    assert r.status == "warn" and "USB 2 speed" in r.detail and "USB 3" in r.fix
    (cam / "speed").write_text("5000\n")
    r = doc.check_usb_devices(str(sysfs), str(tmp_path / "dev"))
    assert r.status == "ok" and "ASI294MC Pro (bus 2, 5000 Mbit/s)" in r.detail
    shutil.rmtree(cam)
    r = doc.check_usb_devices(str(sysfs), str(tmp_path / "dev"))
    assert r.status == "warn" and "no ZWO device" in r.detail


def test_config_file(tmp_path):
    assert doc.check_config(str(tmp_path / "config.json")).status == "ok"
    (tmp_path / "config.json").write_text('{"version": 1, "cameras": {"a": {}}}')
    assert doc.check_config(str(tmp_path / "config.json")).status == "ok"
    (tmp_path / "config.json").write_text('{"version": 1,')
    r = doc.check_config(str(tmp_path / "config.json"))
    assert r.status == "fail" and "docs/configuration.md" in r.fix


def test_the_command_reports_every_check_and_its_exit_status(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("ZWO_ASI_LIB", None)
        base = [sys.executable, "-m", "zwo_runtime", "doctor", "--bind", "127.0.0.1", "--port", str(port),
                "--config", str(tmp_path / "config.json")]
        r = subprocess.run([*base, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        text = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    doc_json = json.loads(r.stdout)
    by_name = {c["name"]: c for c in doc_json["checks"]}
    assert {"libusb", "ZWO SDK", "udev rules", "usbfs memory", "groups", "USB devices", "config file",
            f"port {port}/tcp", "port 7624/tcp", "port 32227/udp"} <= set(by_name)
    assert by_name["libusb"]["status"] == "ok" and by_name["ZWO SDK"]["status"] == "ok"
    assert by_name[f"port {port}/tcp"]["status"] == "fail"
    assert r.returncode == 1 and doc_json["ok"] is False
    # Text: one line per check, a fix under each problem, a summary; same exit status.
    assert text.returncode == 1
    assert f"FAIL  port {port}/tcp" in text.stdout
    fails = text.stdout.count("\nFAIL ") + text.stdout.startswith("FAIL ")
    assert text.stdout.count("fix: ") >= fails and "problem(s) found" in text.stdout
    assert "Traceback" not in text.stderr + r.stderr


def test_all_ok_gives_exit_status_0(monkeypatch, capsys):
    import argparse

    ok = doc.CheckResult("x", "ok", "fine")
    monkeypatch.setattr(doc, "run_checks", lambda a=None: [ok, doc.CheckResult("y", "warn", "hm", "do z")])
    assert doc.run(argparse.Namespace(json=False)) == 0
    assert "All checks passed (1 warning(s))" in capsys.readouterr().out
    monkeypatch.setattr(doc, "run_checks", lambda a=None: [ok, doc.CheckResult("y", "fail", "bad", "do z")])
    assert doc.run(argparse.Namespace(json=False)) == 1
