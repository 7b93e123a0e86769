"""Errors raised by the device core.

Each class corresponds to one kind of failure a client can act on; the protocol front ends map
them to ASCOM error numbers and INDI alerts without inspecting message text.
"""

from __future__ import annotations


class CameraError(Exception):
    """Base class of every error the device core raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotConnectedError(CameraError):
    """The operation needs a connected camera and there is none (ASCOM 0x407)."""


class InvalidValueError(CameraError):
    """A parameter is out of range or malformed; the message states the valid range (ASCOM 0x401)."""


class InvalidOperationError(CameraError):
    """The operation is not valid in the camera's current state (ASCOM 0x40B)."""


class NotSupportedError(CameraError):
    """This camera model cannot do that, e.g. pulse guiding without an ST4 port (ASCOM 0x400)."""


class CameraGoneError(CameraError):
    """The camera was removed or stopped answering; the core is reconnecting (ASCOM driver error 0x500+)."""


class SdkError(CameraError):
    """The SDK reported a failure other than removal (ASCOM driver error 0x500+)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SdkNotFoundError(CameraError):
    """libASICamera2 (or its dependency libusb-1.0) could not be found or loaded."""
