"""The camera set: which SDK, one device core per camera, and each camera's device number.

Both programs (``zwo-alpaca serve`` and ``zwo-alpaca-indi``) build their cameras here, through
:func:`open_cameras`, so a camera gets the same device number, UniqueID, reconnect policy and core
object whichever program serves it. Front ends are handed :class:`ServedCamera` facts; they never
open cameras themselves.

Numbering: real cameras keep the number stored for their serial in the config file (a new one gets
the lowest number no stored camera holds); simulated cameras are numbered in ``--simulator`` order
and those numbers are not stored as theirs, so they do not reserve numbers real cameras will want.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only; driver is imported late so `--help` needs no SDK
    from driver import CameraInfo, ReconnectPolicy, ZWOCamera
    from zwo_common.config import Config

log = logging.getLogger("zwo_alpaca")


@dataclass(frozen=True)
class SdkChoice:
    """Which SDK this process drives, as ``driver.sdk.load`` chose it."""

    kind: str  # "real" or "simulator"
    description: str  # driver.sdk's one-line description (library path and version, or the models)
    real_path: str | None  # the real libASICamera2 found, even when the simulator stands in for it
    fallback: bool  # True: the simulator stands in because no real camera was found

    @property
    def simulated(self) -> bool:
        """Whether the cameras are simulated (asked for with --simulator, or standing in)."""
        return self.kind == "simulator"


@dataclass(frozen=True)
class ServedCamera:
    """One camera of the set: its device number, core object and the identity clients see."""

    number: int
    cam: ZWOCamera
    key: str  # the config file's key ("sim:" + unique_key for simulated cameras)
    unique_id: str


def parse_models(text: str | None) -> list[str] | None:
    """``--simulator`` / ``ZWO_ALPACA_SIMULATOR``: a comma-separated model list (None when not given)."""
    models = [m.strip() for m in (text or "").split(",") if m.strip()]
    return models or None


def reconnect_policy(config: Config) -> ReconnectPolicy:
    """The core's reconnect backoff, from the config's ``server.reconnect`` (default 0.5 s doubling to 5 s)."""
    from driver import ReconnectPolicy  # noqa: PLC0415 - see the module's TYPE_CHECKING note

    raw = config.server_value("reconnect", {}) or {}
    base = ReconnectPolicy()
    try:
        return ReconnectPolicy(
            initial=float(raw.get("initial", base.initial)),
            factor=float(raw.get("factor", base.factor)),
            cap=float(raw.get("cap", base.cap)),
            enabled=bool(raw.get("enabled", base.enabled)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("config server.reconnect is invalid (%s); using the defaults", exc)
        return base


class CameraSet:
    """The cameras this process serves, by device number.

    Changed only by :meth:`add` (at start-up, and by the hotplug watcher's thread); readers get
    snapshots, so a front end iterating the set never sees it change under it.
    """

    def __init__(self, sdk: SdkChoice, config: Config, policy: ReconnectPolicy) -> None:
        self.sdk = sdk
        self.config = config
        self.policy = policy
        self._lock = threading.Lock()
        self._cameras: dict[int, ServedCamera] = {}

    def __iter__(self) -> Iterator[ServedCamera]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._cameras)

    def snapshot(self) -> list[ServedCamera]:
        """The cameras in device-number order."""
        with self._lock:
            return [self._cameras[n] for n in sorted(self._cameras)]

    def infos(self) -> list[CameraInfo]:
        """The CameraInfos of the cameras served (what the hotplug watcher must not offer again)."""
        return [c.cam.info for c in self.snapshot() if c.cam.info is not None]

    def next_simulated_number(self) -> int:
        """The lowest free number: where a simulated camera plugged in later goes."""
        with self._lock:
            number = 0
            while number in self._cameras:
                number += 1
            return number

    def add(self, info: CameraInfo, forced_number: int | None = None) -> ServedCamera:
        """Open a device core for a camera found at start-up or plugged in later and number it.

        Blocking (reads the camera's properties): never call it on an event loop. The config
        entry is updated in memory; the caller saves the file.
        """
        import driver  # noqa: PLC0415 - see the module's TYPE_CHECKING note

        cam = driver.ZWOCamera(info, reconnect=self.policy, logger=logging.getLogger("zwo_alpaca.core"))
        cam.describe()
        key = ("sim:" if self.sdk.simulated else "") + info.unique_key
        with self._lock:
            number, uid = self.config.assign(key, info.name, set(self._cameras), forced_number=forced_number)
            served = ServedCamera(number, cam, key, uid)
            self._cameras[number] = served
        shown = f"{info.name} (simulated)" if self.sdk.simulated else info.name
        log.info("camera %d: %s (UniqueID %s)", number, shown, uid)
        return served

    def release(self, budget: float) -> None:
        """Disconnect every camera in parallel (each ends its exposure and closes its SDK handle),
        waiting at most ``budget`` seconds in total."""
        threads = []
        for served in self.snapshot():
            t = threading.Thread(target=_quiet_disconnect, args=(served,), name=f"release-{served.number}",
                                 daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + budget
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _quiet_disconnect(served: ServedCamera) -> None:
    try:
        served.cam.disconnect_camera()
    except Exception as exc:  # noqa: BLE001 - exit goes on
        log.warning("camera %d: release failed: %s", served.number, exc)


def open_cameras(simulator: str | None, sdk_path: str | None, config: Config) -> CameraSet:
    """Load the SDK, open every camera found and number them; save the config (blocking; at start-up).

    ``simulator``: the ``--simulator`` model list (None: real cameras, and one simulated camera
    standing in when none is found). Raises the SDK's error when nothing can be served.
    """
    import driver.sdk  # noqa: PLC0415 - see the module's TYPE_CHECKING note

    models = parse_models(simulator)
    sdk = driver.sdk.load(sdk_path=sdk_path, simulator=models, fallback_to_simulator=True)
    infos = driver.sdk.enumerate_cameras()
    simulated = sdk.kind == "simulator"
    fallback = simulated and not models
    if fallback:
        log.warning("no ZWO camera found (%s): serving a SIMULATED camera instead", sdk.reason)
    cameras = CameraSet(SdkChoice(sdk.kind, sdk.describe(), sdk.real_path, fallback), config,
                        reconnect_policy(config))
    for order, info in enumerate(infos):
        cameras.add(info, order if simulated else None)
    config.save()
    return cameras
