"""What every HTTP handler of the server shares: :class:`ServerContext` and the app key it is stored under.

It sits below both ``app.py`` (the device API) and ``setup_pages.py`` (the web page), so neither
imports the other for it.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .protocol import TransactionCounter

if TYPE_CHECKING:  # pragma: no cover - typing only
    from zwo_common.config import Config

    from .camera_api import CameraDevice

CTX_KEY: web.AppKey[ServerContext] = web.AppKey("zwo_alpaca_ctx", object)  # type: ignore[arg-type]


@dataclass
class ServerContext:
    """Everything the request handlers share: devices, pools, counters and server identity."""

    devices: dict[int, CameraDevice]
    sdk_pool: concurrent.futures.ThreadPoolExecutor
    codec_pool: concurrent.futures.ThreadPoolExecutor
    config: Config | None = None
    server_name: str = "zwo-alpaca"
    manufacturer: str = "zwo-alpaca project"
    version: str = "0.1.0"
    call_timeout: float = 30.0
    # A client that takes none of a large reply for this long is dropped (``serve --send-timeout``):
    # otherwise a laptop that went to sleep mid-download holds a frame buffer until TCP gives up
    # (~15 min on Linux) and keeps the connection slot.
    send_timeout: float = 60.0
    http_port: int = 0
    # The web page's saving loops (zwo_common.capture_files.CaptureLoops; setup_pages.attach_capture).
    capture: object = None
    counter: TransactionCounter = field(default_factory=TransactionCounter)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("zwo_alpaca.http"))

    @property
    def location(self) -> str:
        """The server location shown by management/description (editable on /setup)."""
        if self.config is None:
            return ""
        return str(self.config.server_value("location", "") or "")
