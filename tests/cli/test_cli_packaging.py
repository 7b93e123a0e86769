"""packaging/: the systemd unit, the udev rules and install.sh (run into a scratch root, twice)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from zwo_runtime import cmd_doctor

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "packaging"


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_restarts_on_failure_as_a_non_root_user_in_plugdev_and_video():
    s = unit_settings((PKG / "zwo-alpaca.service").read_text())
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["zwo-alpaca"]
    assert set(s["SupplementaryGroups"][0].split()) == {"plugdev", "video"}
    assert s["ExecStart"][0].split()[1] == "serve" and "$ZWO_ALPACA_OPTS" in s["ExecStart"][0]
    assert s["KillSignal"] == ["SIGTERM"]
    assert "PrivateDevices" not in s  # would hide /dev/bus/usb from the SDK
    assert s["WantedBy"] == ["multi-user.target"]


def test_udev_rules_cover_zwo_vendor_id_with_mode_group_and_usbfs():
    rules = [ln for ln in (PKG / "99-zwo-asi.rules").read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules
    for ln in rules:
        assert re.search(r'ATTRS?\{idVendor\}=="03c3"', ln), ln
        # every key is KEY==value, KEY=value or KEY+=value with a double-quoted value
        for part in re.split(r',\s*(?=[A-Z])', ln):
            assert re.fullmatch(r'[A-Z_]+(\{[A-Za-z_]+\})?(==|!=|\+=|=)"[^"]*"', part.strip()), part
    access = [ln for ln in rules if 'SUBSYSTEM=="usb"' in ln and "MODE=" in ln]
    assert access and 'GROUP="plugdev"' in access[0] and 'MODE="0660"' in access[0]
    usbfs = [ln for ln in rules if "usbfs_memory_mb" in ln]
    assert usbfs and "RUN+=" in usbfs[0] and "-lt 256" in usbfs[0]
    assert "$(" not in usbfs[0].replace("$$(", "")  # udev would substitute a single $


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PKG / "install.sh"), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=30)


def test_install_is_idempotent_and_keeps_user_edits(tmp_path):
    root = tmp_path / "root"
    fake = tmp_path / "zwo-alpaca"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    first = run_install(root, "--user", "astro", "--exec", str(fake))
    assert first.returncode == 0, first.stderr
    unit = root / "etc/systemd/system/zwo-alpaca.service"
    rules = root / "etc/udev/rules.d/99-zwo-asi.rules"
    default = root / "etc/default/zwo-alpaca"
    assert first.stdout.count("installed: ") == 3
    s = unit_settings(unit.read_text())
    assert s["User"] == ["astro"] and s["ExecStart"][0].startswith(f"{fake} serve ")
    assert rules.read_bytes() == (PKG / "99-zwo-asi.rules").read_bytes()
    default.write_text(default.read_text() + 'ZWO_ALPACA_OPTS="--port 11112"\n')
    mtimes = {p: p.stat().st_mtime_ns for p in (unit, rules, default)}

    second = run_install(root, "--user", "astro", "--exec", str(fake))
    assert second.returncode == 0, second.stderr
    assert "installed: " not in second.stdout and second.stdout.count("unchanged: ") == 2
    assert "kept your options" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten
    assert "--port 11112" in default.read_text()
    # doctor accepts what was installed
    assert cmd_doctor.check_udev_rules([str(rules.parent)]).status == "ok"

    gone = run_install(root, "--uninstall")
    assert gone.returncode == 0 and not unit.exists() and not rules.exists() and not default.exists()


def test_install_rejects_bad_options(tmp_path):
    r = run_install(tmp_path, "--user", "Bad User")
    assert r.returncode != 0 and "--user" in r.stderr
    r = run_install(tmp_path, "--frobnicate")
    assert r.returncode != 0 and "unknown option" in r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path):
    fake = tmp_path / "zwo-alpaca"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert run_install(tmp_path / "root", "--exec", str(fake)).returncode == 0
    unit = tmp_path / "root/etc/systemd/system/zwo-alpaca.service"
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    # verify reports unknown keys and bad values as warnings on stderr with exit status 0
    problems = [ln for ln in r.stderr.splitlines() if "zwo-alpaca.service" in ln]
    assert r.returncode == 0 and not problems, r.stderr
