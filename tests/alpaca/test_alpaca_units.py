"""Unit tests of the Alpaca server's pure parts: parameter parsing, transaction ids, the image
encoders, the config file, error mapping, and the member table against the spec file."""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
import yaml

from alpaca_server import imagecodec, protocol
from alpaca_server.camera_api import CameraDevice, format_fits_time, format_iso_utc
from alpaca_server.protocol import AlpacaRequest, BadRequest
from driver import errors
from support.servers import REPO
from zwo_common.config import Config, unique_id_for

SPEC_DIR = Path(os.environ.get("ALPACA_SPEC_DIR", REPO.parent / "shared" / "spec"))


# ------------------------------------------------------------------------------ protocol


def test_get_names_case_insensitive_and_first_wins() -> None:
    req = AlpacaRequest.from_get([("clienttransactionid", "7"), ("CLIENTID", "3"), ("binx", "2"), ("BinX", "9")])
    assert (req.client_id, req.client_transaction_id) == (3, 7)
    assert req.get_int("BinX") == 2


def test_put_exact_names() -> None:
    req = AlpacaRequest.from_put([("clienttransactionid", "7"), ("ClientID", "3"), ("duration", "1")])
    assert (req.client_id, req.client_transaction_id) == (3, 0)  # mis-cased id ignored
    with pytest.raises(BadRequest, match="mis-cased"):
        req.get_float("Duration")
    with pytest.raises(BadRequest, match="missing"):
        req.get_bool("Light")
    assert req.get_str("Parameters", "") == ""
    with pytest.raises(BadRequest, match="mis-cased"):
        AlpacaRequest.from_put([("parameters", "x")]).get_str("Parameters", "")


@pytest.mark.parametrize("text,value", [("true", True), ("FALSE", False), ("True", True), ("fAlSe", False)])
def test_parse_bool(text: str, value: bool) -> None:
    assert protocol.parse_bool("X", text) is value


@pytest.mark.parametrize("text", ["", "1", "0", "yes", " true", "true\n", "t"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        protocol.parse_bool("X", text)


@pytest.mark.parametrize("text,value",
                         [("1", 1.0), ("-0.5", -0.5), (".25", 0.25), ("1.", 1.0), ("1e-3", 0.001), ("+2", 2.0)])
def test_parse_double(text: str, value: float) -> None:
    assert protocol.parse_double("X", text) == value


@pytest.mark.parametrize("text", ["1,5", "", "nan", "NaN", "inf", "Infinity", "1e400", "0x10", "1_000", " 1", "١"])
def test_parse_double_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        protocol.parse_double("X", text)


@pytest.mark.parametrize("text", ["4294967296", "-1", "", " ", "1.0", "abc", "٣"])
def test_parse_uint32_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        protocol.parse_uint32("ClientID", text)


def test_parse_int32_bounds() -> None:
    assert protocol.parse_int32("X", "2147483647") == 2**31 - 1
    assert protocol.parse_int32("X", "-2147483648") == -(2**31)
    for text in ("2147483648", "-2147483649", "1.5", "1e3"):
        with pytest.raises(BadRequest):
            protocol.parse_int32("X", text)


def test_transaction_counter_is_thread_safe_and_wraps() -> None:
    counter = protocol.TransactionCounter()
    got: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [counter.next() for _ in range(2000)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 16001))
    counter._last = protocol.UINT32_MAX - 1
    assert counter.next() == protocol.UINT32_MAX
    assert counter.next() == 1  # never 0


def test_envelope() -> None:
    body = json.loads(protocol.envelope(5, 6, [1, 2]))
    assert body == {"Value": [1, 2], "ClientTransactionID": 5, "ServerTransactionID": 6, "ErrorNumber": 0,
                    "ErrorMessage": ""}
    body = json.loads(protocol.envelope(5, 6, has_value=False))
    assert "Value" not in body
    body = json.loads(protocol.envelope(1, 2, error=protocol.AlpacaError(0x401, "bad")))
    assert (body["ErrorNumber"], body["ErrorMessage"]) == (0x401, "bad") and "Value" not in body
    assert json.loads(b'{"Value":1' + protocol.envelope_suffix(3, 4)) == {
        "Value": 1, "ClientTransactionID": 3, "ServerTransactionID": 4, "ErrorNumber": 0, "ErrorMessage": ""}


@pytest.mark.parametrize(
    "exc,number",
    [
        (errors.NotConnectedError("x"), 0x407),
        (errors.InvalidValueError("x"), 0x401),
        (errors.InvalidOperationError("x"), 0x40B),
        (errors.NotSupportedError("x"), 0x400),
        (errors.CameraGoneError("x"), 0x501),
        (errors.SdkError("x", 3), 0x500),
        (errors.SdkNotFoundError("x"), 0x502),
        (errors.CameraError("x"), 0x500),
    ],
)
def test_error_mapping(exc: Exception, number: int) -> None:
    mapped = protocol.error_from_exception(exc)
    assert mapped is not None and mapped.number == number and mapped.message == "x"
    assert protocol.error_from_exception(ValueError("boom")) is None
    # With the member the core checked, a refused value names it; other kinds of error do not.
    named = protocol.error_from_exception(exc, "Gain")
    assert named is not None and named.number == number
    assert named.message == ("Gain: x" if isinstance(exc, errors.InvalidValueError) else "x")


def test_time_formats() -> None:
    import datetime as dt

    when = dt.datetime(2024, 5, 1, 21, 3, 7, 123456, tzinfo=dt.UTC)
    assert format_fits_time(when) == "2024-05-01T21:03:07.123"
    assert format_fits_time(when.astimezone(dt.timezone(dt.timedelta(hours=2)))) == "2024-05-01T21:03:07.123"
    assert format_iso_utc(when) == "2024-05-01T21:03:07.123456Z"


# ------------------------------------------------------------------------------ image encoders


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (2822, 4144), (513, 1025), (6, 5)])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_transpose_matches_numpy(shape: tuple[int, int], dtype: type, compiled: bool,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if not compiled:
        monkeypatch.setattr(imagecodec, "_fast", None)  # numpy's tiled fallback
    rng = np.random.default_rng(1)
    data = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    out = imagecodec.transpose_to_width_major(data)
    assert out.flags.c_contiguous and out.shape == (shape[1], shape[0])
    np.testing.assert_array_equal(out, data.T)


def test_transpose_of_a_cropped_view() -> None:
    base = np.arange(2000 * 1500, dtype=np.uint16).reshape(1500, 2000)
    view = base[3:1203, 5:1905]  # non-contiguous, as the core's cropped subframes are
    np.testing.assert_array_equal(imagecodec.transpose_to_width_major(view), view.T)


def test_compiled_transpose_is_built() -> None:
    # The install (scripts/bootstrap, setup.py) compiles it; without it the first download of each
    # frame is measurably slower (docs/performance.md), so a build that silently fell back is a defect.
    assert imagecodec.compiled_kernel() in {"sse2", "neon", "scalar"}


@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize("shape", [(1, 1), (1, 19), (19, 1), (8, 8), (9, 17), (1031, 45), (2051, 70)])
def test_compiled_transpose_matches_numpy(shape: tuple[int, int], dtype: type, simd: bool) -> None:
    fast = pytest.importorskip("alpaca_server._transpose")
    rng = np.random.default_rng(sum(shape))
    data = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    out = np.zeros(shape[::-1], dtype=dtype)
    fast.swap_axes(data, out, 0, shape[1], simd=simd)
    np.testing.assert_array_equal(out, data.T)
    # A band of columns only touches its own rows of the output.
    out[:] = 0
    x0, x1 = shape[1] // 3, shape[1] - shape[1] // 4
    fast.swap_axes(data, out, x0, x1, simd=simd)
    np.testing.assert_array_equal(out[x0:x1], data[:, x0:x1].T)
    assert not out[:x0].any() and not out[x1:].any()


@pytest.mark.parametrize("simd", [True, False])
def test_compiled_transpose_of_a_cropped_view(simd: bool) -> None:
    fast = pytest.importorskip("alpaca_server._transpose")
    base = np.arange(1500 * 2000, dtype=np.uint16).reshape(1500, 2000)
    view = base[3:1203, 5:1906]  # rows of 2000 items, 1901 of them used, odd start
    out = np.empty(view.shape[::-1], dtype=np.uint16)
    fast.swap_axes(view, out, 0, view.shape[1], simd=simd)
    np.testing.assert_array_equal(out, view.T)


def test_compiled_transpose_rejects_what_it_cannot_do() -> None:
    fast = pytest.importorskip("alpaca_server._transpose")
    data = np.zeros((4, 6), dtype=np.uint16)
    cases = [
        (data, np.zeros((4, 6), np.uint16), 0, 6, "shape"),
        (data, np.zeros((6, 4), np.uint8), 0, 6, "item size"),
        (data.astype(np.uint32), np.zeros((6, 4), np.uint32), 0, 6, "1 or 2 bytes"),
        (data[:, ::2], np.zeros((3, 4), np.uint16), 0, 3, "contiguous"),
        (data, np.zeros((6, 4), np.uint16), 2, 7, "x0"),
        (data, np.zeros((6, 4), np.uint16).T.copy().T, 0, 6, "C-contiguous"),
        (data, np.zeros((2, 6, 4), np.uint16), 0, 6, "2-D"),
    ]
    for src, dst, x0, x1, words in cases:
        with pytest.raises(ValueError, match=words):
            fast.swap_axes(src, dst, x0, x1)
    with pytest.raises((TypeError, BufferError, ValueError)):
        fast.swap_axes(data, np.zeros((6, 4), np.uint16).tobytes(), 0, 6)  # read-only destination


def test_numpy_fallback_gives_the_same_image(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65535, (2100, 2300), dtype=np.uint16)  # above the banded-threads size
    fast = imagecodec.prepare_image(data, seq=1).array.copy()
    monkeypatch.setattr(imagecodec, "_fast", None)
    slow = imagecodec.prepare_image(data, seq=2).array
    np.testing.assert_array_equal(fast, data.T)
    np.testing.assert_array_equal(slow, data.T)


def test_imagebytes_layout_16bit() -> None:
    data = np.arange(7 * 13, dtype=np.uint16).reshape(7, 13) * 16  # rows=7 (height), cols=13 (width)
    img = imagecodec.prepare_image(data, seq=1)
    header = imagecodec.imagebytes_header(img, 4000000000, 12)
    assert len(header) == 44
    fields = struct.unpack("<iiIIiiiiiii", header)
    assert fields == (1, 0, 4000000000, 12, 44, 2, 8, 2, 13, 7, 0)
    body = header + bytes(img.payload)
    assert len(body) == 44 + 13 * 7 * 2
    # Element order: x outermost; pixel (x, y) is data[y, x].
    flat = np.frombuffer(body, dtype="<u2", offset=44)
    assert flat[0] == data[0, 0] and flat[1] == data[1, 0] and flat[7] == data[0, 1]
    meta, arr = imagecodec.decode_imagebytes(body)
    np.testing.assert_array_equal(arr, data.T)
    assert meta["Dimension1"] == 13 and meta["Dimension2"] == 7


def test_imagebytes_8bit_and_json() -> None:
    data = (np.arange(5 * 3) % 256).astype(np.uint8).reshape(3, 5)
    img = imagecodec.prepare_image(data, seq=2)
    assert img.transmission_type == imagecodec.ELEMENT_BYTE and img.nbytes == 15
    text = imagecodec.json_prefix(img) + imagecodec.json_value(img) + protocol.envelope_suffix(1, 2)
    body = json.loads(text)
    assert re.match(rb'^\{"Type":2,"Rank":2,"Value":', text)
    assert body["Value"] == data.T.tolist()


def test_rgb_frames_are_rank3_rgb() -> None:
    bgr = np.zeros((2, 3, 3), dtype=np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R as ZWO delivers RGB24
    img = imagecodec.prepare_image(bgr, seq=3, bgr=True)
    assert (img.rank, img.width, img.height, img.planes) == (3, 3, 2, 3)
    header = struct.unpack("<iiIIiiiiiii", imagecodec.imagebytes_header(img, 0, 1))
    assert header[7:] == (3, 3, 2, 3)
    value = json.loads(imagecodec.json_value(img))
    assert value[0][0] == [30, 20, 10]  # R, G, B


def test_imagebytes_error_reply() -> None:
    body = imagecodec.imagebytes_error(0x40B, "no image é", 9, 10)
    meta, text = imagecodec.decode_imagebytes(body)
    assert meta["ErrorNumber"] == 0x40B and meta["ClientTransactionID"] == 9 and meta["DataStart"] == 44
    assert text == "no image é"


def test_json_value_is_encoded_from_the_numpy_buffer(monkeypatch) -> None:
    """orjson gets the ndarray itself (OPT_SERIALIZE_NUMPY), never a Python list of pixels."""
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    img = imagecodec.prepare_image(data, seq=4)
    seen = []
    real = orjson.dumps

    def spy(obj, option=None):
        seen.append((type(obj), option))
        return real(obj, option=option)

    monkeypatch.setattr(imagecodec.orjson, "dumps", spy)
    assert orjson.loads(imagecodec.json_value(img)) == data.T.tolist()
    assert seen == [(np.ndarray, orjson.OPT_SERIALIZE_NUMPY)]


# ------------------------------------------------------------------------------ config


def test_config_assign_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.json"
    cfg = Config.load(path)
    taken: set[int] = set()
    assert cfg.assign("ASI294MC Pro:AAA", "ZWO ASI294MC Pro", taken) == (0, unique_id_for("ASI294MC Pro:AAA"))
    assert cfg.assign("ASI120MM Mini:BBB", "ZWO ASI120MM Mini", taken)[0] == 1
    cfg.set_defaults("ASI294MC Pro:AAA", {"gain": 120, "offset": None, "bogus": 1, "target_temperature": -10})
    cfg.save()
    assert not list(path.parent.glob(".config-*"))  # the temporary file was renamed over
    again = Config.load(path)
    # Replugged in the other order: each camera keeps its number.
    taken = set()
    assert again.assign("ASI120MM Mini:BBB", "ZWO ASI120MM Mini", taken)[0] == 1
    assert again.assign("ASI294MC Pro:AAA", "ZWO ASI294MC Pro", taken)[0] == 0
    # A new camera does not take the number of an absent one.
    taken = set()
    assert again.assign("ASI6200MM Pro:CCC", "ZWO ASI6200MM Pro", taken)[0] == 2
    assert again.defaults("ASI294MC Pro:AAA") == {"gain": 120, "target_temperature": -10.0}
    # Forced numbers (--simulator order) are not stored as the camera's own.
    taken = set()
    assert again.assign("sim:X", "sim", taken, forced_number=0)[0] == 0
    assert "device_number" not in again.snapshot()["cameras"]["sim:X"]


def test_config_broken_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    cfg = Config.load(path)
    assert cfg.snapshot()["cameras"] == {}
    assert (tmp_path / "config.json.broken").read_text() == "{not json"


# ------------------------------------------------------------------------------ member table vs spec


def test_members_match_the_spec() -> None:
    path = SPEC_DIR / "AlpacaDeviceAPI_v1.yaml"
    if not path.exists():
        pytest.skip(f"{path} not found (set ALPACA_SPEC_DIR)")
    spec = yaml.safe_load(path.read_text())
    want: dict[str, set[str]] = {}
    for url, ops in spec["paths"].items():
        m = re.fullmatch(r"/(\{device_type\}|camera)/\{device_number\}/(\w+)", url)
        if m:
            want[m.group(2)] = {k.upper() for k in ops if k in ("get", "put")}
    have = {k: set(v) for k, v in CameraDevice.MEMBERS.items()}
    assert have == want


# ------------------------------------------------------------------------------ never a 500


class _BrokenCamera:
    """A stand-in camera whose every call fails with a non-ASCOM exception (a defect)."""

    info = None

    def add_listener(self, fn) -> None:
        pass

    def status(self):
        raise RuntimeError("status exploded")

    @property
    def settings(self):
        raise KeyError("settings exploded")


def test_unexpected_exceptions_become_driver_errors(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import concurrent.futures

    from aiohttp.test_utils import TestClient, TestServer

    from alpaca_server.app import ServerContext, build_app

    async def scenario() -> list[tuple[int, str]]:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        dev = CameraDevice(0, cast(Any, _BrokenCamera()), unique_id="u", key="k", driver_info="d", driver_version="0.1")
        ctx = ServerContext({0: dev}, pool, pool)
        out = []
        async with TestClient(TestServer(build_app(ctx))) as client:
            for method, path in (("GET", "/api/v1/camera/0/camerastate"), ("GET", "/api/v1/camera/0/imagearray"),
                                 ("PUT", "/api/v1/camera/0/connected"), ("GET", "/setup"),
                                 ("GET", "/api/v1/camera/0/name")):
                r = await client.request(method, path + "?ClientTransactionID=3", data={"Connected": "true"})
                out.append((r.status, await r.text()))
        pool.shutdown()
        return out

    results = asyncio.run(scenario())
    for status, text in results:
        assert status < 500 and "Traceback" not in text and "exploded" not in text
    body = json.loads(results[0][1])
    assert body["ErrorNumber"] == 0x5FF and "server log" in body["ErrorMessage"] and body["ServerTransactionID"] >= 1
    assert json.loads(results[4][1])["Value"] == "ZWO camera"
    assert "status exploded" in caplog.text  # the traceback is in the server log
