"""Hotplug wiring: a camera plugged in after start becomes a device of every running front end.

The bus watching itself is ``driver.hotplug`` (SDK and camera logic only); this module decides
what a camera that appears means for the process:

* one the camera set already serves - a camera the config knows that was not plugged in at
  start, or a served camera unplugged and plugged back - is brought in under its own device
  number and UniqueID (``ZWOCamera.plugged_in``: it adopts what the SDK says of the unit and
  connects it if a client asked while it was absent); no new device appears;
* any other camera is opened and numbered by the camera set (``cameras.py``) and added to every
  front end at once (the next Alpaca device, a new INDI device).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import CameraInfo

    from .cameras import CameraSet
    from .frontend import FrontEnd

log = logging.getLogger("zwo_alpaca")


def start(cameras: CameraSet, front_ends: Sequence[FrontEnd], interval: float) -> Any:
    """Start watching for cameras plugged in after start; the watcher (``stop(timeout)``), or None
    when switched off (``interval`` 0). Blocking: run it in a worker thread."""
    if interval <= 0:
        return None
    from driver import CameraState  # noqa: PLC0415 - imported late: `zwo-alpaca --help` needs no SDK
    from driver import hotplug as bus  # noqa: PLC0415

    sdk = cameras.sdk

    def on_known(info: CameraInfo) -> bool:
        # Runs in the watcher's thread: plugged_in may connect the camera (blocking).
        served = cameras.known(info)
        if served is None:
            return False
        was_absent = served.cam.info is None
        connected = served.cam.plugged_in(info)
        if was_absent or connected:
            log.info("hotplug: camera %d, %s (serial %s), is plugged in%s", served.number, info.name,
                     info.serial or "none", ": connected, as a client asked" if connected else "")
        return True

    def on_new(info: CameraInfo) -> None:
        # Runs in the watcher's thread: opening the camera and adding it to a front end block.
        forced = cameras.next_simulated_number() if sdk.simulated else None
        served = cameras.add(info, forced)
        cameras.config.save()
        for front_end in front_ends:
            shown = front_end.add_camera(served.number, served.cam, key=served.key, unique_id=served.unique_id)
            log.info("hotplug: %s is %s", info.name, shown)

    on_the_wire = {CameraState.CONNECTING, CameraState.READING, CameraState.CAPTURING}

    def busy() -> bool:
        return any(c.cam.status().state in on_the_wire for c in cameras)

    watcher = bus.CameraWatcher(cameras.infos, on_new, interval=interval, busy=busy, on_known=on_known)
    log.info("hotplug: looking for new cameras every %g s", interval)
    return watcher.start()
