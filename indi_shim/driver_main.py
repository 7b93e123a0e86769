"""``zwo-alpaca-indi``: the INDI driver program, for libindi's ``indiserver`` and Ekos profiles.

indiserver starts a driver with no arguments and talks INDI XML over its stdin/stdout, so options
come from the environment (Ekos profiles and ``indiserver`` pass the environment through):

=============================  =================================================================
``ZWO_ALPACA_SIMULATOR``       comma-separated simulator models (e.g. ``asi294mc-pro``); default:
                               real cameras, falling back to one simulated camera if none is found
``ZWO_ALPACA_SDK``             path of libASICamera2
``ZWO_ALPACA_PORT``            Alpaca HTTP port served by the same process (default 11111;
                               ``0`` picks a free port, ``off`` disables Alpaca)
``ZWO_ALPACA_BIND``            Alpaca listening address (default 0.0.0.0)
``ZWO_ALPACA_CONFIG``          zwo-alpaca config file
``ZWO_ALPACA_UPLOAD_DIR``      base directory for UPLOAD_LOCAL/UPLOAD_BOTH (default: local upload off)
``ZWO_ALPACA_DISCOVERY``       ``off`` stops answering Alpaca discovery broadcasts
``ZWO_ALPACA_LOG_LEVEL``       log level (logs go to stderr, which indiserver records)
=============================  =================================================================

In this mode the one process serves the cameras over INDI (through indiserver) and over Alpaca
(HTTP), with one state, exactly as ``zwo-alpaca serve`` does with its INDI TCP server. Command-line
arguments (for running it by hand) mirror the variables: ``--simulator``, ``--port``, ...

stdout carries the INDI protocol, so nothing else may ever be written to it: the INDI stream gets
a private duplicate of file descriptor 1 and fd 1 itself is pointed at stderr, so a stray print
from any library lands in the log instead of corrupting the XML stream.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("zwo_alpaca.indi")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="zwo-alpaca-indi",
        description="INDI driver for ZWO ASI cameras (run by indiserver); also serves ASCOM Alpaca. "
                    "Options default to the ZWO_ALPACA_* environment variables.")
    p.add_argument("--simulator", default=_env("ZWO_ALPACA_SIMULATOR"), metavar="MODEL[,MODEL...]")
    p.add_argument("--sdk", default=_env("ZWO_ALPACA_SDK"), metavar="PATH")
    p.add_argument("--port", default=_env("ZWO_ALPACA_PORT", "11111"), metavar="N|off",
                   help="Alpaca HTTP port served by this process (off: INDI only)")
    p.add_argument("--bind", default=_env("ZWO_ALPACA_BIND", "0.0.0.0"), metavar="ADDR")
    p.add_argument("--config", default=_env("ZWO_ALPACA_CONFIG"), metavar="FILE")
    p.add_argument("--upload-dir", default=_env("ZWO_ALPACA_UPLOAD_DIR"), metavar="DIR")
    p.add_argument("--no-discovery", action="store_true",
                   default=str(_env("ZWO_ALPACA_DISCOVERY", "on")).lower() in ("off", "0", "no", "false"),
                   help="do not answer Alpaca discovery (env ZWO_ALPACA_DISCOVERY=off)")
    p.add_argument("--log-level", default=_env("ZWO_ALPACA_LOG_LEVEL", "info"))
    return p.parse_args(argv)


def _protect_stdout() -> int:
    """Give the INDI stream its own copy of fd 1 and send fd 1 (stray prints) to stderr."""
    indi_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return indi_fd


def _setup_logging(level: str) -> None:
    try:
        from alpaca_server import logsetup  # noqa: PLC0415 - same one-line format as zwo-alpaca serve

        logsetup.setup(level, stream=sys.stderr)
        return
    except Exception:
        pass
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _standalone_cameras(args: argparse.Namespace) -> list[Any]:
    """Cameras without the Alpaca server (used when alpaca_server is unavailable or disabled)."""
    import driver  # noqa: PLC0415
    import driver.sdk  # noqa: PLC0415

    models = [m.strip() for m in args.simulator.split(",") if m.strip()] if args.simulator else None
    info = driver.sdk.load(sdk_path=args.sdk, simulator=models, fallback_to_simulator=True)
    log.info("SDK: %s", info.describe() if hasattr(info, "describe") else info)
    cams = []
    for cinfo in driver.sdk.enumerate_cameras():
        cam = driver.ZWOCamera(cinfo, logger=logging.getLogger("zwo_alpaca.core"))
        try:
            cam.describe()
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot describe %s: %s", cinfo, exc)
        cams.append(cam)
    return cams


def _serve_args(args: argparse.Namespace) -> argparse.Namespace:
    """The Namespace alpaca_server.serve expects, from our options (INDI TCP server off: we are it)."""
    port = 0 if str(args.port).lower() in ("off", "none", "no", "false") else int(args.port)
    ns = argparse.Namespace(
        bind=args.bind, port=port, simulator=args.simulator, sdk=args.sdk, config=args.config,
        indi_port=0, no_discovery=bool(args.no_discovery), discovery_port=32227,
        log_level=args.log_level, verbose=False, log_json=False, log_file=None)
    return ns


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zwo-alpaca-indi`` console script."""
    indi_fd = _protect_stdout()
    args = parse_args(argv)
    _setup_logging(args.log_level)
    alpaca_enabled = str(args.port).lower() not in ("off", "none", "no", "false")

    served = None
    serve_mod = None
    ctx = None
    sdk_pool = codec_pool = None
    try:
        if alpaca_enabled:
            try:
                from alpaca_server import serve as serve_mod  # noqa: PLC0415
                from alpaca_server.app import ServerContext  # noqa: PLC0415
                from alpaca_server.config import Config  # noqa: PLC0415
            except ImportError as exc:
                log.warning("Alpaca server unavailable (%s); serving INDI only", exc)
                serve_mod = None
        if serve_mod is not None:
            sargs = _serve_args(args)
            config = Config.load(sargs.config)
            sdk_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="alpaca-sdk")
            codec_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="alpaca-codec")
            served = serve_mod.build_devices(sargs, config, codec_pool)
            cams = [dev.cam for _, dev in sorted(served.devices.items())]
            ctx = ServerContext(devices=served.devices, sdk_pool=sdk_pool, codec_pool=codec_pool, config=config,
                                server_name="zwo-alpaca", manufacturer="zwo-alpaca project",
                                version=serve_mod.package_version())
        else:
            cams = _standalone_cameras(args)
    except Exception as exc:  # noqa: BLE001 - one clear line for indiserver's log
        log.error("cannot start: %s", getattr(exc, "message", None) or exc)
        return 1

    from .server import IndiServer  # noqa: PLC0415

    indi = IndiServer(cams, port=0, logger=log, upload_dir=args.upload_dir)
    indi.start(listen=False)

    stdio_done = threading.Event()

    def pump() -> None:
        try:
            indi.serve_stdio(0, indi_fd)
        except Exception:  # noqa: BLE001
            log.exception("INDI stdio link failed")
        finally:
            stdio_done.set()
            # indiserver went away (or closed our stdin): shut the whole process down gracefully.
            if serve_mod is not None and served is not None:
                os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=pump, name="indi-stdio", daemon=True).start()
    code = 0
    try:
        if serve_mod is not None and served is not None and ctx is not None:
            sargs = _serve_args(args)
            try:
                asyncio.run(serve_mod.serve_forever(sargs, served, ctx))
            except OSError as exc:
                log.warning("Alpaca server not started (%s); serving INDI only", exc)
                _wait_quietly(stdio_done)
                serve_mod._release_cameras(served, 1.0)  # noqa: SLF001
            except KeyboardInterrupt:
                serve_mod._release_cameras(served, 1.0)  # noqa: SLF001
        else:
            _wait_quietly(stdio_done)
            for cam in cams:
                try:
                    cam.disconnect_camera()
                except Exception:  # noqa: BLE001
                    pass
    finally:
        indi.stop(timeout=1.0)
        for pool in (sdk_pool, codec_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
    logging.shutdown()
    return code


def _wait_quietly(done: threading.Event) -> None:
    """Wait for the INDI link to end, or for SIGTERM/SIGINT (indiserver stops drivers with SIGTERM)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass
    while not done.is_set() and not stop.is_set():
        done.wait(0.2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
