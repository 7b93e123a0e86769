"""``zwo-alpaca serve``: serve every camera over ASCOM Alpaca (with discovery) and INDI.

Composition only: the runtime (``runtime.py``) opens the cameras and owns start-up and shutdown;
this module reads the options and composes the Alpaca front end (``alpaca_server.frontend``,
which also answers discovery) and the INDI front end (``indi_shim.frontend``, TCP) over them:

* SIGTERM or SIGINT: every camera is released (a running exposure is ended), the listeners close,
  and the process exits with status 0 within 2 s.
* Listening sockets use SO_REUSEADDR, so a new server can bind the same port at once.
* With the simulator standing in for a missing camera, a real camera plugged in restarts the
  server in place on it (same PID, same arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import logsetup
from .frontend import FrontEnd
from .runtime import RESTART, Runtime, finish

log = logging.getLogger("zwo_alpaca")

DEFAULT_PORT = 11111
DEFAULT_INDI_PORT = 7624
DEFAULT_DISCOVERY_PORT = 32227


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
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                   help=f"Alpaca HTTP port (default {DEFAULT_PORT}; 0 picks a free port)")
    p.add_argument(
        "--simulator",
        metavar="MODEL[,MODEL...]",
        help="serve simulated cameras of these catalog models, as devices 0, 1, ... in this order "
        "(e.g. asi294mc-pro,asi120mm-mini)",
    )
    p.add_argument("--sdk", metavar="PATH",
                   help="path of libASICamera2 (default: $ZWO_ASI_LIB, system paths, pyzwoasi's copy)")
    p.add_argument("--config", metavar="FILE", help="config file (default ~/.config/zwo-alpaca/config.json)")
    p.add_argument("--indi-port", type=int, default=DEFAULT_INDI_PORT, metavar="N",
                   help=f"INDI server port (default {DEFAULT_INDI_PORT}; 0 disables INDI)")
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
    p.add_argument("--discovery-port", type=int, default=DEFAULT_DISCOVERY_PORT, metavar="N",
                   help=f"Alpaca discovery UDP port (default {DEFAULT_DISCOVERY_PORT})")
    logsetup.add_arguments(p)
    p.set_defaults(func=run)


def front_ends(args: argparse.Namespace, runtime: Runtime) -> tuple[list[FrontEnd], list[FrontEnd]]:
    """The front ends ``serve`` runs over the runtime's cameras, and which of them are optional.

    Alpaca (with discovery unless --no-discovery) is required: without its port there is nothing
    to serve. INDI (unless --indi-port 0) is optional: Alpaca keeps working without it. INDI starts
    first, so once the HTTP port answers every listener is up (scripts and tests wait for that).
    """
    from alpaca_server.frontend import AlpacaFrontEnd  # noqa: PLC0415 - imported late: `--help` stays fast

    sdk = runtime.cameras.sdk
    alpaca = AlpacaFrontEnd(bind=args.bind, port=args.port, config=runtime.config, sdk_pool=runtime.sdk_pool,
                            codec_pool=runtime.codec_pool, version=runtime.version, sdk_description=sdk.description,
                            simulated=sdk.simulated, fallback=sdk.fallback,
                            send_timeout=getattr(args, "send_timeout", 60.0),
                            discovery_port=None if args.no_discovery else args.discovery_port)
    optional: list[FrontEnd] = []
    if args.indi_port:
        try:
            from indi_shim.frontend import IndiFrontEnd  # noqa: PLC0415 - optional module
        except ImportError as exc:
            log.info("INDI server is not available in this build (%s)", exc)
        else:
            optional.append(IndiFrontEnd(host=args.bind, port=args.indi_port, upload_dir=args.upload_dir,
                                         logger=logging.getLogger("zwo_alpaca.indi")))
    return [*optional, alpaca], optional


async def serve_forever(args: argparse.Namespace, runtime: Runtime) -> int:
    """Run Alpaca (plus discovery) and INDI over the runtime's cameras until SIGTERM/SIGINT, then
    shut down in < 2 s. Returns 0, or RESTART when a real camera appeared while the simulator
    stood in for it. The cameras are added to the front ends in a worker thread (blocking)."""
    ends, optional = front_ends(args, runtime)
    await asyncio.get_running_loop().run_in_executor(None, runtime.add_to, ends)
    return await runtime.serve(ends, optional=optional,
                               hotplug_interval=float(getattr(args, "hotplug_interval", 0.0) or 0.0))


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command: exit status 0 after a signal, 1 when it cannot start."""
    code = _run(args)
    if code == RESTART:
        # Same PID, same arguments, a fresh SDK: zwoasi holds one library per process, so the
        # simulator cannot be swapped for the real SDK in place. Our fds are close-on-exec.
        argv = [sys.executable, "-m", "zwo_runtime", *sys.argv[1:]]
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
    return finish(code)


def _run(args: argparse.Namespace) -> int:
    logsetup.setup_from_args(args)
    try:
        runtime = Runtime.open(simulator=args.simulator, sdk_path=args.sdk, config_path=args.config)
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        log.error("cannot start: %s", message)
        log.debug("start-up failure", exc_info=True)
        return 1
    try:
        return asyncio.run(serve_forever(args, runtime))
    except KeyboardInterrupt:
        runtime.close(1.0)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why = "the port is in use (is another zwo-alpaca server running? pick another with --port)"
        log.error("cannot listen on %s:%s: %s", args.bind, args.port, why)
        runtime.close(1.0)
        return 1
    finally:
        runtime.shutdown_pools()
    return 0
