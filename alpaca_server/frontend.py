"""The ASCOM Alpaca front end: the HTTP device API, the setup pages and the discovery responder.

:class:`AlpacaFrontEnd` is what the runtime (``zwo_runtime``) composes: it turns each camera it
is given into a :class:`~alpaca_server.camera_api.CameraDevice` (applying the setup page's stored
defaults), serves them with :func:`~alpaca_server.app.build_app` on one port of every address it
is given (``0.0.0.0`` and ``::`` by default: every IPv4 and IPv6 address), and answers Alpaca
discovery for that port, on the same address families. It implements the runtime's front-end
interface (start, stop, add a camera, remove a camera) without importing the runtime.

Listening sockets use SO_REUSEADDR (aiohttp's default), so a new server can bind the port at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from zwo_common.threads import in_daemon_thread

from . import limits
from .app import build_app
from .camera_api import CameraDevice
from .context import ServerContext
from .setup_pages import apply_defaults, attach_capture, close_capture, resume_capture

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driver import ZWOCamera
    from zwo_common.config import Config

log = logging.getLogger("zwo_alpaca")

# How long a loop-side step (publishing a device) may take before add/remove gives up.
_LOOP_CALL_TIMEOUT_S = 10.0


def driver_version(version: str) -> str:
    """ASCOM DriverVersion is ``major.minor``."""
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else version


class AlpacaFrontEnd:
    """ASCOM Alpaca over HTTP (plus discovery) for the runtime's cameras.

    ``bind`` is the address to listen on, or several (one port on each; ``""`` or ``0.0.0.0`` plus
    ``::``: every address; the runtime chooses the default and, for port 0 with several addresses,
    a port free on all of them). ``sdk_description`` is the SDK's one-line description (it ends
    up in DriverInfo);
    ``simulated``/``fallback`` say whether the cameras are simulated and whether the simulator
    stands in for a missing camera (the devices then say so). ``discovery_port`` None: no
    discovery responder. The pools are the runtime's: ``sdk_pool`` runs blocking core calls,
    ``codec_pool`` image encoding.
    """

    title = "Alpaca server"

    def __init__(self, *, bind: str | Sequence[str], port: int, config: Config | None,
                 sdk_pool: concurrent.futures.ThreadPoolExecutor, codec_pool: concurrent.futures.ThreadPoolExecutor,
                 version: str, sdk_description: str, simulated: bool, fallback: bool = False,
                 send_timeout: float = 60.0, discovery_port: int | None, capture_root: str | None = None) -> None:
        self.hosts: list[str] = [bind] if isinstance(bind, str) else list(bind) or [""]
        self.bind = ", ".join(self.hosts)
        self.requested_port = port
        self.simulated = simulated
        self.fallback = fallback
        self.discovery_port = discovery_port
        self.version = version
        # No commas: some clients (alpyca) split DriverInfo on them.
        sdk_text = sdk_description.replace(", ", " + ").replace(",", ";")
        self.driver_info = f"zwo-alpaca {version}: ASCOM Alpaca server for ZWO ASI cameras; {sdk_text}"
        self.ctx = ServerContext(devices={}, sdk_pool=sdk_pool, codec_pool=codec_pool, config=config,
                                 server_name="zwo-alpaca", manufacturer="zwo-alpaca project", version=version,
                                 send_timeout=send_timeout)
        attach_capture(self.ctx, capture_root)  # the web page's saving loops: files only under this root
        self.port: int | None = None  # the bound port, once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._discovery: Any = None

    # ------------------------------------------------------------------ cameras
    def add_camera(self, number: int, cam: ZWOCamera, *, key: str, unique_id: str) -> str:
        """Serve ``cam`` as Alpaca camera ``number`` (blocking: applies its stored setup-page defaults)."""
        dev = CameraDevice(
            number,
            cam,
            unique_id=unique_id,
            key=key,
            driver_info=self.driver_info,
            driver_version=driver_version(self.version),
            simulated=self.simulated,
            sim_note="no ZWO SDK installed" if self.fallback else None,
            codec_pool=self.ctx.codec_pool,
            logger=logging.getLogger(f"zwo_alpaca.camera{number}"),
        )
        config = self.ctx.config
        defaults = config.defaults(key) if config is not None else {}
        if defaults:
            apply_defaults(dev, defaults, log)
        self._on_loop(lambda: self.ctx.devices.__setitem__(number, dev))
        resume_capture(self.ctx, dev)  # a loop running when the server stopped: resumes (in a thread)
        return f"Alpaca camera {number}"

    def remove_camera(self, number: int) -> None:
        """Stop serving Alpaca camera ``number`` (its URLs answer "no such device" from now on)."""
        self._on_loop(lambda: self.ctx.devices.pop(number, None))

    def _on_loop(self, change: Any) -> None:
        """Apply a change to the device table on the loop, the only thread that changes it once
        serving (before start there is no loop and no request handler yet)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            change()
            return

        async def call() -> None:
            change()

        asyncio.run_coroutine_threadsafe(call(), loop).result(_LOOP_CALL_TIMEOUT_S)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the HTTP port (OSError when it cannot) and start answering discovery."""
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(build_app(self.ctx), access_log=None, shutdown_timeout=0.5, handle_signals=False,
                               max_line_size=limits.MAX_LINE_BYTES, max_field_size=limits.MAX_FIELD_BYTES)
        await runner.setup()
        # One site for every address, so the connection cap counts every connection once.
        hosts = self.hosts[0] if len(self.hosts) == 1 else list(self.hosts)
        site = limits.CappedTCPSite(runner, hosts, self.requested_port, max_connections=limits.MAX_CONNECTIONS)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = self.requested_port
        server = getattr(site, "_server", None)
        if server is not None and getattr(server, "sockets", None):
            port = server.sockets[0].getsockname()[1]
        self.port = port
        self.ctx.http_port = port
        where = " and ".join(f"http://{_url_host(h)}:{port}" for h in self.hosts)
        log.info("Alpaca API on %s/api/v1/camera/N/... (setup page %s/setup)", where, where.split(" and ")[0])
        self._discovery = self._start_discovery(port)

    def _start_discovery(self, http_port: int) -> Any:
        if self.discovery_port is None:
            return None
        try:
            from .discovery import DiscoveryResponder  # noqa: PLC0415 - optional module
        except ImportError:
            log.info("Alpaca discovery is not available in this build")
            return None
        # The responder answers a family only where the HTTP server listens on it: "0.0.0.0" alone
        # is no IPv6 (advertising a port that only listens on IPv4 would send IPv6 clients to a dead
        # address), "::" alone no IPv4 (asyncio binds "::" IPv6-only), a specific address only on
        # its interface. "" (asyncio: every address of both families) is both, anywhere.
        bind = None if "" in self.hosts else list(self.hosts)
        ipv6 = True
        try:
            responder = DiscoveryResponder(http_port, port=self.discovery_port, bind_address=bind, ipv6=ipv6,
                                           logger=logging.getLogger("zwo_alpaca.discovery"))
            responder.start()
            log.info("answering Alpaca discovery on UDP port %s", getattr(responder, "port", self.discovery_port))
            return responder
        except Exception as exc:  # noqa: BLE001 - discovery is a convenience; serving goes on without it
            log.warning("Alpaca discovery not started: %s", exc)
            return None

    async def stop(self, timeout: float) -> None:
        """Close the HTTP listener and connections and the discovery responder within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        jobs = [in_daemon_thread(loop, close_capture, self.ctx, max(0.05, timeout * 0.8))]  # loops kept
        if self._discovery is not None:
            jobs.append(in_daemon_thread(loop, _quiet_stop, self._discovery))
            self._discovery = None
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner.cleanup(), max(0.05, min(0.8, timeout)))
            except Exception as exc:  # noqa: BLE001 - shutdown goes on
                log.debug("HTTP shutdown: %s", exc)
            self._runner = None
        if jobs:
            await asyncio.wait(jobs, timeout=max(0.0, deadline - loop.time()))


def _url_host(host: str) -> str:
    """An address as written in a URL: ``[::]`` for IPv6, ``0.0.0.0`` for "every address"."""
    if not host:
        return "0.0.0.0"
    return f"[{host}]" if ":" in host else host


def _quiet_stop(responder: Any) -> None:
    """Stop the discovery responder, logging (not raising) a failure."""
    try:
        responder.stop()
    except Exception as exc:  # noqa: BLE001 - shutdown goes on
        log.warning("discovery did not stop cleanly: %s", exc)
