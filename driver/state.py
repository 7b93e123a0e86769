"""The camera state machine: the states, and the one table of transitions allowed between them.

`StateMachine` holds no lock of its own: `ZWOCamera` calls `transition()` while holding its single
per-camera lock, so every state change happens in one place and under one lock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class CameraState(str, enum.Enum):
    """Where one camera is in its life. Values are stable strings (used in logs, JSON and the web page)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    IDLE = "idle"
    EXPOSING = "exposing"
    READING = "reading"
    IMAGE_READY = "image_ready"
    CAPTURING = "capturing"
    OFF_PEAK = "off_peak"
    ERROR = "error"
    DISCONNECTING = "disconnecting"
    #: disconnected for every client, but the core still holds the handle to warm the sensor up
    #: gently before switching the cooler off (bounded in time; a connect takes over)
    WARMING = "warming"


S = CameraState

# Every allowed transition. Anything else is a bug in the core and raises, so a wrong sequence is
# caught by the tests instead of silently corrupting what clients see.
TRANSITIONS: dict[CameraState, frozenset[CameraState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING, S.OFF_PEAK}),
    S.CONNECTING: frozenset({S.IDLE, S.DISCONNECTED, S.ERROR, S.DISCONNECTING, S.CAPTURING}),
    S.IDLE: frozenset({S.EXPOSING, S.CAPTURING, S.ERROR, S.DISCONNECTING, S.OFF_PEAK}),
    S.EXPOSING: frozenset({S.READING, S.IDLE, S.ERROR, S.DISCONNECTING}),
    S.READING: frozenset({S.IMAGE_READY, S.IDLE, S.ERROR, S.DISCONNECTING}),
    S.IMAGE_READY: frozenset({S.EXPOSING, S.CAPTURING, S.IDLE, S.ERROR, S.DISCONNECTING, S.OFF_PEAK}),
    S.CAPTURING: frozenset({S.IDLE, S.ERROR, S.DISCONNECTING, S.OFF_PEAK}),
    S.OFF_PEAK: frozenset({S.CONNECTING, S.DISCONNECTED, S.DISCONNECTING}),
    S.ERROR: frozenset({S.CONNECTING, S.DISCONNECTING, S.DISCONNECTED, S.IDLE, S.EXPOSING}),
    S.DISCONNECTING: frozenset({S.DISCONNECTED, S.OFF_PEAK, S.WARMING}),
    S.WARMING: frozenset({S.DISCONNECTED, S.CONNECTING}),
}

# States in which the camera handle is open and usable for a new exposure.
READY_STATES = frozenset({S.IDLE, S.IMAGE_READY})
# States in which the SDK handle is (or may be) open.
OPEN_STATES = frozenset({S.IDLE, S.EXPOSING, S.READING, S.IMAGE_READY, S.CAPTURING})


class InvalidTransition(RuntimeError):
    """A transition not in `TRANSITIONS` was attempted: a defect in the core, never a user error."""


class StateMachine:
    """Current state plus the transition check; observers are told of every change.

    Not thread-safe by itself: the owner calls `transition` under its lock, and observers must be
    quick (they run under that lock).
    """

    def __init__(self, on_change: Callable[[CameraState, CameraState], None] | None = None) -> None:
        self._state = CameraState.DISCONNECTED
        self._on_change = on_change

    @property
    def state(self) -> CameraState:
        """The current state (an atomic read)."""
        return self._state

    def can(self, new: CameraState) -> bool:
        """Whether `new` is reachable from the current state in one step."""
        return new == self._state or new in TRANSITIONS[self._state]

    def transition(self, new: CameraState) -> CameraState:
        """Move to `new`; returns the previous state. Staying in the same state is a no-op."""
        old = self._state
        if new == old:
            return old
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(f"camera state {old.value} -> {new.value} is not allowed")
        self._state = new
        if self._on_change is not None:
            self._on_change(old, new)
        return old
