"""Helpers shared by the tests in every folder under ``tests/`` and by the benchmarks in ``bench/``.

No tests and no fixtures live here (fixtures are in ``tests/conftest.py``). One submodule per job:

* :mod:`support.servers`: ``zwo-alpaca serve`` subprocesses (:func:`~support.servers.start_server`,
  :class:`~support.servers.ServerProcess`), :func:`~support.servers.free_port`,
  :func:`~support.servers.wait_port`, :func:`~support.servers.wait_until`, plain Alpaca GET/PUT.
* :mod:`support.indi_client`: INDI clients (pyindi-client wrapper, raw socket client) and an INDI server.
* :mod:`support.faults`: the fault-matrix rig, bounded-time probes and the fault report.
* :mod:`support.kstars`: KStars/Ekos under Xvfb for the real-client test.
* :mod:`support.netns`: network namespaces for discovery over a (virtual) LAN.
* :mod:`support.models`: which simulated models the model-dependent tests run against (``--models``).

Import with ``from support.servers import start_server`` (``tests/`` is on ``sys.path``: pytest's
``pythonpath`` setting in setup.cfg; bench scripts get it from ``bench/_common.py``).
"""
