"""``zwo-alpaca-indi``: the INDI driver program, for libindi's ``indiserver`` and Ekos profiles.

indiserver starts a driver with no arguments and talks INDI XML over its stdin/stdout, so options
come from the environment (Ekos profiles and ``indiserver`` pass the environment through):

=============================  =================================================================
``ZWO_ALPACA_SIMULATOR``       comma-separated simulator models (e.g. ``asi294mc-pro``); default:
                               real cameras, falling back to one simulated camera if none is found
``ZWO_ALPACA_SDK``             path of libASICamera2
``ZWO_ALPACA_PORT``            Alpaca HTTP port served by the same process (default 11111;
                               ``0`` picks a free port, ``off`` disables Alpaca)
``ZWO_ALPACA_BIND``            Alpaca listening address(es), comma-separated (default: every
                               IPv4 and IPv6 address, IPv4 only on a host without IPv6)
``ZWO_ALPACA_CONFIG``          zwo-alpaca config file
``ZWO_ALPACA_UPLOAD_DIR``      base directory for UPLOAD_LOCAL/UPLOAD_BOTH (default: local upload off)
``ZWO_ALPACA_DISCOVERY``       ``off`` stops answering Alpaca discovery broadcasts
``ZWO_ALPACA_LOG_LEVEL``       log level (logs go to stderr, which indiserver records)
=============================  =================================================================

In this mode the one process serves the cameras over INDI (through indiserver) and over Alpaca
(HTTP), with one state: the same runtime as ``zwo-alpaca serve`` (``runtime.py``, cameras opened
and numbered by ``cameras.open_cameras``) composing the INDI front end in driver mode, plus the
Alpaca front end unless the port is ``off``. Hotplug is off in this mode. Command-line arguments
(for running it by hand) mirror the variables: ``--simulator``, ``--port``, ...

stdout carries the INDI protocol, so nothing else may ever be written to it: the INDI stream gets
a private duplicate of file descriptor 1 and fd 1 itself is pointed at stderr, so a stray print
from any library lands in the log instead of corrupting the XML stream.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from . import logsetup
from .frontend import FrontEnd
from .runtime import Runtime, finish
from .serve import DEFAULT_DISCOVERY_PORT, common_port, listen_addresses

log = logging.getLogger("zwo_alpaca.indi")

_OFF = ("off", "none", "no", "false")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, each defaulting to its ``ZWO_ALPACA_*`` variable (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="zwo-alpaca-indi",
        description="INDI driver for ZWO ASI cameras (run by indiserver); also serves ASCOM Alpaca. "
                    "Options default to the ZWO_ALPACA_* environment variables.")
    p.add_argument("--simulator", default=_env("ZWO_ALPACA_SIMULATOR"), metavar="MODEL[,MODEL...]")
    p.add_argument("--sdk", default=_env("ZWO_ALPACA_SDK"), metavar="PATH")
    p.add_argument("--port", default=_env("ZWO_ALPACA_PORT", "11111"), metavar="N|off",
                   help="Alpaca HTTP port served by this process (off: INDI only)")
    p.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="Alpaca listening address; may be given more than once (default: $ZWO_ALPACA_BIND, else "
                        "every IPv4 and IPv6 address)")
    p.add_argument("--config", default=_env("ZWO_ALPACA_CONFIG"), metavar="FILE")
    p.add_argument("--upload-dir", default=_env("ZWO_ALPACA_UPLOAD_DIR"), metavar="DIR")
    p.add_argument("--no-discovery", action="store_true",
                   default=str(_env("ZWO_ALPACA_DISCOVERY", "on")).lower() in ("off", "0", "no", "false"),
                   help="do not answer Alpaca discovery (env ZWO_ALPACA_DISCOVERY=off)")
    p.add_argument("--log-level", default=_env("ZWO_ALPACA_LOG_LEVEL", "info"))
    args = p.parse_args(argv)
    if args.bind is None and _env("ZWO_ALPACA_BIND"):
        args.bind = [str(_env("ZWO_ALPACA_BIND"))]  # listen_addresses splits it at commas
    return args


def _protect_stdout() -> int:
    """Give the INDI stream its own copy of fd 1 and send fd 1 (stray prints) to stderr."""
    indi_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return indi_fd


def front_ends(args: argparse.Namespace, runtime: Runtime, indi_fd: int) -> tuple[list[FrontEnd], list[FrontEnd]]:
    """INDI over stdin/``indi_fd`` (required: it is what indiserver started us for), and Alpaca over
    HTTP unless ``--port off`` (optional: INDI goes on without it, e.g. when the port is taken)."""
    from indi_shim.frontend import IndiFrontEnd  # noqa: PLC0415 - imported after stdout is protected

    indi = IndiFrontEnd(upload_dir=args.upload_dir, logger=log, stdio=(0, indi_fd),
                        on_link_closed=runtime.request_stop,  # indiserver went away: shut down
                        config_path=runtime.config.path)  # saved INDI configurations beside the config
    ends: list[FrontEnd] = [indi]
    optional: list[FrontEnd] = []
    if str(args.port).lower() not in _OFF:
        try:
            from alpaca_server.frontend import AlpacaFrontEnd  # noqa: PLC0415 - optional module
        except ImportError as exc:
            log.warning("Alpaca server unavailable (%s); serving INDI only", exc)
        else:
            sdk = runtime.cameras.sdk
            addresses = listen_addresses(args.bind)
            alpaca = AlpacaFrontEnd(bind=addresses, port=common_port(addresses, int(args.port)),
                                    config=runtime.config, sdk_pool=runtime.sdk_pool, codec_pool=runtime.codec_pool,
                                    version=runtime.version,
                                    sdk_description=sdk.description, simulated=sdk.simulated, fallback=sdk.fallback,
                                    discovery_port=None if args.no_discovery else DEFAULT_DISCOVERY_PORT)
            ends.append(alpaca)
            optional.append(alpaca)
    return ends, optional


async def serve_forever(args: argparse.Namespace, runtime: Runtime, indi_fd: int) -> int:
    """Serve until indiserver closes the link or sends SIGTERM; returns 0."""
    ends, optional = front_ends(args, runtime, indi_fd)
    await asyncio.get_running_loop().run_in_executor(None, runtime.add_to, ends)
    return await runtime.serve(ends, optional=optional)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zwo-alpaca-indi`` console script."""
    indi_fd = _protect_stdout()
    args = parse_args(argv)
    logsetup.setup(args.log_level, stream=sys.stderr)  # the same one-line format as zwo-alpaca serve
    try:
        runtime = Runtime.open(simulator=args.simulator, sdk_path=args.sdk, config_path=args.config)
    except Exception as exc:  # noqa: BLE001 - one clear line for indiserver's log
        log.error("cannot start: %s", getattr(exc, "message", None) or exc)
        return finish(1)
    code = 0
    try:
        code = asyncio.run(serve_forever(args, runtime, indi_fd))
    except KeyboardInterrupt:
        runtime.close(1.0)
    except Exception as exc:  # noqa: BLE001 - one clear line for indiserver's log
        log.error("cannot serve INDI: %s", getattr(exc, "message", None) or exc)
        runtime.close(1.0)
        code = 1
    finally:
        runtime.shutdown_pools()
    return finish(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
