"""SimulatedSDK: the simulated cameras, the library table zwoasi calls, and the test-facing controls."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import catalog
from .camera import AMBIENT_C, SimCamera
from .faults import PHASES, FaultPlan
from .library import NOT_INJECTABLE, PROTOTYPES, SimulatedLibrary

_T = TypeVar("_T")

__all__ = ["SimRecord", "SimulatedSDK", "default_lock_dir"]

#: Environment variable that overrides the default lock directory (useful to isolate test runs).
LOCK_DIR_ENV = "ZWO_ALPACA_SIM_LOCK_DIR"


def default_lock_dir() -> str:
    """Where camera lock files live: $ZWO_ALPACA_SIM_LOCK_DIR, else $XDG_RUNTIME_DIR/zwo-alpaca-sim,
    else /tmp/zwo-alpaca-sim-<uid>. Processes that should see each other's cameras as busy must agree on it."""
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "zwo-alpaca-sim")
    return f"/tmp/zwo-alpaca-sim-{os.getuid()}"


@dataclass
class SimRecord:
    """A snapshot of what the simulated SDK is doing (see SimulatedSDK.record)."""

    open_handles: set[int] = field(default_factory=set)  #: slots opened by this process
    exposures_running: set[int] = field(default_factory=set)  #: slots with a snapshot exposure WORKING and not stopped
    video_running: set[int] = field(default_factory=set)  #: slots in video mode
    pulse_guiding: dict[int, set[int]] = field(default_factory=dict)  #: slot -> directions on (non-empty only)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)  #: ASI function name -> calls
    plugged: set[int] = field(default_factory=set)  #: slots currently enumerated


class SimulatedSDK:
    """A simulated libASICamera2 with a set of cameras, plus fault injection and introspection.

    Build it with `driver.simulator.install(...)`, which also puts `self.library` under zwoasi.
    Cameras keep their slot (= ASI CameraID) for the simulator's lifetime; unplugged cameras
    disappear from enumeration (so SDK indexes shift) but keep their CameraID. With no models
    (`SimulatedSDK(())`) it is the SDK of a computer with no camera attached.
    """

    def __init__(self, models: Iterable[str] = ("asi294mc-pro",), *, seed: int = 0, lock_dir: str | None = None,
                 time_scale: float = 1.0, ambient_c: float = AMBIENT_C, unplugged: Iterable[int] = ()):
        # No models is a supported configuration: the SDK of a computer with no camera attached,
        # which answers every call like ZWO's library does then (tests/driver/test_sdk_differential.py).
        models = [models] if isinstance(models, str) else list(models)
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        resolved = [catalog.lookup(m) for m in models]
        self.seed = int(seed)
        self.time_scale = float(time_scale)
        self.lock_dir = os.path.abspath(lock_dir or default_lock_dir())
        #: Longest a forced video timeout (video_timeouts) waits when the caller's timeout is longer or infinite.
        self.video_timeout_cap_s = 1.0
        self._shut_down = False
        self._calls: collections.Counter[str] = collections.Counter()
        self._calls_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self.faults = FaultPlan(self)
        self.cameras: list[SimCamera] = [SimCamera(self, slot, m, self.seed, self.time_scale, ambient_c)
                                         for slot, m in enumerate(resolved)]
        # Slots whose cable is not plugged in yet: they enumerate only after replug() (hotplug tests).
        for slot in unplugged:
            self._camera(slot).plugged = False
        #: Slots the SDK has seen on the bus since install. A slot not seen yet is unknown to the SDK:
        #: its CameraID answers INVALID_ID, as every ID does in ZWO's library with no camera attached;
        #: a camera seen and then unplugged answers CAMERA_REMOVED.
        self._seen_slots = set(self._plugged_slots())
        self.library = SimulatedLibrary(self)

    def __repr__(self) -> str:
        names = ", ".join(c.model.key for c in self.cameras)
        return f"<SimulatedSDK [{names}] seed={self.seed}{' (shut down)' if self._shut_down else ''}>"

    # ------------------------------------------------------------------ internals used by cameras and the library

    def _count(self, name: str) -> None:
        with self._calls_lock:
            self._calls[name] += 1

    def _plugged_slots(self) -> list[int]:
        return [c.slot for c in self.cameras if c.plugged]

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        # One worker: enough to prepare frames while exposures run, and a fixed thread count.
        with self._executor_lock:
            if self._shut_down:
                raise RuntimeError("the simulated SDK has been shut down")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zwo-sim-frames")
            return self._executor.submit(fn, *args)

    def _seen(self, slot: int) -> bool:
        return slot in self._seen_slots

    def _camera(self, slot: int) -> SimCamera:
        if not isinstance(slot, int) or not 0 <= slot < len(self.cameras):
            valid = f"slots 0..{len(self.cameras) - 1}" if self.cameras else "it has no cameras"
            raise ValueError(f"no simulated camera in slot {slot!r} ({valid})")
        return self.cameras[slot]

    # ------------------------------------------------------------------ plug state

    def unplug(self, slot: int, *, at: float | None = None) -> None:
        """Pull the camera's cable: it leaves enumeration, every call on its CameraID returns
        ASI_ERROR_CAMERA_REMOVED, an exposure in flight ends FAILED, video stops (waiters wake with
        CAMERA_REMOVED), its handle and lock file are released and its cooler stops.
        (`at`: the monotonic time the unplug is deemed to happen, for scheduled unplugs.)"""
        self._camera(slot).unplug(at)

    def replug(self, slot: int) -> None:
        """Plug the camera (back) in: it enumerates (again) with its CameraID, closed. Also plugs in a
        camera that started unplugged, as if it were connected after the program started."""
        self._camera(slot).replug()
        self._seen_slots.add(slot)

    # ------------------------------------------------------------------ fault injection

    def unplug_after(self, slot: int, phase: str = "exposure", delay: float = 0.0) -> None:
        """Arm an unplug for the next exposure (or video start) of `slot`: `delay` seconds after it
        enters `phase` ("exposure" or "readout"), but no later than that phase's end."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
        self._camera(slot)
        self.faults.arm_unplug(slot, phase, delay)

    def inject(self, function_name: str, error_code: int, count: int = 1, slot: int | None = None) -> None:
        """Make the next `count` calls of ASI function `function_name` (on camera `slot`, or on any
        camera if None) return `error_code` without doing anything."""
        if function_name not in PROTOTYPES:
            raise ValueError(f"unknown ASI function {function_name!r}; known: {', '.join(sorted(PROTOTYPES))}")
        if function_name in NOT_INJECTABLE:
            raise ValueError(f"{function_name} returns no error code; nothing can be injected into it")
        if count < 1:
            raise ValueError("count must be >= 1")
        if slot is not None:
            self._camera(slot)
        self.faults.inject(function_name, int(error_code), int(count), slot)

    def video_timeouts(self, slot: int, count: int) -> None:
        """The next `count` ASIGetVideoData calls on `slot` return ASI_ERROR_TIMEOUT after waiting
        their timeout (at most `video_timeout_cap_s`; they wake early if video stops or the camera goes)."""
        self._camera(slot).add_video_timeouts(count)

    def set_ambient(self, celsius: float, slot: int | None = None) -> None:
        """Change the ambient temperature of one camera (or all); the sensor follows with the cooler's time constant."""
        now = time.monotonic()
        for cam in ([self._camera(slot)] if slot is not None else self.cameras):
            with cam._lock:  # noqa: SLF001 - same package
                cam._thermal.change(now, ambient=celsius)  # noqa: SLF001

    # ------------------------------------------------------------------ introspection

    def record(self) -> SimRecord:
        """What is going on now; `calls` counts every ASI function call made through the library."""
        rec = SimRecord()
        now = time.monotonic()
        with self._calls_lock:
            rec.calls = collections.Counter(self._calls)
        for cam in self.cameras:
            is_open, exposing, video, pulses = cam.record_flags(now)
            if is_open:
                rec.open_handles.add(cam.slot)
            if exposing:
                rec.exposures_running.add(cam.slot)
            if video:
                rec.video_running.add(cam.slot)
            if pulses:
                rec.pulse_guiding[cam.slot] = pulses
            if cam.plugged:
                rec.plugged.add(cam.slot)
        return rec

    def camera_state(self, slot: int) -> dict[str, Any]:
        """Physical and logical state of a camera: temperature, cooler, controls, ROI, exposure, video..."""
        return self._camera(slot).snapshot()

    # ------------------------------------------------------------------ lifetime

    def shutdown(self) -> None:
        """Release everything as if the process had exited: handles and lock files are freed, waiters
        wake, pending faults are cancelled, and every later call returns ASI_ERROR_CAMERA_REMOVED."""
        if self._shut_down:
            return
        with self._executor_lock:
            self._shut_down = True
        self.faults.close()
        for cam in self.cameras:
            cam.shutdown()
        with self._executor_lock:
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down
