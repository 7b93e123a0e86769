"""Numeric constants of the ZWO ASI SDK (ASICamera2.h), written out here so the simulator needs no binding.

The values are the SDK's ABI: they must match what zwoasi and the C header use.
"""

from __future__ import annotations

from enum import IntEnum


class AsiError(IntEnum):
    """ASI_ERROR_CODE: what every camera function returns (0 is success)."""

    SUCCESS = 0
    INVALID_INDEX = 1
    INVALID_ID = 2
    INVALID_CONTROL_TYPE = 3
    CAMERA_CLOSED = 4
    CAMERA_REMOVED = 5
    INVALID_PATH = 6
    INVALID_FILEFORMAT = 7
    INVALID_SIZE = 8
    INVALID_IMGTYPE = 9
    OUTOF_BOUNDARY = 10
    TIMEOUT = 11
    INVALID_SEQUENCE = 12
    BUFFER_TOO_SMALL = 13
    VIDEO_MODE_ACTIVE = 14
    EXPOSURE_IN_PROGRESS = 15
    GENERAL_ERROR = 16
    INVALID_MODE = 17


class ExpStatus(IntEnum):
    """ASI_EXPOSURE_STATUS."""

    IDLE = 0
    WORKING = 1
    SUCCESS = 2
    FAILED = 3


class ImgType(IntEnum):
    """ASI_IMG_TYPE; END terminates ASI_CAMERA_INFO.SupportedVideoFormat."""

    RAW8 = 0
    RGB24 = 1
    RAW16 = 2
    Y8 = 3
    END = -1


class BayerPattern(IntEnum):
    """ASI_BAYER_PATTERN."""

    RG = 0
    BG = 1
    GR = 2
    GB = 3


class GuideDirection(IntEnum):
    """ASI_GUIDE_DIRECTION."""

    NORTH = 0
    SOUTH = 1
    EAST = 2
    WEST = 3


class CameraMode(IntEnum):
    """ASI_CAMERA_MODE; END terminates ASI_SUPPORTED_MODE.SupportedCameraMode."""

    NORMAL = 0
    TRIG_SOFT_EDGE = 1
    TRIG_RISE_EDGE = 2
    TRIG_FALL_EDGE = 3
    TRIG_SOFT_LEVEL = 4
    TRIG_HIGH_LEVEL = 5
    TRIG_LOW_LEVEL = 6
    END = -1


class ControlType(IntEnum):
    """ASI_CONTROL_TYPE."""

    GAIN = 0
    EXPOSURE = 1
    GAMMA = 2
    WB_R = 3
    WB_B = 4
    OFFSET = 5
    BANDWIDTHOVERLOAD = 6
    OVERCLOCK = 7
    TEMPERATURE = 8
    FLIP = 9
    AUTO_MAX_GAIN = 10
    AUTO_MAX_EXP = 11
    AUTO_TARGET_BRIGHTNESS = 12
    HARDWARE_BIN = 13
    HIGH_SPEED_MODE = 14
    COOLER_POWER_PERC = 15
    TARGET_TEMP = 16
    COOLER_ON = 17
    MONO_BIN = 18
    FAN_ON = 19
    PATTERN_ADJUST = 20
    ANTI_DEW_HEATER = 21


#: Bytes per output pixel of each image type as delivered to the caller's buffer.
BYTES_PER_PIXEL = {ImgType.RAW8: 1, ImgType.Y8: 1, ImgType.RAW16: 2, ImgType.RGB24: 3}

#: What ASIGetSDKVersion reports: the release the simulator was last checked against with no camera
#: attached (pyzwoasi's libASICamera2.so.1.41 answers "1, 41, 0, 0"; tests/driver/test_sdk_differential.py).
SDK_VERSION = "1, 41, 0, 0"
