"""``zwo-alpaca serve``: serve every camera over ASCOM Alpaca (with discovery) and INDI.

Composition only: the runtime (``runtime.py``) opens the cameras and owns start-up and shutdown;
this module reads the options and composes the Alpaca front end (``alpaca_server.frontend``,
which also answers discovery) and the INDI front end (``indi_shim.frontend``, TCP) over them:

* SIGTERM or SIGINT: every camera is released (a running exposure is ended), the listeners close,
  and the process exits with status 0 within 2 s.
* Listening sockets use SO_REUSEADDR, so a new server can bind the same port at once.
* With ZWO's SDK installed, only real cameras are served: those attached and those the config
  knows (served as not plugged in until they are); a simulated camera stands in only when no SDK
  is installed at all, or with --simulator. A wrong --sdk path stops the server with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from . import logsetup
from .frontend import FrontEnd
from .runtime import Runtime, finish

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


#: What "no --bind" means: every IPv4 and every IPv6 address (two sockets; the IPv6 one is
#: IPv6-only, so IPv4 clients keep their own addresses in the logs and the security checks).
ALL_ADDRESSES = ("0.0.0.0", "::")


def ipv6_unavailable() -> str | None:
    """Why this host cannot listen on IPv6 (a test bind of ``[::]:0``), or None when it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::", 0))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def listen_addresses(binds: Sequence[str] | str | None) -> list[str]:
    """The addresses to listen on: each ``--bind`` given (in order, repeats dropped; a value may
    also list several separated by commas), or, with none, :data:`ALL_ADDRESSES`, falling back to
    IPv4 only (with a log line) on a host without IPv6."""
    if isinstance(binds, str):
        binds = [binds]
    out: list[str] = []
    for value in binds or ():
        for part in value.split(","):
            addr = part.strip()
            if addr.startswith("[") and addr.endswith("]"):
                addr = addr[1:-1]  # "[::1]" as written in URLs
            if addr and addr not in out:
                out.append(addr)
    if out:
        return out
    why = ipv6_unavailable()
    if why is not None:
        log.info("IPv6 is not available on this host (%s): listening on IPv4 addresses only", why)
        return ["0.0.0.0"]
    return list(ALL_ADDRESSES)


def common_port(addresses: Sequence[str], port: int) -> int:
    """``port``, or for 0 with several addresses one port that is free on all of them (each address
    binding its own ephemeral port would give IPv4 and IPv6 clients different ports)."""
    if port != 0 or len(addresses) < 2:
        return port
    for _attempt in range(20):
        socks: list[socket.socket] = []
        try:
            chosen = 0
            for addr in addresses:
                info = socket.getaddrinfo(addr, chosen, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
                s = socket.socket(info[0], socket.SOCK_STREAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if info[0] == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(info[4])
                chosen = s.getsockname()[1]
            return chosen
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        finally:
            for s in socks:
                s.close()
    raise OSError(errno.EADDRINUSE, f"no port is free on all of {', '.join(addresses)}")


def describe_listen(addresses: Sequence[str], port: int) -> str:
    """``127.0.0.1:11111``, ``0.0.0.0:11111 and [::]:11111``: where a server listens, for log lines."""
    return " and ".join(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses)


def add_parser(subparsers: Any) -> None:
    """Add the ``serve`` command to the CLI (see ``cli.py``)."""
    p = subparsers.add_parser(
        "serve",
        help="run the ASCOM Alpaca camera server",
        description="Serve every attached ZWO camera over ASCOM Alpaca (and INDI when available). "
        "Cameras the config knows are served from the start, as not connected until they are plugged in. "
        "Only when no ZWO SDK is installed at all (and no --simulator) is one simulated ASI294MC Pro served.",
    )
    p.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="address the HTTP and INDI servers listen on; give it more than once for several "
                        "(default: every IPv4 and IPv6 address, IPv4 only on a host without IPv6)")
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
    p.add_argument("--capture-root", metavar="DIR", default=None,
                   help="the web page's loop saves FITS files only in folders under this one (default: the config "
                        "key server.capture_root, else ~/zwo-alpaca-captures)")
    p.add_argument("--upload-dir", metavar="DIR", default=None,
                   help="directory INDI clients may upload FITS into (UPLOAD_LOCAL/BOTH); off when not given "
                        "(default: $ZWO_ALPACA_UPLOAD_DIR)")
    p.add_argument("--send-timeout", type=_seconds(1.0, 3600.0), default=60.0, metavar="SECONDS",
                   help="drop a client that reads nothing of an image for this long, freeing the frame it holds "
                        "(default 60; 1 to 3600)")
    p.add_argument("--hotplug-interval", type=_seconds(0.5, 3600.0, zero_means="off"), default=3.0, metavar="SECONDS",
                   help="look for cameras plugged in after start this often (default 3; 0 = never); a camera "
                        "the config knows comes in under its own device number and UniqueID")
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
    addresses = listen_addresses(args.bind)
    alpaca = AlpacaFrontEnd(bind=addresses, port=common_port(addresses, args.port), config=runtime.config,
                            sdk_pool=runtime.sdk_pool, codec_pool=runtime.codec_pool, version=runtime.version,
                            sdk_description=sdk.description, simulated=sdk.simulated, fallback=sdk.fallback,
                            send_timeout=getattr(args, "send_timeout", 60.0),
                            discovery_port=None if args.no_discovery else args.discovery_port,
                            capture_root=getattr(args, "capture_root", None))
    optional: list[FrontEnd] = []
    if args.indi_port:
        try:
            from indi_shim.frontend import IndiFrontEnd  # noqa: PLC0415 - optional module
        except ImportError as exc:
            log.info("INDI server is not available in this build (%s)", exc)
        else:
            optional.append(IndiFrontEnd(host=addresses, port=args.indi_port, upload_dir=args.upload_dir,
                                         logger=logging.getLogger("zwo_alpaca.indi"),
                                         config_path=runtime.config.path))
    return [*optional, alpaca], optional


async def serve_forever(args: argparse.Namespace, runtime: Runtime) -> int:
    """Run Alpaca (plus discovery) and INDI over the runtime's cameras until SIGTERM/SIGINT, then
    shut down in < 2 s. Returns 0. The cameras are added to the front ends in a worker thread (blocking)."""
    ends, optional = front_ends(args, runtime)
    await asyncio.get_running_loop().run_in_executor(None, runtime.add_to, ends)
    return await runtime.serve(ends, optional=optional,
                               hotplug_interval=float(getattr(args, "hotplug_interval", 0.0) or 0.0))


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command: exit status 0 after a signal, 1 when it cannot start."""
    return finish(_run(args))


def _run(args: argparse.Namespace) -> int:
    logsetup.setup_from_args(args)
    args.bind = listen_addresses(args.bind)  # resolved once: the IPv6 check and its log line
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
        log.error("cannot listen on %s: %s", describe_listen(args.bind, args.port), why)
        runtime.close(1.0)
        return 1
    finally:
        runtime.shutdown_pools()
    return 0
