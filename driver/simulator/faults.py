"""Fault injection: forced error returns and cameras that vanish at a chosen moment.

Scheduled unplugs are carried out twice over, so they are exact and never missed: a timer thread
fires at the due time (so enumeration changes even if nobody is calling), and every SDK call first
performs any unplug that is already due (so a caller polling the exposure status can never see the
exposure complete when the unplug was due before its end).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

PHASES = ("exposure", "readout")

#: Behaviours a real camera might show where the SDK contract (driver/sdk_contract.py) assumes
#: otherwise: switched on with FaultPlan.set_quirk to see what the core and `zwo-alpaca selftest` do then.
QUIRKS: dict[str, str] = {
    "stop_discards_image": "ASIStopExposure mid-exposure fails the exposure (status FAILED, no image) instead "
                           "of keeping its shorter image (contradicts clause exp.stop_keeps_image)",
    "busy_open_removed": "ASIOpenCamera of a camera busy in another process answers CAMERA_REMOVED (5) "
                         "instead of GENERAL_ERROR (16) (the other code clause open.busy_elsewhere allows)",
}


@dataclass
class _Injection:
    function: str
    code: int
    remaining: int
    slot: int | None


@dataclass
class _PendingUnplug:
    slot: int
    phase: str
    delay: float
    token: Any  # the exposure or video session that entered the phase
    due: float = 0.0
    timer: threading.Timer | None = None
    fired: bool = False


class UnplugTarget(Protocol):
    """What a FaultPlan needs from the SimulatedSDK that owns it (declared here, so this module
    depends on nothing above it)."""

    def unplug(self, slot: int, *, at: float | None = None) -> None:
        """Pull the cable of the camera in ``slot``, deemed to happen at monotonic time ``at``."""


@dataclass
class FaultPlan:
    """The faults armed on one SimulatedSDK (see SimulatedSDK.inject / unplug_after / video_timeouts)."""

    sdk: UnplugTarget
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _injections: list[_Injection] = field(default_factory=list)
    _arms: dict[int, tuple[str, float]] = field(default_factory=dict)
    _pending: list[_PendingUnplug] = field(default_factory=list)
    _closed: bool = False
    _quirks: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ quirks

    def set_quirk(self, name: str, on: bool = True) -> None:
        """Switch one of `QUIRKS` on or off (ValueError names the valid ones)."""
        if name not in QUIRKS:
            raise ValueError(f"unknown quirk {name!r}; known: {', '.join(sorted(QUIRKS))}")
        with self._lock:
            if on:
                self._quirks.add(name)
            else:
                self._quirks.discard(name)

    def quirk(self, name: str) -> bool:
        """Whether quirk `name` is on."""
        return name in self._quirks

    # ------------------------------------------------------------------ forced error returns

    def inject(self, function: str, code: int, count: int, slot: int | None) -> None:
        with self._lock:
            self._injections.append(_Injection(function, int(code), int(count), slot))

    def take(self, function: str, slot: int | None) -> int | None:
        """The error the next call of `function` on `slot` must return, if one is armed (consumes it)."""
        if not self._injections:  # fast path, unlocked read is fine
            return None
        with self._lock:
            for inj in self._injections:
                if inj.function == function and inj.remaining > 0 and (inj.slot is None or inj.slot == slot):
                    inj.remaining -= 1
                    code = inj.code
                    self._injections = [i for i in self._injections if i.remaining > 0]
                    return code
        return None

    def pending_injections(self) -> list[tuple[str, int, int, int | None]]:
        with self._lock:
            return [(i.function, i.code, i.remaining, i.slot) for i in self._injections]

    # ------------------------------------------------------------------ scheduled unplugs

    def arm_unplug(self, slot: int, phase: str, delay: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._arms[slot] = (phase, float(delay))

    def phase_started(self, slot: int, token: Any, phases: dict[str, tuple[float, float]],
                      rescheduled: bool = False) -> None:
        """An exposure or video session began (or, rescheduled, was stopped early and its phases moved).

        The armed unplug happens `delay` seconds into the phase, but never after the phase ends, so
        the frame in flight is always lost.
        """
        with self._lock:
            if self._closed:
                return
            if rescheduled:
                pend = next((p for p in self._pending if p.token is token and not p.fired), None)
                if pend is None:
                    return
            else:
                arm = self._arms.pop(slot, None)
                if arm is None:
                    return
                pend = _PendingUnplug(slot, arm[0], arm[1], token)
                self._pending.append(pend)
            start, end = phases[pend.phase]
            # Strictly inside the phase, so a readout-phase unplug always beats the frame's completion.
            pend.due = max(min(start + pend.delay, end - 1e-6), start)
            if pend.timer is not None:
                pend.timer.cancel()
            pend.timer = threading.Timer(max(pend.due - time.monotonic(), 0.0), self._fire, args=(pend,))
            pend.timer.daemon = True
            pend.timer.start()

    def _fire(self, pend: _PendingUnplug) -> None:
        with self._lock:
            if pend.fired or self._closed:
                return
            pend.fired = True
            self._pending = [p for p in self._pending if p is not pend]
        self.sdk.unplug(pend.slot, at=pend.due)

    def process_due(self, now: float) -> None:
        """Carry out every scheduled unplug whose time has come (called at the top of each SDK call)."""
        if not self._pending:
            return
        due: list[_PendingUnplug] = []
        with self._lock:
            for p in self._pending:
                if not p.fired and p.due <= now:
                    p.fired = True
                    if p.timer is not None:
                        p.timer.cancel()
                    due.append(p)
            if due:
                self._pending = [p for p in self._pending if not p.fired]
        for p in due:
            self.sdk.unplug(p.slot, at=p.due)

    def armed(self) -> dict[int, tuple[str, float]]:
        with self._lock:
            return dict(self._arms)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for p in self._pending:
                if p.timer is not None:
                    p.timer.cancel()
            self._pending.clear()
            self._arms.clear()
            self._injections.clear()
