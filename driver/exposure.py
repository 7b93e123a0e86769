"""The one loop that waits for an SDK exposure to finish, for single exposures and continuous capture.

It polls `ASIGetExpStatus` against a deadline (exposure + readout allowance, so it is never
unbounded), waking at least every 100 ms and every 5 ms once the exposure time is over, and
hands a stop request to its caller, who decides whether the exposure is discarded or kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from . import _zwo
from .errors import SdkError

#: Extra seconds past the exposure before giving up, plus the readout at a slow 5 MB/s.
DEADLINE_SLACK_S, SLOW_LINK_BYTES_PER_S = 10.0, 5e6
POLL_MAX_S, POLL_MIN_S = 0.1, 0.005


class Cancelled(Exception):
    """The exposure was cancelled (aborted, or its camera torn down); nothing is read out."""


def deadline_for(duration: float, nbytes: int) -> float:
    """Seconds after the start by which an exposure of `duration` and `nbytes` must have finished."""
    return duration + DEADLINE_SLACK_S + nbytes / SLOW_LINK_BYTES_PER_S


def wait_exposed(call: Callable[..., Any], handle: Any, duration: float, nbytes: int,
                 started: Callable[[], float], stop: threading.Event, *,
                 on_stop: Callable[[], bool], on_exposed: Callable[[], None] | None = None,
                 name: str = "camera") -> int:
    """Wait until the SDK's exposure ends; returns its final ASI_EXPOSURE_STATUS.

    `started()` gives the monotonic start time (it may move when the caller restarts its clock).
    When `stop` is set, `on_stop()` is called: True ends the wait at once (the caller raises or
    returns), False means the caller stopped the exposure early to keep it (and cleared `stop`), so
    the wait goes on until the SDK reports the image. `on_exposed()` runs once the exposure time has
    elapsed while the SDK still works (the readout), e.g. to move to the Reading state.
    """
    zwo = _zwo.zwoasi()
    deadline = started() + deadline_for(duration, nbytes)
    exposed_told = on_exposed is None
    while True:
        remaining = duration - (time.monotonic() - started())
        stop.wait(min(POLL_MAX_S, max(POLL_MIN_S, remaining)) if remaining > 0 else POLL_MIN_S)
        if stop.is_set() and on_stop():
            return int(zwo.ASI_EXP_WORKING)
        status = int(call("exposure status", handle.get_exposure_status))
        if status != zwo.ASI_EXP_WORKING:
            return status
        if not exposed_told and time.monotonic() - started() >= duration:
            exposed_told = True
            assert on_exposed is not None
            on_exposed()
        if time.monotonic() > deadline:
            raise SdkError(f"{name}: exposure did not complete within {deadline - started():.0f} s")
