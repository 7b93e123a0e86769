"""The composition root: one runtime that both programs use to serve the cameras.

It owns what a process needs whatever the protocol: the SDK choice and the camera set with its
device numbers (``cameras.py``), the config file (``zwo_common.config``), the worker pools and the
start-up/shutdown sequence (``runtime.py``), hotplug wiring (``hotplug.py``), logging
(``logsetup.py``) and the command-line programs:

* ``zwo-alpaca serve|list|capture|doctor|passwd`` (``cli.py``; ``python -m zwo_runtime``);
* ``zwo-alpaca-indi``, the INDI driver program for ``indiserver`` (``indi_main.py``).

Front ends (``alpaca_server``, ``indi_shim``) implement the small interface in ``frontend.py``;
this package imports them, they never import it (nor each other).
"""
