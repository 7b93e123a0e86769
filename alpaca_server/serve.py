"""``zwo-alpaca serve``: load the SDK, build one camera device per camera, and serve them.

Composition only: the SDK choice is ``driver.sdk``'s, camera behaviour is ``driver.ZWOCamera``'s,
the HTTP side is ``app.build_app``. This module wires them together with the optional Alpaca
discovery responder and INDI server, and owns start-up and shutdown:

* SIGTERM or SIGINT: every camera is released (a running exposure is ended), the listeners close,
  and the process exits with status 0 within 2 s.
* Listening sockets use SO_REUSEADDR, so a new server can bind the same port at once.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import errno
import inspect
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import limits, logsetup
from .app import ServerContext, build_app
from .camera_api import CameraDevice
from .config import Config

log = logging.getLogger("zwo_alpaca")

DEFAULT_PORT = 11111
DEFAULT_INDI_PORT = 7624
DEFAULT_DISCOVERY_PORT = 32227
SHUTDOWN_BUDGET_S = 2.0


def package_version() -> str:
    """The installed zwo-alpaca version (``0.1.0`` when running from a source tree)."""
    try:
        return metadata.version("zwo-alpaca")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def driver_version(version: str) -> str:
    """ASCOM DriverVersion is ``major.minor``."""
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else version


def _seconds(low: float, high: float, *, zero_means: str | None = None) -> Callable[[str], float]:
    """An argparse type: seconds from ``low`` to ``high``, and 0 too when ``zero_means`` says what 0 does."""
    allowed = f"0 ({zero_means}) or {low:g} to {high:g} seconds" if zero_means else f"{low:g} to {high:g} seconds"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not (low <= value <= high or (zero_means and value == 0)):
            raise argparse.ArgumentTypeError(f"{text} s is out of range: {allowed}")
        return value

    return parse


def add_parser(subparsers: Any) -> None:
    """Add the ``serve`` command to the CLI (see ``cli.py``)."""
    p = subparsers.add_parser(
        "serve",
        help="run the ASCOM Alpaca camera server",
        description="Serve every attached ZWO camera over ASCOM Alpaca (and INDI when available). "
        "With no camera and no --simulator, one simulated ASI294MC Pro is served.",
    )
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on (default 0.0.0.0: all IPv4)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N", help=f"Alpaca HTTP port (default {DEFAULT_PORT}; 0 picks a free port)")
    p.add_argument(
        "--simulator",
        metavar="MODEL[,MODEL...]",
        help="serve simulated cameras of these catalog models, as devices 0, 1, ... in this order "
        "(e.g. asi294mc-pro,asi120mm-mini)",
    )
    p.add_argument("--sdk", metavar="PATH", help="path of libASICamera2 (default: $ZWO_ASI_LIB, system paths, pyzwoasi's copy)")
    p.add_argument("--config", metavar="FILE", help="config file (default ~/.config/zwo-alpaca/config.json)")
    p.add_argument("--indi-port", type=int, default=DEFAULT_INDI_PORT, metavar="N", help=f"INDI server port (default {DEFAULT_INDI_PORT}; 0 disables INDI)")
    p.add_argument("--upload-dir", metavar="DIR", default=None,
                   help="directory INDI clients may upload FITS into (UPLOAD_LOCAL/BOTH); off when not given "
                        "(default: $ZWO_ALPACA_UPLOAD_DIR)")
    p.add_argument("--send-timeout", type=_seconds(1.0, 3600.0), default=60.0, metavar="SECONDS",
                   help="drop a client that reads nothing of an image for this long, freeing the frame it holds "
                        "(default 60; 1 to 3600)")
    p.add_argument("--hotplug-interval", type=_seconds(0.5, 3600.0, zero_means="off"), default=3.0, metavar="SECONDS",
                   help="look for cameras plugged in after start this often (default 3; 0 = never). With the "
                        "simulator standing in for a missing camera, a real one plugged in restarts the server on it")
    p.add_argument("--no-discovery", action="store_true", help="do not answer Alpaca discovery broadcasts")
    p.add_argument("--discovery-port", type=int, default=DEFAULT_DISCOVERY_PORT, metavar="N", help=f"Alpaca discovery UDP port (default {DEFAULT_DISCOVERY_PORT})")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


@dataclass
class Served:
    """What serve built: the devices and the camera objects, in device-number order."""

    devices: dict[int, CameraDevice]
    sdk_kind: str
    sdk_text: str
    # What a camera plugged in later needs to be served like the others (see _start_hotplug).
    driver_info: str = ""
    fallback: bool = False
    real_path: str | None = None
    policy: Any = None


def reconnect_policy(config: Config) -> Any:
    """The core's reconnect backoff, from the config's ``server.reconnect`` (default 0.5 s doubling to 5 s)."""
    from driver import ReconnectPolicy  # noqa: PLC0415

    raw = config.server_value("reconnect", {}) or {}
    base = ReconnectPolicy()
    try:
        return ReconnectPolicy(
            initial=float(raw.get("initial", base.initial)),
            factor=float(raw.get("factor", base.factor)),
            cap=float(raw.get("cap", base.cap)),
            enabled=bool(raw.get("enabled", base.enabled)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("config server.reconnect is invalid (%s); using the defaults", exc)
        return base


def build_devices(args: argparse.Namespace, config: Config, codec_pool: concurrent.futures.Executor) -> Served:
    """Load the SDK, enumerate cameras and create one CameraDevice each (blocking; at start-up)."""
    import driver.sdk  # noqa: PLC0415 - imported late so `zwo-alpaca --help` works without the SDK

    models = [m.strip() for m in args.simulator.split(",") if m.strip()] if args.simulator else None
    sdk = driver.sdk.load(sdk_path=args.sdk, simulator=models or None, fallback_to_simulator=True)
    infos = driver.sdk.enumerate_cameras()
    simulated = sdk.kind == "simulator"
    fallback = simulated and not models
    if fallback:
        log.warning("no ZWO camera found (%s): serving a SIMULATED camera instead", sdk.reason)
    version = package_version()
    # No commas: some clients (alpyca) split DriverInfo on them.
    sdk_text = sdk.describe().replace(", ", " + ").replace(",", ";")
    driver_info = f"zwo-alpaca {version}: ASCOM Alpaca server for ZWO ASI cameras; {sdk_text}"
    served = Served({}, sdk.kind, sdk.describe(), driver_info, fallback, sdk.real_path, reconnect_policy(config))
    for order, info in enumerate(infos):
        dev = new_device(served, config, codec_pool, info, order if simulated else None)
        served.devices[dev.number] = dev
    config.save()
    return served


def new_device(served: Served, config: Config, codec_pool: concurrent.futures.Executor, info: Any,
               forced_number: int | None) -> CameraDevice:
    """One CameraDevice for a camera found at start-up or plugged in later (blocking: reads its
    properties and applies its stored setup-page defaults). Not yet in ``served.devices``."""
    import driver  # noqa: PLC0415

    from .setup_pages import apply_defaults  # noqa: PLC0415

    version = package_version()
    simulated = served.sdk_kind == "simulator"
    cam = driver.ZWOCamera(info, reconnect=served.policy, logger=logging.getLogger("zwo_alpaca.core"))
    cam.describe()
    # Simulated cameras are numbered in the order given (never stored as their own numbers, so
    # they do not reserve numbers that real cameras will want later); real ones by serial.
    key = ("sim:" if simulated else "") + info.unique_key
    number, uid = config.assign(key, info.name, set(served.devices), forced_number=forced_number)
    dev = CameraDevice(
        number,
        cam,
        unique_id=uid,
        key=key,
        driver_info=served.driver_info,
        driver_version=driver_version(version),
        simulated=simulated,
        sim_note="no ZWO camera found" if served.fallback else None,
        codec_pool=codec_pool,
        logger=logging.getLogger(f"zwo_alpaca.camera{number}"),
    )
    defaults = config.defaults(key)
    if defaults:
        apply_defaults(dev, defaults, log)
    log.info("camera %d: %s (UniqueID %s)", number, dev.name, uid)
    return dev


def _maybe_discovery(args: argparse.Namespace, http_port: int) -> Any:
    if args.no_discovery:
        return None
    try:
        from .discovery import DiscoveryResponder  # noqa: PLC0415 - optional module
    except ImportError:
        log.info("Alpaca discovery is not available in this build")
        return None
    bind = None if args.bind in ("", "0.0.0.0", "::") else args.bind
    # Answer IPv6 queries only when the HTTP server is reachable over IPv6: advertising a port that
    # only listens on IPv4 would send IPv6 clients to a dead address.
    ipv6 = args.bind in ("", "::") or ":" in args.bind
    try:
        responder = DiscoveryResponder(http_port, port=args.discovery_port, bind_address=bind, ipv6=ipv6,
                                       logger=logging.getLogger("zwo_alpaca.discovery"))
        responder.start()
        log.info("answering Alpaca discovery on UDP port %s", getattr(responder, "port", args.discovery_port))
        return responder
    except Exception as exc:  # noqa: BLE001 - discovery is a convenience; serving goes on without it
        log.warning("Alpaca discovery not started: %s", exc)
        return None


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def _maybe_indi(args: argparse.Namespace, served: Served) -> Any:
    if not args.indi_port:
        return None
    try:
        from indi_shim.server import IndiServer  # noqa: PLC0415 - optional module
    except ImportError:
        log.info("INDI server is not available in this build")
        return None
    cams = [dev.cam for _, dev in sorted(served.devices.items())]
    try:
        server = IndiServer(cams, host=args.bind, port=args.indi_port, logger=logging.getLogger("zwo_alpaca.indi"),
                            upload_dir=getattr(args, "upload_dir", None))
        await _maybe_await(server.start())
        log.info("INDI server on port %d", args.indi_port)
        return server
    except Exception as exc:  # noqa: BLE001 - Alpaca keeps working without INDI
        log.warning("INDI server not started: %s", exc)
        return None


def _release_cameras(served: Served, budget: float) -> None:
    """Disconnect every camera in parallel (each one ends its exposure and closes the SDK handle)."""
    threads = []
    for dev in served.devices.values():
        t = threading.Thread(target=_quiet_disconnect, args=(dev,), name=f"release-{dev.number}", daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + budget
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def _in_daemon_thread(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> asyncio.Future:
    """Run ``fn(*args)`` in a daemon thread; the future completes when it returns.

    Not the loop's executor: asyncio.run() joins executor threads without a time limit, and a step
    stuck in the SDK must not hold the process beyond the shutdown budget.
    """
    fut: asyncio.Future = loop.create_future()

    def done(exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(None)

    def run() -> None:
        err: BaseException | None = None
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported through the future
            err = exc
        try:
            loop.call_soon_threadsafe(done, err)
        except RuntimeError:  # the loop is already closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name=f"shutdown-{getattr(fn, '__name__', 'step')}", daemon=True).start()
    return fut


def _quiet_stop(what: str, service: Any, timeout: float | None) -> None:
    """Stop the discovery responder or the INDI server, logging (not raising) a failure."""
    try:
        if timeout is not None:
            try:
                result = service.stop(timeout=timeout)
            except TypeError:
                result = service.stop()
        else:
            result = service.stop()
        if inspect.isawaitable(result):  # an async stop() cannot be awaited from this thread
            log.debug("%s stop() is a coroutine; not awaited", what)
            result.close()
    except Exception as exc:  # noqa: BLE001 - shutdown goes on
        log.warning("%s did not stop cleanly: %s", what, exc)


def _quiet_disconnect(dev: CameraDevice) -> None:
    try:
        dev.cam.disconnect_camera()
    except Exception as exc:  # noqa: BLE001 - exit goes on
        log.warning("camera %d: release failed: %s", dev.number, exc)


# serve_forever's result when a real camera appeared while the simulator stood in for it: run()
# then starts the server again in this process (same PID, so systemd and scripts see no exit).
RESTART = 75


def _start_hotplug(args: argparse.Namespace, served: Served, ctx: ServerContext, indi: Any,
                   loop: asyncio.AbstractEventLoop, restart: Callable[[], None]) -> Any:
    """Watch for cameras plugged in after start (driver.hotplug); None when switched off.

    A new camera becomes the next Alpaca device (and INDI device) at once; the first real camera
    to appear while the simulator stands in for a missing one restarts the server on it.
    """
    interval = float(getattr(args, "hotplug_interval", 0.0) or 0.0)
    config = ctx.config
    if interval <= 0 or config is None:
        return None
    from driver import hotplug  # noqa: PLC0415

    if served.fallback:
        if not served.real_path:
            log.info("hotplug: no ZWO SDK to ask for cameras; install it and restart to use a real camera")
            return None
        try:
            probe = hotplug.AttachProbe(served.real_path, lambda n: loop.call_soon_threadsafe(restart),
                                        interval=interval)
        except (OSError, AttributeError) as exc:
            log.warning("hotplug: cannot watch %s for a camera (%s)", served.real_path, exc)
            return None
        log.info("hotplug: will restart on a real camera as soon as %s sees one", served.real_path)
        return probe.start()
    if served.sdk_kind == "simulator" and not args.simulator:
        return None

    def on_new(info: Any) -> None:
        # Built here (blocking: properties, stored defaults); published on the loop, which is the
        # only thread that changes the device table.
        numbers = set(served.devices)
        forced = None
        if served.sdk_kind == "simulator":
            forced = 0
            while forced in numbers:
                forced += 1
        dev = new_device(served, config, ctx.codec_pool, info, forced)

        def publish() -> None:
            served.devices[dev.number] = dev  # the same dict as ctx.devices
            log.info("hotplug: %s is Alpaca camera %d", dev.name, dev.number)

        asyncio.run_coroutine_threadsafe(_call(publish), loop).result(10)
        config.save()
        if indi is not None and hasattr(indi, "add_camera"):
            name = indi.add_camera(dev.cam)
            log.info("hotplug: %s is INDI device %r", dev.name, name)

    from driver import CameraState  # noqa: PLC0415

    on_the_wire = {CameraState.CONNECTING, CameraState.READING, CameraState.CAPTURING}

    def busy() -> bool:
        return any(d.cam.status().state in on_the_wire for d in list(served.devices.values()))

    watcher = hotplug.CameraWatcher(lambda: [d.cam.info for d in list(served.devices.values()) if d.cam.info],
                                    on_new, interval=interval, busy=busy)
    log.info("hotplug: looking for new cameras every %g s", interval)
    return watcher.start()


async def _call(fn: Callable[[], None]) -> None:
    fn()


async def serve_forever(args: argparse.Namespace, served: Served, ctx: ServerContext) -> int:
    """Run the HTTP server (plus discovery and INDI) until SIGTERM/SIGINT, then shut down in < 2 s.

    Returns 0, or RESTART when a real camera appeared while the simulator stood in for it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    outcome = [0]

    def restart() -> None:
        log.warning("a ZWO camera was plugged in: restarting to serve it instead of the simulated camera")
        outcome[0] = RESTART
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (in-process tests)
            pass
    app = build_app(ctx)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False,
                           max_line_size=limits.MAX_LINE_BYTES, max_field_size=limits.MAX_FIELD_BYTES)
    await runner.setup()
    site = limits.CappedTCPSite(runner, args.bind, args.port, max_connections=limits.MAX_CONNECTIONS)
    await site.start()
    port = args.port
    server = getattr(site, "_server", None)
    if server is not None and getattr(server, "sockets", None):
        port = server.sockets[0].getsockname()[1]
    log.info("Alpaca API on http://%s:%d/api/v1/camera/N/... (setup page http://%s:%d/setup)",
             args.bind, port, args.bind, port)
    discovery = _maybe_discovery(args, port)
    indi = await _maybe_indi(args, served)
    ctx.http_port = port
    watcher = await loop.run_in_executor(None, _start_hotplug, args, served, ctx, indi, loop, restart)
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            await _in_daemon_thread(loop, watcher.stop, 1.0)
        log.info("shutting down: releasing cameras")
        started = time.monotonic()
        # Everything that may block runs in threads, side by side, each bounded: the whole
        # shutdown must fit in SHUTDOWN_BUDGET_S.
        jobs = [_in_daemon_thread(loop, _release_cameras, served, SHUTDOWN_BUDGET_S * 0.6)]
        if discovery is not None:
            jobs.append(_in_daemon_thread(loop, _quiet_stop, "discovery", discovery, None))
        if indi is not None:
            jobs.append(_in_daemon_thread(loop, _quiet_stop, "INDI", indi, SHUTDOWN_BUDGET_S * 0.5))
        try:
            await asyncio.wait_for(runner.cleanup(), 0.8)
        except Exception as exc:  # noqa: BLE001
            log.debug("HTTP shutdown: %s", exc)
        left = max(0.1, SHUTDOWN_BUDGET_S * 0.85 - (time.monotonic() - started))
        done, pending = await asyncio.wait(jobs, timeout=left)
        if pending:
            log.warning("shutdown: %d step(s) did not finish in time; exiting anyway", len(pending))
        log.info("stopped after %.2f s", time.monotonic() - started)
    return outcome[0]


def _finish(code: int) -> int:
    """Return ``code``, or leave at once if a worker thread is stuck in an SDK call (exit must be < 2 s)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        deadline = time.monotonic() + 0.3
        for t in stuck:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in stuck):
            os._exit(code)
    return code


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command: exit status 0 after a signal, 1 when it cannot start."""
    code = _run(args)
    if code == RESTART:
        # Same PID, same arguments, a fresh SDK: zwoasi holds one library per process, so the
        # simulator cannot be swapped for the real SDK in place. Our fds are close-on-exec.
        argv = [sys.executable, "-m", "alpaca_server", *sys.argv[1:]]
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
    return _finish(code)


def _run(args: argparse.Namespace) -> int:
    logsetup.setup_from_args(args)
    config = Config.load(args.config)
    n_threads = 8
    sdk_pool = concurrent.futures.ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="alpaca-sdk")
    codec_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="alpaca-codec")
    served: Served | None = None
    try:
        try:
            served = build_devices(args, config, codec_pool)
        except Exception as exc:  # noqa: BLE001 - a start-up failure is reported in one line
            message = getattr(exc, "message", None) or str(exc)
            log.error("cannot start: %s", message)
            log.debug("start-up failure", exc_info=True)
            return 1
        version = package_version()
        ctx = ServerContext(
            devices=served.devices,
            sdk_pool=sdk_pool,
            codec_pool=codec_pool,
            config=config,
            server_name="zwo-alpaca",
            manufacturer="zwo-alpaca project",
            version=version,
            send_timeout=args.send_timeout,
        )
        try:
            return asyncio.run(serve_forever(args, served, ctx))
        except KeyboardInterrupt:
            _release_cameras(served, 1.0)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "the port is in use (is another zwo-alpaca server running? pick another with --port)"
            log.error("cannot listen on %s:%s: %s", args.bind, args.port, why)
            _release_cameras(served, 1.0)
            return 1
        return 0
    finally:
        sdk_pool.shutdown(wait=False, cancel_futures=True)
        codec_pool.shutdown(wait=False, cancel_futures=True)
