"""Code the front ends and the runtime share, with no dependency on any of them.

A leaf package: ``alpaca_server``, ``indi_shim`` and ``zwo_runtime`` may import it; it imports
none of them (nor ``driver``), so sharing it never creates an import cycle.

* :mod:`zwo_common.config` - the config file (device numbers, UniqueIDs, setup-page defaults, users).
* :mod:`zwo_common.fits` - FITS writing and reading (INDI image BLOBs, ``zwo-alpaca capture``).
* :mod:`zwo_common.threads` - bounded shutdown steps in daemon threads.
"""
