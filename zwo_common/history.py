"""A night's history: per camera, the events that matter after the fact and telemetry for plots.

:class:`CameraHistory` listens to one camera's core events (``driver/events.py``) and keeps

* **events** (JSON lines, ``<history dir>/<camera key>.jsonl``): the server starting and stopping,
  connects, disconnects, connections lost with their cause (a USB drop, or a camera that stopped
  answering), every reconnect attempt that failed (``ReconnectFailed``), the recovery with the
  attempts it took and how long the camera was gone (``Connected(restored=True).downtime_s``, from
  the fault to the reconnection), SDK and other errors the core reports, exposures started and how
  each ended (completed, stopped, aborted, failed, with the reason), off-peak releases and
  resumptions, and settings that actually changed;
* **samples** (``<camera key>.samples.jsonl``): sensor temperature, cooler power, cooler on and the
  target, every ``sample_interval`` seconds while the camera is open (read from ``cam.status()``,
  which never waits on the SDK).

Every record has ``t``, its time in UTC ISO 8601 (``2026-12-04T21:13:05.120Z``), and ``type``.
Both files are bounded: at most ``max_events`` / ``max_samples`` records and ``max_mb`` MB each;
when a file grows past its bound it is rewritten (temp file + rename) with its newest records.

Threading: listeners are called on core threads, so :meth:`CameraHistory._on_event` only appends to
a list under a lock; one daemon thread per camera (``<model>-history``) takes the samples and
appends the pending records to the files about once a second. Nothing here keeps a camera alive:
the history holds a weak reference to it, and its thread ends when the camera is gone.
:meth:`close` (and an exit hook) writes what is pending.

The runtime attaches one history per served camera (:func:`attach`); front ends find it with
:func:`history_for` and answer with :func:`telemetry` (Alpaca ``Action("telemetry")``, the web
page's ``history.json``). ``zwo-alpaca doctor`` reads the files with :func:`load_records` and
:func:`night_summary`.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driver.errors import InvalidValueError
from driver.events import (
    Connected,
    ConnectionLost,
    CoreEvent,
    Disconnected,
    ErrorReported,
    ExposureEnded,
    ExposureStarted,
    ReconnectFailed,
    SettingsChanged,
    StateChanged,
)
from driver.state import OPEN_STATES, CameraState

from .atomic import write_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import ZWOCamera

    from .config import Config

log = logging.getLogger("zwo_alpaca.history")

S = CameraState

DEFAULT_MAX_EVENTS = 5000
DEFAULT_MAX_SAMPLES = 20000
DEFAULT_MAX_MB = 4.0
DEFAULT_SAMPLE_INTERVAL_S = 10.0
#: The core's default health-check interval (``ZWOCamera(health_interval=...)``), the keep-alive read.
DEFAULT_HEALTH_INTERVAL_S = 1.0
HEALTH_INTERVAL_RANGE = (0.1, 60.0)
SAMPLE_INTERVAL_RANGE = (0.1, 3600.0)
#: How often the thread writes pending records (a crash loses at most this much).
FLUSH_INTERVAL_S = 1.0
#: ``Action("telemetry")`` / ``history.json``: default and largest time span, and the most samples sent.
DEFAULT_HOURS = 12.0
MAX_HOURS = 24.0 * 30
MAX_SAMPLES_SENT = 1500
JOIN_S = 1.0
# A file is rewritten when it holds this much more than its bound (so rewrites are rare).
_SLACK = 1.1


# ------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class HistoryOptions:
    """The config's ``server.history`` object (see docs/configuration.md)."""

    enabled: bool = True
    max_events: int = DEFAULT_MAX_EVENTS
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_mb: float = DEFAULT_MAX_MB
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL_S

    @classmethod
    def from_config(cls, config: Config | None) -> HistoryOptions:
        """Read ``server.history``; an invalid value is logged and its default used."""
        raw = config.server_value("history", {}) if config is not None else {}
        if not isinstance(raw, dict):
            log.warning("config server.history is not an object; using the defaults")
            return cls()
        base = cls()
        out: dict[str, Any] = {}
        for name, kind, low, high in (("max_events", int, 10, 10_000_000), ("max_samples", int, 10, 10_000_000),
                                      ("max_mb", float, 0.01, 10_000.0),
                                      ("sample_interval", float, *SAMPLE_INTERVAL_RANGE)):
            if name not in raw:
                continue
            value = raw[name]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
            if ok and kind is int and value != int(value):
                ok = False
            if ok:
                out[name] = kind(value)
            else:
                log.warning("config server.history.%s = %r is invalid (valid %g to %g); using %g",
                            name, value, low, high, getattr(base, name))
        if "enabled" in raw:
            out["enabled"] = bool(raw["enabled"])
        return cls(**out)


def health_interval(config: Config | None) -> float:
    """The config's ``server.health_interval``: seconds between the core's health reads of an open
    camera (the keep-alive that notices a USB drop; default 1 s, 0.1 to 60)."""
    raw = config.server_value("health_interval", None) if config is not None else None
    if raw is None:
        return DEFAULT_HEALTH_INTERVAL_S
    low, high = HEALTH_INTERVAL_RANGE
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and low <= raw <= high:
        return float(raw)
    log.warning("config server.health_interval = %r is invalid (valid %g to %g s); using %g s",
                raw, low, high, DEFAULT_HEALTH_INTERVAL_S)
    return DEFAULT_HEALTH_INTERVAL_S


def history_dir(config: Config | None) -> Path:
    """Where the history files live: ``history/`` next to the config file."""
    if config is not None:
        return Path(config.path).expanduser().parent / "history"
    from .config import default_config_path  # noqa: PLC0415 - config imports nothing of this module

    return default_config_path().parent / "history"


def file_stem(key: str) -> str:
    """The file name (without suffix) for a camera key: ``sim:ASI294MC Pro:1A2B`` -> ``sim_ASI294MC_Pro_1A2B``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "camera"


# ------------------------------------------------------------------------------------ time


def iso_utc(epoch: float) -> str:
    """Epoch seconds as UTC ISO 8601 with milliseconds and ``Z``."""
    when = _dt.datetime.fromtimestamp(epoch, _dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso(text: Any) -> float | None:
    """The epoch seconds of an ISO 8601 time (``Z`` or an offset; none means UTC), or None."""
    if not isinstance(text, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


# ------------------------------------------------------------------------------------ files


class _Log:
    """One bounded JSON-lines file and its newest records in memory (``(epoch, record)``)."""

    def __init__(self, path: Path, limit: int, max_bytes: int) -> None:
        self.path = path
        self.limit = limit
        self.max_bytes = max_bytes
        self.records: deque[tuple[float, dict[str, Any]]] = deque(maxlen=limit)
        self.pending: list[str] = []
        self.lines = 0
        self.size = 0
        self.dropped = 0  # unreadable lines skipped when loading

    def load(self) -> None:
        loaded, lines, size, dropped = read_records(self.path)
        loaded.sort(key=lambda r: r[0])
        self.records.extend(loaded)
        self.lines, self.size, self.dropped = lines, size, dropped

    def add(self, epoch: float, record: dict[str, Any]) -> None:
        self.records.append((epoch, record))
        self.pending.append(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def since(self, epoch: float | None) -> list[dict[str, Any]]:
        return [r for t, r in self.records if epoch is None or t >= epoch]

    def take_pending(self) -> list[str]:
        out, self.pending = self.pending, []
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        return [r for _, r in self.records]


def read_records(path: Path) -> tuple[list[tuple[float, dict[str, Any]]], int, int, int]:
    """The records of a JSON-lines file as ``(epoch, record)``, with its line count, size and the
    number of lines skipped (half-written or hand-mangled lines are skipped, not fatal)."""
    out: list[tuple[float, dict[str, Any]]] = []
    lines = dropped = 0
    try:
        raw = path.read_bytes()
    except OSError:
        return out, 0, 0, 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        epoch = parse_iso(record.get("t")) if isinstance(record, dict) else None
        if epoch is None or not isinstance(record, dict):
            dropped += 1
            continue
        out.append((epoch, record))
    return out, lines, len(raw), dropped


def load_records(path: Path | str) -> list[dict[str, Any]]:
    """Every readable record of a history file, oldest first (for ``doctor`` and tests)."""
    recs, _, _, _ = read_records(Path(path))
    recs.sort(key=lambda r: r[0])
    return [r for _, r in recs]


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace ``path`` with ``lines`` atomically."""
    write_text(path, lines, prefix=".history-")


# ------------------------------------------------------------------------------------ the history


def _drop_cause(reason: str) -> str:
    """``usb`` when the camera left the bus (ASI_ERROR_CAMERA_REMOVED), else ``not_answering``."""
    inner = reason[reason.find("(") + 1:] if "(" in reason else reason
    text = inner.lower()
    return "usb" if "asi error 5)" in text or "removed" in text else "not_answering"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


class CameraHistory:
    """The persisted event history and telemetry samples of one camera (see the module's docstring).

    ``directory``: where the files go (created when needed); ``key``: the camera's config key,
    which names the files. ``clock``: wall-clock epoch seconds (tests pass their own).
    ``start``: start the thread now (tests may drive :meth:`sample_now` and :meth:`flush` instead).
    """

    def __init__(self, cam: ZWOCamera, directory: Path | str, key: str, *,
                 options: HistoryOptions | None = None, clock: Callable[[], float] = time.time,
                 start: bool = True) -> None:
        self.options = options or HistoryOptions()
        self.key = key
        self.directory = Path(directory)
        stem = file_stem(key)
        max_bytes = max(1024, int(self.options.max_mb * 1024 * 1024))
        self._events = _Log(self.directory / f"{stem}.jsonl", self.options.max_events, max_bytes)
        self._samples = _Log(self.directory / f"{stem}.samples.jsonl", self.options.max_samples, max_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()  # one writer at a time (the thread, close(), the exit hook)
        self._ref: weakref.ref[ZWOCamera] = weakref.ref(cam)
        self.camera_name = cam.name
        self.sample_interval = max(self.options.sample_interval, float(getattr(cam, "health_interval", 0.0)))
        # Recovery bookkeeping (under _lock): when the connection was lost.
        self._lost_mono: float | None = None
        self._resuming = False  # OFF_PEAK -> CONNECTING seen; the next IDLE/ERROR says how it went
        self._last_lost_reason: str | None = None
        self._last_lost_mono = 0.0
        self._settings_seen: dict[str, Any] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._write_failed = False
        self._events.load()
        self._samples.load()
        if self._events.dropped or self._samples.dropped:
            log.warning("history of %s: %d unreadable line(s) skipped", self.camera_name,
                        self._events.dropped + self._samples.dropped)
        if self.options.enabled:
            self.record("server_start", camera=self.camera_name, pid=os.getpid())
            cam.add_listener(self._on_event)
        if start and self.options.enabled:
            self.start()

    # ------------------------------------------------------------------ paths and reading
    @property
    def events_path(self) -> Path:
        """The events file."""
        return self._events.path

    @property
    def samples_path(self) -> Path:
        """The telemetry samples file."""
        return self._samples.path

    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        """The events kept in memory (the newest ``max_events``), from ``since`` (epoch s) on."""
        with self._lock:
            return self._events.since(since)

    def samples(self, since: float | None = None) -> list[dict[str, Any]]:
        """The telemetry samples kept in memory, from ``since`` on."""
        with self._lock:
            return self._samples.since(since)

    # ------------------------------------------------------------------ recording
    def record(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Append one event now (thread-safe, quick: the file is written by the thread)."""
        now = self._clock()
        rec: dict[str, Any] = {"t": iso_utc(now), "type": type_}
        rec.update({k: _jsonable(v) for k, v in fields.items() if v is not None})
        with self._lock:
            self._events.add(now, rec)
        self._wake.set()
        return rec

    def _on_event(self, event: CoreEvent) -> None:
        """The camera's listener (a core thread, maybe under the camera's lock): record, never block."""
        try:
            self._translate(event)
        except Exception:  # a history bug must never disturb the camera
            log.exception("history of %s: could not record a %s event", self.camera_name, event.kind)

    def _translate(self, event: CoreEvent) -> None:
        mono = time.monotonic()
        if isinstance(event, ExposureStarted):
            exp = event.exposure
            self.record("exposure_started", id=exp.id, duration=exp.duration, frame_type=exp.frame_type)
        elif isinstance(event, ExposureEnded):
            exp = event.exposure
            self.record("exposure_ended", id=exp.id, duration=exp.duration, frame_type=exp.frame_type,
                        outcome=event.outcome.value, reason=event.reason)
        elif isinstance(event, ConnectionLost):
            with self._lock:
                self._lost_mono = mono
                self._last_lost_reason = event.reason
                self._last_lost_mono = mono
            self.record("connection_lost", cause=_drop_cause(event.reason), reason=event.reason)
        elif isinstance(event, Connected):
            if event.restored:
                with self._lock:
                    lost = self._lost_mono
                    self._lost_mono = None
                # The core measures the downtime from the fault; our own clock from its ConnectionLost.
                downtime = event.downtime_s if event.downtime_s is not None else (
                    mono - lost if lost is not None else None)
                self.record("reconnected", recovery_s=round(downtime, 3) if downtime is not None else None,
                            attempts=event.attempts or None)
            else:
                self.record("connected")
        elif isinstance(event, ReconnectFailed):
            self.record("reconnect_failed", attempt=event.attempt, reason=event.reason)
        elif isinstance(event, Disconnected):
            with self._lock:
                gave_up = self._lost_mono is not None
                self._lost_mono = None
            self.record("disconnected", reason="recovery abandoned: disconnected on request" if gave_up
                        else "requested")
        elif isinstance(event, ErrorReported):
            with self._lock:
                duplicate = event.message == self._last_lost_reason and mono - self._last_lost_mono < 5.0
            if not duplicate:
                self.record("error", message=event.message)
        elif isinstance(event, SettingsChanged):
            changed: dict[str, Any] = {}
            with self._lock:
                for name, value in event.changes.items():
                    value = _jsonable(value)
                    if self._settings_seen.get(name, object()) != value:
                        self._settings_seen[name] = value
                        changed[name] = value
            if changed:
                self.record("settings", changes=changed)
        elif isinstance(event, StateChanged):
            self._state_changed(event.old, event.new)

    def _state_changed(self, old: CameraState, new: CameraState) -> None:
        if new == S.OFF_PEAK:
            cam = self._ref()
            until = cam.status().off_peak_until if cam is not None else None
            with self._lock:
                self._lost_mono = None
            self.record("off_peak", until=until)
            return
        if old == S.OFF_PEAK and new == S.CONNECTING:
            with self._lock:
                self._resuming = True
            self.record("off_peak_end")
            return
        with self._lock:
            resuming = self._resuming and old == S.CONNECTING
            if resuming:
                self._resuming = False
        if resuming:
            self.record("resumed" if new in OPEN_STATES else "resume_failed")

    def sample_now(self) -> dict[str, Any] | None:
        """Take one telemetry sample from ``status()`` (never waits on the SDK); None when the camera
        is not open or reports no telemetry."""
        cam = self._ref()
        if cam is None:
            return None
        st = cam.status()
        if st.state not in OPEN_STATES or (st.ccd_temperature is None and st.cooler_power is None):
            return None
        now = self._clock()
        rec: dict[str, Any] = {"t": iso_utc(now), "type": "sample", "temp": st.ccd_temperature,
                               "power": st.cooler_power, "cooler": st.cooler_on, "target": st.target_temperature,
                               "state": st.state.value}
        with self._lock:
            self._samples.add(now, rec)
        return rec

    # ------------------------------------------------------------------ writing
    def flush(self) -> None:
        """Write what is pending now and rewrite a file that outgrew its bound (blocking, quick)."""
        with self._io_lock:
            for log_ in (self._events, self._samples):
                with self._lock:
                    lines = log_.take_pending()
                if not lines:
                    continue
                try:
                    self._append(log_, lines)
                except OSError as exc:
                    if not self._write_failed:
                        log.warning("history of %s: cannot write %s: %s", self.camera_name, log_.path, exc)
                    self._write_failed = True
                else:
                    self._write_failed = False

    def _append(self, log_: _Log, lines: list[str]) -> None:
        log_.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(lines).encode("utf-8")
        with open(log_.path, "ab") as fh:
            fh.write(data)
        log_.lines += len(lines)
        log_.size += len(data)
        if log_.lines > log_.limit * _SLACK or log_.size > log_.max_bytes:
            self._compact(log_)

    def _compact(self, log_: _Log) -> None:
        """Rewrite the file with its newest records: at most ``limit``, and at most 80 % of the size bound."""
        with self._lock:
            records = log_.snapshot()
        lines = [json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records]
        budget = int(log_.max_bytes * 0.8)
        total = 0
        keep = 0
        for line in reversed(lines):
            total += len(line.encode("utf-8"))
            if total > budget:
                break
            keep += 1
        lines = lines[len(lines) - keep:]
        _rewrite(log_.path, lines)
        log_.lines = len(lines)
        log_.size = sum(len(line.encode("utf-8")) for line in lines)
        with self._lock:
            if keep < len(records):  # the size bound cut deeper than the count bound: memory follows
                for _ in range(len(records) - keep):
                    if log_.records:
                        log_.records.popleft()

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        """Start the sampling and writing thread (once)."""
        if self._thread is not None or self._closed:
            return
        name = f"{self.camera_name}-history"
        self._thread = threading.Thread(target=self._run, args=(weakref.ref(self), self._stop, self._wake), name=name,
                                        daemon=True)
        self._thread.start()
        _live.add(self)

    def step(self, next_sample: float) -> float | None:
        """One turn of the thread: a sample when ``next_sample`` (monotonic) is due, then write what
        is pending. Returns when the next sample is due, or None once the camera is gone."""
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + self.sample_interval
            try:
                self.sample_now()
            except Exception:
                log.exception("history of %s: sampling failed", self.camera_name)
        self.flush()
        if self._ref() is None:  # everything it published is written: the history is finished
            _live.discard(self)
            return None
        return next_sample

    @staticmethod
    def _run(ref: weakref.ref[CameraHistory], stop: threading.Event, wake: threading.Event) -> None:
        next_sample: float | None = 0.0
        while not stop.is_set():
            me = ref()
            if me is None:
                return
            next_sample = me.step(next_sample or 0.0)
            del me  # hold no strong reference while sleeping
            if next_sample is None:  # the camera is gone: nothing more will happen
                return
            wake.wait(max(0.05, min(FLUSH_INTERVAL_S, next_sample - time.monotonic())))
            wake.clear()

    def close(self, timeout: float = JOIN_S) -> None:
        """Record ``server_stop``, stop the thread (bounded join) and write everything pending."""
        if self._closed:
            return
        self._closed = True
        cam = self._ref()
        if cam is not None:
            cam.remove_listener(self._on_event)
        if self.options.enabled:
            self.record("server_stop")
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()
        _live.discard(self)

    # ------------------------------------------------------------------ answers
    def telemetry(self, hours: float = DEFAULT_HOURS) -> dict[str, Any]:
        """Events and samples of the last ``hours``, with a summary: what ``Action("telemetry")`` and
        the web page's ``history.json`` return."""
        now = self._clock()
        since = now - hours * 3600.0
        events = self.events(since)
        samples = self.samples(since)
        step = max(1, -(-len(samples) // MAX_SAMPLES_SENT))
        if step > 1:  # thin out evenly, keeping the newest sample
            samples = samples[::-1][::step][::-1]
        return {"camera": self.camera_name, "key": self.key, "now": iso_utc(now), "since": iso_utc(since),
                "hours": hours, "sample_interval": self.sample_interval, "events": events, "samples": samples,
                "summary": summarise(events)}


# ------------------------------------------------------------------------------------ the process's histories

# Histories with a running thread (held until their camera is gone or they are closed, so the exit
# hook writes what they hold); cameras are looked up weakly.
_live: set[CameraHistory] = set()
_by_camera: weakref.WeakKeyDictionary[Any, CameraHistory] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def attach(cam: ZWOCamera, key: str, config: Config | None = None, *, directory: Path | str | None = None,
           options: HistoryOptions | None = None) -> CameraHistory | None:
    """Give ``cam`` its history (the runtime calls this once per served camera); None when the
    config switches history off. Front ends find it with :func:`history_for`."""
    opts = options or HistoryOptions.from_config(config)
    if not opts.enabled:
        return None
    with _registry_lock:
        existing = _by_camera.get(cam)
        if existing is not None:
            return existing
        hist = CameraHistory(cam, directory if directory is not None else history_dir(config), key, options=opts)
        _by_camera[cam] = hist
    return hist


def history_for(cam: Any) -> CameraHistory | None:
    """The history attached to ``cam``, or None."""
    with _registry_lock:
        try:
            return _by_camera.get(cam)
        except TypeError:  # not weak-referenceable: never attached
            return None


def close_all(timeout: float = JOIN_S) -> None:
    """Close every open history (writes what is pending); the exit hook."""
    for hist in list(_live):
        try:
            hist.close(timeout)
        except Exception:  # exit goes on
            log.debug("history close failed", exc_info=True)


atexit.register(close_all)


def parse_hours(params: str) -> float:
    """``Action("telemetry")`` Parameters: empty, or ``{"hours": n}`` (0 < n <= 720)."""
    text = (params or "").strip()
    if not text:
        return DEFAULT_HOURS
    try:
        args = json.loads(text)
    except ValueError:
        args = None
    hours = args.get("hours", DEFAULT_HOURS) if isinstance(args, dict) else None
    if isinstance(hours, str):
        try:
            hours = float(hours)
        except ValueError:
            hours = None
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 < hours <= MAX_HOURS:
        raise InvalidValueError(f"telemetry: Parameters must be empty or {{\"hours\": n}} with n "
                                f"valid 0 to {MAX_HOURS:g}, got {text[:60]!r}")
    return float(hours)


def telemetry(cam: Any, hours: float = DEFAULT_HOURS) -> dict[str, Any]:
    """The telemetry answer for ``cam`` (empty lists, with a note, when it keeps no history)."""
    hist = history_for(cam)
    if hist is None:
        now = time.time()
        return {"camera": getattr(cam, "name", ""), "key": None, "now": iso_utc(now),
                "since": iso_utc(now - hours * 3600.0), "hours": hours, "events": [], "samples": [],
                "summary": summarise([]), "note": "no history is kept for this camera (server.history.enabled)"}
    return hist.telemetry(hours)


def telemetry_json(cam: Any, params: str = "") -> str:
    """``Action("telemetry", params)``: the JSON text (InvalidValueError for bad Parameters)."""
    return json.dumps(telemetry(cam, parse_hours(params)), separators=(",", ":"), default=str)


# ------------------------------------------------------------------------------------ summaries


def summarise(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts for a span of events: drops (by cause), recovery times, failed reconnect attempts,
    errors, exposures by outcome, off-peak releases, server starts."""
    drops = 0
    causes: dict[str, int] = {}
    recoveries: list[float] = []
    attempts = errors = off_peak = starts = 0
    exposures: dict[str, int] = {}
    lost = False
    for e in events:
        kind = e.get("type")
        if kind == "connection_lost":
            drops += 1
            lost = True
            cause = str(e.get("cause") or "not_answering")
            causes[cause] = causes.get(cause, 0) + 1
        elif kind == "reconnected":
            lost = False
            if isinstance(e.get("recovery_s"), (int, float)):
                recoveries.append(float(e["recovery_s"]))
        elif kind in ("disconnected", "off_peak", "server_start"):
            lost = False  # recovery ended: released on request, off-peak, or the server restarted
            off_peak += kind == "off_peak"
            starts += kind == "server_start"
        elif kind == "reconnect_failed":
            attempts += 1
        elif kind == "error":
            errors += 1
        elif kind == "exposure_ended":
            outcome = str(e.get("outcome") or "?")
            exposures[outcome] = exposures.get(outcome, 0) + 1
    return {"drops": drops, "drop_causes": causes, "recoveries_s": recoveries, "unrecovered": drops - len(recoveries),
            "still_lost": lost, "reconnect_failures": attempts, "errors": errors, "exposures": exposures,
            "off_peak_releases": off_peak, "server_starts": starts}


def _seconds_list(values: list[float]) -> str:
    texts = [f"{v:.1f} s" for v in values]
    if len(texts) > 5:
        texts = [*texts[:4], f"… ({len(texts) - 4} more)"]
    if len(texts) <= 1:
        return "".join(texts)
    return ", ".join(texts[:-1]) + " and " + texts[-1]


def summary_text(summary: dict[str, Any]) -> str:
    """One line: ``2 USB drops, recovered in 0.8 s and 1.1 s; 120 exposures (118 completed, 2 failed)``."""
    parts: list[str] = []
    drops = int(summary.get("drops", 0))
    if drops:
        text = f"{drops} USB drop{'s' if drops != 1 else ''}"
        recoveries = list(summary.get("recoveries_s") or [])
        if recoveries:
            text += f", recovered in {_seconds_list(recoveries)}"
        missing = drops - len(recoveries)
        if missing > 0:
            text += f", {missing} not recovered" + (" (still reconnecting)" if summary.get("still_lost") else "")
        failures = int(summary.get("reconnect_failures", 0))
        if failures:
            text += f" ({failures} failed reconnect attempt{'s' if failures != 1 else ''})"
        parts.append(text)
    else:
        parts.append("no USB drops")
    exposures: dict[str, int] = dict(summary.get("exposures") or {})
    total = sum(exposures.values())
    if total:
        order = ("completed", "stopped", "aborted", "failed")
        detail = ", ".join(f"{exposures[k]} {k}" for k in (*order, *sorted(set(exposures) - set(order)))
                           if exposures.get(k))
        parts.append(f"{total} exposure{'s' if total != 1 else ''} ({detail})")
    errors = int(summary.get("errors", 0))
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''} reported")
    releases = int(summary.get("off_peak_releases", 0))
    if releases:
        parts.append(f"{releases} off-peak release{'s' if releases != 1 else ''}")
    return "; ".join(parts)


def night_window(now: _dt.datetime) -> tuple[_dt.datetime, _dt.datetime]:
    """"Last night" for a local time ``now``: from yesterday's noon to today's noon, or to now when
    it is still morning (a night runs noon to noon, so one session is never split at midnight)."""
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if now < noon:
        return noon - _dt.timedelta(days=1), now
    return noon - _dt.timedelta(days=1), noon


def night_summary(records: list[dict[str, Any]], now: _dt.datetime | None = None) -> tuple[str, dict[str, Any]]:
    """The doctor's line for one camera's events: ``last night: 2 USB drops, recovered in ...``,
    plus ``; tonight so far: ...`` when events came after today's noon. Returns the text and the
    summaries ``{"last_night": ..., "tonight": ...}``."""
    local_now = now or _dt.datetime.now().astimezone()
    if local_now.tzinfo is None:
        local_now = local_now.astimezone()
    start, end = night_window(local_now)
    t0, t1 = start.timestamp(), end.timestamp()
    timed = [(parse_iso(r.get("t")), r) for r in records]
    last_night = [r for t, r in timed if t is not None and t0 <= t < t1]
    tonight = [r for t, r in timed if t is not None and t >= t1] if end < local_now else []

    def active(span: list[dict[str, Any]]) -> bool:
        return any(r.get("type") not in ("server_start", "server_stop") for r in span)

    summaries = {"last_night": summarise(last_night), "tonight": summarise(tonight)}
    text = "last night: " + (summary_text(summaries["last_night"]) if active(last_night) else "no activity")
    if active(tonight):
        text += "; tonight so far: " + summary_text(summaries["tonight"])
    return text, summaries
