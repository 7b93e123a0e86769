"""The one interface every front end implements, so the runtime can compose them.

``alpaca_server.frontend.AlpacaFrontEnd`` and ``indi_shim.frontend.IndiFrontEnd`` implement it
(structurally: they do not import this module, because front ends never import the runtime). The
runtime (:mod:`zwo_runtime.runtime`) calls it like this:

1. ``add_camera`` for each camera found at start-up, before ``start``;
2. ``await start()`` on the event loop; raising (``OSError`` for a port in use) means "not serving";
3. ``add_camera`` again from the hotplug watcher's thread for a camera plugged in later;
4. ``await stop(timeout)`` once, at shutdown, side by side with the other front ends and the
   release of the cameras; it must return within ``timeout`` seconds.

Cameras are never disconnected by a front end: the runtime owns them and releases them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import ZWOCamera


class FrontEnd(Protocol):
    """A protocol server over the runtime's cameras (ASCOM Alpaca, INDI)."""

    #: What the log calls it, e.g. ``"INDI server"`` ("INDI server not started: ...").
    title: str

    async def start(self) -> None:
        """Start serving the cameras added so far (binds its listeners; raises if it cannot)."""
        ...

    async def stop(self, timeout: float) -> None:
        """Close listeners and clients within ``timeout`` seconds (cameras stay connected)."""
        ...

    def add_camera(self, number: int, cam: ZWOCamera, *, key: str, unique_id: str) -> str:
        """Serve one more camera as device ``number``; returns how clients see it (for the log).

        Blocking and thread-safe after ``start`` (it may read the camera or wait for the front
        end's loop): call it from a worker thread, never from an event loop.
        """
        ...

    def remove_camera(self, number: int) -> None:
        """Stop serving device ``number`` (clients are told it is gone); unknown numbers are ignored.

        Same threading rule as :meth:`add_camera`.
        """
        ...
