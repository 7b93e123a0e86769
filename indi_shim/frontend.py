"""The INDI front end: the runtime's cameras as INDI CCD devices, over TCP or over stdin/stdout.

:class:`IndiFrontEnd` is what the runtime (``zwo_runtime``) composes. It wraps one
:class:`~indi_shim.server.IndiServer` in one of two modes:

* TCP (``zwo-alpaca serve --indi-port N``): an INDI server clients connect to;
* driver (``zwo-alpaca-indi`` under libindi's ``indiserver``): INDI over the two descriptors given
  as ``stdio``; when that link ends (indiserver went away or closed our stdin) ``on_link_closed``
  is called so the process can shut down.

It implements the runtime's front-end interface (start, stop, add a camera, remove a camera)
without importing the runtime.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zwo_common.threads import in_daemon_thread

from . import protocol as P
from .ccd import device_names
from .config import directory_for, file_for
from .server import DEFAULT_PORT, IndiServer

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import ZWOCamera


class IndiFrontEnd:
    """INDI for the runtime's cameras; see the module docstring for the two modes.

    ``host``: the address to listen on, or several (one port on each); "" is every IPv4 and IPv6
    address. ``upload_dir``: base directory for UPLOAD_LOCAL/UPLOAD_BOTH (None:
    ``$ZWO_ALPACA_UPLOAD_DIR``, else local upload off). ``config_path``: the zwo-alpaca config file;
    each camera's saved INDI configuration (CONFIG_PROCESS) lives in ``indi/`` beside it, named by
    the camera's config key (None: nothing is saved).
    """

    title = "INDI server"

    def __init__(self, *, host: str | Sequence[str] = "", port: int = DEFAULT_PORT,
                 upload_dir: str | os.PathLike[str] | None = None, logger: logging.Logger | None = None,
                 stdio: tuple[int, int] | None = None, on_link_closed: Callable[[], None] | None = None,
                 config_path: str | os.PathLike[str] | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.upload_dir = upload_dir
        self.log = logger or logging.getLogger("zwo_alpaca.indi")
        self.stdio = stdio
        self._on_link_closed = on_link_closed
        self._cameras: dict[int, ZWOCamera] = {}  # device number -> core, for the numbers the runtime uses
        self._keys: dict[int, str] = {}  # device number -> the camera's config key (its saved INDI file)
        self.config_dir = directory_for(config_path) if config_path is not None else None
        self.server: IndiServer | None = None

    # ------------------------------------------------------------------ cameras
    def add_camera(self, number: int, cam: ZWOCamera, *, key: str, unique_id: str) -> str:
        """Serve ``cam`` as the next INDI device; returns how clients see it (``INDI device 'ZWO CCD ...'``)."""
        self._cameras[number] = cam
        self._keys[number] = key
        if self.server is None:
            # Named at start like the server will name it: by device-number order.
            ordered = [self._cameras[n] for n in sorted(self._cameras)]
            name = device_names(ordered, self.log)[ordered.index(cam)]
        else:
            name = self.server.add_camera(cam)
        return f"INDI device {name!r}"

    def _config_file(self, cam: ZWOCamera) -> Path | None:
        """The saved INDI configuration of a served camera (by its config key), if saving is on."""
        if self.config_dir is None:
            return None
        for number, served in list(self._cameras.items()):
            if served is cam and number in self._keys:
                return file_for(self.config_dir, self._keys[number])
        return None

    def remove_camera(self, number: int) -> None:
        """Stop serving device ``number``: its device is detached and every client is sent delProperty."""
        cam = self._cameras.pop(number, None)
        self._keys.pop(number, None)
        server = self.server
        if cam is None or server is None:
            return

        async def remove() -> None:
            for name, dev in list(server.devices.items()):
                if dev.cam is cam:
                    dev.detach()
                    del server.devices[name]
                    server.broadcast(P.del_property_xml(name), name)
            if cam in server.cameras:
                server.cameras.remove(cam)

        server.run_sync(remove())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the INDI server (binding its TCP port, or attaching to ``stdio``); raises OSError
        when the port cannot be bound."""
        server = IndiServer([self._cameras[n] for n in sorted(self._cameras)], host=self.host,
                            port=self.requested_port, logger=self.log, upload_dir=self.upload_dir,
                            config_file=self._config_file)
        loop = asyncio.get_running_loop()
        # start() blocks until its own loop runs and the port is bound.
        await loop.run_in_executor(None, functools.partial(server.start, listen=self.stdio is None))
        self.server = server
        if self.stdio is None:
            logging.getLogger("zwo_alpaca").info("INDI server on port %d", server.port or self.requested_port)
        else:
            threading.Thread(target=self._pump, args=(server, *self.stdio), name="indi-stdio", daemon=True).start()

    def _pump(self, server: IndiServer, rfd: int, wfd: int) -> None:
        try:
            server.serve_stdio(rfd, wfd)
        except Exception:
            self.log.exception("INDI stdio link failed")
        finally:
            if self._on_link_closed is not None:
                self._on_link_closed()

    async def stop(self, timeout: float) -> None:
        """Close the listener, every client and the stdio link within ``timeout`` seconds."""
        server, self.server = self.server, None
        if server is None:
            return
        step = in_daemon_thread(asyncio.get_running_loop(), server.stop, timeout)
        done, _ = await asyncio.wait({step}, timeout=timeout + 0.1)
        if step in done and step.exception() is not None:
            self.log.warning("INDI did not stop cleanly: %s", step.exception())
