"""`zwo-alpaca capture`: take a run of exposures straight to FITS files (e.g. an all-sky camera).

The design note's capture loop as a command, on top of the device core: `ZWOCamera.start_capture`
for the frames, `set_schedule(CaptureWindow)` for the nightly window (outside it the camera is
released so other programs can use it, and capture resumes at the window's start), and the core's
bounded teardown on every way out.

* Each frame becomes one FITS file with full headers (INDI/NINA-style keywords from
  `zwo_common.fits`), written to a temporary name and renamed, so a program watching the folder
  never sees a half-written file. The path of each saved file is printed on stdout, one per line,
  for scripts (``zwo-alpaca capture ... | while read f; do upload "$f"; done``).
* Progress (bar, exposure, temperature, ETA) goes to stderr, only on a terminal unless ``--progress``.
* Ctrl-C, SIGTERM (``systemctl stop``) and SIGHUP stop cleanly: the exposure in progress is aborted
  (with ``--finish-frame`` the first Ctrl-C lets it finish and saves it), frames already read out
  are saved, the camera is released, and the exit status is 0.

Exit status: 0 success (also when stopped by a signal), 1 camera, SDK or disk error, 2 bad options
or a value the camera does not accept, 130 interrupted before capture started.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from driver import sdk
from driver.errors import CameraError, InvalidValueError, NotSupportedError, SdkNotFoundError
from driver.models import CameraStatus, CaptureWindow, Frame
from driver.state import CameraState
from zwo_common.capture_files import fits_cards, frame_path, slug, write_fits

from . import logsetup
from .cmd_list import SDK_FIX, add_sdk_arguments, error, load_simulator

log = logging.getLogger("zwo_alpaca.capture")

# The wall clock the capture window is judged by (local time). Tests replace it to cross a window
# boundary in a second instead of waiting for the real clock.
CLOCK: Callable[[], _dt.datetime] = _dt.datetime.now
# Frames waiting to be written. The callback blocks (bounded) when the disk falls behind, which
# pauses the capture loop rather than piling up copies of 100 MB frames in memory.
QUEUE_FRAMES = 4
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def parse_window(text: str) -> CaptureWindow:
    """Parse ``--schedule HH:MM-HH:MM`` (local time, may cross midnight) with the core's own rules."""
    try:
        return CaptureWindow.parse(text)
    except InvalidValueError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def add_parser(subparsers: Any) -> None:
    """Register `zwo-alpaca capture`."""
    p = subparsers.add_parser(
        "capture", help="take exposures straight to FITS files (e.g. an all-sky camera)",
        description="Take a run of exposures and save each one as a FITS file with full headers. "
                    "Ctrl-C or SIGTERM stops cleanly: the frame in progress is aborted (or finished, with "
                    "--finish-frame), frames already read out are saved and the camera is released.",
        epilog="examples:\n"
               "  zwo-alpaca capture --exposure 30 --count 20 --out ~/darks --gain 120 --cooler-target -10\n"
               "  zwo-alpaca capture --exposure 15 --continuous --schedule 20:00-06:00 --out /srv/allsky\n"
               "  zwo-alpaca capture --simulator asi294mc-pro --exposure 1 --count 3 --out /tmp/test\n"
               "The path of every saved file is printed on stdout, one per line.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exposure", "-e", type=_positive_float, required=True, metavar="S",
                   help="exposure time in seconds (e.g. 0.5, 30, 300)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--count", "-n", type=_positive_int, metavar="N", help="number of frames to save (default 1)")
    how.add_argument("--continuous", action="store_true", help="keep capturing until stopped (Ctrl-C, SIGTERM)")
    p.add_argument("--schedule", type=parse_window, metavar="HH:MM-HH:MM",
                   help="capture only inside this daily window, local time, e.g. 20:00-06:00; outside it the "
                        "camera is released for other programs and capture resumes when the window opens")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder for the FITS files (created if missing)")
    p.add_argument("--prefix", metavar="NAME", help="file name prefix (default: the camera model, e.g. ASI294MC-Pro)")
    p.add_argument("--gain", type=int, metavar="G", help="sensor gain (default: the camera's default)")
    p.add_argument("--offset", type=int, metavar="O", help="offset / black level (default: the camera's default)")
    p.add_argument("--bin", type=_positive_int, metavar="B", help="binning 1, 2, 3, 4... (default 1)")
    p.add_argument("--image-type", type=str.upper, choices=("RAW16", "RAW8", "RGB24"),
                   help="RAW16 (default), RAW8, or RGB24 (colour models: debayered by the camera)")
    p.add_argument("--cooler-target", type=float, metavar="T",
                   help="switch the cooler on with this set point in C (cooled models)")
    p.add_argument("--mode", choices=("exposure", "video"), default="exposure",
                   help="exposure: repeated single exposures (default); video: the SDK's video mode, faster "
                        "for short exposures")
    p.add_argument("--camera", default="0", metavar="N|SERIAL",
                   help="which camera: its index in 'zwo-alpaca list', its serial number or model name (default 0)")
    add_sdk_arguments(p, "use simulated cameras of these models instead of real ones (e.g. asi294mc-pro)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show the progress bar on stderr (default: only when stderr is a terminal)")
    p.add_argument("--finish-frame", action="store_true",
                   help="on the first Ctrl-C/SIGTERM let the exposure in progress finish and save it "
                        "(a second one aborts it); default: abort it at once")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


def camera_selector(text: str) -> int | str:
    """``--camera``: a short number is an SDK index; anything else a serial number or model name."""
    text = text.strip()
    # Serial numbers are 16 hex digits and may be all decimal digits, so only short numbers are indices.
    return int(text) if text.isdigit() and len(text) <= 3 else text


# ---------------------------------------------------------------------------------------------
# FITS files: the cards, the atomic write and the names are shared with the web page's saving loop
# (zwo_common/capture_files.py); imported here under the names this command has always used.
# ---------------------------------------------------------------------------------------------

_slug = slug

# ---------------------------------------------------------------------------------------------
# progress display
# ---------------------------------------------------------------------------------------------

def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A one-line progress display on a terminal: bar, frame count, exposure, temperature and ETA."""

    def __init__(self, stream: TextIO, total: int | None, exposure: float, enabled: bool) -> None:
        self.stream = stream
        self.total = total
        self.exposure = exposure
        self.enabled = enabled
        self.started = time.monotonic()
        self.frame_times: list[float] = []
        self._text = ""
        self._drawn = False

    def frame_saved(self) -> None:
        """Record the time of a saved frame (for the ETA)."""
        self.frame_times.append(time.monotonic())

    def seconds_per_frame(self) -> float:
        """Measured time per frame once two are saved; before that the exposure plus a readout guess."""
        if len(self.frame_times) >= 2:
            return (self.frame_times[-1] - self.frame_times[0]) / (len(self.frame_times) - 1)
        if self.frame_times:
            return self.frame_times[0] - self.started
        return self.exposure + 1.0

    def eta(self, saved: int) -> float | None:
        """Seconds until the last frame is saved (None for a continuous run)."""
        if self.total is None:
            return None
        since = time.monotonic() - (self.frame_times[-1] if self.frame_times else self.started)
        return max(0.0, (self.total - saved) * self.seconds_per_frame() - since)

    def line(self, status: CameraStatus, saved: int, now_utc: _dt.datetime | None = None) -> str:
        """The text of the progress line for this status."""
        parts: list[str] = []
        if self.total is not None:
            width = 20
            done = int(width * saved / self.total) if self.total else width
            parts.append(f"[{'#' * done}{'.' * (width - done)}] {saved}/{self.total}")
        else:
            parts.append(f"{saved} saved")
        parts.append(activity(status, self.exposure, now_utc))
        if status.ccd_temperature is not None:
            temp = f"{status.ccd_temperature:.1f} C"
            if status.cooler_on and status.cooler_power is not None:
                temp += f" (cooler {status.cooler_power:.0f}%)"
            parts.append(temp)
        eta = self.eta(saved)
        if eta is not None and status.state != CameraState.OFF_PEAK:
            parts.append(f"ETA {_clock_text(eta)}")
        else:
            parts.append(f"elapsed {_clock_text(time.monotonic() - self.started)}")
        return "  ".join(parts)

    def update(self, status: CameraStatus, saved: int) -> None:
        """Redraw the line (terminal only)."""
        if not self.enabled:
            return
        self._text = self.line(status, saved)
        self.redraw()

    def clear(self) -> None:
        """Erase the line (before a log line is written)."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def redraw(self) -> None:
        """Draw the line again (after a log line)."""
        if not self.enabled or not self._text:
            return
        cols = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\x1b[K" + self._text[: max(10, cols - 1)])
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Leave the terminal on a fresh line."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def activity(status: CameraStatus, exposure: float, now_utc: _dt.datetime | None = None) -> str:
    """What the camera is doing, in words: "Exposing 3.2/10.0 s", "Idle (off-peak until 20:00)"..."""
    if status.state == CameraState.CAPTURING and status.last_exposure_start is not None:
        now = now_utc or _dt.datetime.now(_dt.UTC)
        done = (now - status.last_exposure_start).total_seconds()
        if done < exposure:
            return f"Exposing {max(0.0, done):.1f}/{exposure:.1f} s"
        return "Reading out"
    return status.status_text


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

class _Stop:
    """What the signal handlers asked for: stop now, or after the frame in progress."""

    def __init__(self, finish_frame: bool) -> None:
        self.finish_frame = finish_frame
        self.now = threading.Event()
        self.after_frame = threading.Event()
        self.signals = 0
        self.signame = ""

    def handler(self, signum: int, _frame: Any) -> None:
        # Only set flags here: the main loop does the work (and the logging) between its waits.
        self.signals += 1
        self.signame = signal.Signals(signum).name
        if self.finish_frame and self.signals == 1:
            self.after_frame.set()
        else:
            self.now.set()


class _Run:
    """One capture run: the camera, the frame queue, the writer and the display."""

    def __init__(self, args: argparse.Namespace, out: Path, window: CaptureWindow | None) -> None:
        self.args = args
        self.out = out
        self.window = window
        self.total: int | None = None if args.continuous else (args.count or 1)
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=QUEUE_FRAMES)
        self.closing = threading.Event()
        self.saved = 0
        self.paths_to_stdout = True
        self.stop = _Stop(bool(args.finish_frame))
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        self.progress = Progress(sys.stderr, self.total, args.exposure, bool(show))
        self.pixel_size: float | None = None
        self.prefix = args.prefix or ""

    def on_frame(self, frame: Frame) -> None:
        """Called by the capture thread: copy the frame (the core reuses its buffer) and queue it."""
        if self.window is not None and not self.window.contains(CLOCK()):
            # The core releases the camera off-peak within a moment; a frame finished in that moment
            # is outside what the user asked for.
            log.debug("frame %d finished outside the capture window: not saved", frame.seq)
            return
        copy = dataclasses.replace(frame, data=np.array(frame.data, copy=True))
        while not self.closing.is_set():
            try:
                self.frames.put(copy, timeout=0.2)
                return
            except queue.Full:
                continue

    def save(self, frame: Frame) -> Path:
        """Write one frame and report its path."""
        self.saved += 1
        cards = fits_cards(frame, pixel_size_um=self.pixel_size, set_temp=self.args.cooler_target)
        path = write_fits(frame_path(self.out, self.prefix, frame, self.saved), frame, cards)
        self.progress.frame_saved()
        log.debug("saved %s (%d%s)", path, self.saved, f"/{self.total}" if self.total else "",
                  extra={"camera": frame.camera_name, "path": str(path), "frame": self.saved})
        if self.paths_to_stdout:
            # On a terminal stdout and the progress line share the screen: lift the bar, print, redraw.
            self.progress.clear()
            try:
                print(path, flush=True)
            except BrokenPipeError:  # e.g. piped into `head`: keep capturing, stop printing
                self.paths_to_stdout = False
            self.progress.redraw()
        return path

    def done(self) -> bool:
        return self.total is not None and self.saved >= self.total

    def loop(self, cam: Any) -> str | None:
        """Save frames until done, stopped or failed; returns an error message or None."""
        last_text = ""
        announced = False
        while True:
            if self.stop.after_frame.is_set() and not announced:
                announced = True
                log.info("%s received: finishing the exposure in progress, then stopping (again to abort it)",
                         self.stop.signame, extra={"camera": cam.name})
            if self.stop.now.is_set():
                log.info("%s received: stopping, aborting the exposure in progress", self.stop.signame,
                         extra={"camera": cam.name})
                return None
            try:
                frame = self.frames.get(timeout=0.1)
            except queue.Empty:
                frame = None
            if frame is not None:
                self.save(frame)
                if self.done():
                    return None
                if self.stop.after_frame.is_set():
                    log.info("%s received: frame in progress saved; stopping", self.stop.signame,
                             extra={"camera": cam.name})
                    return None
            st = cam.status()
            if not st.capturing:
                # The core gave up on capture (an error other than a lost camera, which it retries).
                return st.error or "continuous capture stopped unexpectedly"
            # Log what a service's journal should show: off-peak, errors, resuming.
            text = st.status_text if st.state in (CameraState.OFF_PEAK, CameraState.ERROR) else "Capturing"
            if text != last_text:
                if last_text or text != "Capturing":
                    log.log(logging.WARNING if st.state == CameraState.ERROR else logging.INFO, "%s", text,
                            extra={"camera": cam.name, "state": st.state.value})
                last_text = text
            if self.stop.after_frame.is_set() and self.stop.signals == 1 and st.state == CameraState.OFF_PEAK:
                return None  # nothing in progress to finish
            self.progress.update(st, self.saved)

    def drain(self) -> None:
        """After capture stopped: save frames already read out (never more than --count)."""
        while not self.done():
            try:
                frame = self.frames.get_nowait()
            except queue.Empty:
                return
            self.save(frame)


def run(args: argparse.Namespace) -> int:
    """Run a capture; see the module docstring for the exit status."""
    logsetup.setup_from_args(args)
    from driver import ZWOCamera, registry  # noqa: PLC0415

    out = Path(os.path.expanduser(args.out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error("capture", f"cannot create the output folder {out}: {exc.strerror or exc}")
        return 1
    if not os.access(out, os.W_OK | os.X_OK):
        error("capture", f"the output folder {out} is not writable by this user")
        return 1
    window: CaptureWindow | None = args.schedule
    if isinstance(window, str):  # run() called directly with a string, as tests may
        try:
            window = CaptureWindow.parse(window)
        except InvalidValueError as exc:
            error("capture", exc.message)
            return 2

    registry.install_signal_handlers()  # SIGTERM before the loop: a normal exit releasing the camera
    try:
        if args.simulator:
            sdk_info = load_simulator(args.simulator)
        else:
            # No silent fallback to a simulated camera: simulated frames in a real archive would be worse
            # than an error.
            sdk_info = sdk.load(sdk_path=args.sdk, fallback_to_simulator=False)
    except ValueError as exc:
        error("capture", str(exc))
        return 2
    except SdkNotFoundError as exc:
        error("capture", f"{exc.message}\n  fix: {SDK_FIX}")
        return 1
    if sdk_info.kind == "real" and not sdk.enumerate_cameras(read_serials=False):
        error("capture", f"no ZWO camera found by the SDK at {sdk_info.path}: check the USB cable and the camera's "
                         "power, then run 'zwo-alpaca doctor' (or try '--simulator asi294mc-pro')")
        return 1

    job = _Run(args, out, window)
    cam = ZWOCamera(camera_selector(args.camera), clock=lambda: CLOCK())
    try:
        with cam:
            return _capture(job, cam)
    except KeyboardInterrupt:  # Ctrl-C while connecting, before our handlers were installed
        job.progress.close()
        error("capture", "interrupted")
        return 130
    except (InvalidValueError, NotSupportedError) as exc:
        job.progress.close()
        error("capture", exc.message)
        return 2
    except CameraError as exc:
        job.progress.close()
        error("capture", exc.message)
        return 1


def _capture(job: _Run, cam: Any) -> int:
    args = job.args
    info = cam.info
    job.pixel_size = info.pixel_size_um if info else None
    job.prefix = _slug(args.prefix or (info.model if info else "frame"))
    changes = {k: v for k, v in (("gain", args.gain), ("offset", args.offset), ("bin", args.bin),
                                 ("image_type", args.image_type)) if v is not None}
    if changes:
        cam.configure(**changes)
    if args.cooler_target is not None:
        cam.set_cooler(True, args.cooler_target)
    what = f"{job.total} frame(s)" if job.total else "until stopped"
    log.info("capturing %s: %g s exposures (%s mode) to %s%s", what, args.exposure, args.mode, job.out,
             f", only within {job.window}" if job.window else "", extra={"camera": cam.name})

    # Signal handlers can only be installed from the main thread (run() may be called from another).
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main else {}
    for s in previous:
        signal.signal(s, job.stop.handler)
    logsetup.set_status_line(job.progress)
    failure: str | None = None
    try:
        # Capture first, then the schedule: started the other way round, the core could be in the middle
        # of releasing the camera for the off-peak period when start_capture runs.
        cam.start_capture(job.on_frame, exposure=args.exposure, mode=args.mode)
        if job.window is not None:
            cam.set_schedule(job.window)
        failure = job.loop(cam)
    except OSError as exc:  # disk full, folder removed, permissions changed mid-run
        failure = f"cannot write to {job.out}: {exc.strerror or exc}"
    finally:
        job.closing.set()  # unblock a capture thread waiting on a full queue
        cam.stop_capture()  # aborts the exposure in progress; bounded
        try:
            if failure is None:
                job.drain()
        except OSError as exc:
            failure = f"cannot write to {job.out}: {exc.strerror or exc}"
        job.progress.close()
        logsetup.set_status_line(None)
        # Keep our handlers until the camera is released (the caller's `with` exit, bounded < 2 s), so a
        # second Ctrl-C cannot interrupt the teardown; restore them after.
        cam.disconnect_camera()
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("%d frame(s) saved to %s", job.saved, job.out, extra={"camera": cam.name})
    if failure:
        error("capture", failure)
        return 1
    return 0
