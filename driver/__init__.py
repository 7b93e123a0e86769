"""The zwo-alpaca device core: ZWO ASI cameras through zwoasi, over the real SDK or a simulated one.

Knows nothing of HTTP, INDI or XML; front ends use `ZWOCamera` and the value types below.
"""

from .camera import ZWOCamera
from .errors import (
    CameraError,
    CameraGoneError,
    InvalidOperationError,
    InvalidValueError,
    NotConnectedError,
    NotSupportedError,
    SdkError,
    SdkNotFoundError,
)
from .events import (
    Connected,
    ConnectionLost,
    CoreEvent,
    Disconnected,
    ErrorReported,
    Exposure,
    ExposureEnded,
    ExposureOutcome,
    ExposureStarted,
    FrameCaptured,
    ReconnectFailed,
    SettingsChanged,
    StateChanged,
)
from .models import (
    CameraInfo,
    CameraSettings,
    CameraStatus,
    CaptureWindow,
    ControlInfo,
    Frame,
    ReconnectPolicy,
)
from .state import CameraState

__all__ = [
    "Connected", "ConnectionLost", "CoreEvent", "Disconnected", "ErrorReported", "Exposure", "ExposureEnded",
    "ExposureOutcome", "ExposureStarted", "FrameCaptured", "ReconnectFailed", "SettingsChanged", "StateChanged",
    "CameraError", "CameraGoneError", "CameraInfo", "CameraSettings", "CameraState",
    "CameraStatus", "CaptureWindow", "ControlInfo", "Frame", "InvalidOperationError", "InvalidValueError",
    "NotConnectedError", "NotSupportedError", "ReconnectPolicy", "SdkError", "SdkNotFoundError", "ZWOCamera",
]
