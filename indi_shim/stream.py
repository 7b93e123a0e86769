"""Live video for the INDI front end: libindi's StreamManager properties over the core's video capture.

One job: turn the frames of `ZWOCamera.start_capture(..., mode="video")` into what libindi's
StreamManager publishes, so KStars/Ekos's "video stream" window works. Names, members, permissions,
defaults and the "Streaming" tab follow libindi (libs/indibase/stream/streammanager.cpp):

* ``CCD_VIDEO_STREAM`` (``STREAM_ON``/``STREAM_OFF``): Busy while streaming, Idle when off.
* ``STREAMING_EXPOSURE`` (``STREAMING_EXPOSURE_VALUE`` s, ``STREAMING_DIVISOR_VALUE``): the video
  exposure; a divisor N > 1 drops every N-th frame before it is counted (libindi's rule).
* ``FPS`` (``EST_FPS``, ``AVG_FPS``), ``STREAM_DELAY`` (``STREAM_DELAY_TIME``): measurements.
* ``CCD_STREAM_FRAME`` (``X``, ``Y``, ``WIDTH``, ``HEIGHT``): a crop of the *binned* capture frame,
  reset to the whole frame whenever the capture frame's size changes (libindi's setSize).
* ``CCD_STREAM_ENCODER``: ``RAW`` only (no JPEG encoder is installed with this project).
* ``LIMITS`` (``LIMITS_BUFFER_MAX`` MB, ``LIMITS_PREVIEW_FPS``): the preview rate cap; the buffer
  limit bounds the frames queued for the SER recorder.
* ``RECORD_STREAM``, ``RECORD_FILE``, ``RECORD_OPTIONS``, ``CCD_STREAM_RECORDER``: SER recording of
  the full-depth frames, in `recorder.py`; this module hands it every counted frame.

Frames go out in the ``CCD1`` BLOB with format ``.stream`` and size = the payload length, as
libindi's RawEncoder sends them. KStars decides how to draw a ``.stream`` payload from its size
alone: stream WIDTH x HEIGHT bytes is 8-bit grey, more is 8-bit RGB (videowg.cpp). So, exactly as
libindi's StreamManager does, 16-bit frames are reduced to 8 bits (the high byte: ZWO data is
MSB-aligned) and RGB24 frames, which the SDK delivers as BGR, are reordered to RGB (as indi_asi).

Rate: the camera runs at its own pace; at most ``LIMITS_PREVIEW_FPS`` frames a second are encoded
(one at a time: a frame arriving while the previous one is still being encoded is dropped) and each
client holds at most one unsent stream frame, which a newer one replaces silently, so a slow client
always gets the newest frame rather than a backlog.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from . import protocol as P
from .blob import EncodedBlob
from .device_base import Client, Reject
from .protocol import ALERT, BUSY, IDLE, OK, Number, Switch, Vector
from .recorder import RecorderDevice, StreamRecorder

STREAM_TAB = "Streaming"
STREAM_FORMAT = ".stream"  # libindi RawEncoder, uncompressed
FPS_PUBLISH_S = 0.5  # FPS is pushed at most this often (libindi: every 100 ms window; KStars shows it)
STREAM_PROPERTIES = ("CCD_VIDEO_STREAM", "STREAM_DELAY", "STREAMING_EXPOSURE", "FPS", "RECORD_STREAM", "RECORD_FILE",
                     "RECORD_OPTIONS", "CCD_STREAM_FRAME", "CCD_STREAM_ENCODER", "CCD_STREAM_RECORDER", "LIMITS")


class StreamError(Reject):
    """A stream request is refused; `message` says why and what is allowed."""


class StreamDevice(RecorderDevice, Protocol):
    """What the live video needs of its device (the CCD device's public interface)."""

    cam: Any

    def binned_frame_size(self) -> tuple[int, int]:
        """The capture frame's size in binned pixels (what a video frame measures)."""

    @property
    def exposure_in_progress(self) -> bool:
        """Whether a single exposure (from any front end) is running."""


class VideoStream:
    """The streaming properties of one CCD device and the frames they produce.

    Property handlers and publishing run on the server's event loop; `_on_frame` runs on the core's
    capture thread and only measures, converts and hands the result to the loop.
    """

    def __init__(self, device: StreamDevice) -> None:
        self.dev = device
        self.loop = device.loop
        self.active = False
        self.frames_sent = 0  # frames handed to clients (for tests and diagnostics)
        self._session = 0  # bumped on every start/stop: frames of an older session are dropped
        self._lock = threading.Lock()  # guards the fields below, shared with the capture thread
        self._times: deque[float] = deque(maxlen=256)
        self._counted = 0
        self._last_sent = 0.0
        self._encoding = False
        self._crop: tuple[int, int, int, int] | None = None  # x, y, w, h in binned pixels
        self._src: tuple[int, int] = (0, 0)  # binned frame size the crop refers to
        self._divisor = 1
        self._preview_fps = 10.0
        self._fps_task: asyncio.Task[None] | None = None
        self.recorder = StreamRecorder(device, self)  # RECORD_STREAM & co.: SER files of this stream's frames

    # ================================================================== definitions
    def properties(self) -> list[Vector]:
        """The StreamManager property set, built from the camera's current state (on connect)."""
        self.active = False
        vec = self.dev.make_vector
        info = self.dev.cam.info
        exp_min = max(1e-6, float(info.exposure_min_s))
        exp_max = min(60.0, float(info.exposure_max_s))
        w, h = self._binned_size()
        self._src = (w, h)
        self._crop = (0, 0, w, h)
        rec = self.recorder.properties()
        return [
            vec("Switch", "CCD_VIDEO_STREAM", "Video Stream", STREAM_TAB, "rw",
                [Switch("STREAM_ON", "Stream On"), Switch("STREAM_OFF", "Stream Off", True)],
                rule="OneOfMany", timeout=0),
            vec("Number", "STREAM_DELAY", "Video Stream Delay", STREAM_TAB, "ro", [
                Number("STREAM_DELAY_TIME", "Delay (s)", "%.3f", 0, 60, 0.001, 0)], timeout=0),
            vec("Number", "STREAMING_EXPOSURE", "Expose", STREAM_TAB, "rw", [
                Number("STREAMING_EXPOSURE_VALUE", "Duration (s)", "%.6f", exp_min, exp_max, 0.1,
                       min(max(0.1, exp_min), exp_max)),
                Number("STREAMING_DIVISOR_VALUE", "Divisor", "%.f", 1, 15, 1, 1)]),
            vec("Number", "FPS", "FPS", STREAM_TAB, "ro", [
                Number("EST_FPS", "Instant.", "%.2f", 0, 999, 0, 0),
                Number("AVG_FPS", "Average (1 sec.)", "%.2f", 0, 999, 0, 0)]),
            # libindi's definition order: the recording set sits between FPS and the stream frame.
            rec["RECORD_STREAM"], rec["RECORD_FILE"], rec["RECORD_OPTIONS"],
            vec("Number", "CCD_STREAM_FRAME", "Frame", STREAM_TAB, "rw", [
                Number("X", "Left", "%.f", 0, max(0, w - 1), 0, 0), Number("Y", "Top", "%.f", 0, max(0, h - 1), 0, 0),
                Number("WIDTH", "Width", "%.f", 1, w, 0, w), Number("HEIGHT", "Height", "%.f", 1, h, 0, h)]),
            vec("Switch", "CCD_STREAM_ENCODER", "Encoder", STREAM_TAB, "rw", [Switch("RAW", "RAW", True)],
                rule="OneOfMany", timeout=0),
            rec["CCD_STREAM_RECORDER"],
            vec("Number", "LIMITS", "Limits", STREAM_TAB, "rw", [
                Number("LIMITS_BUFFER_MAX", "Maximum Buffer Size (MB)", "%.0f", 1, 65536, 1, 512),
                Number("LIMITS_PREVIEW_FPS", "Maximum Preview FPS", "%.0f", 1, 120, 1, self._preview_fps)],
                timeout=0),
        ]

    def handler(self, name: str) -> Callable[..., Any] | None:
        """The coroutine handling a client's new value for `name`, if it is a stream property."""
        rec = self.recorder.handler(name)
        if rec is not None:
            return rec
        return {
            "CCD_VIDEO_STREAM": self._new_video_stream, "STREAMING_EXPOSURE": self._new_streaming_exposure,
            "CCD_STREAM_FRAME": self._new_stream_frame, "CCD_STREAM_ENCODER": self._new_encoder,
            "LIMITS": self._new_limits,
        }.get(name)

    def _binned_size(self) -> tuple[int, int]:
        w, h = self.dev.binned_frame_size()
        return max(1, w), max(1, h)

    def _prop(self, name: str) -> Vector | None:
        return self.dev.vector(name)

    # ================================================================== requests
    async def _new_video_stream(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.dev.require_connected(vec)
        if values.get("STREAM_ON"):
            await self.start()
        elif values.get("STREAM_OFF"):
            await self.stop()

    async def start(self) -> None:
        """STREAM_ON: start the core's video capture with the current STREAMING_EXPOSURE."""
        vec = self._prop("CCD_VIDEO_STREAM")
        if vec is None:
            raise StreamError("CCD_VIDEO_STREAM: the camera is not connected")
        if self.active:
            self.dev.publish(vec)
            return
        if self.dev.exposure_in_progress:
            raise StreamError("CCD_VIDEO_STREAM: an exposure is in progress; abort it (CCD_ABORT_EXPOSURE) or wait "
                              "for it to finish, then start the stream")
        self._refresh_src()
        exp = self._prop("STREAMING_EXPOSURE")
        exposure = float(exp.number("STREAMING_EXPOSURE_VALUE").value) if exp is not None else 0.1
        self._reset_counters()
        session = self._session
        # The core calls back on its capture thread; the session number ties frames to this start.
        await self.dev.server.call(
            lambda: self.dev.cam.start_capture(lambda f: self._on_frame(f, session), exposure=exposure, mode="video"))
        self.active = True
        vec.set_one("STREAM_ON")
        vec.state = BUSY
        self.dev.publish(vec, f"[INFO] Starting the video stream with exposure {exposure:g} s")
        if self._fps_task is None or self._fps_task.done():
            self._fps_task = self.loop.create_task(self._publish_fps(), name=f"indi-fps-{self.dev.name}")

    async def stop(self, message: str | None = None) -> None:
        """STREAM_OFF (or an exposure request): stop the core's capture; the camera returns to idle."""
        was = self.active
        self._halt()
        if was:
            await self.dev.server.call(self.dev.cam.stop_capture)
        self._publish_off(message)

    def _halt(self, alert: str | None = None) -> None:
        """Forget the running stream at once (no camera call): later frames are dropped, a recording
        is closed (`alert`: why the capture failed, for RECORD_STREAM)."""
        self.active = False
        self.recorder.on_stream_halted(alert)
        with self._lock:
            self._session += 1
            self._encoding = False
        if self._fps_task is not None:
            self._fps_task.cancel()
            self._fps_task = None
        # Frames already queued but not yet started would reach clients after "stream off".
        self.dev.server.discard_unsent_blobs(self.dev.name, "CCD1", STREAM_FORMAT)

    def _publish_off(self, message: str | None = None, state: str = IDLE) -> None:
        vec = self._prop("CCD_VIDEO_STREAM")
        if vec is not None:
            vec.set_one("STREAM_OFF")
            vec.state = state
            self.dev.publish(vec, message)
        fps = self._prop("FPS")
        if fps is not None and (fps.number("EST_FPS").value or fps.number("AVG_FPS").value):
            fps.number("EST_FPS").value = fps.number("AVG_FPS").value = 0
            fps.state = IDLE
            self.dev.publish(fps)

    def on_disconnected(self) -> None:
        """The camera was disconnected (the core's teardown already stopped its capture)."""
        self._halt()

    def shutdown(self) -> None:
        """Server shutdown: close a recording's file within a bounded time (queued frames are dropped),
        then forget the stream."""
        self.recorder.shutdown()
        self._halt()

    def on_core_state(self) -> None:
        """The core's state changed: if its capture ended on its own (an error), say the stream stopped."""
        if not self.active:
            return
        st = self.dev.cam.status()
        # While the core reconnects after an unplug its capture intent stays set and video resumes.
        if not st.capturing:
            why = f"[ERROR] the video stream stopped: {st.error or 'the camera ended video capture'}"
            self._halt(alert=why)
            self._publish_off(why, ALERT)

    async def _new_streaming_exposure(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.dev.require_connected(vec)
        if self.recorder.recording:  # a change restarts the capture, which would end the recording
            raise StreamError("STREAMING_EXPOSURE cannot change while recording; send RECORD_STREAM.RECORD_OFF first")
        div = values.get("STREAMING_DIVISOR_VALUE", vec.number("STREAMING_DIVISOR_VALUE").value)
        if abs(div - round(div)) > 1e-9:
            raise StreamError(f"STREAMING_EXPOSURE.STREAMING_DIVISOR_VALUE must be a whole number 1..15, "
                              f"got {P.fmt_number(div)}")
        old = vec.number("STREAMING_EXPOSURE_VALUE").value
        for k, v in values.items():
            vec.number(k).value = int(round(v)) if k == "STREAMING_DIVISOR_VALUE" else float(v)
        with self._lock:
            self._divisor = int(vec.number("STREAMING_DIVISOR_VALUE").value)
        if self.active and vec.number("STREAMING_EXPOSURE_VALUE").value != old:
            # The core reads the exposure when capture starts: restart it so the change applies now.
            self._halt()
            await self.dev.server.call(self.dev.cam.stop_capture)
            try:
                await self.start()
            except Exception:
                self._publish_off("[ERROR] the video stream could not be restarted with the new exposure", ALERT)
                raise
        vec.state = OK
        self.dev.publish(vec)

    async def _new_stream_frame(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        self.dev.require_connected(vec)
        if self.recorder.recording:  # libindi: "Recording device is busy" (a SER file has one size)
            raise StreamError("CCD_STREAM_FRAME cannot change while recording; send RECORD_STREAM.RECORD_OFF first")
        if not self.active:
            self._refresh_src()
        sw, sh = self._src
        x = int(round(values.get("X", vec.number("X").value)))
        y = int(round(values.get("Y", vec.number("Y").value)))
        w = int(round(values.get("WIDTH", vec.number("WIDTH").value)))
        h = int(round(values.get("HEIGHT", vec.number("HEIGHT").value)))
        if not (0 <= x < sw and 0 <= y < sh) or w < 1 or h < 1:
            raise StreamError(f"CCD_STREAM_FRAME ({x},{y}) {w}x{h} is outside the {sw}x{sh} binned frame: need "
                              f"0 <= X < {sw}, 0 <= Y < {sh}, WIDTH and HEIGHT >= 1")
        # As libindi: a crop reaching past the frame is clipped to it rather than refused.
        w, h = min(w, sw - x), min(h, sh - y)
        with self._lock:
            self._crop = (x, y, w, h)
        for k, v in (("X", x), ("Y", y), ("WIDTH", w), ("HEIGHT", h)):
            vec.number(k).value = v
        vec.state = OK
        self.dev.publish(vec)

    async def _new_encoder(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        vec.set_one("RAW")
        vec.state = OK
        self.dev.publish(vec)

    async def _new_limits(self, client: Client, vec: Vector, values: dict[str, Any]) -> None:
        for k, v in values.items():
            vec.number(k).value = float(v)
        with self._lock:
            self._preview_fps = float(vec.number("LIMITS_PREVIEW_FPS").value)
        vec.state = OK
        self.dev.publish(vec)

    # ================================================================== frames (capture thread)
    def _reset_counters(self) -> None:
        with self._lock:
            self._session += 1
            self._times.clear()
            self._counted = 0
            self._last_sent = 0.0
            self._encoding = False

    def _on_frame(self, frame: Any, session: int) -> None:
        """Core capture thread: measure, pick, convert; never blocks on the loop or a client."""
        now = time.monotonic()
        now_ns = time.time_ns()
        with self._lock:
            if session != self._session:
                return
            self._counted += 1
            if self._divisor > 1 and self._counted % self._divisor == 0:
                return  # libindi drops every N-th frame before counting it
            self._times.append(now)
            rec_crop, rec_src = self._crop, self._src
        # Every counted frame is recorded (full depth), whatever the preview rate; the recorder only
        # copies and queues it. Outside the lock: the copy of a big frame takes milliseconds.
        self.recorder.on_frame(frame, rec_crop, rec_src, now_ns)
        with self._lock:
            if session != self._session:
                return
            interval = 1.0 / max(self._preview_fps, 1e-3)
            # 10 % slack: a camera running exactly at the cap must not lose every other frame.
            if self._encoding or (self._last_sent and now - self._last_sent < interval * 0.9):
                return
            self._encoding = True
            self._last_sent = now
            crop = self._crop
            src = self._src
        try:
            payload, size = self._convert(frame, crop, src)
        except Exception:
            self.dev.log.exception("INDI %s: cannot convert a video frame", self.dev.name)
            with self._lock:
                self._encoding = False
            return
        try:
            self.loop.call_soon_threadsafe(self._publish_frame, session, payload, size, now)
        except RuntimeError:  # loop closed (server stopping)
            pass

    def _convert(self, frame: Any, crop: tuple[int, int, int, int] | None,
                 src: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """The frame as KStars draws a raw stream: 8-bit grey or 8-bit RGB, cropped; a fresh copy
        (the core reuses its buffer after two more frames)."""
        data = frame.data
        fh, fw = data.shape[:2]
        if (fw, fh) != src or crop is None:
            crop = (0, 0, fw, fh)  # the frame size changed: stream it whole (the loop resets the property)
        x, y, w, h = crop
        if (x, y, w, h) != (0, 0, fw, fh):
            data = data[y:y + h, x:x + w]
        fresh = False
        if data.dtype == np.uint16:
            data = (data >> 8).astype(np.uint8)
            fresh = True
        if data.ndim == 3:
            data = data[..., ::-1]  # BGR (SDK) -> RGB (KStars' RGB888)
        # A view of the core's buffer must be copied; a freshly computed contiguous array need not be.
        out = np.ascontiguousarray(data) if fresh else np.array(data, dtype=np.uint8, order="C")
        return out.reshape(-1), (fw, fh)

    # ================================================================== frames (loop)
    def _publish_frame(self, session: int, payload: np.ndarray, size: tuple[int, int], t0: float) -> None:
        if session != self._session or not self.active:
            return
        if size != self._src:
            self._src_changed(size)
        self.loop.create_task(self._send(session, payload, t0))

    def _refresh_src(self) -> None:
        """Follow binning/subframe changes made while not streaming (the capture frame to crop)."""
        size = self._binned_size()
        if size != self._src:
            self._src_changed(size)

    def _src_changed(self, size: tuple[int, int]) -> None:
        """The capture frame's size changed: reset CCD_STREAM_FRAME to the whole new frame (libindi)."""
        w, h = size
        self._src = size
        with self._lock:
            self._crop = (0, 0, w, h)
        vec = self._prop("CCD_STREAM_FRAME")
        if vec is not None:
            vec.number("X").max, vec.number("Y").max = max(0, w - 1), max(0, h - 1)
            vec.number("WIDTH").max, vec.number("HEIGHT").max = w, h
            for k, v in (("X", 0), ("Y", 0), ("WIDTH", w), ("HEIGHT", h)):
                vec.number(k).value = v
            vec.state = OK
            self.dev.publish(vec)

    async def _send(self, session: int, payload: np.ndarray, t0: float) -> None:
        try:
            if not self.dev.server.clients_wanting_blob(self.dev.name, "CCD1"):
                return
            blob = EncodedBlob(payload.data.cast("B"), STREAM_FORMAT, self.loop)
            blob.start(self.dev.server.cpu_pool)
            if not await blob.wait() or session != self._session:
                return
            # At most one unsent stream frame per client, replaced by the newest without the
            # "not keeping up" message (a flood at video rates); an exposure image still warns.
            self.dev.server.discard_unsent_blobs(self.dev.name, "CCD1", STREAM_FORMAT)
            self.dev.server.broadcast_blob(self.dev.name, "CCD1", "CCD1", blob)
            self.frames_sent += 1
            delay = self._prop("STREAM_DELAY")
            if delay is not None:
                delay.number("STREAM_DELAY_TIME").value = round(time.monotonic() - t0, 4)
        finally:
            with self._lock:
                if session == self._session:
                    self._encoding = False

    async def _publish_fps(self) -> None:
        """EST_FPS (the last few intervals) and AVG_FPS (the last second), pushed when they change."""
        try:
            while self.active:
                await asyncio.sleep(FPS_PUBLISH_S)
                fps = self._prop("FPS")
                if fps is None:
                    return
                now = time.monotonic()
                with self._lock:
                    times = list(self._times)
                recent = [t for t in times if now - t <= 1.0]
                span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
                avg = (len(recent) - 1) / span if span > 0 else 0.0
                last = times[-4:]
                est = (len(last) - 1) / (last[-1] - last[0]) if len(last) > 1 and last[-1] > last[0] else 0.0
                if now - (times[-1] if times else 0.0) > 2.0:
                    est = 0.0  # no frame for a while: the instantaneous rate is not the old one
                est, avg = round(est, 2), round(avg, 2)
                if (fps.number("EST_FPS").value, fps.number("AVG_FPS").value) != (est, avg):
                    fps.number("EST_FPS").value, fps.number("AVG_FPS").value = est, avg
                    fps.state = OK
                    self.dev.publish(fps)
                delay = self._prop("STREAM_DELAY")
                if delay is not None:
                    self.dev.publish(delay)
        except asyncio.CancelledError:
            pass

