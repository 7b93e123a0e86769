"""The server's persistent configuration: stable device numbers, UniqueIDs and setup-page defaults.

Format: one JSON file (stdlib only, readable and hand-editable), default
``$XDG_CONFIG_HOME/zwo-alpaca/config.json`` (``~/.config/zwo-alpaca/config.json``), overridable with
``--config``. Every write goes to a temporary file in the same directory, is fsync'ed and then
renamed over the old file, so a crash or power cut never leaves a half-written config::

    {
      "version": 1,
      "server": {"location": "Backyard observatory",
                 "reconnect": {"initial": 0.5, "factor": 2.0, "cap": 5.0, "enabled": true}},
      "cameras": {
        "ASI294MC Pro:1A2B3C4D5E6F7081": {
          "device_number": 0,
          "unique_id": "6f1c9d7e-....",
          "name": "ZWO ASI294MC Pro",
          "defaults": {"gain": 120, "offset": 30, "readout_mode": "RAW16", "bin": 1,
                       "usb_bandwidth": 80, "high_speed": false, "target_temperature": -10.0}
        }
      }
    }

Cameras are keyed by model and serial number (``CameraInfo.unique_key``), so a camera keeps its
Alpaca device number and UniqueID however the cameras are replugged.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from .atomic import write_text

CONFIG_VERSION = 1
# UniqueIDs are uuid5 of the camera key in this namespace: stable even if the config file is lost.
_UUID_NAMESPACE = uuid.UUID("8c3f6a52-3d0e-5b1f-9a57-2f1d2b7c9e41")

# The defaults the setup page edits, with their types; anything else in the file is kept but ignored.
DEFAULT_FIELDS: dict[str, type] = {
    "gain": int,
    "offset": int,
    "usb_bandwidth": int,
    "readout_mode": str,
    "bin": int,
    "high_speed": bool,
    "target_temperature": float,
    # Set on the web control page: subframe (binned pixels), cooler switch, capture window "HH:MM-HH:MM".
    "start_x": int,
    "start_y": int,
    "width": int,
    "height": int,
    "cooler_on": bool,
    "schedule": str,
    # The cooler ramp (C/min, 0 = off), "setpoint reached" threshold (C), warm-up at disconnect.
    "ramp_slope": float,
    "ramp_threshold": float,
    "warm_at_disconnect": bool,
    # SDK control names the SDK runs automatically (web page "auto" boxes); applied once connected.
    "auto_controls": list,
}


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/zwo-alpaca/config.json``, falling back to ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "zwo-alpaca" / "config.json"


def unique_id_for(key: str) -> str:
    """The UniqueID a camera with this key gets when the config has none stored."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"zwo-alpaca:{key}"))


class Config:
    """Thread-safe in-memory view of the config file; :meth:`save` writes it atomically."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None, logger: logging.Logger | None = None) -> None:
        self.path = path
        self._log = logger or logging.getLogger("zwo_alpaca.config")
        self._lock = threading.RLock()
        self._data: dict[str, Any] = data if data is not None else {}
        self._data.setdefault("version", CONFIG_VERSION)
        self._data.setdefault("server", {})
        self._data.setdefault("cameras", {})

    @classmethod
    def load(cls, path: Path | str | None = None, logger: logging.Logger | None = None) -> Config:
        """Read the file; a missing file is an empty config, an unreadable one is kept aside and replaced."""
        log = logger or logging.getLogger("zwo_alpaca.config")
        p = Path(path).expanduser() if path is not None else default_config_path()
        data: dict[str, Any] = {}
        try:
            with p.open("r", encoding="utf-8") as fh:
                loaded = json.load(fh)
            if isinstance(loaded, dict):
                data = loaded
            else:
                log.warning("config %s is not a JSON object; starting from an empty config", p)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            # Keep the broken file for the user to inspect rather than silently overwriting it.
            backup = p.with_suffix(p.suffix + ".broken")
            log.warning("config %s could not be read (%s); saved as %s and starting afresh", p, exc, backup)
            try:
                os.replace(p, backup)
            except OSError:
                pass
        return cls(p, data, log)

    def save(self) -> None:
        """Write the config atomically (temp file + fsync + rename). Errors are logged, not raised."""
        with self._lock:
            text = json.dumps(self._data, indent=2, sort_keys=True) + "\n"
            try:
                write_text(self.path, text, prefix=".config-")
            except OSError as exc:
                self._log.warning("could not save config %s: %s", self.path, exc)

    # --- server-wide values -------------------------------------------------------------------

    def server_value(self, name: str, default: Any = None) -> Any:
        """A server-wide setting (e.g. ``location``)."""
        with self._lock:
            return self._data["server"].get(name, default)

    def set_server_value(self, name: str, value: Any) -> None:
        """Change a server-wide setting (call :meth:`save` to persist)."""
        with self._lock:
            self._data["server"][name] = value

    # --- cameras ------------------------------------------------------------------------------

    def camera_entry(self, key: str) -> dict[str, Any] | None:
        """A copy of the stored entry for the camera with this key, or None."""
        with self._lock:
            entry = self._data["cameras"].get(key)
            return copy.deepcopy(entry) if isinstance(entry, dict) else None

    def reserved_numbers(self) -> set[int]:
        """Device numbers held by any camera in the config (attached now or not)."""
        with self._lock:
            out = set()
            for entry in self._data["cameras"].values():
                num = entry.get("device_number") if isinstance(entry, dict) else None
                if isinstance(num, int) and num >= 0:
                    out.add(num)
            return out

    def assign(self, key: str, name: str, taken: set[int], *, forced_number: int | None = None) -> tuple[int, str]:
        """Device number and UniqueID for a camera, creating or updating its entry.

        ``taken``: numbers already given to other cameras in this run (updated in place).
        ``forced_number``: use this number (``--simulator`` order) without storing it as the camera's own.
        A new camera gets the lowest number that no stored camera holds, so an absent camera keeps its
        number for when it comes back.
        """
        with self._lock:
            cams = self._data["cameras"]
            entry = cams.get(key)
            if not isinstance(entry, dict):
                entry = {}
                cams[key] = entry
            uid = entry.get("unique_id")
            if not isinstance(uid, str) or not uid:
                uid = unique_id_for(key)
                entry["unique_id"] = uid
            entry["name"] = name
            if forced_number is not None:
                number = forced_number
            else:
                stored = entry.get("device_number")
                number = stored if isinstance(stored, int) else -1
                if number < 0 or number in taken:
                    reserved = self.reserved_numbers() | taken
                    number = 0
                    while number in reserved:
                        number += 1
                    entry["device_number"] = number
            taken.add(number)
            entry.setdefault("defaults", {})
            return number, uid

    def defaults(self, key: str) -> dict[str, Any]:
        """The persisted setup-page defaults for a camera (only known fields with the right types)."""
        with self._lock:
            entry = self._data["cameras"].get(key) or {}
            raw = entry.get("defaults") or {}
            out: dict[str, Any] = {}
            for name, kind in DEFAULT_FIELDS.items():
                if name not in raw or raw[name] is None:
                    continue
                value = raw[name]
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if kind is list and isinstance(value, list):  # a list of names: hand edits may add junk
                    value = [v for v in value if isinstance(v, str) and v]
                if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                    out[name] = value
            return out

    def set_defaults(self, key: str, values: dict[str, Any]) -> None:
        """Replace a camera's defaults (``None`` values are dropped = "use the SDK default")."""
        with self._lock:
            entry = self._data["cameras"].setdefault(key, {})
            entry["defaults"] = {k: v for k, v in values.items() if v is not None and k in DEFAULT_FIELDS}

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of everything (for display and tests)."""
        with self._lock:
            return copy.deepcopy(self._data)
