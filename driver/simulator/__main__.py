"""Command line for the simulated SDK.

    python -m driver.simulator hold MODEL [MODEL ...] [--camera SLOT] [--seconds N] [--seed S] [--lock-dir DIR]
        Open a simulated camera and keep it open, as another program using the camera would: prints
        "holding <serial>" once it holds the camera's lock, then waits until killed (any signal, even
        SIGKILL, frees the camera: the lock is an flock the kernel drops with the process) or N seconds.
    python -m driver.simulator list [--markdown | --write DOC]
        The catalog (--markdown: the generated table with every figure's source; --write: put it in DOC).
    python -m driver.simulator bench [MODEL ...] [--repeat N]
        Time frame generation at full resolution.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import sys
import threading
import time

from . import catalog, install
from .constants import AsiError, ImgType


def _hold(args: argparse.Namespace) -> int:
    models = [m for arg in args.models for m in arg.split(",") if m]
    sdk = install(models=models, seed=args.seed, lock_dir=args.lock_dir)
    slot = args.camera
    if not 0 <= slot < len(sdk.cameras):
        print(f"no camera in slot {slot}", file=sys.stderr)
        return 2
    lib = sdk.library
    err = lib.ASIOpenCamera(slot) or lib.ASIInitCamera(slot)
    if err:
        print(f"cannot open {sdk.cameras[slot].model.name} ({sdk.cameras[slot].serial}): "
              f"{AsiError(err).name}", file=sys.stderr)
        return 1
    print(f"holding {sdk.cameras[slot].serial}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(args.seconds if args.seconds is not None else None)
    lib.ASICloseCamera(slot)
    sdk.shutdown()
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.write:
        print(("updated " if catalog.write_doc(args.write) else "unchanged ") + args.write)
        return 0
    if args.markdown:
        print(catalog.markdown_table(), end="")
        return 0
    for key, m in catalog.MODELS.items():
        kind = "colour" if m.is_color else "mono"
        extras = ", ".join(x for x, on in (("cooled", m.cooled), ("ST4", m.st4), ("USB3", m.usb3)) if on)
        print(f"{key:16s} {m.name:20s} {m.max_width}x{m.max_height} {m.pixel_size_um} um {kind} "
              f"{m.bit_depth}-bit  {extras}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: F401,PLC0415 - only to fail early if missing

    from .sensor import Conditions, Geometry, SensorSimulator  # noqa: PLC0415

    for name in args.models or ["asi6200mm-pro", "asi294mc-pro"]:
        m = catalog.lookup(name)
        w, h = m.max_width - m.max_width % 8, m.max_height - m.max_height % 2
        for fmt in (ImgType.RAW16, ImgType.RAW8):
            sensor = SensorSimulator(m, 0, 0)
            geom = Geometry(w, h, 1, int(fmt))
            buf = bytearray(geom.nbytes)
            addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
            t0 = time.perf_counter()
            sensor.prepare(geom, Conditions(1.0, 100, 10, 20.0), 0).render_into(addr)
            first = time.perf_counter() - t0
            times = []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                sensor.prepare(geom, Conditions(1.0, 100, 10, 20.0), i + 1).render_into(addr)
                times.append(time.perf_counter() - t0)
            # A frame under new conditions (new noise pool) as when gain or exposure changes.
            t0 = time.perf_counter()
            sensor.prepare(geom, Conditions(2.0, 150, 20, 20.0), 99).render_into(addr)
            changed = time.perf_counter() - t0
            print(f"{m.key:16s} {w}x{h} {ImgType(fmt).name:5s}: first {first * 1000:7.1f} ms, "
                  f"steady {min(times) * 1000:6.1f}..{max(times) * 1000:6.1f} ms, "
                  f"after a settings change {changed * 1000:6.1f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m driver.simulator", description="Simulated ZWO ASI SDK tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold", help="open a simulated camera and keep it busy")
    h.add_argument("models", nargs="+", help="catalog model(s) to install, in slot order (comma lists allowed)")
    h.add_argument("--camera", type=int, default=0, help="slot to open (default 0)")
    h.add_argument("--seconds", type=float, default=None, help="release after this long (default: until killed)")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--lock-dir", default=None, help="lock directory (default: as the simulator's default_lock_dir())")
    h.set_defaults(fn=_hold)
    lst = sub.add_parser("list", help="print the camera catalog")
    lst.add_argument("--markdown", action="store_true", help="as the table in docs/simulator.md, with sources")
    lst.add_argument("--write", metavar="DOC", help="replace the generated catalog table in DOC")
    lst.set_defaults(fn=_list)
    b = sub.add_parser("bench", help="time full-frame generation")
    b.add_argument("models", nargs="*")
    b.add_argument("--repeat", type=int, default=5)
    b.set_defaults(fn=_bench)
    args = p.parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except ValueError as exc:  # e.g. an unknown model name
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
