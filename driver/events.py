"""Typed events the device core publishes to its listeners, and the identity of one exposure.

Front ends translate these into their protocol (INDI property states, Alpaca's polled members);
none of them reconstructs an outcome from timers or sequence numbers. Every event keeps `kind`
and `data`, the older untyped form, so a listener may still switch on a string.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .models import FRAME_TYPE_NAMES, Exposure, Frame
from .state import CameraState

__all__ = [
    "FRAME_TYPES", "Connected", "ConnectionLost", "CoreEvent", "Disconnected", "ErrorReported", "Exposure",
    "ExposureEnded", "ExposureOutcome", "ExposureStarted", "FrameCaptured", "ReconnectFailed", "SettingsChanged",
    "StateChanged",
]

FRAME_TYPES = FRAME_TYPE_NAMES


class ExposureOutcome(str, enum.Enum):
    """How an exposure ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # ended early on request; the image was kept
    ABORTED = "aborted"  # ended on request; the image was discarded
    FAILED = "failed"  # the camera failed, was unplugged or disconnected; `reason` says which


@dataclass(frozen=True)
class CoreEvent:
    """Base of every event; `kind` names it, `data` gives its fields as a dict."""

    kind: ClassVar[str] = "event"

    @property
    def data(self) -> dict[str, Any]:
        """The event's fields as a dict (the untyped form)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StateChanged(CoreEvent):
    """The camera moved from `old` to `new` (published for every transition)."""

    kind: ClassVar[str] = "state"
    old: CameraState
    new: CameraState


@dataclass(frozen=True)
class ExposureStarted(CoreEvent):
    """An exposure was accepted and is under way (published before `start_exposure` returns)."""

    kind: ClassVar[str] = "exposure_started"
    exposure: Exposure


@dataclass(frozen=True)
class ExposureEnded(CoreEvent):
    """An exposure ended; published exactly once for each `ExposureStarted`.

    `frame` is set for COMPLETED and STOPPED; `reason` says why for FAILED (and ABORTED).
    """

    kind: ClassVar[str] = "exposure_ended"
    exposure: Exposure
    outcome: ExposureOutcome
    reason: str | None = None
    frame: Frame | None = None


@dataclass(frozen=True)
class FrameCaptured(CoreEvent):
    """A frame was read out: of an exposure (`exposure` set, just before its ExposureEnded) or of
    continuous capture (`exposure` None)."""

    kind: ClassVar[str] = "frame"
    frame: Frame
    exposure: Exposure | None = None


@dataclass(frozen=True)
class Connected(CoreEvent):
    """A connection was made; `restored` when it was the core's automatic reconnect, after
    `attempts` tries and `downtime_s` seconds since the connection was lost."""

    kind: ClassVar[str] = "connected"
    restored: bool = False
    attempts: int = 0
    downtime_s: float | None = None


@dataclass(frozen=True)
class ReconnectFailed(CoreEvent):
    """One automatic reconnect attempt failed; the core tries again after its backoff."""

    kind: ClassVar[str] = "reconnect_failed"
    attempt: int
    reason: str


@dataclass(frozen=True)
class ConnectionLost(CoreEvent):
    """The camera was removed or stopped answering; the core reconnects when its policy allows."""

    kind: ClassVar[str] = "connection_lost"
    reason: str


@dataclass(frozen=True)
class Disconnected(CoreEvent):
    """The camera was released on request (teardown finished)."""

    kind: ClassVar[str] = "disconnected"


@dataclass(frozen=True)
class SettingsChanged(CoreEvent):
    """Settings or SDK controls were stored (and applied when connected)."""

    kind: ClassVar[str] = "settings"
    changes: dict[str, Any]


@dataclass(frozen=True)
class ErrorReported(CoreEvent):
    """Something failed that a user should be told about (a connect, continuous capture, a fault)."""

    kind: ClassVar[str] = "error"
    message: str
