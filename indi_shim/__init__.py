"""INDI shim: serves the device cores (``driver.ZWOCamera``) as INDI CCD devices.

Two ways to run it:

* inside the ``zwo-alpaca serve`` process, as a TCP INDI server (``indi_shim.server.IndiServer``), so
  KStars/Ekos, PHD2 and the INDI command-line tools talk to the very cameras the Alpaca server serves;
* as an INDI driver program under libindi's ``indiserver`` (``zwo-alpaca-indi``,
  ``zwo_runtime.indi_main``), speaking INDI over stdin/stdout while the same process serves Alpaca.

Either way the runtime (``zwo_runtime``) composes it through ``indi_shim.frontend.IndiFrontEnd``.

The protocol layer (safe incremental XML parsing, per-client send queues, BLOB fan-out) is our own;
see docs/performance.md "## INDI" for why it was preferred over indipydriver/indipyserver.
"""

from __future__ import annotations

__all__ = ["__version__"]

from zwo_common.version import package_version

# The installed distribution's version, so DRIVER_VERSION matches what the user installed.
__version__ = package_version()
