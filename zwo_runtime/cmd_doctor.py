"""`zwo-alpaca doctor`: check the machine for what a ZWO camera server needs, and say how to fix each problem.

Each check is a small function returning a `CheckResult` (status ``ok``, ``warn`` or ``fail``, what
was found, and a concrete fix), so tests and other tools can call them one by one. The command
prints them all and exits 0 when nothing failed (warnings are things worth knowing that do not stop
the server), 1 otherwise.

Nothing here changes the machine: the port checks bind a socket and close it without sending
anything; the SDK check loads the library into this short-lived process only.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import grp
import importlib.util
import json
import os
import platform
import pwd
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from driver import sdk
from driver.errors import SdkNotFoundError

from . import logsetup

ZWO_VENDOR_ID = "03c3"
UDEV_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")
USBFS_PATH = "/sys/module/usbcore/parameters/usbfs_memory_mb"
# ZWO's own udev rule raises the limit to 200 MB; the kernel default (16 MB) is too small for the
# transfers of large sensors (e.g. 62 MP ASI6200: ~120 MB per 16-bit frame in flight).
USBFS_RECOMMENDED_MB = 200
DEFAULT_PORTS = (("tcp", 11111, "Alpaca HTTP"), ("tcp", 7624, "INDI"), ("udp", 32227, "Alpaca discovery"))
UDEV_RULE = ('SUBSYSTEM=="usb", ATTR{idVendor}=="03c3", MODE="0660", GROUP="plugdev", TAG+="uaccess"')
_VENDOR_RE = re.compile(r'idVendor\}\s*==\s*"0*3c3"', re.IGNORECASE)
# ELF e_machine values of the architectures ZWO ships libASICamera2 for.
_ELF_MACHINES = {0x03: "x86 (32-bit)", 0x3E: "x86-64", 0x28: "ARM 32-bit (armv6/armv7)",
                 0xB7: "ARM 64-bit (armv8/aarch64)"}
_HOST_MACHINES = {"x86_64": 0x3E, "amd64": 0x3E, "i386": 0x03, "i686": 0x03, "aarch64": 0xB7, "arm64": 0xB7,
                  "armv7l": 0x28, "armv6l": 0x28}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: `status` is "ok", "warn" or "fail"; `fix` says what to do when not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the check failed (a warning is not a failure)."""
        return self.status != "fail"


def _repo_packaging() -> Path | None:
    """The packaging/ folder of a source checkout (editable install), for fixes that name its files."""
    here = Path(__file__).resolve().parents[1] / "packaging"
    return here if (here / "install.sh").exists() else None


def _udev_fix() -> str:
    pkg = _repo_packaging()
    if pkg is not None:
        return (f"sudo bash {pkg}/install.sh --udev-only   (installs {pkg}/99-zwo-asi.rules and reloads udev); "
                "then unplug and replug the camera")
    return (f"echo '{UDEV_RULE}' | sudo tee /etc/udev/rules.d/99-zwo-asi.rules && sudo udevadm control "
            "--reload-rules && sudo udevadm trigger; then unplug and replug the camera")


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------

def check_libusb() -> CheckResult:
    """libusb-1.0 must be loadable: libASICamera2 is linked against it."""
    if sdk.libusb_available():
        return CheckResult("libusb", "ok", "libusb-1.0 loads")
    return CheckResult("libusb", "fail", "libusb-1.0 cannot be loaded, so ZWO's SDK cannot be either",
                       "sudo apt-get install libusb-1.0-0   (Debian, Ubuntu, Raspberry Pi OS)")


def _elf_machine(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def check_sdk(sdk_path: str | None = None) -> CheckResult:
    """ZWO's libASICamera2: found where the server looks, built for this computer, and loadable."""
    from .cmd_list import SDK_FIX  # noqa: PLC0415

    try:
        path, where, _tried = sdk.find_sdk(sdk_path)
    except SdkNotFoundError as exc:
        return CheckResult("ZWO SDK", "fail", exc.message, SDK_FIX)
    machine = _elf_machine(path)
    host = _HOST_MACHINES.get(platform.machine().lower())
    if machine is not None and host is not None and machine != host:
        built = _ELF_MACHINES.get(machine, f"machine type {machine}")
        mine = _ELF_MACHINES.get(host, platform.machine())
        return CheckResult("ZWO SDK", "fail", f"{path} ({where}) is built for {built}, but this computer is {mine}",
                           f"use the {mine} build of libASICamera2 (for ARM 64-bit: lib/armv8 in ZWO's "
                           "ASI_linux_mac_SDK); see docs/raspberry-pi.md")
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        fix = SDK_FIX if "libusb" not in str(exc) else "sudo apt-get install libusb-1.0-0"
        return CheckResult("ZWO SDK", "fail", f"{path} ({where}) cannot be loaded: {exc}", fix)
    version = ""
    fn = getattr(lib, "ASIGetSDKVersion", None)
    if fn is not None:
        fn.restype = ctypes.c_char_p
        try:
            raw = fn()
            version = f", version {raw.decode('ascii', 'replace').replace(', ', '.')}" if raw else ""
        except Exception:  # noqa: BLE001 - an odd build without the call behaving: the version is only informative
            version = ""
    return CheckResult("ZWO SDK", "ok", f"{path} ({where}){version}")


def _rule_files(dirs: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir():
            files.extend(sorted(p.glob("*.rules")))
    return files


def check_udev_rules(dirs: Sequence[str] = UDEV_DIRS) -> CheckResult:
    """A udev rule for ZWO's USB vendor id (03c3) that gives non-root users access to the camera."""
    found: list[tuple[Path, bool]] = []
    for f in _rule_files(dirs):
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        matching = [ln for ln in lines if _VENDOR_RE.search(ln) and not ln.lstrip().startswith("#")]
        if matching:
            grants = any(("MODE" in ln or "GROUP" in ln or "uaccess" in ln) for ln in matching)
            found.append((f, grants))
    if not found:
        return CheckResult("udev rules", "fail",
                           f"no rule for ZWO's USB vendor id {ZWO_VENDOR_ID} in {', '.join(dirs)}: only root can "
                           "open the camera", _udev_fix())
    names = ", ".join(str(f) for f, _ in found)
    if not any(g for _, g in found):
        return CheckResult("udev rules", "warn", f"{names} mention{'s' if len(found) == 1 else ''} vendor id "
                           f"{ZWO_VENDOR_ID} but set no MODE, GROUP or uaccess tag", _udev_fix())
    return CheckResult("udev rules", "ok", f"vendor id {ZWO_VENDOR_ID} handled by {names}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def check_usb_devices(sysfs: str = "/sys/bus/usb/devices", devfs: str = "/dev/bus/usb") -> CheckResult:
    """ZWO devices on the USB bus right now, whether this user may open them, and their link speed."""
    base = Path(sysfs)
    if not base.is_dir():
        return CheckResult("USB devices", "warn", f"{sysfs} is not readable: cannot see USB devices here",
                           "run doctor on the computer the camera is plugged into (not inside a container)")
    seen: list[str] = []
    problems: list[str] = []
    slow: list[str] = []
    for dev in sorted(base.iterdir()):
        if (_read(dev / "idVendor") or "").lower() != ZWO_VENDOR_ID:
            continue
        product = _read(dev / "product") or f"ZWO device {_read(dev / 'idProduct')}"
        busnum, devnum = _read(dev / "busnum"), _read(dev / "devnum")
        speed = _read(dev / "speed") or "?"
        seen.append(f"{product} (bus {busnum}, {speed} Mbit/s)")
        if busnum and devnum:
            node = Path(devfs) / f"{int(busnum):03d}" / f"{int(devnum):03d}"
            if node.exists() and not os.access(node, os.R_OK | os.W_OK):
                problems.append(f"{product}: {node} is not readable and writable by this user")
        usb_version = _read(dev / "version") or ""
        if usb_version.startswith("3") and speed.isdigit() and int(speed) < 5000:
            slow.append(f"{product} is a USB 3 camera running at USB 2 speed ({speed} Mbit/s)")
    if problems:
        return CheckResult("USB devices", "fail", "; ".join(problems),
                           "install the udev rule (see 'udev rules') and add the user to the plugdev group, "
                           "then replug the camera")
    if not seen:
        return CheckResult("USB devices", "warn", f"no ZWO device (vendor id {ZWO_VENDOR_ID}) on USB right now",
                           "check the USB cable, and the 12 V supply of cooled cameras; 'lsusb' should list ZWO")
    if slow:
        return CheckResult("USB devices", "warn", "; ".join(slow),
                           "plug it into a blue USB 3 port with a USB 3 cable (a USB 2 hub or extension slows "
                           "downloads about 10x)")
    return CheckResult("USB devices", "ok", "; ".join(seen))


def check_usbfs_memory(path: str = USBFS_PATH, recommended_mb: int = USBFS_RECOMMENDED_MB) -> CheckResult:
    """The kernel's usbfs memory limit (default 16 MB); ZWO recommends raising it, e.g. to 200 MB."""
    text = _read(Path(path))
    if text is None:
        return CheckResult("usbfs memory", "warn", f"{path} cannot be read (no usbcore module here?)",
                           "nothing to do unless a camera is attached to this machine")
    try:
        mb = int(text)
    except ValueError:
        return CheckResult("usbfs memory", "warn", f"{path} holds {text!r}, not a number")
    if mb == 0:
        return CheckResult("usbfs memory", "ok", "usbfs memory limit: none (0 = unlimited)")
    if mb >= recommended_mb:
        return CheckResult("usbfs memory", "ok", f"usbfs memory limit {mb} MB (>= {recommended_mb} MB)")
    return CheckResult(
        "usbfs memory", "fail",
        f"usbfs memory limit is {mb} MB; large sensors need more (ZWO recommends {recommended_mb} MB or more), "
        "or exposures time out and frames come back empty",
        f"now: echo 256 | sudo tee {path}   to keep it: the udev rule in packaging/99-zwo-asi.rules raises it "
        "whenever a ZWO camera is plugged in; or add usbcore.usbfs_memory_mb=256 to the kernel command line "
        "(Raspberry Pi: /boot/firmware/cmdline.txt; PC: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, "
        "then sudo update-grub)")


def _port_owner(proto: str, port: int) -> str | None:
    """Best effort: which process holds the port (only visible for our own processes unless root)."""
    inodes: set[str] = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10:
                continue
            local, state, inode = cols[1], cols[3], cols[9]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and state != "0A":  # only LISTEN sockets block a server
                continue
            inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    return f"pid {pid}: {cmd.strip()[:80]}"
        except OSError:
            continue
    return None


def check_port(port: int, proto: str = "tcp", host: str = "", label: str = "") -> CheckResult:
    """Whether `port` can be bound on `host` ("" = all addresses): a bind test that sends nothing."""
    name = f"port {port}/{proto}"
    what = f"{proto.upper()} port {port}" + (f" ({label})" if label else "")
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        # Bind the way the server does, so "free" means "the server can bind it": SO_REUSEADDR for TCP
        # (a port left in TIME_WAIT by a previous run is free; a listening one is not), and for the
        # discovery port also SO_REUSEPORT, which lets several Alpaca servers share UDP 32227.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if proto == "udp" and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if proto == "tcp":
            sock.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            owner = _port_owner(proto, port)
            who = f" by {owner}" if owner else ""
            fix = ("if it is zwo-alpaca already running as a service: 'systemctl status zwo-alpaca' "
                   "(stop it, or use it); "
                   f"otherwise see what holds it with 'sudo ss -lpn sport = :{port}' and stop that program, or run "
                   "the server on another port")
            if proto == "udp":
                fix = (f"another program holds UDP {port} without SO_REUSEPORT, so the server will run without "
                       f"Alpaca discovery (clients can still connect by address); find it with "
                       f"'sudo ss -ulpn sport = :{port}', or give the server --no-discovery")
            if "zwo-alpaca" in (owner or "") or "zwo_runtime" in (owner or "") or "alpaca_server" in (owner or ""):
                fix = "zwo-alpaca is already running and holds the port: use it, or stop it first " \
                      "('sudo systemctl stop zwo-alpaca', or Ctrl-C in its terminal)"
            return CheckResult(name, "fail", f"{what} is in use{who}", fix)
        if exc.errno == errno.EACCES:
            return CheckResult(name, "fail", f"not allowed to bind {proto.upper()} port {port}: {exc.strerror}",
                               "ports below 1024 need root; use the default ports")
        return CheckResult(name, "fail", f"cannot bind {proto.upper()} port {port}: {exc.strerror or exc}")
    finally:
        sock.close()
    if proto == "udp":
        sharer = _port_owner(proto, port)
        if sharer:
            return CheckResult(name, "ok", f"{what} can be bound; shared with {sharer} (fine: Alpaca servers "
                               "share the discovery port and all of them answer)")
    return CheckResult(name, "ok", f"{what} is free")


def check_ports(ports: Sequence[tuple[str, int, str]] = DEFAULT_PORTS, host: str = "") -> list[CheckResult]:
    """`check_port` for each of (proto, port, label)."""
    return [check_port(port, proto, host, label) for proto, port, label in ports]


def check_groups(user: str | None = None, required: Sequence[str] = ("plugdev",),
                 recommended: Sequence[str] = ("video",)) -> CheckResult:
    """The user the server runs as is in plugdev (our udev rule's group) and video; root needs neither."""
    try:
        pw = pwd.getpwuid(os.getuid()) if user is None else pwd.getpwnam(user)
    except KeyError:
        return CheckResult("groups", "fail", f"there is no user {user!r}",
                           f"sudo useradd --system --create-home --groups plugdev,video {user}")
    if pw.pw_uid == 0:
        return CheckResult("groups", "ok", "running as root, which may open any device (the systemd service "
                           "runs as a normal user in plugdev and video; see packaging/)")
    member: set[str] = set()
    for g in grp.getgrall():
        if pw.pw_name in g.gr_mem or g.gr_gid == pw.pw_gid:
            member.add(g.gr_name)
    missing_req = [g for g in required if g not in member]
    missing_rec = [g for g in recommended if g not in member]
    nonexistent = [g for g in (*required, *recommended) if not _group_exists(g)]
    if nonexistent:
        return CheckResult("groups", "fail", f"group(s) {', '.join(nonexistent)} do not exist on this system",
                           f"sudo groupadd --system {nonexistent[0]}" + "".join(f"; sudo groupadd --system {g}"
                                                                              for g in nonexistent[1:]))
    if missing_req or missing_rec:
        missing = missing_req + missing_rec
        return CheckResult("groups", "fail" if missing_req else "warn",
                           f"{pw.pw_name} is not in {', '.join(missing)}"
                           + (" (the udev rule gives the camera to plugdev)" if missing_req else ""),
                           f"sudo usermod -aG {','.join(missing)} {pw.pw_name}; then log out and back in")
    if user is None:
        # In the database but not in this login session: group changes apply from the next login.
        active = {grp.getgrgid(g).gr_name for g in os.getgroups() if _gid_exists(g)}
        stale = [g for g in required if g not in active]
        if stale:
            return CheckResult("groups", "warn", f"{pw.pw_name} was added to {', '.join(stale)} but this login "
                               "session does not have it yet", "log out and back in (or reboot)")
    return CheckResult("groups", "ok", f"{pw.pw_name} is in {', '.join((*required, *recommended))}")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _gid_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def check_python_packages(names: Sequence[str] = ("zwoasi", "numpy", "aiohttp", "orjson")) -> CheckResult:
    """The Python packages the server imports are installed."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        return CheckResult("Python packages", "fail", f"missing: {', '.join(missing)}",
                           "pip install --upgrade zwo-alpaca   (in the same virtualenv)")
    return CheckResult("Python packages", "ok", ", ".join(names) + " installed")


def check_config(path: str | None = None) -> CheckResult:
    """The config file, when there is one, is valid JSON and its folder writable (the server saves to it)."""
    from zwo_common.config import default_config_path  # noqa: PLC0415

    p = Path(path).expanduser() if path else default_config_path()
    if not p.exists():
        parent = next((d for d in (p.parent, *p.parent.parents) if d.exists()), None)
        if parent is not None and not os.access(parent, os.W_OK):
            return CheckResult("config file", "warn", f"{p} does not exist and {parent} is not writable, so "
                               "settings made on the setup page cannot be saved",
                               f"create the folder and give it to this user: sudo install -d -o $USER {p.parent}")
        return CheckResult("config file", "ok", f"{p} not created yet (the server writes it on first start)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return CheckResult("config file", "fail", f"{p} cannot be read: {exc}",
                           f"fix the JSON by hand (see docs/configuration.md), or move it away: mv {p} {p}.old")
    if not isinstance(data, dict):
        return CheckResult("config file", "fail", f"{p} is not a JSON object", f"mv {p} {p}.old")
    if not os.access(p, os.W_OK):
        return CheckResult("config file", "warn", f"{p} is not writable by this user: setup-page changes are not saved",
                           f"sudo chown $USER {p}")
    return CheckResult("config file", "ok", f"{p} ({len(data.get('cameras') or {})} camera(s) remembered)")


def check_history(config_path: str | None = None, now: Any = None) -> list[CheckResult]:
    """Each camera's recorded history (``history/`` next to the config file): last night's USB drops
    and how long each recovery took, exposures by outcome, errors (``zwo_common/history.py``).

    A drop is a warning: the server recovered, but drops point at the cable, the port or the power.
    ``now``: the local time to take "last night" from (tests pass their own)."""
    from zwo_common import history  # noqa: PLC0415 - only this check needs it
    from zwo_common.config import Config  # noqa: PLC0415

    config = Config(Path(config_path).expanduser()) if config_path else None
    folder = history.history_dir(config)
    files = sorted(p for p in folder.glob("*.jsonl") if not p.name.endswith(".samples.jsonl")) \
        if folder.is_dir() else []
    if not files:
        return [CheckResult("history", "ok", f"no camera history yet ({folder}; the server records one per camera)")]
    results = []
    for path in files:
        records = history.load_records(path)
        names = [r.get("camera") for r in records if r.get("type") == "server_start" and r.get("camera")]
        name = str(names[-1]) if names else path.stem
        text, spans = history.night_summary(records, now)
        drops = sum(int(span.get("drops", 0)) for span in spans.values())
        status = "warn" if drops else "ok"
        fix = None
        if drops:
            fix = ("USB drops point at the cable, the port, a hub or the power: see 'Exposures time out, frames "
                   "drop, the camera disconnects' in docs/troubleshooting.md; the timeline is on the camera's "
                   "history page (/setup/v1/camera/N/history)")
        results.append(CheckResult("history", status, f"{name}: {text}", fix))
    return results


def run_checks(args: argparse.Namespace | None = None) -> list[CheckResult]:
    """Every check, in the order they are printed."""
    a = args or argparse.Namespace()
    host = getattr(a, "bind", "") or ""
    if host == "0.0.0.0":
        host = ""
    ports = (("tcp", getattr(a, "port", 11111), "Alpaca HTTP"), ("tcp", getattr(a, "indi_port", 7624), "INDI"),
             ("udp", getattr(a, "discovery_port", 32227), "Alpaca discovery"))
    results = [check_python_packages(), check_libusb(), check_sdk(getattr(a, "sdk", None)), check_udev_rules(),
               check_usb_devices(), check_usbfs_memory(), check_groups(getattr(a, "user", None))]
    results += check_ports(tuple(p for p in ports if p[1]), host)
    results.append(check_config(getattr(a, "config", None)))
    results += check_history(getattr(a, "config", None))
    return results


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def add_parser(subparsers: Any) -> None:
    """Register `zwo-alpaca doctor`."""
    p = subparsers.add_parser(
        "doctor", help="check this machine for what the camera server needs, with a fix for each problem",
        description="Check libusb, ZWO's SDK, udev rules, USB devices, the usbfs memory limit, group membership, "
                    "free ports and the config file, summarise each camera's last night (USB drops, recovery times, "
                    "exposures), and print a fix for each problem. Exit status 0 when "
                    "nothing failed, 1 otherwise.")
    p.add_argument("--sdk", metavar="PATH", help="check this libASICamera2 instead of searching for it")
    p.add_argument("--user", metavar="NAME", help="check this user's groups (e.g. the service user zwo-alpaca; "
                   "default: you)")
    p.add_argument("--bind", default="", metavar="ADDR", help="address the server will listen on (default: all)")
    p.add_argument("--port", type=int, default=11111, metavar="N", help="Alpaca HTTP port to check (default 11111)")
    p.add_argument("--indi-port", type=int, default=7624, metavar="N", help="INDI port to check (default 7624; "
                   "0 skips)")
    p.add_argument("--discovery-port", type=int, default=32227, metavar="N",
                   help="Alpaca discovery UDP port to check (default 32227; 0 skips)")
    p.add_argument("--config", metavar="FILE", help="config file to check (default ~/.config/zwo-alpaca/config.json)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


_MARK = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}


def format_result(r: CheckResult) -> str:
    """One check as text: status, name, detail, and the fix on the next line when not ok."""
    line = f"{_MARK.get(r.status, r.status.upper()):<5} {r.name:<16} {r.detail}"
    if r.fix and r.status != "ok":
        line += f"\n{'':<22}fix: {r.fix}"
    return line


def run(args: argparse.Namespace) -> int:
    """Run every check and print the report; 0 when nothing failed, 1 otherwise."""
    logsetup.setup_from_args(args)
    results = run_checks(args)
    failed = [r for r in results if r.status == "fail"]
    warned = [r for r in results if r.status == "warn"]
    if getattr(args, "json", False):
        print(json.dumps({"ok": not failed, "checks": [dataclasses.asdict(r) for r in results]}, indent=2))
    else:
        for r in results:
            print(format_result(r))
        print()
        if failed:
            print(f"{len(failed)} problem(s) found" + (f", {len(warned)} warning(s)" if warned else "")
                  + ": apply the fixes above, then run 'zwo-alpaca doctor' again.")
        else:
            print("All checks passed" + (f" ({len(warned)} warning(s))" if warned else "") + ".")
    return 1 if failed else 0
