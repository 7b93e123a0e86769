"""The ``zwo-alpaca`` command line: one sub-command per module.

Each command lives in its own module exposing ``add_parser(subparsers)`` (or ``register``), which
adds its sub-parser and sets ``func`` (called with the parsed arguments; its return value is the
exit status). To add a command (``capture``, ``doctor`` ...), write the module and name it in
:data:`COMMAND_MODULES`; a listed module that is not in this build is skipped. Logging options
(``--log-level``, ``-v``, ``--log-json``, ``--log-file``) come from ``logsetup`` and may be given
before or after the command name.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "zwo_runtime.serve",
    "zwo_runtime.cmd_list",
    "zwo_runtime.cmd_capture",
    "zwo_runtime.cmd_doctor",
    "zwo_runtime.cmd_passwd",
    "zwo_runtime.cmd_selftest",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="zwo-alpaca",
        description="ASCOM Alpaca (and INDI) server for ZWO ASI cameras.",
    )
    from . import logsetup  # noqa: PLC0415

    logsetup.add_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the command is simply not part of this build
                continue
            raise
        register = getattr(module, "add_parser", None) or getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zwo-alpaca`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
