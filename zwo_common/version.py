"""The installed zwo-alpaca version: one answer for DriverVersion, INDI's DRIVER_VERSION and FITS SWCREATE."""

from __future__ import annotations

import functools
from importlib import metadata

#: What a source tree without installed metadata reports (setup.cfg's version).
SOURCE_TREE_VERSION = "0.1.0"


@functools.cache
def package_version() -> str:
    """The installed distribution's version, read once (it cannot change while the process runs)."""
    try:
        return metadata.version("zwo-alpaca")
    except metadata.PackageNotFoundError:
        return SOURCE_TREE_VERSION
