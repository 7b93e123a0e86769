"""SER recording of the INDI live video: libindi's StreamManager recording properties.

One job: the recording state machine. Names, members, permissions, defaults and behaviour follow
libindi (libs/indibase/stream/streammanager.cpp, recorder/serrecorder.cpp), in the "Streaming" tab:

* ``RECORD_STREAM`` switch rw 1-of-many: ``RECORD_ON``, ``RECORD_DURATION_ON``, ``RECORD_FRAME_ON``,
  ``RECORD_OFF`` (default). Busy while recording, Idle when off. A different mode while recording is
  refused ("busy", as libindi); recording starts the video capture when it is not running and stops
  it again at the end (libindi's StartStreaming/StopStreaming).
* ``RECORD_FILE`` text rw: ``RECORD_FILE_DIR`` (default ``indi__D_``), ``RECORD_FILE_NAME``
  (``indi_record__T_``); ``_D_`` (UTC date), ``_H_`` (UTC time), ``_T_`` (date@time) and
  ``_HOME_`` are expanded, ``:`` becomes ``-`` and ``.ser`` is appended, as libindi does.
* ``RECORD_OPTIONS`` number rw: ``RECORD_DURATION`` (s, 0.001..999999, default 1),
  ``RECORD_FRAME_TOTAL`` (1..999999999, default 30); refused while recording (libindi: busy).
* ``CCD_STREAM_RECORDER`` switch rw: ``SER`` only (libindi without Theora).

Differences, on purpose: files go only below the server's upload directory (``RECORD_FILE_DIR`` is
relative to it, ``_HOME_`` means it), never anywhere a client names; the video preview keeps
going while recording; ``STREAM_OFF`` (or anything else that stops the capture) ends the recording.

Threads: requests run on the server's loop; frames arrive on the core's capture thread, which
only crops, copies and queues them (never waits: past ``LIMITS_BUFFER_MAX`` MB queued a frame is
skipped, as libindi does); one writer thread per recording owns the file.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import protocol as P
from . import ser
from .device_base import Client, DeviceHost, Reject
from .protocol import ALERT, BUSY, IDLE, OK, Number, Switch, Text, Vector
from .upload import UploadError, UploadTarget

MODES = ("RECORD_ON", "RECORD_DURATION_ON", "RECORD_FRAME_ON")
DEFAULT_DIR = "indi__D_"
DEFAULT_NAME = "indi_record__T_"
NO_UPLOAD_DIR = ("recording is not enabled on this server: SER files are written only below the server's "
                 "upload directory and none is configured. Start the server with --upload-dir DIR "
                 "(zwo-alpaca serve) or set ZWO_ALPACA_UPLOAD_DIR=DIR (also for zwo-alpaca-indi under indiserver)")
SHUTDOWN_JOIN_S = 0.5  # the whole INDI shutdown has about 1 s


class RecordError(Reject):
    """A recording request is refused; `message` says why and what is allowed."""


class RecorderDevice(Protocol):
    """What the recorder needs of its device (the CCD device's public interface)."""

    name: str
    log: logging.Logger
    loop: asyncio.AbstractEventLoop
    server: DeviceHost

    def make_vector(self, kind: str, name: str, label: str, group: str, perm: P.Perm, members: list[Any], *,
                    rule: str | None = None, timeout: float = 60, state: str = IDLE,
                    core_validated: bool = False) -> Vector:
        """A new vector of the device."""

    def vector(self, name: str) -> Vector | None:
        """A defined vector of the device."""

    def publish(self, vec: Vector, message: str | None = None) -> None:
        """Send a vector's values to every interested client."""

    def message(self, text: str) -> None:
        """A device message to every interested client."""

    def require_connected(self, vec: Vector) -> None:
        """Raise `Reject` unless the camera is connected."""

    @property
    def upload_target(self) -> UploadTarget | None:
        """Where files may be written (None: no upload directory configured)."""

    @property
    def request_lock(self) -> asyncio.Lock:
        """The device's request serialisation lock."""

    def cfa_for(self, frame: Any) -> tuple[str, int, int] | None:
        """The colour pattern and its x/y offsets of a raw colour frame (None for mono)."""


class VideoSource(Protocol):
    """What the recorder needs of the live video it records."""

    @property
    def active(self) -> bool:
        """Whether the video capture runs."""

    async def start(self) -> None:
        """Start the video capture."""

    async def stop(self, message: str | None = None) -> None:
        """Stop the video capture."""


def expand(text: str, now: _dt.datetime, home: str) -> str:
    """libindi's pattern substitution for RECORD_FILE (StreamManagerPrivate::expand), UTC times."""
    for key, value in (("_D_", now.strftime("%Y-%m-%d")), ("_H_", now.strftime("%H-%M-%S")),
                       ("_T_", now.strftime("%Y-%m-%d@%H-%M-%S")), ("_HOME_", home)):
        text = text.replace(key, value)
    return text.replace(":", "-")


def shifted_pattern(pattern: str, dx: int, dy: int) -> str:
    """The 2x2 colour pattern seen from a frame origin moved by (dx, dy) pixels."""
    p = pattern.upper()
    return "".join(p[((r + dy) % 2) * 2 + (c + dx) % 2] for r in (0, 1) for c in (0, 1))


@dataclass
class _Recording:
    """One recording: shared between the loop, the capture thread and its writer thread."""

    mode: str
    path: str
    name: str
    dir_fd: int
    fd: int
    limit_bytes: int
    target_frames: int
    duration: float
    started_stream: bool
    t0: float = field(default_factory=time.monotonic)
    items: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)  # frames, then None
    queued_bytes: int = 0
    accepted: int = 0
    skipped: int = 0
    closing: bool = False  # no more frames are taken
    discard: bool = False  # drop queued frames (shutdown)
    written: int = 0
    first_ts: int = 0
    last_ts: int = 0
    shape: str = ""
    thread: threading.Thread | None = None
    timer: Any = None


class StreamRecorder:
    """The recording properties of one device's live video and the SER files they produce."""

    def __init__(self, device: RecorderDevice, video: VideoSource) -> None:
        self.stream = video
        self.dev = device
        self.loop = device.loop
        self._lock = threading.Lock()  # guards _rec and the counters of the running recording
        self._rec: _Recording | None = None
        self._dir = DEFAULT_DIR
        self._name = DEFAULT_NAME
        self._duration = 1.0
        self._frames = 30.0
        self.files_closed = 0  # for tests and diagnostics

    @property
    def recording(self) -> bool:
        """Whether a recording is taking frames."""
        return self._rec is not None

    # ================================================================== definitions
    def properties(self) -> dict[str, Vector]:
        """RECORD_STREAM, RECORD_FILE, RECORD_OPTIONS and CCD_STREAM_RECORDER, by name (on connect)."""
        vec = self.dev.make_vector
        tab = "Streaming"
        return {
            "RECORD_STREAM": vec("Switch", "RECORD_STREAM", "Video Record", tab, "rw", [
                Switch("RECORD_ON", "Record On"), Switch("RECORD_DURATION_ON", "Record (Duration)"),
                Switch("RECORD_FRAME_ON", "Record (Frames)"), Switch("RECORD_OFF", "Record Off", True)],
                rule="OneOfMany", timeout=0),
            "RECORD_FILE": vec("Text", "RECORD_FILE", "Record File", tab, "rw", [
                Text("RECORD_FILE_DIR", "Dir.", self._dir), Text("RECORD_FILE_NAME", "Name", self._name)],
                timeout=0),
            "RECORD_OPTIONS": vec("Number", "RECORD_OPTIONS", "Record Options", tab, "rw", [
                Number("RECORD_DURATION", "Duration (sec)", "%.3f", 0.001, 999999.0, 0.0, self._duration),
                Number("RECORD_FRAME_TOTAL", "Frames", "%.f", 1.0, 999999999.0, 1.0, self._frames)]),
            "CCD_STREAM_RECORDER": vec("Switch", "CCD_STREAM_RECORDER", "Recorder", tab, "rw",
                                       [Switch("SER", "SER", True)], rule="OneOfMany", timeout=0),
        }

    def handler(self, name: str) -> Callable[..., Any] | None:
        """The coroutine handling a client's new value for `name`, if it is a recording property."""
        return {"RECORD_STREAM": self._new_record_stream, "RECORD_FILE": self._new_record_file,
                "RECORD_OPTIONS": self._new_record_options, "CCD_STREAM_RECORDER": self._new_recorder}.get(name)

    # ================================================================== requests
    async def _new_record_file(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        d = values.get("RECORD_FILE_DIR", vec.text("RECORD_FILE_DIR").value)
        n = values.get("RECORD_FILE_NAME", vec.text("RECORD_FILE_NAME").value)
        if "/" in n:  # libindi's rule, with a reason
            raise RecordError(f"RECORD_FILE.RECORD_FILE_NAME {n[:80]!r} is a file name: '/' is not allowed "
                              f"(put directories in RECORD_FILE_DIR)")
        target = self.dev.upload_target
        if target is not None:
            self._resolve(target, d, n)  # refuses escapes now, not only at RECORD_ON
        self._dir, self._name = d, n
        vec.text("RECORD_FILE_DIR").value, vec.text("RECORD_FILE_NAME").value = d, n
        vec.state = OK
        self.dev.publish(vec)

    async def _new_record_options(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        if self.recording:
            raise RecordError("RECORD_OPTIONS cannot change while recording; send RECORD_STREAM.RECORD_OFF first")
        frames = values.get("RECORD_FRAME_TOTAL", vec.number("RECORD_FRAME_TOTAL").value)
        if abs(frames - round(frames)) > 1e-9:
            raise RecordError(f"RECORD_OPTIONS.RECORD_FRAME_TOTAL must be a whole number 1..999999999, got {frames:g}")
        for k, v in values.items():
            vec.number(k).value = float(round(v)) if k == "RECORD_FRAME_TOTAL" else float(v)
        self._duration = float(vec.number("RECORD_DURATION").value)
        self._frames = float(vec.number("RECORD_FRAME_TOTAL").value)
        vec.state = OK
        self.dev.publish(vec)

    async def _new_recorder(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        vec.set_one("SER")
        vec.state = OK
        self.dev.publish(vec)

    async def _new_record_stream(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.dev.require_connected(vec)
        mode = next(k for k, v in values.items() if v)
        rec = self._rec
        if mode == "RECORD_OFF":
            if rec is not None:
                self._end(rec, "[INFO] Recording stopped (RECORD_OFF)")
                await self._stop_stream_if_ours(rec)
            else:
                vec.set_one("RECORD_OFF")
                vec.state = IDLE
                self.dev.publish(vec)
            return
        if rec is not None:
            if rec.mode == mode:
                self.dev.publish(vec)
                return
            raise RecordError(f"RECORD_STREAM: already recording ({rec.mode}) to {rec.path}; "
                              f"send RECORD_OFF first")
        target = self.dev.upload_target
        if target is None:
            raise RecordError(f"RECORD_STREAM: {NO_UPLOAD_DIR}")
        comps, name = self._resolve(target, self._dir, self._name)
        try:
            dir_fd, fd, name, path = await self.dev.server.call(_create, target, comps, name)
        except UploadError as exc:
            raise RecordError(f"RECORD_STREAM: {exc}") from None
        except OSError as exc:
            raise RecordError(f"RECORD_STREAM: cannot create the SER file in {target.display(comps)}: "
                              f"{exc.strerror or exc}") from None
        limits = self.dev.vector("LIMITS")
        limit_mb = float(limits.number("LIMITS_BUFFER_MAX").value) if limits is not None else 512.0
        rec = _Recording(mode=mode, path=path, name=name, dir_fd=dir_fd, fd=fd, limit_bytes=int(limit_mb * (1 << 20)),
                         target_frames=int(self._frames) if mode == "RECORD_FRAME_ON" else 0,
                         duration=self._duration if mode == "RECORD_DURATION_ON" else 0.0,
                         started_stream=not self.stream.active)
        # Daemon: an exit path that never stops the INDI server must not hang on it; the orderly
        # paths (RECORD_OFF, disconnect, shutdown) close the file explicitly.
        rec.thread = threading.Thread(target=self._write, args=(rec,), name=f"indi-record-{self.dev.name}",
                                      daemon=True)
        rec.thread.start()
        with self._lock:
            self._rec = rec
        if rec.started_stream:
            try:
                await self.stream.start()
            except Exception:
                self._end(rec, None, publish=False)
                raise
        rec.t0 = time.monotonic()
        if rec.duration:
            rec.timer = self.loop.call_later(rec.duration, self._auto_end, rec)
        what = {"RECORD_ON": "until RECORD_OFF", "RECORD_DURATION_ON": f"for {rec.duration:g} s",
                "RECORD_FRAME_ON": f"for {rec.target_frames} frames"}[mode]
        vec.set_one(mode)
        vec.state = BUSY
        self.dev.publish(vec, f"[INFO] Recording {what} to {path}")

    def _resolve(self, target: UploadTarget, d: str, n: str) -> tuple[tuple[str, ...], str]:
        """The directory components below the upload base and the file name (``.ser``) to record to."""
        now = _dt.datetime.now(_dt.UTC)
        home = str(target.base)
        ed, en = expand(d, now, home), expand(n, now, home)
        try:
            comps = target.components(ed)
        except UploadError as exc:
            why = str(exc).replace("UPLOAD_DIR", "RECORD_FILE_DIR")
            raise RecordError(f"RECORD_FILE.RECORD_FILE_DIR {d[:200]!r} refused: {why}. Recordings are written "
                              f"only below the server's upload directory {home}: use a relative path "
                              f"(or one inside it, or _HOME_/...)") from None
        if not en.endswith(".ser"):
            en += ".ser"
        try:
            UploadTarget.check_prefix(en)
        except UploadError as exc:
            raise RecordError(f"RECORD_FILE.RECORD_FILE_NAME {n[:80]!r} refused: "
                              f"{str(exc).replace('UPLOAD_PREFIX', 'RECORD_FILE_NAME')}") from None
        return comps, en

    # ================================================================== ending (loop)
    def _end(self, rec: _Recording, message: str | None, state: str = IDLE, *, publish: bool = True,
             discard: bool = False) -> None:
        """Stop taking frames and let the writer close the file (it reports when done). Idempotent."""
        with self._lock:
            if self._rec is rec:
                self._rec = None
            rec.closing = True
            rec.discard = rec.discard or discard
        if rec.timer is not None:
            rec.timer.cancel()
            rec.timer = None
        rec.items.put(None)  # the writer stops at the first end marker; extra ones are harmless
        vec = self.dev.vector("RECORD_STREAM")
        if publish and vec is not None:
            vec.set_one("RECORD_OFF")
            vec.state = state
            self.dev.publish(vec, message)

    def _auto_end(self, rec: _Recording) -> None:
        """RECORD_DURATION_ON / RECORD_FRAME_ON reached its goal (loop; from a timer or the capture thread)."""
        if self._rec is not rec:
            return  # already ended (RECORD_OFF, stream off, the other trigger)
        self._end(rec, f"[INFO] Recording finished: {rec.accepted} frames in {time.monotonic() - rec.t0:.2f} s")
        self.loop.create_task(self._stop_stream_if_ours(rec, serialize=True))

    async def _stop_stream_if_ours(self, rec: _Recording, serialize: bool = False) -> None:
        """libindi's stopRecording: the capture the recording started ends with it."""
        if not rec.started_stream or not self.stream.active or self.recording:
            return
        if serialize:  # not inside a request handler: take the device's request lock like one
            async with self.dev.request_lock:
                if self.stream.active and not self.recording:
                    await self.stream.stop()
        else:
            await self.stream.stop()

    def on_stream_halted(self, alert: str | None = None) -> None:
        """The capture stopped (STREAM_OFF, exposure, disconnect, error): close the file."""
        rec = self._rec
        if rec is not None:
            rec.started_stream = False
            self._end(rec, alert or "[INFO] Recording stopped: the video stream stopped", ALERT if alert else IDLE)

    def shutdown(self) -> None:
        """Server shutdown: drop queued frames, close the file, wait a bounded time for the writer."""
        rec = self._rec
        if rec is None:
            return
        self._end(rec, None, publish=False, discard=True)
        if rec.thread is not None:
            rec.thread.join(SHUTDOWN_JOIN_S)

    # ================================================================== frames (capture thread)
    def on_frame(self, frame: Any, crop: tuple[int, int, int, int] | None, src: tuple[int, int],
                 now_ns: int) -> None:
        """Core capture thread: crop, copy and queue one frame; never blocks on disk or the loop."""
        rec = self._rec
        if rec is None:
            return
        data = frame.data
        fh, fw = data.shape[:2]
        x, y = 0, 0
        if crop is not None and (fw, fh) == src and crop != (0, 0, fw, fh):
            x, y, w, h = crop
            data = data[y:y + h, x:x + w]
        with self._lock:
            if self._rec is not rec or rec.closing:
                return
            if rec.queued_bytes + data.nbytes > rec.limit_bytes:
                rec.skipped += 1  # the disk is slower than the camera: skip rather than grow
                return
            rec.queued_bytes += data.nbytes
            rec.accepted += 1
            done = bool((rec.target_frames and rec.accepted >= rec.target_frames)
                        or (rec.duration and time.monotonic() - rec.t0 >= rec.duration))
            if done:
                rec.closing = True
        color = ser.MONO
        if data.ndim == 3:
            color = ser.BGR  # the SDK's RGB24 is B, G, R in memory
        elif (cfa := self.dev.cfa_for(frame)) is not None:
            pattern, bx, by = cfa
            color = ser.BAYER_IDS.get(shifted_pattern(pattern, bx + x, by + y), ser.MONO)
        rec.items.put((np.array(data, order="C"), ser.ticks_from_unix_ns(now_ns), color))
        if done:
            rec.items.put(None)
            try:
                self.loop.call_soon_threadsafe(self._auto_end, rec)
            except RuntimeError:  # loop closed (server stopping)
                pass

    # ================================================================== writer thread
    def _write(self, rec: _Recording) -> None:
        """Writer thread: frames from the queue into the file until the end marker; then close and report."""
        writer: ser.SerWriter | None = None
        fobj: Any = None
        error: str | None = None
        try:
            while True:
                item = rec.items.get()
                if item is None:
                    break
                arr, stamp, color = item
                with self._lock:
                    rec.queued_bytes -= arr.nbytes
                if error is not None or rec.discard:
                    continue
                try:
                    if writer is None:
                        depth = 16 if arr.dtype.itemsize == 2 else 8
                        if fobj is None:
                            fobj = os.fdopen(rec.fd, "wb", buffering=0, closefd=True)
                            rec.fd = -1  # owned by fobj now
                        writer = ser.SerWriter(fobj, arr.shape[1], arr.shape[0], depth, color,
                                               instrument=self.dev.name)
                        rec.shape = f"{arr.shape[1]}x{arr.shape[0]} {depth}-bit {_color_name(color)}"
                    writer.append(arr, stamp)
                except OSError as exc:
                    error = _os_message(exc)
                    self._report(rec, f"[ERROR] Recording stopped: cannot write {rec.path}: {error}")
                except ser.SerError as exc:
                    error = str(exc)
                    self._report(rec, f"[ERROR] Recording stopped: the video format changed ({error}); "
                                      f"the file holds the frames before the change")
                else:
                    rec.written = writer.frame_count
                    rec.first_ts = rec.first_ts or stamp
                    rec.last_ts = stamp
        finally:
            closed_error = self._close(rec, writer, fobj)
            done = error or closed_error
            self._finished(rec, done)

    def _close(self, rec: _Recording, writer: ser.SerWriter | None, fobj: Any) -> str | None:
        err = None
        try:
            if writer is not None:
                writer.close()  # closes fobj
            elif fobj is not None:
                fobj.close()
            elif rec.fd >= 0:
                os.close(rec.fd)
            rec.fd = -1
        except OSError as exc:
            err = _os_message(exc)
        try:
            if not rec.written:  # no frame: leave no empty file behind
                os.unlink(rec.name, dir_fd=rec.dir_fd)
        except OSError:
            pass
        finally:
            os.close(rec.dir_fd)
        return err

    def _report(self, rec: _Recording, message: str) -> None:
        """Writer thread: a write failed; end the recording (Alert) on the loop."""
        with self._lock:
            rec.closing = True

        def on_loop() -> None:
            if self._rec is rec:
                self._end(rec, message, ALERT)
                self.loop.create_task(self._stop_stream_if_ours(rec, serialize=True))
            else:
                self.dev.message(message)

        try:
            self.loop.call_soon_threadsafe(on_loop)
        except RuntimeError:
            pass

    def _finished(self, rec: _Recording, error: str | None) -> None:
        """Writer thread: the file is closed; say where it is (or why not) to every client."""
        self.files_closed += 1
        if rec.written:
            secs = (rec.last_ts - rec.first_ts) / 1e7
            rate = f", {(rec.written - 1) / secs:.1f} frames/s" if secs > 0 and rec.written > 1 else ""
            skipped = f", {rec.skipped} skipped (disk too slow)" if rec.skipped else ""
            text = f"[INFO] Recording saved: {rec.path} ({rec.written} frames {rec.shape}{rate}{skipped})"
            if error:
                text = f"[WARNING] Recording closed with an error ({error}): {rec.path} ({rec.written} frames)"
        else:
            text = f"[INFO] Recording ended with no frame; nothing saved ({rec.path} removed)"
        self.dev.log.info("INDI %s: %s", self.dev.name, text)
        try:
            self.loop.call_soon_threadsafe(self.dev.message, text)
        except RuntimeError:  # loop closed (server stopping)
            pass


def _create(target: UploadTarget, comps: tuple[str, ...], name: str) -> tuple[int, int, str, str]:
    """io pool: create the SER file below the upload base (never following links, never overwriting).

    Returns the directory descriptor (kept to remove an empty recording), the file descriptor, the
    file name actually used (``_1``, ``_2`` ... when taken) and its full path.
    """
    dir_fd = target.open_dir(comps)
    stem = name[:-4]
    try:
        for attempt in range(1000):
            cand = name if attempt == 0 else f"{stem}_{attempt}.ser"
            try:
                fd = os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dir_fd)
            except FileExistsError:
                continue
            return dir_fd, fd, cand, target.display(comps, cand)
        raise UploadError(f"no free file name for {name!r} in {target.display(comps)}")
    except BaseException:
        os.close(dir_fd)
        raise


def _os_message(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


def _color_name(color: int) -> str:
    names = {ser.MONO: "mono", ser.RGB: "RGB", ser.BGR: "BGR"}
    names.update({v: f"Bayer {k}" for k, v in ser.BAYER_IDS.items()})
    return names.get(color, str(color))

