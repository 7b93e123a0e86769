"""Saving the configuration, as libindi's drivers do: ``CONFIG_PROCESS`` and the INDI-only choices.

libindi's ``INDI::DefaultDevice`` defines ``CONFIG_PROCESS`` ("Configuration", group Options, rw,
AtMostOne, timeout 0, Idle) before the device is connected, with ``CONFIG_LOAD`` ("Load"),
``CONFIG_SAVE`` ("Save"), ``CONFIG_DEFAULT`` ("Default") and ``CONFIG_PURGE`` ("Purge"). A request
runs the action, turns every switch Off again and leaves the property Ok (done) or Alert (failed).
KStars' Ekos sends ``CONFIG_LOAD`` when a device connects (``Ekos::Manager::deviceConnected``,
option "Load configuration on connection", the default), if the property is still Idle.

What is saved here is what only the INDI face of a camera holds: the choices libindi's CCD keeps in
its driver (``CCD::saveConfigItems``) and the device core knows nothing of: ``ACTIVE_DEVICES``,
``UPLOAD_MODE``, ``UPLOAD_SETTINGS``, ``CCD_FAST_TOGGLE``, ``CCD_COMPRESSION``,
``CCD_TRANSFER_FORMAT``, a client's ``CCD_CFA`` correction and ``SCOPE_INFO``. The camera's own
settings (gain, offset, binning, cooler, ramp, flip...) are the core's and persist there.

* **Where**: one JSON file per camera, ``indi/<camera key>.json`` next to the zwo-alpaca config
  file (``~/.config/zwo-alpaca/indi/``), named after the camera's config key (model and serial,
  ``zwo_runtime/cameras.py``), so the file follows the camera, not its device number or INDI name.
  Written atomically (``zwo_common.atomic``), like the config file.
* **When it is read**: when the device is created (server start, or a camera plugged in later),
  as libindi's CCD reads ``ACTIVE_DEVICES``, ``CCD_FAST_TOGGLE`` and ``CCD_TRANSFER_FORMAT`` in
  ``initProperties``; ours reads every saved choice then, because plain clients (PHD2,
  ``indi_setprop``) never send ``CONFIG_LOAD``. ``CONFIG_LOAD`` reads it again (Ekos at connect).
* **When it is written**: on ``CONFIG_SAVE`` (everything), and, as libindi, when one of
  `AUTOSAVED` changes (libindi calls ``saveConfig(property)`` for ACTIVE_DEVICES, SCOPE_INFO and
  CCD_TRANSFER_FORMAT, and saves CCD_FAST_TOGGLE when the driver ends): only that property's entry
  is replaced, or everything is written when there is no file yet (libindi's rule).
* ``CONFIG_DEFAULT`` puts back the driver's defaults (libindi's initial values), ``CONFIG_PURGE``
  deletes the file.

A file that cannot be read or parsed is kept aside as ``<name>.broken`` with a warning and the
defaults apply; an unknown or invalid entry is skipped with a warning naming it, and that property
keeps its default. Nothing in a file can stop the server.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from zwo_common.atomic import write_text
from zwo_common.history import file_stem

from . import protocol as P
from .device_base import Reject
from .protocol import ALERT, OK, Switch, Vector

NAME = "CONFIG_PROCESS"
OPTIONS = "Options"
#: CONFIG_PROCESS members and labels, as libindi's DefaultDevice.
MEMBERS = (("CONFIG_LOAD", "Load"), ("CONFIG_SAVE", "Save"), ("CONFIG_DEFAULT", "Default"),
           ("CONFIG_PURGE", "Purge"))
FORMAT_VERSION = 1
#: The properties saved, in libindi's CCD::saveConfigItems order.
SAVED = ("ACTIVE_DEVICES", "UPLOAD_MODE", "UPLOAD_SETTINGS", "CCD_FAST_TOGGLE", "CCD_COMPRESSION",
         "CCD_TRANSFER_FORMAT", "CCD_CFA", "SCOPE_INFO")
#: Those libindi saves by themselves when a client changes them.
AUTOSAVED = frozenset({"ACTIVE_DEVICES", "SCOPE_INFO", "CCD_TRANSFER_FORMAT", "CCD_FAST_TOGGLE"})

Values = dict[str, Any]


def directory_for(config_path: str | os.PathLike[str]) -> Path:
    """Where the saved INDI configurations live: ``indi/`` next to the zwo-alpaca config file."""
    return Path(config_path).expanduser().parent / "indi"


def file_for(directory: str | os.PathLike[str], key: str) -> Path:
    """The saved configuration of the camera with config key ``key``."""
    return Path(directory) / f"{file_stem(key)}.json"


class OptionsHost(Protocol):
    """What the configuration needs of its CCD device (`indi_shim.ccd.CcdDevice`)."""

    name: str
    log: logging.Logger
    server: Any  # the DeviceHost: compute()

    def make_vector(self, kind: str, name: str, label: str, group: str, perm: P.Perm, members: list[Any], *,
                    rule: str | None = None, timeout: float = 60, state: str = P.IDLE,
                    core_validated: bool = False) -> Vector:
        """A new vector of the device."""

    def publish(self, vec: Vector, message: str | None = None, **kw: Any) -> None:
        """Send a vector's values to interested clients."""

    def message(self, text: str, client: Any = None) -> None:
        """A device message."""

    def option_values(self) -> dict[str, Values | None]:
        """Each property of `SAVED` as member values (None: nothing to save, e.g. CFA not overridden)."""

    def take_option(self, name: str, values: Values | None) -> None:
        """Take a saved value (None: the default) as a client request would; raises `Reject` if invalid."""


class Unreadable(Exception):
    """The saved file exists but cannot be used; the message says why and where it was put."""


class DeviceConfig:
    """CONFIG_PROCESS and the saved file of one CCD device (``path`` None: nothing is saved)."""

    def __init__(self, dev: OptionsHost, path: Path | None) -> None:
        self.dev = dev
        self.path = path
        self.vector = dev.make_vector("Switch", NAME, "Configuration", OPTIONS, "rw",
                                      [Switch(m, label) for m, label in MEMBERS], rule="AtMostOne", timeout=0)
        self._saved: dict[str, Values] | None = None  # what the file holds, as last read or written

    # ================================================================== reading
    def _read(self) -> dict[str, Values] | None:
        """The file's properties (None: no file). Raises `Unreadable` after keeping a broken file aside."""
        if self.path is None:
            return None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not isinstance(raw.get("properties"), dict):
                raise ValueError("not a zwo-alpaca INDI configuration (no \"properties\" object)")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            backup = self.path.with_name(self.path.name + ".broken")
            try:
                os.replace(self.path, backup)
                where = f"kept as {backup}"
            except OSError:
                where = "left in place"
            raise Unreadable(f"saved INDI configuration {self.path} could not be read ({exc}); {where}") from None
        version = raw.get("version")
        if version != FORMAT_VERSION:
            self.dev.log.warning("INDI %s: %s has format version %r (this server writes %d); reading what it "
                                 "understands", self.dev.name, self.path, version, FORMAT_VERSION)
        return {k: v for k, v in raw["properties"].items()}

    def _apply(self, saved: dict[str, Any]) -> list[str]:
        """Take each saved property and remember the file's usable entries; the warnings (one per
        entry skipped)."""
        problems: list[str] = []
        good: dict[str, Values] = {}
        unknown = sorted(k for k in saved if k not in SAVED)
        if unknown:
            problems.append(f"unknown properties ignored: {', '.join(unknown)}")
        for name in SAVED:
            if name not in saved:
                continue
            values = saved[name]
            try:
                if not isinstance(values, dict) or not values:
                    raise Reject(f"{name}: expected an object of member values, got {json.dumps(values)[:60]}")
                self.dev.take_option(name, values)
                good[name] = dict(values)
            except Reject as exc:
                problems.append(f"{exc.message}; {name} keeps its default")
                self.dev.take_option(name, None)
        self._saved = good
        return problems

    def load_at_start(self) -> None:
        """Apply the saved file when the device is created (warnings logged; defaults on any problem)."""
        try:
            saved = self._read()
        except Unreadable as exc:
            self.dev.log.warning("INDI %s: %s; using the defaults", self.dev.name, exc)
            return
        if saved is None:
            return
        for why in self._apply(saved):
            self.dev.log.warning("INDI %s: saved configuration %s: %s", self.dev.name, self.path, why)
        self.dev.log.info("INDI %s: saved configuration loaded from %s", self.dev.name, self.path)

    # ================================================================== writing
    def _record(self, properties: dict[str, Values]) -> str:
        return json.dumps({"version": FORMAT_VERSION, "device": self.dev.name, "properties": properties},
                          indent=2) + "\n"

    def _current(self) -> dict[str, Values]:
        return {k: v for k, v in self.dev.option_values().items() if k in SAVED and v is not None}

    async def _write(self, properties: dict[str, Values]) -> None:
        assert self.path is not None
        path, text = self.path, self._record(properties)
        await self.dev.server.compute(lambda: write_text(path, text, prefix=".indi-config-"))
        self._saved = properties

    async def save_all(self) -> None:
        """CONFIG_SAVE: every saved property's current value (raises OSError)."""
        await self._write(self._current())

    async def changed(self, names: set[str] | frozenset[str]) -> None:
        """Properties of `AUTOSAVED` changed: replace their entries in the file (or write everything
        when there is no file yet, as libindi). Unchanged values write nothing. Errors are logged."""
        names = set(names) & AUTOSAVED
        if self.path is None or not names:
            return
        current = self._current()
        try:
            if self._saved is None:
                try:
                    saved = self._read()
                except Unreadable as exc:
                    self.dev.log.warning("INDI %s: %s; writing a new one", self.dev.name, exc)
                    saved = None
                self._saved = _plain(saved) if saved is not None else None
            if self._saved is None:
                await self._write(current)
                return
            merged = dict(self._saved)
            for name in names:
                if name in current:
                    merged[name] = current[name]
                else:
                    merged.pop(name, None)
            if merged != self._saved:
                await self._write(merged)
        except OSError as exc:
            self.dev.log.warning("INDI %s: cannot save the configuration to %s: %s", self.dev.name, self.path, exc)
            self.dev.message(f"[WARNING] cannot save the configuration: {exc}")

    # ================================================================== CONFIG_PROCESS
    def handler(self, name: str) -> Callable[..., Awaitable[None]] | None:
        """The coroutine for a client's CONFIG_PROCESS."""
        return self._new_config_process if name == NAME else None

    async def _new_config_process(self, client: Any, vec: Vector, values: dict[str, bool]) -> None:
        chosen = next((k for k, on in values.items() if on), None)
        for m in vec.members:
            if isinstance(m, Switch):
                m.on = False
        if chosen is None:  # all Off: nothing to do (libindi answers Idle)
            vec.state = P.IDLE
            self.dev.publish(vec)
            return
        if self.path is None:
            vec.state = ALERT
            self.dev.publish(vec, "[ERROR] this server keeps no saved configuration (it was started without a "
                                  "config file location)")
            return
        action = {"CONFIG_LOAD": self._load, "CONFIG_SAVE": self._save, "CONFIG_DEFAULT": self._default,
                  "CONFIG_PURGE": self._purge}[chosen]
        ok, text = await action()
        vec.state = OK if ok else ALERT
        self.dev.publish(vec, text)

    async def _load(self) -> tuple[bool, str]:
        try:
            saved = await self.dev.server.compute(self._read)
        except Unreadable as exc:
            self.dev.log.warning("INDI %s: %s", self.dev.name, exc)
            return False, f"[WARNING] {exc}; the current values are kept"
        if saved is None:
            return False, ("[INFO] No previous configuration found. To save the driver configuration, use "
                           "Save (CONFIG_PROCESS.CONFIG_SAVE) in the Options tab.")
        problems = self._apply(saved)
        for why in problems:
            self.dev.log.warning("INDI %s: saved configuration %s: %s", self.dev.name, self.path, why)
            self.dev.message(f"[WARNING] saved configuration: {why}")
        return True, f"[INFO] Device configuration applied from {self.path}."

    async def _save(self) -> tuple[bool, str]:
        try:
            await self.save_all()
        except OSError as exc:
            self.dev.log.warning("INDI %s: cannot save the configuration to %s: %s", self.dev.name, self.path, exc)
            return False, f"[ERROR] cannot save the configuration to {self.path}: {exc}"
        return True, f"[INFO] Device configuration saved to {self.path}."

    async def _default(self) -> tuple[bool, str]:
        before = self.dev.option_values()
        for name in SAVED:
            self.dev.take_option(name, None)
        after = self.dev.option_values()
        # As libindi, the properties that save themselves on change do so now; the others go back to
        # the saved values at the next start unless the configuration is saved.
        await self.changed({n for n in AUTOSAVED if before.get(n) != after.get(n)})
        return True, "[INFO] Default configuration applied; use Save to keep it."

    async def _purge(self) -> tuple[bool, str]:
        assert self.path is not None
        path = self.path

        def remove() -> None:
            path.unlink()

        try:
            await self.dev.server.compute(remove)
        except FileNotFoundError:
            return False, f"[WARNING] Unable to purge the configuration: there is no saved file ({path})."
        except OSError as exc:
            return False, f"[WARNING] Unable to purge the configuration file {path}: {exc}"
        self._saved = None
        return True, "[INFO] Configuration file successfully purged."


def _plain(saved: dict[str, Any]) -> dict[str, Values]:
    """The well-formed entries of a read file (what a partial save may keep)."""
    return {k: dict(v) for k, v in saved.items() if k in SAVED and isinstance(v, dict) and v}
