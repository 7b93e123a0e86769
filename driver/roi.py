"""The region of interest: from the subframe a client asked for to the one the SDK can read, and back.

ZWO's SDK needs the width a multiple of 8 and the height of 2 (the ASI120 family also wants the
area a multiple of 1024), and colour sensors round odd starts down, which would shift the Bayer
phase. So a slightly larger, aligned region is read and the request is cut out of it: any
subframe inside the binned sensor is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation
from .models import IMAGE_TYPE_CODES, CameraInfo, CameraSettings

BYTES_PER_PIXEL = {"RAW8": 1, "Y8": 1, "RAW16": 2, "RGB24": 3}


@dataclass(frozen=True)
class Roi:
    """A requested subframe (binned pixels) and the aligned SDK region that covers it.

    `crop_x`/`crop_y` locate the request inside the SDK region; `cut_w` x `cut_h` is how much of the
    request is readable at all (the last few columns/rows of an odd-sized binned sensor are not);
    the rest is filled by repeating edge pixels (at most 7 columns and 1 row).
    """

    sdk_x: int
    sdk_y: int
    sdk_w: int
    sdk_h: int
    crop_x: int
    crop_y: int
    width: int
    height: int
    cut_w: int
    cut_h: int
    bin: int
    image_type: str

    @property
    def nbytes(self) -> int:
        """Bytes of one SDK frame of this region."""
        return self.sdk_w * self.sdk_h * BYTES_PER_PIXEL[self.image_type]

    @property
    def sdk_key(self) -> tuple[int, int, int, int, int, int]:
        """What the SDK is told (start, size, bin, image type): equal keys need no new ROI calls."""
        return self.sdk_x, self.sdk_y, self.sdk_w, self.sdk_h, self.bin, IMAGE_TYPE_CODES[self.image_type]

    def cut(self, buf: bytearray | memoryview, flip: int = 0) -> np.ndarray:
        """The requested image out of an SDK frame buffer (a view when no padding is needed).

        With the SDK's `flip` (bit 0 horizontal, bit 1 vertical) the buffer holds the region
        mirrored, so the request sits mirrored in it too, and the unreadable edge is on the other side.
        """
        arr: np.ndarray
        if self.image_type == "RAW16":
            arr = np.frombuffer(buf, dtype=np.uint16, count=self.sdk_w * self.sdk_h).reshape(self.sdk_h, self.sdk_w)
        elif self.image_type == "RGB24":
            arr = np.frombuffer(buf, dtype=np.uint8, count=self.sdk_w * self.sdk_h * 3).reshape(
                self.sdk_h, self.sdk_w, 3)
        else:
            arr = np.frombuffer(buf, dtype=np.uint8, count=self.sdk_w * self.sdk_h).reshape(self.sdk_h, self.sdk_w)
        cx = self.sdk_w - self.crop_x - self.cut_w if flip & 1 else self.crop_x
        cy = self.sdk_h - self.crop_y - self.cut_h if flip & 2 else self.crop_y
        if (cx, cy, self.cut_w, self.cut_h) != (0, 0, self.sdk_w, self.sdk_h):
            arr = arr[cy:cy + self.cut_h, cx:cx + self.cut_w]
        if (self.cut_w, self.cut_h) != (self.width, self.height):
            extra_y, extra_x = self.height - arr.shape[0], self.width - arr.shape[1]
            rows = (extra_y, 0) if flip & 2 else (0, extra_y)
            cols = (extra_x, 0) if flip & 1 else (0, extra_x)
            arr = np.pad(arr, (rows, cols) + ((0, 0),) * (arr.ndim - 2), mode="edge")
        return arr


def _axis(start: int, size: int, readable: int, step: int) -> tuple[int, int, int, int]:
    """One axis: (sdk_start, sdk_size, crop, cut) for a request of `size` at `start`.

    The SDK start is even and the SDK size a multiple of `step`; `cut` is how much is readable.
    """
    first = min(start, readable - 1)
    end = min(start + size, readable)
    sdk_start = first - first % 2
    sdk_size = min(readable, -(-(end - sdk_start) // step) * step)
    if sdk_start + sdk_size > readable:
        sdk_start = readable - sdk_size
    return sdk_start, sdk_size, first - sdk_start, max(1, end - first)


def plan(st: CameraSettings, info: CameraInfo, area_multiple: int = 1) -> Roi:
    """The SDK region for the settings' subframe; InvalidValueError when it leaves the binned sensor."""
    b = st.bin
    max_w, max_h = info.max_width // b, info.max_height // b
    read_w, read_h = max_w - max_w % 8, max_h - max_h % 2
    w = st.width if st.width is not None else max_w
    h = st.height if st.height is not None else max_h
    x, y = st.start_x, st.start_y
    validation.subframe(x, y, w, h, max_w, max_h, b)
    sdk_x, sdk_w, crop_x, cut_w = _axis(x, w, read_w, 8)
    sdk_y, sdk_h, crop_y, cut_h = _axis(y, h, read_h, 2)
    if area_multiple > 1:
        while (sdk_w * sdk_h) % area_multiple and sdk_w < read_w:
            sdk_w += 8
        while (sdk_w * sdk_h) % area_multiple and sdk_h < read_h:
            sdk_h += 2
        shift_x, shift_y = max(0, sdk_x + sdk_w - read_w), max(0, sdk_y + sdk_h - read_h)
        sdk_x, crop_x, sdk_y, crop_y = sdk_x - shift_x, crop_x + shift_x, sdk_y - shift_y, crop_y + shift_y
    return Roi(sdk_x, sdk_y, sdk_w, sdk_h, crop_x, crop_y, w, h, cut_w, cut_h, b, st.image_type)
