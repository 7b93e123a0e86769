"""The Alpaca wire rules: request parameters, transaction ids, the response envelope and error numbers.

Everything here is independent of cameras and of aiohttp's request object, so it can be unit-tested
with plain dicts. The rules (from the Alpaca API reference and ConformU's protocol checks):

* GET parameters come from the query string and their *names* are case-insensitive.
* PUT parameters come from the form body. ``ClientID``/``ClientTransactionID`` with any other casing
  are ignored (treated as absent); an operational parameter with the wrong casing is HTTP 400.
* ``ClientTransactionID`` is echoed (0 when absent); ``ServerTransactionID`` counts up from 1.
* Values are parsed strictly: booleans ``true``/``false`` in any case, numbers with ``.`` decimals,
  ids as uint32. A value that cannot be parsed is HTTP 400 with a plain-text reason.
* ASCOM errors are HTTP 200 with ``ErrorNumber``/``ErrorMessage``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from driver.errors import (
    CameraError,
    CameraGoneError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotSupportedError,
    SdkNotFoundError,
)

# ASCOM reserved error numbers (Alpaca API reference, "ASCOM Error Numbers").
NOT_IMPLEMENTED = 0x400
INVALID_VALUE = 0x401
VALUE_NOT_SET = 0x402
NOT_CONNECTED = 0x407
INVALID_OPERATION = 0x40B
ACTION_NOT_IMPLEMENTED = 0x40C
# Driver-specific numbers live in 0x500..0xFFF; these are this server's.
DRIVER_ERROR = 0x500  # the SDK or the device core reported a failure
CAMERA_GONE = 0x501  # the camera was removed / stopped answering; the core is reconnecting
SDK_NOT_FOUND = 0x502  # libASICamera2 could not be loaded
TIMEOUT = 0x503  # a device-core call did not return in time
INTERNAL_ERROR = 0x5FF  # a defect in this server; the traceback is in the server log

UINT32_MAX = 0xFFFFFFFF
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

CLIENT_ID = "ClientID"
CLIENT_TRANSACTION_ID = "ClientTransactionID"

_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_UINT_RE = re.compile(r"^[0-9]+$")
# Invariant-culture decimal: "." separator, optional exponent. No thousands separators, no "1,5",
# no NaN/Infinity (those are not values any ASCOM property accepts).
_FLOAT_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


class BadRequest(Exception):
    """The request cannot be understood: answered with HTTP 400 and ``reason`` as plain text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AlpacaError(Exception):
    """An ASCOM error: answered with HTTP 200 and ``ErrorNumber``/``ErrorMessage`` in the envelope."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number = number
        self.message = message


def not_implemented(what: str) -> AlpacaError:
    """NotImplemented (0x400) for a member this camera cannot support."""
    return AlpacaError(NOT_IMPLEMENTED, f"{what} is not implemented by this camera")


# Core failure class -> ASCOM error number, checked in order (SdkError and anything else: DRIVER_ERROR).
_ERROR_NUMBERS: tuple[tuple[type[CameraError], int], ...] = (
    (NotConnectedError, NOT_CONNECTED),
    (InvalidValueError, INVALID_VALUE),
    (InvalidOperationError, INVALID_OPERATION),
    (NotSupportedError, NOT_IMPLEMENTED),
    (CameraGoneError, CAMERA_GONE),
    (SdkNotFoundError, SDK_NOT_FOUND),
)


def error_from_exception(exc: BaseException, member: str | None = None) -> AlpacaError | None:
    """Map a device-core error to its ASCOM error; None for anything that is not a core error.

    The mapping is by class only (never by message text), so the core decides the kind of failure.
    The core is the only validator: its InvalidValue message (what was wrong, then "valid ...") is
    passed on unchanged, prefixed with ``member``, the ASCOM member whose value it refused.
    """
    if isinstance(exc, AlpacaError):
        return exc
    if not isinstance(exc, CameraError):
        return None
    message = exc.message or exc.__class__.__name__
    if member and isinstance(exc, InvalidValueError):
        message = f"{member}: {message}"
    for kind, number in _ERROR_NUMBERS:
        if isinstance(exc, kind):
            return AlpacaError(number, message)
    return AlpacaError(DRIVER_ERROR, message)  # SdkError and any other core failure


class TransactionCounter:
    """ServerTransactionID source: 1, 2, 3 ... wrapping back to 1 after 2**32-1; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        """The next id (never 0)."""
        with self._lock:
            self._last = 1 if self._last >= UINT32_MAX else self._last + 1
            return self._last

    @property
    def last(self) -> int:
        """The most recently issued id (0 before the first)."""
        return self._last


def parse_uint32(name: str, text: str) -> int:
    """Parse an id-like unsigned 32-bit value; BadRequest names the parameter and the valid range."""
    if not _UINT_RE.match(text):
        raise BadRequest(f"{name}={text!r} is not an unsigned integer (0 to {UINT32_MAX})")
    value = int(text)
    if value > UINT32_MAX:
        raise BadRequest(f"{name}={text!r} is out of range (0 to {UINT32_MAX})")
    return value


def parse_bool(name: str, text: str) -> bool:
    """Parse ``true``/``false`` in any letter case; anything else is a BadRequest."""
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise BadRequest(f"{name}={text!r} is not a boolean: use True or False")


def parse_int32(name: str, text: str) -> int:
    """Parse a signed 32-bit integer (ASCOM Int16/Int32 parameters)."""
    if not _INT_RE.match(text):
        raise BadRequest(f"{name}={text!r} is not an integer")
    value = int(text)
    if not INT32_MIN <= value <= INT32_MAX:
        raise BadRequest(f"{name}={text!r} is out of the 32-bit integer range")
    return value


def parse_double(name: str, text: str) -> float:
    """Parse a finite number with ``.`` as the decimal separator (e.g. 1.5, -0.25, 2e-3)."""
    if not _FLOAT_RE.match(text):
        raise BadRequest(f"{name}={text!r} is not a number (use '.' as the decimal separator)")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"{name}={text!r} is out of range")
    return value


def _first_by_exact(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in items:
        out.setdefault(key, value)
    return out


def _first_by_lower(items: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for key, value in items:
        out.setdefault(key.lower(), (key, value))
    return out


@dataclass
class AlpacaRequest:
    """One parsed Alpaca request: the client's ids plus typed access to its operational parameters.

    Build it with :meth:`from_get` or :meth:`from_put`; the ``get_*`` methods raise :class:`BadRequest`
    for a missing, mis-cased (PUT) or unparsable parameter.
    """

    method: str
    client_id: int
    client_transaction_id: int
    _exact: dict[str, str]
    _lower: dict[str, tuple[str, str]]
    case_sensitive: bool

    @classmethod
    def from_get(cls, query: Iterable[tuple[str, str]]) -> AlpacaRequest:
        """Parse a GET: every parameter name is matched case-insensitively."""
        items = list(query)
        lower = _first_by_lower(items)
        cid = _id_value(lower, CLIENT_ID)
        ctid = _id_value(lower, CLIENT_TRANSACTION_ID)
        return cls("GET", cid, ctid, _first_by_exact(items), lower, case_sensitive=False)

    @classmethod
    def from_put(cls, form: Iterable[tuple[str, str]]) -> AlpacaRequest:
        """Parse a PUT: ids only count when exactly cased; other names must be exactly cased too."""
        items = list(form)
        exact = _first_by_exact(items)
        cid = parse_uint32(CLIENT_ID, exact[CLIENT_ID]) if CLIENT_ID in exact else 0
        ctid = (
            parse_uint32(CLIENT_TRANSACTION_ID, exact[CLIENT_TRANSACTION_ID])
            if CLIENT_TRANSACTION_ID in exact
            else 0
        )
        return cls("PUT", cid, ctid, exact, _first_by_lower(items), case_sensitive=True)

    def raw(self, name: str) -> str:
        """The text of parameter ``name``; BadRequest when it is missing (or mis-cased on a PUT)."""
        if self.case_sensitive:
            if name in self._exact:
                return self._exact[name]
            found = self._lower.get(name.lower())
            if found is not None:
                raise BadRequest(
                    f"parameter name {found[0]!r} is mis-cased: PUT parameter names must be {name!r} exactly"
                )
            raise BadRequest(f"missing parameter {name!r}")
        found = self._lower.get(name.lower())
        if found is None:
            raise BadRequest(f"missing parameter {name!r}")
        return found[1]

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent (exact case on PUT, any case on GET)."""
        if self.case_sensitive:
            return name in self._exact
        return name.lower() in self._lower

    def get_str(self, name: str, default: str | None = None) -> str:
        """A string parameter; ``default`` (when given) stands in for a missing one."""
        if default is not None and not self.has(name):
            if self.case_sensitive and name.lower() in self._lower:
                return self.raw(name)  # raises the mis-cased error
            return default
        return self.raw(name)

    def get_bool(self, name: str) -> bool:
        """A boolean parameter (``true``/``false``, any case)."""
        return parse_bool(name, self.raw(name))

    def get_int(self, name: str) -> int:
        """A 32-bit integer parameter."""
        return parse_int32(name, self.raw(name))

    def get_float(self, name: str) -> float:
        """A finite double parameter."""
        return parse_double(name, self.raw(name))


def _id_value(lower: Mapping[str, tuple[str, str]], name: str) -> int:
    found = lower.get(name.lower())
    if found is None:
        return 0
    return parse_uint32(name, found[1])


def envelope(
    client_transaction_id: int,
    server_transaction_id: int,
    value: Any = None,
    *,
    has_value: bool = True,
    error: AlpacaError | None = None,
) -> bytes:
    """The JSON response body. ``Value`` is left out for methods and for errors."""
    body: dict[str, Any] = {}
    if error is None and has_value:
        body["Value"] = value
    body["ClientTransactionID"] = client_transaction_id
    body["ServerTransactionID"] = server_transaction_id
    body["ErrorNumber"] = error.number if error is not None else 0
    body["ErrorMessage"] = error.message if error is not None else ""
    return orjson.dumps(body)


def envelope_suffix(client_transaction_id: int, server_transaction_id: int) -> bytes:
    """The tail of a successful envelope, for responses whose ``Value`` is streamed before it."""
    return (
        b',"ClientTransactionID":%d,"ServerTransactionID":%d,"ErrorNumber":0,"ErrorMessage":""}'
        % (client_transaction_id, server_transaction_id)
    )
