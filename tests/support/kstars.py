"""Run the real KStars/Ekos headless for tests: Xvfb, a private D-Bus session bus and KStars with a
private HOME, all started (and stopped) by PID; Ekos is driven with Qt's ``qdbus`` tool.

``scripts/bootstrap-kstars`` installs the Debian packages this needs.

KStars 3.6's Ekos D-Bus API cannot create profiles (``org.kde.kstars.Ekos`` has ``getProfiles`` and
``setProfile`` but no ``addProfile``), so :meth:`KStars.add_remote_profile` writes the profile into
KStars' own user database (``~/.local/share/kstars/userdb.sqlite``, tables ``profile`` and
``driver``) after KStars has created it and before the Ekos window (which loads the profiles) is
opened.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

TOOLS = ("kstars", "Xvfb", "dbus-daemon", "qdbus")
SERVICE = "org.kde.kstars"
EKOS_ACTION = "/kstars/MainWindow_1/actions/ekos"


def missing_tools() -> list[str]:
    """The programs of :data:`TOOLS` that are not on ``PATH``."""
    return [t for t in TOOLS if shutil.which(t) is None]


def _stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (by PID), SIGKILL after ``timeout``; wait for it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass


def _no_core_dumps() -> None:
    # KStars 3.6.2 (and kwalletd5, which D-Bus activation starts) sometimes crash; their core files
    # (tens of MB) would land in the current directory, i.e. the repository.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _popen(args: list[str], log: Path, **kw) -> subprocess.Popen:
    """Start ``args`` in its own session with stdout+stderr to ``log``, in the log's directory unless
    ``cwd`` is given (so nothing it or its children write lands in the repository), without core dumps."""
    kw.setdefault("cwd", str(log.parent))
    with open(log, "wb") as fh:
        return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_no_core_dumps, **kw)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


class KStars:
    """Xvfb + dbus-daemon + KStars under ``workdir``; use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / "home"
        self.xvfb: subprocess.Popen | None = None
        self.dbus: subprocess.Popen | None = None
        self.kstars: subprocess.Popen | None = None
        self.display = ""
        self.bus = ""
        self.env: dict[str, str] = {}
        self.t0 = time.monotonic()
        self.timeline: list[str] = []  # "12.3 s  what" for every bounded wait, for diagnostics

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.t0:6.1f} s  {what}")

    # ----------------------------------------------------------------- processes
    def start(self, timeout: float = 90.0) -> None:
        """Start Xvfb, a session bus and KStars; return once KStars answers on D-Bus."""
        self.home.mkdir(parents=True, exist_ok=True)
        runtime = self.workdir / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DBUS_", "XDG_", "KDE", "QT_", "WAYLAND", "DISPLAY", "SESSION_MANAGER"))}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_DATA_HOME=str(self.home / ".local/share"), XDG_CACHE_HOME=str(self.home / ".cache"),
                   XDG_RUNTIME_DIR=str(runtime), QT_QPA_PLATFORM="xcb", LANG="C.UTF-8", LC_ALL="C.UTF-8")

        # Xvfb picks a free display itself and writes its number to -displayfd.
        rfd, wfd = os.pipe()
        try:
            self.xvfb = _popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                               self.workdir / "xvfb.log", pass_fds=(wfd,), env=env)
        finally:
            os.close(wfd)
        self.display = ":" + self._read_line(rfd, 20.0, "Xvfb did not report its display")
        env["DISPLAY"] = self.display

        rfd, wfd = os.pipe()
        try:
            self.dbus = _popen(["dbus-daemon", "--session", "--nofork", f"--print-address={wfd}",
                                f"--address=unix:path={runtime}/bus"],
                               self.workdir / "dbus.log", pass_fds=(wfd,), env=env)
        finally:
            os.close(wfd)
        self.bus = self._read_line(rfd, 20.0, "dbus-daemon did not report its address")
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus
        self.env = env

        # KStars 3.6.2 occasionally dies of SIGSEGV while starting up, before it is on D-Bus (about
        # 1 start in 15 here, nothing to do with the INDI server, which it has not contacted yet):
        # start it again then, at most twice, keeping the crashed run's log.
        for attempt in range(1, 4):
            self.kstars = _popen(["kstars"], self.workdir / "kstars.log", env=env, cwd=str(self.home))
            try:
                # /KStars is registered early; the main window's actions (Ekos' among them) once
                # KStars has loaded its data and user database.
                self.wait_for(lambda: EKOS_ACTION in self.qdbus(check=False).splitlines(), timeout,
                              "KStars' main window on D-Bus")
                return
            except RuntimeError:
                rc = self.kstars.poll()
                if rc is None or rc >= 0 or attempt == 3:
                    raise
                self.note(f"KStars crashed during start-up (signal {-rc}); starting it again")
                (self.workdir / "kstars.log").rename(self.workdir / f"kstars-crash{attempt}.log")

    def stop(self) -> None:
        """Quit KStars (D-Bus, then SIGTERM/SIGKILL by PID), then the bus and Xvfb."""
        if self.kstars is not None and self.kstars.poll() is None:
            self.qdbus("/kstars/MainWindow_1/actions/quit", "trigger", check=False, timeout=5)
            try:
                self.kstars.wait(3)
                self.note(f"KStars quit ({self.kstars.returncode})")
            except subprocess.TimeoutExpired:
                self.note("KStars did not quit within 3 s: SIGTERM")
        _stop(self.kstars)
        _stop(self.dbus)
        _stop(self.xvfb)
        self.note("stopped KStars, dbus-daemon and Xvfb")

    def __enter__(self) -> KStars:
        try:
            self.start()
        except BaseException:
            print(self.diagnostics())
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _read_line(fd: int, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        buf = b""
        os.set_blocking(fd, False)
        try:
            while time.monotonic() < deadline and b"\n" not in buf:
                try:
                    chunk = os.read(fd, 256)
                except BlockingIOError:
                    time.sleep(0.05)
                    continue
                if not chunk:
                    break
                buf += chunk
        finally:
            os.close(fd)
        line = buf.decode().strip()
        if not line:
            raise RuntimeError(what)
        return line

    # ----------------------------------------------------------------- D-Bus
    def qdbus(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """``qdbus org.kde.kstars ARGS...`` on the private bus; stdout (stripped)."""
        try:
            r = subprocess.run(["qdbus", SERVICE, *args], env=self.env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            if check:
                raise
            return ""
        if check and r.returncode != 0:
            raise RuntimeError(f"qdbus {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout.strip()

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.5) -> None:
        """Poll ``predicate`` until true; RuntimeError after ``timeout`` s or if KStars exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kstars is not None and self.kstars.poll() is not None:
                raise RuntimeError(f"KStars exited ({self.kstars.returncode}) waiting for {what}")
            if predicate():
                self.note(f"done: {what}")
                return
            time.sleep(interval)
        self.note(f"timed out: {what}")
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")

    # ----------------------------------------------------------------- Ekos set-up
    @property
    def userdb(self) -> Path:
        return self.home / ".local/share/kstars/userdb.sqlite"

    def add_remote_profile(self, name: str, host: str, port: int, ccd_label: str = "ZWO CCD") -> None:
        """Write an Ekos profile "Mode: Remote, host:port, CCD = ccd_label" into KStars' user DB."""
        self.wait_for(self.userdb.exists, 30, "KStars' userdb.sqlite")
        with sqlite3.connect(self.userdb, timeout=10) as db:
            cur = db.execute("INSERT INTO profile (name, host, port, autoconnect, guidertype, indihub,"
                             " portselector) VALUES (?, ?, ?, 1, 0, 0, 0)", (name, host, port))
            db.execute("INSERT INTO driver (label, role, profile) VALUES (?, 'CCD', ?)",
                       (ccd_label, cur.lastrowid))
            # Not every Debian has indi-3rdparty's driver list: make the label known to KStars.
            db.execute("INSERT OR IGNORE INTO customdrivers (Name, Label, Manufacturer, Family, Exec, Version)"
                       " VALUES (?, ?, 'ZWO', 'CCDs', 'indi_asi_ccd', '1.0')", (ccd_label, ccd_label))
        db.close()

    def open_ekos(self, profile: str, timeout: float = 60.0) -> None:
        """Open the Ekos window (KStars' "Ekos" action) and wait until it lists ``profile``."""
        def ready() -> bool:
            profiles = self.qdbus("/KStars/Ekos", "getProfiles", check=False, timeout=10).splitlines()
            if profile in profiles:
                return True
            if "/KStars/Ekos" not in self.qdbus(check=False).splitlines():
                # The trigger's reply can be late (the window is built first): ignore its result.
                self.qdbus(EKOS_ACTION, "trigger", check=False, timeout=30)
            return False

        self.wait_for(ready, timeout, f"the Ekos window listing profile {profile!r}", interval=1.0)

    def diagnostics(self) -> str:
        """Log tails and process states, for a failing test."""
        parts = []
        for name, proc in (("Xvfb", self.xvfb), ("dbus-daemon", self.dbus), ("kstars", self.kstars)):
            state = "not started" if proc is None else (
                "running" if proc.poll() is None else f"exited {proc.returncode}")
            parts.append(f"{name}: {state}")
        parts.append(f"DISPLAY={self.display} DBUS_SESSION_BUS_ADDRESS={self.bus}")
        parts.append("--- timeline\n" + "\n".join(self.timeline))
        for log in ("xvfb.log", "dbus.log"):
            parts.append(f"--- {log}\n{_tail(self.workdir / log, 15)}")
        parts.append(f"--- kstars.log (tail)\n{_tail(self.workdir / 'kstars.log', 80)}")
        return "\n".join(parts)
