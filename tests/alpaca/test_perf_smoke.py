"""Smoke tests of the mechanisms behind the performance figures (issue 6; numbers: docs/performance.md).

They check behaviour, not timings, so they hold on a loaded machine:

* the transposed image is made once per frame and shared (second request: same object, no work);
* ImageBytes payload = ``frame.T`` bytes, banded or not, odd sizes, 8/16-bit, RGB;
* a download streams band by band: band 0 goes out while a later band is still being transposed;
* large writes give the event loop a turn between slices (polls are not stuck behind a download);
* JSON is made by orjson from ndarray slices, in several parts, and never via Python lists;
* an image still being transposed is never recycled as the buffer of the next one;
* the bands of a mono frame go through the compiled kernel, each band's columns exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from alpaca_server import app as app_mod
from alpaca_server import imagecodec
from alpaca_server.camera_api import CameraDevice, ImageSlot

BIG = (2003, 2001)  # rows, cols: > 4 Mpx (banded path), odd both ways, last band partial


def _frame(shape: tuple[int, ...], dtype: Any = np.uint16, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


# ------------------------------------------------------------------------- payload equals frame.T


@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (513, 1025), BIG])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_imagebytes_payload_is_frame_transposed(shape: tuple[int, int], dtype: Any) -> None:
    data = _frame(shape, dtype)
    img = imagecodec.start_prepare(data, 1)
    img.wait(30)
    expected = np.ascontiguousarray(data.T).astype(data.dtype.newbyteorder("<")).tobytes()
    assert bytes(img.payload) == expected
    # What the sender writes, band by band, is the same bytes in the same order.
    assert b"".join(bytes(view) for _, view in img.parts()) == expected
    assert (img.width, img.height) == (shape[1], shape[0])
    if shape == BIG:
        assert len(img.bands) == -(-shape[1] // imagecodec.BAND) > 1


def test_banded_rgb_and_cropped_views() -> None:
    bgr = _frame((2050, 2100, 3), np.uint8)
    img = imagecodec.start_prepare(bgr, 2, bgr=True)
    img.wait(30)
    assert img.bands and img.rank == 3
    np.testing.assert_array_equal(img.array, bgr[:, :, ::-1].swapaxes(0, 1))
    base = _frame((2400, 2300))
    view = base[5:2010, 3:2290]  # non-contiguous, as the core's cropped subframes are
    img = imagecodec.start_prepare(view, 3)
    img.wait(30)
    assert img.bands
    assert bytes(img.payload) == np.ascontiguousarray(view.T).tobytes()


def test_bands_use_the_compiled_kernel_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = pytest.importorskip("alpaca_server._transpose")
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def swap_axes(src: Any, dst: Any, x0: int, x1: int, simd: bool = True) -> None:
        with lock:
            calls.append((x0, x1))
        fast.swap_axes(src, dst, x0, x1, simd=simd)

    monkeypatch.setattr(imagecodec, "_fast", SimpleNamespace(swap_axes=swap_axes, KERNEL=fast.KERNEL))
    for data in (_frame(BIG), _frame(BIG, np.uint8), _frame((2400, 2300))[5:2010, 3:2290]):
        calls.clear()
        img = imagecodec.start_prepare(data, 4, threads=2)
        img.wait(30)
        np.testing.assert_array_equal(img.array, data.T)
        cols = data.shape[1]
        assert sorted(calls) == [(x, min(x + imagecodec.BAND, cols)) for x in range(0, cols, imagecodec.BAND)]


# ------------------------------------------------------------------------- one transpose per frame


class _Cam:
    """Just enough of ZWOCamera for CameraDevice's image cache."""

    info = None

    def add_listener(self, fn: Any) -> None:
        pass


def _device(pool: concurrent.futures.Executor | None) -> CameraDevice:
    return CameraDevice(0, _Cam(), unique_id="u", key="k", driver_info="d", driver_version="0.1",  # type: ignore[arg-type]
                        codec_pool=pool)


def test_prepared_image_is_cached_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = imagecodec.start_prepare

    def counting(*args: Any, **kwargs: Any) -> imagecodec.PreparedImage:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(imagecodec, "start_prepare", counting)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        dev = _device(pool)
        frame: Any = SimpleNamespace(seq=1, data=_frame(BIG), image_type="RAW16")  # stands in for a Frame
        a = dev.acquire(frame)
        b = dev.acquire(frame)  # a second client of the same frame
        first = a.future.result(30)
        assert b is a and b.future.result(30) is first
        first.wait(30)
        assert calls == [1]  # transposed once
        dev.release(a)
        dev.release(b)
        # Nobody downloads frame 1 any more: frame 2 is transposed into its (finished) array, once.
        frame2: Any = SimpleNamespace(seq=2, data=_frame(BIG, seed=4), image_type="RAW16")
        c = dev.acquire(frame2)
        second = c.future.result(30)
        second.wait(30)
        assert calls == [1, 2] and second.array is first.array
        np.testing.assert_array_equal(second.array, frame2.data.T)
        # A download of frame 2 still running when frame 3 arrives keeps its array intact.
        frame3: Any = SimpleNamespace(seq=3, data=_frame(BIG, seed=5), image_type="RAW16")
        d = dev.acquire(frame3)
        third = d.future.result(30)
        third.wait(30)
        assert third.array is not second.array and calls == [1, 2, 3]
        np.testing.assert_array_equal(second.array, frame2.data.T)
        np.testing.assert_array_equal(third.array, frame3.data.T)
        dev.release(c)  # frame 2's download ends: its array becomes the spare for frame 4
        dev.release(d)
        frame4: Any = SimpleNamespace(seq=4, data=_frame(BIG, seed=6), image_type="RAW16")
        e = dev.acquire(frame4)
        fourth = e.future.result(30)
        fourth.wait(30)
        assert fourth.array is third.array or fourth.array is second.array
        np.testing.assert_array_equal(fourth.array, frame4.data.T)
        dev.release(e)


def test_only_this_devices_exposures_are_prepared_when_read_out() -> None:
    """The core's ExposureEnded of an exposure this device started (owner = the device) starts the
    transpose at once; other frames (another front end's exposure, continuous capture, a failed
    exposure) are left until someone downloads them."""
    from driver.events import Exposure, ExposureEnded, ExposureOutcome, FrameCaptured

    listeners: list[Any] = []
    cam = SimpleNamespace(info=None, add_listener=listeners.append)
    dev = CameraDevice(0, cam, unique_id="u", key="k", driver_info="d", driver_version="0.1")  # type: ignore[arg-type]
    (listener,) = listeners

    def frame(seq: int) -> Any:
        return SimpleNamespace(seq=seq, data=_frame((8, 16)), image_type="RAW16")

    def ended(seq: int, owner: object, outcome: ExposureOutcome = ExposureOutcome.COMPLETED) -> ExposureEnded:
        exp = Exposure(seq, 1.0, 1.0, True, "light", owner)
        return ExposureEnded(exp, outcome, None, frame(seq) if outcome != ExposureOutcome.FAILED else None)

    for event in (ended(1, object()), ended(2, dev, ExposureOutcome.FAILED), FrameCaptured(frame(3), None)):
        listener(event)
        assert dev._prep is None, event
    listener(ended(4, dev, ExposureOutcome.STOPPED))
    assert dev._prep is not None and dev._prep.seq == 4
    assert dev._prep.future.result(5).seq == 4


def test_tolist_detector_works() -> None:
    """The profiler hook used below does see ndarray.tolist (so its silence means something)."""
    called = []
    sys.setprofile(lambda f, e, a: called.append(e) if e == "c_call" and getattr(a, "__name__", "") == "tolist"
                   else None)
    try:
        np.zeros(3).tolist()
    finally:
        sys.setprofile(None)
    assert called


def test_image_still_being_transposed_is_not_recycled() -> None:
    dev = _device(None)
    pending: concurrent.futures.Future = concurrent.futures.Future()
    busy = imagecodec.PreparedImage(seq=1, array=np.zeros((4, 4), np.uint16), rank=2, width=4, height=4, planes=0,
                                    transmission_type=imagecodec.ELEMENT_UINT16, bands=(pending,), band_rows=4)
    done: concurrent.futures.Future = concurrent.futures.Future()
    done.set_result(busy)
    dev._recycle(ImageSlot(1, done))
    assert dev._spare is None  # transpose threads may still write into it
    pending.set_result(None)
    done2: concurrent.futures.Future = concurrent.futures.Future()
    done2.set_result(busy)
    dev._recycle(ImageSlot(1, done2))
    assert dev._spare is busy.array


# ------------------------------------------------------------------------- JSON


def test_json_parts_are_orjson_on_ndarray_slices_without_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _frame((300, 2000))  # 600 k values: several parts
    img = imagecodec.prepare_image(data, 5)
    seen: list[Any] = []
    real = orjson.dumps

    def spy(obj: Any, option: Any = None) -> bytes:
        seen.append((type(obj), option))
        return real(obj, option=option)

    monkeypatch.setattr(imagecodec.orjson, "dumps", spy)
    called: list[str] = []

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "tolist":
            called.append("tolist")

    sys.setprofile(profiler)
    try:
        parts = imagecodec.json_value_parts(img)
    finally:
        sys.setprofile(None)
    assert not called, "ndarray.tolist() was called: the JSON path built Python lists"
    assert len(seen) > 1 and all(s == (np.ndarray, orjson.OPT_SERIALIZE_NUMPY) for s in seen)
    text = b"".join(bytes(p) for p in parts)
    assert text == real(np.ascontiguousarray(data.T), option=orjson.OPT_SERIALIZE_NUMPY)
    assert json.loads(text) == data.T.tolist()  # the reference, built here only


# ------------------------------------------------------------------------- the event loop


def test_large_writes_yield_to_the_loop_between_slices() -> None:
    """aiohttp's drain does not suspend when the socket keeps up; _write_chunks must yield anyway."""
    order: list[str] = []

    class Resp:
        async def write(self, data: Any) -> None:  # never suspends, like aiohttp with a fast reader
            order.append("w")

    async def main() -> None:
        stop = False

        async def other() -> None:
            while not stop:
                order.append("o")
                await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(other())
        await asyncio.sleep(0)
        await app_mod._write_chunks(Resp(), SimpleNamespace(transport=None),  # type: ignore[arg-type]
                                    memoryview(bytearray(4 * app_mod.WRITE_CHUNK)), 60.0)
        stop = True
        await task

    asyncio.run(main())
    writes = [i for i, x in enumerate(order) if x == "w"]
    assert len(writes) == 4
    assert all(order[i + 1] == "o" for i in writes[:-1]), order  # someone else ran after every slice


class _StreamDevice:
    """A device whose prepared image has band 0 final and band 1 pending until the test says so."""

    number = 0

    def __init__(self, image: imagecodec.PreparedImage) -> None:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(image)
        self.slot = ImageSlot(1, fut)

    def require_connected(self, member: str) -> None:
        pass

    def image_frame(self) -> Any:
        return SimpleNamespace(seq=1)

    def acquire(self, frame: Any) -> ImageSlot:
        return self.slot

    def release(self, slot: ImageSlot) -> None:
        pass


def test_imagebytes_streams_bands_before_the_transpose_ends() -> None:
    width, height = 8, 1000
    arr = np.arange(width * height, dtype=np.uint16).reshape(width, height)
    band0: concurrent.futures.Future = concurrent.futures.Future()
    band1: concurrent.futures.Future = concurrent.futures.Future()
    band0.set_result(None)
    image = imagecodec.PreparedImage(seq=1, array=arr, rank=2, width=width, height=height, planes=0,
                                     transmission_type=imagecodec.ELEMENT_UINT16, bands=(band0, band1), band_rows=4)
    pools = [concurrent.futures.ThreadPoolExecutor(2) for _ in range(2)]
    ctx = app_mod.ServerContext(devices={0: _StreamDevice(image)}, sdk_pool=pools[0], codec_pool=pools[1])  # type: ignore[dict-item]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(app_mod.build_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state["runner"] = runner
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    assert ready.wait(10)
    try:
        with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as s:
            s.sendall(b"GET /api/v1/camera/0/imagearray?ClientTransactionID=7 HTTP/1.1\r\nHost: x\r\n"
                      b"Accept: application/imagebytes\r\n\r\n")
            half = 4 * height * 2
            got = b""
            deadline = time.monotonic() + 10
            while (b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 44 + half) \
                    and time.monotonic() < deadline:
                got += s.recv(65536)
            head, _, body = got.partition(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0]
            assert len(body) == 44 + half  # band 0 arrived; band 1 is not transposed yet
            assert body[44:] == arr[:4].tobytes()
            band1.set_result(None)
            while len(body) < 44 + arr.nbytes and time.monotonic() < deadline:
                body += s.recv(65536)
            assert body[44:] == arr.tobytes()
            meta, decoded = imagecodec.decode_imagebytes(body)
            assert meta["ClientTransactionID"] == 7
            np.testing.assert_array_equal(decoded, arr)
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        for p in pools:
            p.shutdown(wait=False)
