"""Frames to FITS files on disk: shared by `zwo-alpaca capture` and the web page's saving loop.

* :func:`fits_cards` / :func:`write_fits`: the header cards of a saved frame (the INDI camera
  keywords of :mod:`zwo_common.fits` plus EXPOSURE, DATE-END, READOUTM, BITDEPTH, SET-TEMP,
  FRAMENUM, SWCREATE, DATE) and the atomic write (temporary name, fsync, rename), so a program
  watching the folder never sees a half-written file.
* :func:`frame_path`: the command line's file names; :class:`FileNamer`: the web loop's
  file-name pattern (:data:`PATTERN_FIELDS`).
* :func:`capture_root` / :func:`resolve_directory`: a folder chosen on the web page must lie under
  the configured capture root (symlinks and ``..`` resolved first).
* :class:`FrameWriter`: a writer thread behind a bounded queue. The camera's capture thread only
  copies the frame into the queue and never waits for the disk; when the queue is full the frame is
  dropped and counted.
* :class:`CaptureLoops`: the web page's saving loops (one per camera) on top of the core's
  ``start_capture`` / schedule, with their intent persisted in a small state file next to the
  config file, so a loop running when the server stopped resumes, inside its window, after a restart.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from driver.models import CaptureWindow, Frame

from .atomic import write_text
from .fits import build_fits, camera_cards, date_obs
from .version import package_version

log = logging.getLogger("zwo_alpaca.capture")

DEFAULT_ROOT = "~/zwo-alpaca-captures"
DEFAULT_PATTERN = "{camera}_{date}-{time}_{seq:04d}.fits"
STATE_FILE = "capture-loops.json"
FITS_SUFFIXES = (".fits", ".fit", ".fts")

#: The fields a file-name pattern may use (Python format syntax, e.g. ``{seq:04d}``).
PATTERN_FIELDS: dict[str, str] = {
    "camera": "the camera model, e.g. ASI294MC-Pro",
    "serial": "the camera's serial number (or 'noserial')",
    "date": "UTC date the exposure started, YYYYMMDD",
    "time": "UTC time the exposure started, HHMMSS",
    "night": "local date of the evening the night began, YYYYMMDD (a frame at 02:00 belongs to the evening before)",
    "seq": "the frame's number in this loop: 1, 2, 3... (continues after a restart); e.g. {seq:04d}",
    "frame": "the camera's frame number since it connected",
    "exposure": "exposure time in seconds, e.g. 30 or 0.5",
    "gain": "the gain the frame was taken with",
    "type": "Light or Dark",
}
_SAMPLE = {"camera": "ASI294MC-Pro", "serial": "1A2B3C", "date": "20260101", "time": "220000", "night": "20260101",
           "seq": 1, "frame": 1, "exposure": "30", "gain": 120, "type": "Light"}
PATTERN_MAX = 200


class CaptureSetupError(ValueError):
    """A capture request that cannot be honoured (folder outside the root, bad pattern): shown as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------
# FITS cards and files
# ---------------------------------------------------------------------------------------------

def fits_cards(frame: Frame, *, pixel_size_um: float | None, set_temp: float | None = None,
               written: _dt.datetime | None = None) -> list[tuple[str, object, str]]:
    """The header cards of a saved frame: the INDI camera keywords plus what a later reader wants."""
    bayer = None
    if frame.bayer_pattern and frame.image_type in ("RAW8", "RAW16"):
        bayer = (frame.bayer_pattern, frame.bayer_offset_x, frame.bayer_offset_y)
    subframe = (frame.start_x, frame.start_y) if (frame.start_x or frame.start_y) else None
    end = frame.start_time + _dt.timedelta(seconds=frame.duration)
    extra: list[tuple[str, object, str]] = [
        ("EXPOSURE", float(frame.duration), "Exposure time (s), as older software reads it"),
        ("DATE-END", date_obs(end), "UTC end of observation"),
        ("READOUTM", frame.image_type, "Readout mode (image type)"),
        ("BITDEPTH", int(frame.bit_depth), "Significant bits of the sensor's ADC"),
    ]
    if set_temp is not None:
        extra.append(("SET-TEMP", float(set_temp), "Cooler set point (Celsius)"))
    extra += [
        ("FRAMENUM", int(frame.seq), "Frame number since the camera was connected"),
        ("SWCREATE", f"zwo-alpaca {package_version()}", "Software that wrote this file"),
        ("DATE", date_obs(written or _dt.datetime.now(_dt.UTC)), "UTC date the file was written"),
    ]
    return camera_cards(exptime=frame.duration, start=frame.start_time, instrume=frame.camera_name,
                        frame_type="Light" if frame.light else "Dark", xbin=frame.bin, ybin=frame.bin,
                        pixel_size_um=pixel_size_um, ccd_temp=frame.temperature, gain=frame.gain,
                        offset=frame.offset, bayer=bayer, subframe=subframe, extra=extra)


def write_fits(path: Path, frame: Frame, extra_headers: list[tuple[str, object, str]], *,
               exclusive: bool = False) -> Path:
    """Write `frame` as a FITS file at `path` atomically (temporary name, fsync, rename); returns `path`.

    ``exclusive``: never replace an existing file (FileExistsError instead), even against another
    writer racing for the same name; on file systems without hard links (FAT, exFAT) an existence
    check is the fallback.
    """
    image = build_fits(frame.data, extra_headers)
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(image.memoryview())
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # no hard links here: check, then rename
                if path.exists():
                    raise FileExistsError(f"{path} exists") from None
                os.replace(tmp, path)
            else:
                tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def slug(text: str) -> str:
    """`text` as a safe file-name part: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-") or "frame"


def frame_path(out: Path, prefix: str, frame: Frame, number: int) -> Path:
    """``<prefix>_<UTC start YYYYmmddTHHMMSS>Z_<number>.fits`` (the command line's names); never an
    existing file's name."""
    stamp = frame.start_time.astimezone(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    base = f"{prefix}_{stamp}Z_{number:05d}"
    path = out / f"{base}.fits"
    extra = 1
    while path.exists():  # a second run in the same second: keep both, never overwrite
        path = out / f"{base}-{extra}.fits"
        extra += 1
    return path


# ---------------------------------------------------------------------------------------------
# where files may go, and their names
# ---------------------------------------------------------------------------------------------

def capture_root(configured: str | os.PathLike[str] | None) -> Path:
    """The capture root as an absolute path with symlinks resolved (``~`` expanded; default :data:`DEFAULT_ROOT`)."""
    text = os.fspath(configured) if configured else DEFAULT_ROOT
    return Path(os.path.expanduser(text)).resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_directory(root: Path, text: str | None, *, create: bool = True) -> Path:
    """The folder ``text`` (relative to ``root``, or absolute) as a resolved path that lies under ``root``.

    Symlinks and ``..`` are resolved before the check, so neither can lead outside. ``create``:
    make the folder (and the root) if missing, and check that it is writable. Raises
    :class:`CaptureSetupError` with a message for the page.
    """
    raw = (text or "").strip()
    if "\x00" in raw:
        raise CaptureSetupError("the folder name contains a NUL character")
    given = Path(os.path.expanduser(raw)) if raw else root
    candidate = given if given.is_absolute() else root / given
    resolved = candidate.resolve()
    if not _inside(resolved, root):
        shown = raw or str(candidate)
        also = f" (it resolves to {resolved})" if str(resolved) != os.path.normpath(str(candidate)) else ""
        raise CaptureSetupError(
            f"folder {shown!r} is outside the capture root {root}{also}: choose a folder under it "
            "(the root is set with 'zwo-alpaca serve --capture-root DIR' or the config key server.capture_root)")
    if create:
        try:
            resolved.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CaptureSetupError(f"cannot create the folder {resolved}: {exc.strerror or exc}") from None
        again = resolved.resolve()  # a symlink swapped in meanwhile
        if not _inside(again, root):
            raise CaptureSetupError(f"folder {resolved} is outside the capture root {root}")
        if not resolved.is_dir():
            raise CaptureSetupError(f"{resolved} is not a folder")
        if not os.access(resolved, os.W_OK | os.X_OK):
            raise CaptureSetupError(f"the folder {resolved} is not writable by the server's user")
    return resolved


def check_pattern(pattern: str | None) -> str:
    """A valid file-name pattern (blank: :data:`DEFAULT_PATTERN`; ``.fits`` added when it has no FITS suffix).

    Only the fields of :data:`PATTERN_FIELDS`, no ``..`` or absolute paths (``/`` makes sub-folders).
    """
    text = (pattern or "").strip() or DEFAULT_PATTERN
    if len(text) > PATTERN_MAX:
        raise CaptureSetupError(f"file-name pattern is longer than {PATTERN_MAX} characters")
    if any(ord(ch) < 32 for ch in text) or "\\" in text:
        raise CaptureSetupError("file-name pattern may not contain control characters or '\\'")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise CaptureSetupError(f"file-name pattern {text!r}: {exc}") from None
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if name not in PATTERN_FIELDS or conversion:
            raise CaptureSetupError(f"file-name pattern {text!r}: unknown field {{{name}}}; valid: "
                                    + ", ".join("{" + f + "}" for f in PATTERN_FIELDS))
    try:
        sample = text.format(**_SAMPLE)
    except (ValueError, TypeError) as exc:
        raise CaptureSetupError(f"file-name pattern {text!r}: {exc}") from None
    if text.startswith("/") or any(part in ("", ".", "..") for part in sample.split("/")):
        raise CaptureSetupError(f"file-name pattern {text!r} must be a relative name without '..' or empty parts")
    if not text.lower().endswith(FITS_SUFFIXES):
        text += ".fits"
    return text


class FileNamer:
    """File names from a pattern (:data:`PATTERN_FIELDS`) under one folder; never an existing file."""

    def __init__(self, directory: Path, pattern: str, *, camera: str, serial: str | None,
                 clock: Callable[[], _dt.datetime] = _dt.datetime.now) -> None:
        self.directory = directory
        self.pattern = check_pattern(pattern)
        self.camera = slug(camera)
        self.serial = slug(serial) if serial else "noserial"
        self.clock = clock

    def fields(self, frame: Frame, seq: int) -> dict[str, object]:
        """The values of the pattern's fields for one frame."""
        start = frame.start_time if frame.start_time.tzinfo else frame.start_time.replace(tzinfo=_dt.UTC)
        utc = start.astimezone(_dt.UTC)
        local = start.astimezone()
        night = (local - _dt.timedelta(hours=12)).strftime("%Y%m%d")
        return {"camera": self.camera, "serial": self.serial, "date": utc.strftime("%Y%m%d"),
                "time": utc.strftime("%H%M%S"), "night": night, "seq": int(seq), "frame": int(frame.seq),
                "exposure": slug(f"{frame.duration:g}"), "gain": frame.gain if frame.gain is not None else "na",
                "type": "Light" if frame.light else "Dark"}

    def path(self, frame: Frame, seq: int, attempt: int = 0) -> Path:
        """The path for frame number ``seq``; ``attempt`` > 0 adds ``-1``, ``-2``... before the suffix."""
        name = self.pattern.format(**self.fields(frame, seq))
        if attempt:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}-{attempt}{dot}{suffix}"
        return self.directory / name


# ---------------------------------------------------------------------------------------------
# the writer thread
# ---------------------------------------------------------------------------------------------

class FrameWriter:
    """Writes frames to FITS files in its own thread, behind a bounded queue.

    :meth:`submit` is called on the camera's capture thread: it copies the frame (the core reuses
    its buffers) when there is room — at most ``max_frames`` frames and ``max_bytes`` bytes wait,
    though one frame always fits — and otherwise drops it and counts it in ``dropped``: the camera
    never waits for the disk. ``limit``: stop accepting after this many files are saved
    (``on_done`` is then called once, in the writer thread).
    """

    def __init__(self, namer: FileNamer, *, header: Callable[[Frame], list[tuple[str, object, str]]],
                 first_seq: int = 1, limit: int | None = None, max_frames: int = 4, max_bytes: int = 512 << 20,
                 on_done: Callable[[], None] | None = None, name: str = "frame-writer") -> None:
        self.namer = namer
        self._header = header
        self.next_seq = first_seq
        self.limit = limit
        self.max_frames = max(1, max_frames)
        self.max_bytes = max_bytes
        self._on_done = on_done
        self._queue: collections.deque[Frame] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._writing = False
        self._closed = False
        self.saved = 0
        self.dropped = 0
        self.failed = 0
        self.last_path: Path | None = None
        self.last_error: str | None = None
        self.write_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _accepted(self) -> int:
        return self.saved + len(self._queue) + (1 if self._writing else 0)

    def submit(self, frame: Frame) -> bool:
        """Queue a copy of ``frame`` (never blocks); False when it was dropped or not wanted."""
        size = int(frame.data.nbytes)
        with self._cond:
            if self._closed or (self.limit is not None and self._accepted() >= self.limit):
                return False
            if self._queue and (len(self._queue) >= self.max_frames or self._bytes + size > self.max_bytes):
                self.dropped += 1
                return False
        copy = dataclasses.replace(frame, data=np.array(frame.data, copy=True))
        with self._cond:
            if self._closed:
                return False
            self._queue.append(copy)
            self._bytes += size
            self._cond.notify_all()
        return True

    @property
    def queued(self) -> int:
        """Frames waiting to be written (the one being written included)."""
        with self._cond:
            return len(self._queue) + (1 if self._writing else 0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                frame = self._queue.popleft()
                self._bytes -= int(frame.data.nbytes)
                self._writing = True
            done = False
            try:
                self._write(frame)
            finally:
                with self._cond:
                    self._writing = False
                    done = self.limit is not None and self.saved >= self.limit
                    if done:
                        self._queue.clear()
                        self._bytes = 0
                        self._closed = True
                    self._cond.notify_all()
            if done:
                if self._on_done is not None:
                    try:
                        self._on_done()
                    except Exception:  # the loop's own business; logged
                        log.exception("capture loop: completion callback failed")
                return

    def _write(self, frame: Frame) -> None:
        started = time.monotonic()
        seq = self.next_seq
        try:
            cards = self._header(frame)
            for attempt in range(1000):
                path = self.namer.path(frame, seq, attempt)
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    write_fits(path, frame, cards, exclusive=True)
                    break
                except FileExistsError:
                    continue
            else:
                raise OSError(f"no free file name for {self.namer.path(frame, seq)}")
        except Exception as exc:  # noqa: BLE001 - disk full, folder removed: counted, shown, the loop goes on
            with self._cond:
                self.failed += 1
                first = self.last_error is None
                self.last_error = f"cannot write frame {seq}: {getattr(exc, 'strerror', None) or exc}"
            (log.warning if first else log.debug)("capture loop: %s", self.last_error)
            return
        with self._cond:
            self.next_seq = seq + 1
            self.saved += 1
            self.last_path = path
            self.last_error = None
            self.write_seconds += time.monotonic() - started
        log.debug("saved %s", path, extra={"camera": frame.camera_name, "path": str(path)})

    def flush(self, timeout: float) -> bool:
        """Wait (bounded) until every queued frame is written; True when the queue is empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        """Accept no more frames, write what is queued (bounded) and end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()


# ---------------------------------------------------------------------------------------------
# the web page's loops and their persisted intent
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LoopSpec:
    """What the user asked for: kept in the state file while the loop runs."""

    exposure: float
    mode: str = "exposure"
    save: bool = False
    directory: str = ""        # resolved, absolute (saving loops)
    pattern: str = DEFAULT_PATTERN
    count: int | None = None   # None: until stopped
    saved: int = 0             # files saved so far (a count loop saves only the rest after a restart)
    next_seq: int = 1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> LoopSpec | None:
        """The spec stored in the state file, or None when the entry is not usable."""
        if not isinstance(raw, dict):
            return None
        try:
            count = raw.get("count")
            spec = cls(exposure=float(raw["exposure"]), mode=str(raw.get("mode", "exposure")),
                       save=bool(raw.get("save", False)), directory=str(raw.get("directory", "") or ""),
                       pattern=str(raw.get("pattern") or DEFAULT_PATTERN),
                       count=int(count) if count is not None else None, saved=int(raw.get("saved", 0)),
                       next_seq=int(raw.get("next_seq", 1)))
        except (KeyError, TypeError, ValueError):
            return None
        return spec if spec.exposure > 0 and spec.next_seq >= 1 and spec.saved >= 0 else None


class LoopStore:
    """The state file (JSON, written atomically): the loops that should be running, by camera key."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("capture loop state %s could not be read (%s); starting without it", self.path, exc)
            return {}
        loops = data.get("loops") if isinstance(data, dict) else None
        return loops if isinstance(loops, dict) else {}

    def load(self, key: str) -> LoopSpec | None:
        """The stored loop of one camera."""
        with self._lock:
            return LoopSpec.from_json(self._read().get(key))

    def put(self, key: str, spec: LoopSpec | None) -> None:
        """Store (or with None forget) one camera's loop; errors are logged, not raised."""
        if self.path is None:
            return
        with self._lock:
            loops = self._read()
            if spec is None:
                if key not in loops:
                    return
                loops.pop(key, None)
            else:
                loops[key] = spec.to_json()
            text = json.dumps({"version": 1, "loops": loops}, indent=2, sort_keys=True) + "\n"
            try:
                write_text(self.path, text, prefix=".capture-loops-")
            except OSError as exc:
                log.warning("could not save the capture loop state %s: %s", self.path, exc)


# How often a running loop's counters are written to the state file (and at every stop).
PERSIST_INTERVAL_S = 5.0
# A loop whose camera was disconnected is forgotten after this long, unless the server is shutting
# down (then the loop resumes at the next start): the shutdown releases every camera too, and is
# over well within this time.
FORGET_AFTER_DISCONNECT_S = 3.0
# A resumed loop tries to connect a camera that is absent or busy after 2, 4, 8... s, at most this.
RESUME_RETRY_S = 30.0


class CaptureLoop:
    """One camera's loop: the core's continuous capture, feeding a :class:`FrameWriter` when saving.

    Started by the page (:meth:`CaptureLoops.start`) on a connected camera, or resumed after a restart
    (:meth:`CaptureLoops.resume`): then it waits for the capture window (if the camera has one),
    connects the camera and starts capturing. A monitor thread watches the core's state: the loop
    ends when its count is saved, when it is stopped, when the camera is disconnected, or when the
    core gives up capturing; it survives unplugging (the core reconnects) and off-peak periods.
    """

    def __init__(self, owner: CaptureLoops, key: str, cam: Any, spec: LoopSpec, *, number: int,
                 logger: logging.Logger) -> None:
        self._owner = owner
        self.key = key
        self.cam: Any = cam
        self.spec = spec
        self.number = number
        self.log = logger
        self.writer: FrameWriter | None = None
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.phase = "starting"
        self.message = ""
        self.error: str | None = None
        self._base_saved = spec.saved
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- frames
    def _make_writer(self) -> FrameWriter:
        cam = self.cam
        info = cam.info
        namer = FileNamer(Path(self.spec.directory), self.spec.pattern,
                          camera=info.model if info is not None else cam.name,
                          serial=info.serial if info is not None else None)
        pixel = info.pixel_size_um if info is not None else None
        left = None if self.spec.count is None else max(0, self.spec.count - self.spec.saved)

        def header(frame: Frame) -> list[tuple[str, object, str]]:
            s = cam.settings
            set_temp = s.target_temperature if s.cooler_on else None
            return fits_cards(frame, pixel_size_um=pixel, set_temp=set_temp)

        return FrameWriter(namer, header=header, first_seq=self.spec.next_seq, limit=left,
                           on_done=self._count_done, name=f"camera{self.number}-writer")

    def on_frame(self, frame: Frame) -> None:
        """The core's frame callback (its capture thread): queue the frame, never wait."""
        writer = self.writer
        if writer is None or self.stop_event.is_set():
            return
        window = self.cam.schedule
        if window is not None and not window.contains(_dt.datetime.now()):
            return  # finished as the window closed: outside what the user asked for
        writer.submit(frame)

    def _count_done(self) -> None:
        self.message = f"done: {self.saved} file(s) saved"
        self.phase = "done"
        self.stop_event.set()

    @property
    def saved(self) -> int:
        """Files saved by this loop, across restarts."""
        return self._base_saved + (self.writer.saved if self.writer is not None else 0)

    def current_spec(self) -> LoopSpec:
        w = self.writer
        if w is None:
            return self.spec
        return dataclasses.replace(self.spec, saved=self.saved, next_seq=w.next_seq)

    # ---------------------------------------------------------------- the monitor thread
    def run_in_thread(self, resume: bool) -> None:
        """Start the monitor thread (``resume``: connect and start capturing first)."""
        self._thread = threading.Thread(target=self._run, args=(resume,), name=f"camera{self.number}-loop",
                                        daemon=True)
        self._thread.start()

    def begin(self) -> None:
        """Start the core's capture now (blocking; raises the core's refusal). The writer is made here,
        once the camera is connected and its model known (the names use it)."""
        made = None
        if self.spec.save and self.writer is None:
            made = self.writer = self._make_writer()
        try:
            self.cam.start_capture(self.on_frame, exposure=self.spec.exposure, mode=self.spec.mode)
        except BaseException:
            if made is not None:
                self.writer = None
                made.close(0.5)
            raise
        self.phase = "running"

    def _run(self, resume: bool) -> None:
        try:
            if resume and not self._resume():
                return
            self._watch()
        except Exception:  # a defect: logged, and the loop ends visibly
            self.log.exception("camera %d: capture loop failed", self.number)
            self.error = "the capture loop failed (details are in the server log)"
            self.phase = "ended"
        finally:
            self._finish()

    def _resume(self) -> bool:
        """Wait for the window, connect, start capturing; False when stopped first."""
        cam = self.cam
        announced = ""
        retry = 2.0
        while not self.stop_event.is_set():
            window: CaptureWindow | None = cam.schedule
            if window is not None and not window.contains(_dt.datetime.now()):
                self.phase = "waiting"
                self.message = f"resumes when the capture window {window} opens"
                if announced != "window":
                    self.log.info("camera %d: capture loop resumes when the window %s opens", self.number, window)
                    announced = "window"
                self.stop_event.wait(1.0)
                continue
            st = cam.status()
            if not st.connected and getattr(st, "awaiting_plug", False):
                # Asked already and not plugged in: hotplug connects it when it is seen on the bus.
                self.phase = "connecting"
                self.message = "waiting for the camera to be plugged in"
                self.stop_event.wait(1.0)
                continue
            if not st.connected:
                self.phase = "connecting"
                self.message = "connecting the camera to resume the loop"
                try:
                    cam.connect()
                except Exception as exc:  # noqa: BLE001 - absent or busy: try again
                    text = getattr(exc, "message", None) or str(exc)
                    self.message = f"waiting for the camera: {text}"
                    if announced != "connect":
                        self.log.warning("camera %d: capture loop waits for the camera: %s", self.number, text)
                        announced = "connect"
                    self.stop_event.wait(retry)
                    retry = min(retry * 2, RESUME_RETRY_S)
                    continue
            if self.stop_event.is_set():
                return False
            try:
                self.begin()
            except Exception as exc:  # noqa: BLE001 - e.g. the camera was being released off-peak: retry
                text = getattr(exc, "message", None) or str(exc)
                if "already running" in text:
                    self.error = text
                    self.phase = "ended"
                    self.log.warning("camera %d: capture loop not resumed: %s", self.number, text)
                    self._owner.forget(self)
                    return False
                self.message = f"could not start yet: {text}"  # busy with a client's exposure, say
                self.stop_event.wait(1.0)
                continue
            self.log.info("camera %d: capture loop resumed (%g s %s%s)", self.number, self.spec.exposure,
                          self.spec.mode, f", saving to {self.spec.directory}" if self.spec.save else "")
            return True
        return False

    def _watch(self) -> None:
        cam = self.cam
        self.phase = "running"
        self.message = ""
        persisted = self.current_spec()
        last_persist = time.monotonic()
        lost_since: float | None = None
        while not self.stop_event.wait(0.25):
            st = cam.status()
            if st.capturing:
                lost_since = None
            elif not st.connected:
                # Disconnected by a client, or the server is shutting down (then the loop resumes).
                if lost_since is None:
                    lost_since = time.monotonic()
                if self._owner.closing:
                    return
                if time.monotonic() - lost_since >= FORGET_AFTER_DISCONNECT_S:
                    self.error = "the camera was disconnected"
                    self.phase = "ended"
                    self.log.info("camera %d: capture loop ended: the camera was disconnected", self.number)
                    self._owner.forget(self)
                    return
            else:
                self.error = st.error or "continuous capture stopped"
                self.phase = "ended"
                self.log.warning("camera %d: capture loop ended: %s", self.number, self.error)
                self._owner.forget(self)
                return
            if time.monotonic() - last_persist >= PERSIST_INTERVAL_S:
                spec = self.current_spec()
                if spec != persisted and not self._owner.closing:
                    self._owner.store.put(self.key, spec)
                    persisted = spec
                last_persist = time.monotonic()
        # stopped, or the count is saved
        if self.phase == "done":
            try:
                cam.stop_capture()
            except Exception as exc:  # noqa: BLE001 - the camera may be gone already
                self.log.debug("camera %d: stop after the count: %s", self.number, exc)
            self.log.info("camera %d: capture loop %s", self.number, self.message)
            self._owner.forget(self)

    def _finish(self) -> None:
        writer = self.writer
        if writer is not None:
            writer.close(5.0)
        if self.phase in ("running", "starting", "waiting", "connecting") and self._owner.closing:
            self._owner.store.put(self.key, self.current_spec())  # resumes at the next start
        self.finished.set()

    def stop(self, timeout: float) -> None:
        """End the loop (blocking, bounded): the core's capture stops, queued frames are written."""
        self.stop_event.set()
        if self.phase != "done":
            self.phase = "stopped"
            self.message = f"stopped: {self.saved} file(s) saved" if self.spec.save else "stopped"
        try:
            self.cam.stop_capture()
        except Exception as exc:  # noqa: BLE001 - the camera may be gone already
            self.log.debug("camera %d: stop_capture: %s", self.number, exc)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---------------------------------------------------------------- what the page shows
    def status(self) -> dict[str, Any]:
        w = self.writer
        out: dict[str, Any] = {
            "exposure": self.spec.exposure, "mode": self.spec.mode, "save": self.spec.save,
            "count": self.spec.count, "phase": self.phase, "running": not self.finished.is_set(),
            "message": self.message, "error": self.error, "saved": self.saved,
        }
        if self.spec.save:
            out.update({"directory": self.spec.directory, "pattern": self.spec.pattern,
                        "dropped": w.dropped if w else 0, "failed": w.failed if w else 0,
                        "queued": w.queued if w else 0,
                        "last_file": str(w.last_path) if w and w.last_path else None,
                        "write_error": w.last_error if w else None})
            if w and w.saved:
                out["write_ms"] = round(1000.0 * w.write_seconds / w.saved, 1)
        return out


class CaptureLoops:
    """The web page's loops, one per camera key, and the state file that brings them back after a restart."""

    def __init__(self, root: Path, state_path: Path | None, logger: logging.Logger | None = None) -> None:
        self.root = root
        self.store = LoopStore(state_path)
        self.log = logger or log
        self.closing = False
        self._loops: dict[str, CaptureLoop] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> CaptureLoop | None:
        with self._lock:
            return self._loops.get(key)

    def prepare(self, *, exposure: float, mode: str, save: bool, directory: str | None, pattern: str | None,
                count: int | None) -> LoopSpec:
        """Check a Start-loop request (nothing is created yet); raises :class:`CaptureSetupError`."""
        if count is not None and count < 1:
            raise CaptureSetupError(f"count {count} must be 1 or more (or blank: until stopped)")
        spec = LoopSpec(exposure=float(exposure), mode=mode, save=bool(save), count=count)
        if save:
            spec.directory = str(resolve_directory(self.root, directory, create=False))
            spec.pattern = check_pattern(pattern)
        return spec

    def start(self, key: str, cam: Any, spec: LoopSpec, *, number: int, logger: logging.Logger) -> CaptureLoop:
        """Start a loop on a connected camera (blocking). The core checks the exposure first (its
        refusal is raised as it is), then the folder is created (:class:`CaptureSetupError`)."""
        with self._lock:
            old = self._loops.get(key)
        if old is not None and not old.finished.is_set() and old.phase != "running":
            old.stop(2.0)  # a resumed loop still waiting for its window or its camera: replaced
        # A running one stays: the core refuses a second capture ("already running").
        loop = CaptureLoop(self, key, cam, spec, number=number, logger=logger)
        loop.begin()
        if spec.save:
            try:
                resolve_directory(self.root, spec.directory)
            except CaptureSetupError:
                loop.stop(2.0)
                if loop.writer is not None:
                    loop.writer.close(0.5)
                raise
        with self._lock:
            self._loops[key] = loop
        self.store.put(key, spec)
        loop.run_in_thread(resume=False)
        return loop

    def stop(self, key: str, timeout: float = 5.0) -> CaptureLoop | None:
        """Stop a camera's loop and forget it (blocking, bounded)."""
        loop = self.get(key)
        self.store.put(key, None)
        if loop is not None:
            loop.stop(timeout)
            self.store.put(key, None)
        return loop

    def forget(self, loop: CaptureLoop) -> None:
        """A loop ended by itself (count saved, camera disconnected, capture failed): not resumed."""
        with self._lock:
            current = self._loops.get(loop.key) is loop
        if current and not self.closing:
            self.store.put(loop.key, None)

    def resume(self, key: str, cam: Any, *, number: int, logger: logging.Logger) -> CaptureLoop | None:
        """Bring back the loop stored for this camera, if any (returns at once; a thread does the work)."""
        spec = self.store.load(key)
        if spec is None:
            return None
        if spec.count is not None and spec.saved >= spec.count:
            self.store.put(key, None)
            return None
        if spec.save:
            try:
                spec.directory = str(resolve_directory(self.root, spec.directory))
                spec.pattern = check_pattern(spec.pattern)
            except CaptureSetupError as exc:
                logger.warning("camera %d: the saved capture loop is not resumed: %s", number, exc.message)
                self.store.put(key, None)
                return None
        with self._lock:
            old = self._loops.get(key)
        if old is not None and not old.finished.is_set():
            if old.cam is cam:
                return old
            old.stop_event.set()  # the same camera served anew (hotplug): the old object's loop ends
        loop = CaptureLoop(self, key, cam, spec, number=number, logger=logger)
        with self._lock:
            self._loops[key] = loop
        logger.info("camera %d: resuming the capture loop that was running when the server stopped "
                    "(%g s %s%s)", number, spec.exposure, spec.mode,
                    f", saving to {spec.directory}" if spec.save else "")
        loop.run_in_thread(resume=True)
        return loop

    def close(self, timeout: float) -> None:
        """Server shutdown: loops are kept in the state file (they resume at the next start) and
        queued frames are written, within ``timeout`` seconds in all."""
        self.closing = True
        deadline = time.monotonic() + timeout
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            if loop.finished.is_set():
                continue
            loop.stop_event.set()
            if loop.writer is not None:
                loop.writer.flush(max(0.0, deadline - time.monotonic()))
        for loop in loops:
            loop.finished.wait(max(0.0, deadline - time.monotonic()))
            if not loop.finished.is_set() and loop.phase != "done":
                self.store.put(loop.key, loop.current_spec())
