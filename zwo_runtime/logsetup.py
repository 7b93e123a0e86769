"""Logging for the `zwo-alpaca` commands: one line per event, with the camera's name.

Two formats, both one line per event so `journalctl`, `grep` and log shippers never see a record
split over several lines:

* text (default)::

      2024-05-01 21:03:07 INFO    [ZWO ASI294MC Pro] disconnected

  Under systemd (``$JOURNAL_STREAM`` points at our stderr) the timestamp is left out, because the
  journal adds its own, and each line starts with a ``<N>`` syslog priority so that
  ``journalctl -p warning`` filters by level.
* JSON lines (``--log-json``), for services and log collectors::

      {"ts": "2024-05-01T19:03:07.123Z", "level": "info", "logger": "zwo_alpaca.camera",
       "camera": "ZWO ASI294MC Pro", "msg": "disconnected"}

The camera name comes from ``extra={"camera": ...}`` (see `camera_logger`) or, for the device
core's messages, which all read ``"%s: ..." % camera.name``, from that first argument, so both
formats carry it as a field. Tracebacks are kept on the same line (JSON: an ``exc`` field; text:
the exception type and text, the full traceback only at debug level).

Options (added to each subcommand by `add_arguments`): ``--log-level``, ``-v/--verbose``,
``--log-json``, ``--log-file``. ``$ZWO_ALPACA_LOG_LEVEL`` sets the default level.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
import traceback
from typing import IO, Any, Protocol

LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_LEVEL = "ZWO_ALPACA_LOG_LEVEL"
# Loggers of libraries that are chatty at INFO/DEBUG and say nothing an astrophotographer needs.
_QUIET_LIBRARIES = ("asyncio", "aiohttp.access", "urllib3", "PIL")
# syslog priorities for journald's "<N>" line prefix.
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class StatusLine(Protocol):
    """Something drawing a transient line on the terminal (a progress bar) that log lines must not garble."""

    def clear(self) -> None: ...

    def redraw(self) -> None: ...


_status_line: StatusLine | None = None


def set_status_line(line: StatusLine | None) -> None:
    """Register the progress bar drawn on stderr, so log lines erase it first and redraw it after."""
    global _status_line
    _status_line = line


def camera_of(record: logging.LogRecord) -> str | None:
    """The camera a record is about: `extra={"camera": ...}`, else the device core's "%s: ..." argument."""
    cam = getattr(record, "camera", None)
    if cam:
        return str(cam)
    # The device core writes every camera message as log.x("%s: ...", self.name, ...).
    if isinstance(record.msg, str) and record.msg.startswith("%s: ") and isinstance(record.args, tuple) \
            and record.args and isinstance(record.args[0], str):
        return record.args[0]
    return None


def _message_without_camera(record: logging.LogRecord, camera: str | None) -> str:
    """The formatted message, minus a leading "<camera>: " that the camera field already says."""
    msg = record.getMessage()
    if camera and msg.startswith(camera + ": "):
        msg = msg[len(camera) + 2:]
    return msg


def _one_line(text: str) -> str:
    # Keep one event on one line: embedded newlines (SDK messages, tracebacks) become " | ".
    return " | ".join(part for part in text.splitlines() if part.strip()) if "\n" in text else text


class TextFormatter(logging.Formatter):
    """``TIME LEVEL [camera] message`` on one line; no time and a ``<N>`` priority under journald."""

    def __init__(self, journald: bool = False, full_tracebacks: bool = False) -> None:
        super().__init__()
        self.journald = journald
        self.full_tracebacks = full_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        camera = camera_of(record)
        msg = _one_line(_message_without_camera(record, camera))
        where = f"[{camera}] " if camera else ""
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, _tb = record.exc_info
            msg += f" ({exc_type.__name__}: {_one_line(str(exc))})"
        if self.journald:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
            line = f"<{prio}>{record.levelname:<7} {where}{msg}"
        else:
            when = _dt.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
            line = f"{when} {record.levelname:<7} {where}{msg}"
        if self.full_tracebacks and record.exc_info and record.exc_info[0] is not None:
            # Developers running with --log-level debug get the traceback; it is the one exception
            # to one-line-per-event, on purpose, because a traceback squeezed onto one line is unreadable.
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, camera, msg, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        camera = camera_of(record)
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "camera": camera,
            "msg": _message_without_camera(record, camera),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        for key in ("event", "frame", "path", "state"):  # structured extras callers may pass
            if hasattr(record, key):
                value = getattr(record, key)
                out[key] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        return json.dumps(out, ensure_ascii=False)


def _not_zwoasi_import_noise(record: logging.LogRecord) -> bool:
    """Drop zwoasi's import-time "ASI SDK library not found" (logged on the root logger).

    zwoasi tries to load the SDK when imported, before driver.sdk hands it the library it found (or
    the simulator); the warning is misleading there, and driver.sdk reports the real outcome itself.
    """
    return not (record.name == "root" and "zwoasi" in record.pathname
                and str(record.msg) == "ASI SDK library not found")


class _Handler(logging.StreamHandler):
    """A stream handler that lifts a progress bar out of the way of each log line."""

    _zwo_alpaca = True  # marks handlers we installed, so `setup` can replace them

    def emit(self, record: logging.LogRecord) -> None:
        line = _status_line if self.stream in (sys.stderr, sys.__stderr__) else None
        if line is not None:
            line.clear()
        super().emit(record)
        if line is not None:
            line.redraw()


class _FileHandler(logging.FileHandler):
    _zwo_alpaca = True


def _under_journald(stream: IO[str]) -> bool:
    """Whether `stream` is connected to systemd's journal ($JOURNAL_STREAM = "dev:inode" of our stderr)."""
    spec = os.environ.get("JOURNAL_STREAM", "")
    if not spec:
        return False
    try:
        dev, ino = (int(x) for x in spec.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def resolve_level(level: str | int | None = None, verbose: bool = False) -> int:
    """The numeric level: explicit `level`, else -v (debug), else $ZWO_ALPACA_LOG_LEVEL, else info."""
    if verbose and level is None:
        return logging.DEBUG
    value = level if level is not None else os.environ.get(ENV_LEVEL, "info")
    if isinstance(value, int):
        return value
    name = str(value).strip().upper()
    if name == "WARN":
        name = "WARNING"
    num = logging.getLevelName(name)
    if not isinstance(num, int):
        raise ValueError(f"unknown log level {value!r}; valid: {', '.join(LEVELS)}")
    return num


def setup(level: str | int | None = None, *, json_lines: bool = False, log_file: str | None = None,
          stream: IO[str] | None = None, verbose: bool = False) -> None:
    """Configure the root logger for a command. Safe to call again: our earlier handlers are replaced.

    `stream` defaults to stderr (stdout is kept for a command's results, e.g. the saved file paths).
    `log_file` adds a second destination in the same format, appended to.
    """
    num = resolve_level(level, verbose)
    reset()
    root = logging.getLogger()
    out = stream or sys.stderr
    if json_lines:
        fmt: logging.Formatter = JsonFormatter()
    else:
        fmt = TextFormatter(journald=_under_journald(out), full_tracebacks=num <= logging.DEBUG)
    handler = _Handler(out)
    handler.setFormatter(fmt)
    handler.addFilter(_not_zwoasi_import_noise)
    root.addHandler(handler)
    if log_file:
        fh = _FileHandler(os.path.expanduser(log_file), encoding="utf-8")
        fh.setFormatter(JsonFormatter() if json_lines else TextFormatter(full_tracebacks=num <= logging.DEBUG))
        fh.addFilter(_not_zwoasi_import_noise)
        root.addHandler(fh)
    root.setLevel(num)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(num, logging.WARNING))
    logging.captureWarnings(True)


def reset() -> None:
    """Remove the handlers `setup` installed (for code that runs a command in-process, like tests)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_zwo_alpaca", False):
            root.removeHandler(h)
            h.close()
    set_status_line(None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --log-level, -v/--verbose, --log-json and --log-file to a (sub)command's parser.

    Defaults are SUPPRESS so that, when the top-level parser defines the same options, a subcommand
    does not overwrite what was given before the subcommand name.
    """
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", choices=LEVELS, type=str.lower, default=argparse.SUPPRESS,
                       help=f"least severe messages to show (default: info, or ${ENV_LEVEL})")
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="same as --log-level debug")
    group.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS,
                       help="write log events as JSON lines (for services and log collectors)")
    group.add_argument("--log-file", metavar="PATH", default=argparse.SUPPRESS,
                       help="also append log lines to this file")


def setup_from_args(args: argparse.Namespace) -> None:
    """`setup()` from the options `add_arguments` defined (absent options take their defaults)."""
    setup(getattr(args, "log_level", None), json_lines=bool(getattr(args, "log_json", False)),
          log_file=getattr(args, "log_file", None), verbose=bool(getattr(args, "verbose", False)))


def camera_logger(camera: str, name: str = "zwo_alpaca") -> logging.LoggerAdapter:
    """A logger whose records carry `camera` as their camera field."""
    return logging.LoggerAdapter(logging.getLogger(name), {"camera": camera})
