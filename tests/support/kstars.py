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
import re
import resource
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

from support.servers import stop_process

TOOLS = ("kstars", "Xvfb", "dbus-daemon", "qdbus")
SERVICE = "org.kde.kstars"
EKOS_IF = "org.kde.kstars.Ekos"
CAPTURE = "/KStars/Ekos/Capture"
#: Debug output of KStars' INDI layer and of the Ekos modules the tests drive (Qt logging rules).
DEBUG_LOG_RULES = ("org.kde.kstars.indi.debug=true;org.kde.kstars.ekos.debug=true;"
                   "org.kde.kstars.ekos.capture.debug=true;org.kde.kstars.ekos.guide.debug=true")
EKOS_ACTION = "/kstars/MainWindow_1/actions/ekos"
#: Qt's message pattern (KStars 3.6 sets none): each log line starts with the seconds since KStars
#: started, to the millisecond, so the times between Ekos' own log lines can be measured.
TIMED_LOG_PATTERN = "[%{time process}] %{if-category}%{category}: %{endif}%{message}"
_TIMED_LINE = re.compile(r"^\[\s*([0-9]+\.[0-9]+)\] (.*)$")


def missing_tools() -> list[str]:
    """The programs of :data:`TOOLS` that are not on ``PATH``."""
    return [t for t in TOOLS if shutil.which(t) is None]


def _stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (by PID), SIGKILL after ``timeout``; wait for it."""
    if proc is not None:
        stop_process(proc, grace=timeout)


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

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.extra_env = dict(extra_env or {})  # e.g. QT_LOGGING_RULES for Ekos' debug output
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
        env.update(self.extra_env)

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

    def add_remote_profile(self, name: str, host: str, port: int, ccd_label: str = "ZWO CCD",
                           others: dict[str, str] | None = None) -> None:
        """Write an Ekos profile "Mode: Remote, host:port, CCD = ccd_label" into KStars' user DB;
        ``others`` adds devices by the profile editor's role, e.g. ``{"Mount": "Telescope Simulator"}``
        (a remote profile counts its devices: Ekos waits for as many as it lists)."""
        self.wait_for(self.userdb.exists, 30, "KStars' userdb.sqlite")
        with sqlite3.connect(self.userdb, timeout=10) as db:
            cur = db.execute("INSERT INTO profile (name, host, port, autoconnect, guidertype, indihub,"
                             " portselector) VALUES (?, ?, ?, 1, 0, 0, 0)", (name, host, port))
            db.execute("INSERT INTO driver (label, role, profile) VALUES (?, 'CCD', ?)",
                       (ccd_label, cur.lastrowid))
            for role, label in (others or {}).items():
                db.execute("INSERT INTO driver (label, role, profile) VALUES (?, ?, ?)", (label, role, cur.lastrowid))
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

    def start_ekos(self, profile: str, host: str, port: int, timeout: float = 60.0) -> None:
        """Select ``profile``, start Ekos and wait until it is connected to the INDI server (indiStatus
        2 = Ekos::Success; with the profile's autoconnect the devices connect by themselves)."""
        if self.qdbus("/KStars/Ekos", "setProfile", profile) != "true":
            raise RuntimeError(f"Ekos does not know profile {profile!r}")
        self.qdbus("/KStars/Ekos", "start")
        self.wait_for(lambda: self.qdbus("/KStars/Ekos", f"{EKOS_IF}.indiStatus", check=False) == "2", timeout,
                      f"Ekos connecting to the INDI server at {host}:{port}")

    def stop_ekos(self, timeout: float = 20.0) -> None:
        """Stop Ekos (its INDI connection) and wait until it is idle."""
        self.qdbus("/KStars/Ekos", "stop")
        self.wait_for(lambda: self.qdbus("/KStars/Ekos", f"{EKOS_IF}.ekosStatus", check=False) == "0", timeout,
                      "Ekos to stop")

    def run_sequence(self, seq: Path, frames: int, timeout: float) -> None:
        """Load a one-job sequence queue into Capture (replacing any), run it and wait until its job
        is complete with ``frames`` images; RuntimeError if the job errs or is aborted."""
        self.qdbus(CAPTURE, "clearSequenceQueue")
        if self.qdbus(CAPTURE, "loadSequenceQueue", str(seq)) != "true":
            raise RuntimeError(f"Capture refused the sequence queue {seq}")
        if self.qdbus(CAPTURE, "getJobCount") != "1":
            raise RuntimeError(f"Capture did not load the one job of {seq}")
        self.qdbus(CAPTURE, "start")

        def job_done() -> bool:
            state = self.qdbus(CAPTURE, "getJobState", "0", check=False)
            if state in ("Error", "Aborted"):
                raise RuntimeError(f"Ekos capture job ended in state {state}")
            return state == "Complete"

        self.wait_for(job_done, timeout, f"Ekos capturing {frames} frames")
        progress = self.qdbus(CAPTURE, "getJobImageProgress", "0")
        if progress != str(frames):
            raise RuntimeError(f"Ekos' job completed with {progress} of {frames} frames")

    def module_property(self, module: str, prop: str) -> str:
        """A D-Bus property of an Ekos module, e.g. ``module_property("Capture", "camera")`` ("" if absent)."""
        return self.qdbus(f"/KStars/Ekos/{module}", f"org.kde.kstars.Ekos.{module}.{prop}", check=False)

    def module_log(self, module: str = "") -> str:
        """The log an Ekos module shows (``""``: Ekos' own), newest line first, as Ekos keeps it."""
        path = f"/KStars/Ekos/{module}" if module else "/KStars/Ekos"
        iface = f"org.kde.kstars.Ekos.{module}" if module else EKOS_IF
        return self.qdbus(path, f"{iface}.logText", check=False, timeout=5)

    def optical_trains(self) -> list[dict[str, str]]:
        """Ekos 3.6's optical trains as stored in the user database: which camera each module uses
        is looked up by INDI device name in the profile's train (``camera``, ``guider``)."""
        with sqlite3.connect(self.userdb, timeout=10) as db:
            db.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in db.execute("SELECT * FROM opticaltrains")]
            except sqlite3.OperationalError:  # the table appears with Ekos' first start
                rows = []
        db.close()
        return rows

    def edit_userdb(self, sql: str, *params: object) -> None:
        """Change KStars' user database while KStars is stopped (it keeps what it read in memory),
        e.g. a profile's port or an optical train's camera, as the profile editor would."""
        if self.kstars is not None and self.kstars.poll() is None:
            raise RuntimeError("edit_userdb needs KStars stopped")
        with sqlite3.connect(self.userdb, timeout=10) as db:
            db.execute(sql, params)
        db.close()

    def log_text(self) -> str:
        """KStars' whole log (stdout+stderr), e.g. to find debug lines enabled with QT_LOGGING_RULES."""
        try:
            return (self.workdir / "kstars.log").read_text(errors="replace")
        except OSError:
            return ""

    def timed_log(self, text: str) -> list[tuple[float, str]]:
        """``(seconds since KStars started, line)`` for each line of KStars' log containing ``text``;
        needs ``QT_MESSAGE_PATTERN`` = :data:`TIMED_LOG_PATTERN` in ``extra_env``."""
        out = []
        for line in self.log_text().splitlines():
            m = _TIMED_LINE.match(line)
            if m and text in m.group(2):
                out.append((float(m.group(1)), m.group(2)))
        return out

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
        if self.userdb.exists():
            parts.append(f"--- optical trains: {self.optical_trains()}")
        return "\n".join(parts)


def sequence_file(path: Path, frames_dir: Path, *, exposure: float, count: int, width: int, height: int,
                  capture_format: str = "", gain: int | None = None, filter_name: str = "") -> Path:
    """An Ekos sequence queue (format 2.4, as KStars 3.6 saves it) with one light-frame job of
    ``count`` full frames saved under ``frames_dir`` (Upload: Client). ``capture_format`` is a
    CCD_CAPTURE_FORMAT label ("" keeps the camera's); ``gain`` is set through CCD_CONTROLS;
    ``filter_name`` is a filter of the optical train's wheel, which Capture selects before exposing."""
    d = escape(str(frames_dir))
    props = ""
    if gain is not None:
        props = (f"<PropertyVector name='CCD_CONTROLS'>\n<OneElement name='Gain'>{gain}</OneElement>\n"
                 "</PropertyVector>\n")
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<SequenceQueue version='2.4'>
<GuideDeviation enabled='false'>2</GuideDeviation>
<GuideStartDeviation enabled='false'>2</GuideStartDeviation>
<Autofocus enabled='false'>0</Autofocus>
<RefocusOnTemperatureDelta enabled='false'>1</RefocusOnTemperatureDelta>
<RefocusEveryN enabled='false'>60</RefocusEveryN>
<RefocusOnMeridianFlip enabled='false'/>
<Job>
<Exposure>{exposure}</Exposure>
<Format>{escape(capture_format)}</Format>
<Encoding>FITS</Encoding>
{f"<Filter>{escape(filter_name)}</Filter>" if filter_name else ""}
<Binning><X>1</X><Y>1</Y></Binning>
<Frame><X>0</X><Y>0</Y><W>{width}</W><H>{height}</H></Frame>
<Type>Light</Type>
<Count>{count}</Count>
<Delay>0</Delay>
<TargetName>zwotest</TargetName>
<FITSDirectory>{d}</FITSDirectory>
<PlaceholderFormat>{d}/%t_%T_%e_%F</PlaceholderFormat>
<PlaceholderSuffix>3</PlaceholderSuffix>
<UploadMode>0</UploadMode>
<Properties>
{props}</Properties>
<Calibration><PreAction><Type>0</Type></PreAction>
<FlatDuration dark='false'><Type>Manual</Type></FlatDuration></Calibration>
</Job>
</SequenceQueue>
""")
    return path
