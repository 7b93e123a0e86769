"""The camera set: which SDK, one device core per camera, and each camera's device number.

Both programs (``zwo-alpaca serve`` and ``zwo-alpaca-indi``) build their cameras here, through
:func:`open_cameras`, so a camera gets the same device number, UniqueID, reconnect policy and core
object whichever program serves it. Front ends are handed :class:`ServedCamera` facts; they never
open cameras themselves.

Which cameras: with ZWO's SDK, every camera on the bus *and* every camera the config file knows
(keyed by model and serial), present or not. A known camera that is not plugged in is served from
the start under its device number and UniqueID, as a device that is not connected: a connect
attempt says it is not plugged in (``ZWOCamera.for_absent``), and hotplug brings the unit in under
that same device when it appears (``hotplug.py``). With no camera attached and none known, no
device is served. Simulated cameras are served only when asked for (``--simulator``) or when no
ZWO SDK is installed at all (one simulated camera, for a demo); never on a machine with the SDK.

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

#: Logged (and shown on the setup page) when an SDK is installed but there is nothing to serve.
NO_DEVICE_MESSAGE = "no camera attached and none known from the config: serving no device; plug a camera in"


@dataclass(frozen=True)
class SdkChoice:
    """Which SDK this process drives, as ``driver.sdk.load`` chose it."""

    kind: str  # "real" or "simulator"
    description: str  # driver.sdk's one-line description (library path and version, or the models)
    fallback: bool  # True: the simulator stands in because no ZWO SDK is installed at all

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

    def key_of(self, info: CameraInfo) -> str:
        """The config file's key for a camera ("sim:" + unique_key for simulated cameras)."""
        return ("sim:" if self.sdk.simulated else "") + info.unique_key

    def known(self, info: CameraInfo) -> ServedCamera | None:
        """The served camera that a unit appearing on the bus is, if any: the same key (model and
        serial), or, for a unit without a serial number, a served camera of that model known only
        from the config (not plugged in since the start)."""
        key = self.key_of(info)
        cams = self.snapshot()
        for served in cams:
            if served.key == key:
                return served
        if not info.serial:
            for served in cams:
                if served.cam.info is None and served.cam.serial is None and served.key.startswith(info.model + "#"):
                    return served
        return None

    def add(self, info: CameraInfo, forced_number: int | None = None) -> ServedCamera:
        """Open a device core for a camera found at start-up or plugged in later and number it.

        Blocking (reads the camera's properties): never call it on an event loop. The config
        entry is updated in memory; the caller saves the file.
        """
        import driver  # noqa: PLC0415 - see the module's TYPE_CHECKING note

        cam = driver.ZWOCamera(info, reconnect=self.policy, logger=logging.getLogger("zwo_alpaca.core"))
        cam.describe()
        key = self.key_of(info)
        _observe(cam, key, self.config)
        with self._lock:
            number, uid = self.config.assign(key, info.name, set(self._cameras), forced_number=forced_number)
            served = ServedCamera(number, cam, key, uid)
            self._cameras[number] = served
        shown = f"{info.name} (simulated)" if self.sdk.simulated else info.name
        log.info("camera %d: %s (UniqueID %s)", number, shown, uid)
        return served

    def add_absent(self) -> list[ServedCamera]:
        """Serve every camera the config knows that is not served yet (not on the bus at start) as
        a device that is not plugged in, under its stored number and UniqueID. Real SDK only:
        simulated cameras are the ``--simulator`` list. The caller saves the config."""
        import driver  # noqa: PLC0415 - see the module's TYPE_CHECKING note

        if self.sdk.simulated:
            return []
        entries = self.config.snapshot().get("cameras", {})
        if not isinstance(entries, dict):
            return []
        with self._lock:
            served_keys = {c.key for c in self._cameras.values()}
        known = []
        for key, entry in entries.items():
            if not isinstance(key, str) or key.startswith("sim:") or key in served_keys or not isinstance(entry, dict):
                continue
            model, serial = _parse_key(key)
            if not model:
                continue
            stored_name = entry.get("name")
            name = stored_name if isinstance(stored_name, str) and stored_name else f"ZWO {model}"
            number = entry.get("device_number")
            known.append((number if isinstance(number, int) and number >= 0 else 1 << 30, key, name, serial))
        out = []
        for _, key, name, serial in sorted(known, key=lambda k: (k[0], k[1])):
            cam = driver.ZWOCamera.for_absent(name, serial, reconnect=self.policy,
                                              logger=logging.getLogger("zwo_alpaca.core"))
            _observe(cam, key, self.config)
            with self._lock:
                number, uid = self.config.assign(key, name, set(self._cameras))
                served = ServedCamera(number, cam, key, uid)
                self._cameras[number] = served
            log.info("camera %d: %s (serial %s, UniqueID %s), known from the config, is not plugged in: served "
                     "as not connected until it is", number, name, serial or "none", uid)
            out.append(served)
        return out

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


def _parse_key(key: str) -> tuple[str, str | None]:
    """A real camera's config key ("MODEL:SERIAL", or "MODEL#INDEX" without a serial) as (model, serial)."""
    if ":" in key:
        model, _, serial = key.rpartition(":")
        return model.strip(), serial.strip() or None
    model, _, _ = key.rpartition("#")
    return model.strip(), None


def _observe(cam: ZWOCamera, key: str, config: Config) -> None:
    """The camera's keep-alive health read every ``server.health_interval`` s, and its persisted
    event history and telemetry (``zwo_common/history.py``; the front ends find it there)."""
    from zwo_common import history  # noqa: PLC0415 - see the module's TYPE_CHECKING note

    cam.health_interval = history.health_interval(config)
    history.attach(cam, key, config)


def _quiet_disconnect(served: ServedCamera) -> None:
    try:
        served.cam.disconnect_camera()
    except Exception as exc:  # noqa: BLE001 - exit goes on
        log.warning("camera %d: release failed: %s", served.number, exc)


def open_cameras(simulator: str | None, sdk_path: str | None, config: Config) -> CameraSet:
    """Load the SDK, open every camera found, add the known ones not plugged in, and number them;
    save the config (blocking; at start-up).

    ``simulator``: the ``--simulator`` model list (None: ZWO's SDK, and one simulated camera standing
    in only when no SDK is installed at all). Raises the SDK's error when the SDK named cannot be
    used (see ``driver.sdk.load``).
    """
    import driver.sdk  # noqa: PLC0415 - see the module's TYPE_CHECKING note

    models = parse_models(simulator)
    sdk = driver.sdk.load(sdk_path=sdk_path, simulator=models, fallback_to_simulator=True)
    infos = driver.sdk.enumerate_cameras()
    simulated = sdk.kind == "simulator"
    fallback = simulated and not models
    if fallback:
        log.warning("%s: serving a SIMULATED camera instead (install ZWO's SDK to use a real one)", sdk.reason)
    cameras = CameraSet(SdkChoice(sdk.kind, sdk.describe(), fallback), config, reconnect_policy(config))
    for order, info in enumerate(infos):
        cameras.add(info, order if simulated else None)
    cameras.add_absent()
    if not len(cameras):
        log.warning("%s", NO_DEVICE_MESSAGE)
    config.save()
    return cameras
