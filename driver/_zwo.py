"""Quiet access to the `zwoasi` binding and the SDK-level helpers it lacks.

zwoasi tries to load libASICamera2 when imported and reports failure through `logging.warning` on
the root logger, which would configure logging for the whole process as a side effect. We import it
with a temporary handler so the caller's logging set-up is left alone.
"""

from __future__ import annotations

import ctypes
import logging
from types import ModuleType

_module: ModuleType | None = None


def zwoasi() -> ModuleType:
    """The imported `zwoasi` module (imported once, without side effects on logging)."""
    global _module
    if _module is None:
        root = logging.getLogger()
        guard = logging.NullHandler()
        added = not root.handlers
        if added:
            root.addHandler(guard)
        try:
            import zwoasi as mod  # noqa: PLC0415 - deliberate lazy import, see module docstring
        finally:
            if added:
                root.removeHandler(guard)
        _module = mod
    return _module


def library() -> object | None:
    """The library object zwoasi calls into (the real SDK's CDLL, or the simulator), or None."""
    lib: object | None = zwoasi().zwolib
    return lib


def read_serial(camera_id: int) -> str | None:
    """ASIGetSerialNumber for an open camera, as 16 hex digits; None when the SDK lacks it or fails.

    zwoasi does not wrap this call. The pointee type is taken from the function's declared argtypes
    when it has them (the simulator declares its own 8-byte struct), else an 8-byte buffer is passed.
    """
    lib = library()
    fn = getattr(lib, "ASIGetSerialNumber", None) if lib is not None else None
    if fn is None:
        return None
    argtypes = getattr(fn, "argtypes", None)
    pointee = None
    if argtypes and len(argtypes) == 2 and hasattr(argtypes[1], "_type_"):
        pointee = argtypes[1]._type_
    buf = pointee() if pointee is not None and not isinstance(pointee, str) else (ctypes.c_ubyte * 8)()
    try:
        rc = fn(camera_id, ctypes.byref(buf) if pointee is None else buf)
    except (ctypes.ArgumentError, TypeError):
        return None
    if rc:
        return None
    raw = ctypes.string_at(ctypes.addressof(buf), 8)
    if not any(raw):
        return None
    return raw.hex().upper()
