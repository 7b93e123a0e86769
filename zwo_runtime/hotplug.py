"""Hotplug wiring: a camera plugged in after start becomes a device of every running front end.

The bus watching itself is ``driver.hotplug`` (SDK and camera logic only); this module decides
what a new camera means for the process:

* a new camera is opened and numbered by the camera set (``cameras.py``) and added to every front
  end at once (the next Alpaca device, a new INDI device);
* when the simulator stands in for a missing camera, the first real camera to appear on the real
  SDK restarts the program on it (the runtime's ``restart`` callback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import CameraInfo

    from .cameras import CameraSet
    from .frontend import FrontEnd

log = logging.getLogger("zwo_alpaca")


def start(cameras: CameraSet, front_ends: Sequence[FrontEnd], interval: float, restart: Callable[[], None]) -> Any:
    """Start watching for cameras plugged in after start; the watcher (``stop(timeout)``), or None
    when switched off (``interval`` 0) or impossible. ``restart`` is called (from the watcher's
    thread) when a real camera appears while the simulator stands in. Blocking: run it in a worker
    thread."""
    if interval <= 0:
        return None
    from driver import CameraState  # noqa: PLC0415 - imported late: `zwo-alpaca --help` needs no SDK
    from driver import hotplug as bus  # noqa: PLC0415

    sdk = cameras.sdk
    if sdk.fallback:
        if not sdk.real_path:
            log.info("hotplug: no ZWO SDK to ask for cameras; install it and restart to use a real camera")
            return None

        def attached(count: int) -> None:
            log.warning("a ZWO camera was plugged in: restarting to serve it instead of the simulated camera")
            restart()

        try:
            probe = bus.AttachProbe(sdk.real_path, attached, interval=interval)
        except (OSError, AttributeError) as exc:
            log.warning("hotplug: cannot watch %s for a camera (%s)", sdk.real_path, exc)
            return None
        log.info("hotplug: will restart on a real camera as soon as %s sees one", sdk.real_path)
        return probe.start()

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

    watcher = bus.CameraWatcher(cameras.infos, on_new, interval=interval, busy=busy)
    log.info("hotplug: looking for new cameras every %g s", interval)
    return watcher.start()
