"""INDI shim building blocks, without a server: the FITS writer, the safe XML parser, the upload
path guard, the protocol serialisation and the BLOB encoder's wire layout.

The FITS files are checked twice: with our strict reader and, when it is installed, with astropy
(``pip install astropy``; the test is skipped otherwise).
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from indi_shim import protocol as P
from indi_shim.blob import EncodedBlob, encoded_length, wire_length, with_newlines
from indi_shim.upload import UploadError, UploadTarget
from indi_shim.xmlparse import Element, IndiStreamParser, ParseError
from zwo_common.fits import BLOCK, FitsError, build_fits, camera_cards, card, parse_header, read_fits


# ----------------------------------------------------------------------------------------- FITS
def _cards(**kw: object) -> list[tuple[str, object, str]]:
    args: dict[str, object] = dict(exptime=2.5, start=datetime(2024, 5, 1, 21, 3, 7, 123000, tzinfo=UTC),
                                   instrume="ZWO CCD ASI294MC Pro", frame_type="Light", xbin=2, ybin=2,
                                   pixel_size_um=4.63, ccd_temp=-10.04, gain=120, offset=30,
                                   bayer=("RGGB", 1, 0), subframe=(8, 4))
    args.update(kw)
    return camera_cards(**args)  # type: ignore[arg-type]


def test_fits_uint16_header_and_roundtrip() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65536, size=(37, 53), dtype=np.uint16)
    data[0, 0], data[0, 1] = 0, 65535  # both ends of the range survive BZERO
    fits = build_fits(data, _cards())
    raw = fits.tobytes()
    assert len(raw) % BLOCK == 0 and fits.header_len % BLOCK == 0
    hdr, out = read_fits(raw)
    assert hdr["SIMPLE"] is True and hdr["BITPIX"] == 16 and hdr["NAXIS"] == 2
    assert (hdr["NAXIS1"], hdr["NAXIS2"]) == (53, 37)
    assert hdr["BZERO"] == 32768 and hdr["BSCALE"] == 1
    assert hdr["EXPTIME"] == 2.5 and hdr["DATE-OBS"] == "2024-05-01T21:03:07.123"
    assert hdr["CCD-TEMP"] == pytest.approx(-10.04)
    assert (hdr["XBINNING"], hdr["YBINNING"]) == (2, 2)
    assert hdr["XPIXSZ"] == pytest.approx(9.26) and hdr["PIXSIZE1"] == pytest.approx(4.63)
    assert (hdr["GAIN"], hdr["OFFSET"]) == (120, 30)
    assert (hdr["FRAME"], hdr["IMAGETYP"]) == ("Light", "Light Frame")
    assert hdr["INSTRUME"] == "ZWO CCD ASI294MC Pro" and hdr["ROWORDER"] == "TOP-DOWN"
    assert (hdr["BAYERPAT"], hdr["XBAYROFF"], hdr["YBAYROFF"]) == ("RGGB", 1, 0)
    assert (hdr["XORGSUBF"], hdr["YORGSUBF"]) == (8, 4)
    assert out.dtype == np.uint16 and np.array_equal(out, data)
    # Data padding is zeros, header padding is spaces.
    assert raw[fits.header_len - 1:fits.header_len] == b" "
    assert set(raw[fits.header_len + data.nbytes:]) <= {0}


def test_fits_every_card_is_80_printable_ascii() -> None:
    fits = build_fits(np.zeros((2, 2), np.uint16), _cards(instrume="weird 'quote' \x00 é"))
    header = fits.tobytes()[:fits.header_len]
    text = header.decode("ascii")
    assert all(32 <= ord(c) < 127 for c in text)
    cards = [text[i:i + 80] for i in range(0, len(text), 80)]
    assert cards[0].startswith("SIMPLE  =                    T")
    assert [c[:8].strip() for c in cards[:4]] == ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1"]
    assert any(c.startswith("END     ") for c in cards)
    hdr, _ = parse_header(fits.tobytes())
    assert hdr["INSTRUME"] == "weird 'quote' ? ?"


def test_fits_uint8_and_rgb_planes() -> None:
    mono = (np.arange(12, dtype=np.uint8).reshape(3, 4))
    hdr, out = read_fits(build_fits(mono, _cards(bayer=None)).tobytes())
    assert hdr["BITPIX"] == 8 and "BZERO" not in hdr and np.array_equal(out, mono)
    bgr = np.zeros((3, 4, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R as the SDK delivers RGB24
    hdr, out = read_fits(build_fits(bgr, _cards(bayer=None)).tobytes())
    assert hdr["NAXIS"] == 3 and (hdr["NAXIS1"], hdr["NAXIS2"], hdr["NAXIS3"]) == (4, 3, 3)
    assert out.shape == (3, 3, 4)
    assert (out[0] == 30).all() and (out[1] == 20).all() and (out[2] == 10).all()  # planes R, G, B


def test_fits_noncontiguous_view_and_rejections() -> None:
    big = np.arange(100, dtype=np.uint16).reshape(10, 10)
    view = big[2:7, 3:9]
    _, out = read_fits(build_fits(view).tobytes())
    assert np.array_equal(out, view)
    with pytest.raises(FitsError):
        build_fits(np.zeros((2, 2), np.float32))
    with pytest.raises(FitsError):
        build_fits(np.zeros((2, 2), np.uint16), [("BITPIX", 8, "")])
    with pytest.raises(FitsError):
        card("lower", 1)
    with pytest.raises(FitsError):
        card("NAN", float("nan"))


def test_fits_custom_keywords_override_and_darks() -> None:
    cards = _cards(frame_type="Dark", extra=[("OBJECT", "M 31", "target"), ("GAIN", 99, "override")])
    hdr, _ = read_fits(build_fits(np.zeros((2, 2), np.uint16), cards).tobytes())
    assert hdr["OBJECT"] == "M 31" and hdr["GAIN"] == 99
    assert hdr["IMAGETYP"] == "Dark Frame" and hdr["DARKTIME"] == 2.5


def test_fits_valid_for_astropy() -> None:
    fits_io = pytest.importorskip("astropy.io.fits")
    import io
    import warnings

    data = np.random.default_rng(2).integers(0, 65536, size=(31, 47), dtype=np.uint16)
    raw = build_fits(data, _cards()).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any non-standard card would warn
        with fits_io.open(io.BytesIO(raw)) as hdul:
            hdul.verify("exception")
            assert np.array_equal(hdul[0].data, data)
            assert hdul[0].data.dtype.kind == "u"
            assert hdul[0].header["BAYERPAT"] == "RGGB"
            assert hdul[0].header["DATE-OBS"] == "2024-05-01T21:03:07.123"


# ----------------------------------------------------------------------------------------- XML parser
def _feed_all(parser: IndiStreamParser, *chunks: bytes) -> list[Element | ParseError]:
    out: list[Element | ParseError] = []
    for c in chunks:
        out += parser.feed(c)
    return out


def _tags(items: list[Element | ParseError]) -> list[str]:
    return [f"!{i.message.split()[0]}" if isinstance(i, ParseError) else i.tag for i in items]


def test_parser_splits_and_joins_elements() -> None:
    p = IndiStreamParser()
    items = _feed_all(p, b"<getProperties version='1.7'/>\n<newNumberVector device='A' name='B'>",
                      b"<oneNumber name='X'>\n 1.5 \n</oneNumber></newNumberVector><getPro", b"perties/>")
    assert _tags(items) == ["getProperties", "newNumberVector", "getProperties"]
    vec = items[1]
    assert isinstance(vec, Element) and vec.children[0].text == "1.5" and vec.children[0].get("name") == "X"


@pytest.mark.parametrize("bad, why", [
    (b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]>", "malformed"),
    (b"<newTextVector device='A' name='B'><oneText name='t'>&lol9;</oneText></newTextVector>", "malformed"),
    (b"\x00\x01\x02\xff\xfe binary", "malformed"),
    (b"<a><b><c><d><e>deep</e></d></c></b></a>", "elements"),
    (b"<newTextVector device='A' name='B'><oneText name='t'>" + b"x" * 5000 + b"</oneText></newTextVector>",
     "element"),
    (b"<newSwitchVector device='A' name='B'><oneSwitch name='S'>On</oneSwitch></oops>", "malformed"),
    (b"</indi>", "malformed"),
])
def test_parser_rejects_and_recovers(bad: bytes, why: str) -> None:
    p = IndiStreamParser(max_element_bytes=4096)
    items = _feed_all(p, b"<getProperties device='before'/>", bad, b"<getProperties device='after'/>")
    errors = [i for i in items if isinstance(i, ParseError)]
    assert errors and errors[0].message.startswith(why), items
    good = [i.get("device") for i in items if isinstance(i, Element) and i.tag == "getProperties"]
    assert good == ["before", "after"]


def test_parser_entity_expansion_never_happens() -> None:
    """A billion-laughs document: rejected at the DOCTYPE, nothing expanded, memory stays flat."""
    lol = b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>" + b"".join(
        b"<!ENTITY lol%d '%s'>" % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)) + b"]>"
    p = IndiStreamParser()
    items = _feed_all(p, lol, b"<newTextVector device='A' name='B'><oneText name='t'>&lol9;</oneText>"
                              b"</newTextVector><getProperties/>")
    assert any(isinstance(i, ParseError) for i in items)
    assert not any(isinstance(i, Element) and i.tag == "newTextVector" for i in items)
    assert isinstance(items[-1], Element) and items[-1].tag == "getProperties"


def test_parser_truncated_input_reported_at_close() -> None:
    p = IndiStreamParser()
    assert _feed_all(p, b"<newNumberVector device='A' name='B'><oneNumber name='X'>1") == []
    assert isinstance(p.close()[0], ParseError)


def test_parser_huge_stream_is_bounded() -> None:
    """10 MB of one never-ending element: errors, no unbounded buffering, and it resumes after."""
    p = IndiStreamParser(max_element_bytes=1 << 16)
    p.feed(b"<newTextVector device='A' name='B'><oneText name='t'>")
    for _ in range(160):
        p.feed(b"A" * 65536)
        assert len(p._pending) < (1 << 17)
    items = p.feed(b"</oneText></newTextVector><getProperties device='ok'/>")
    assert isinstance(items[-1], Element) and items[-1].get("device") == "ok"


# ----------------------------------------------------------------------------------------- protocol
def test_xml_escaping_and_numbers() -> None:
    vec = P.Vector("Text", 'dev"<&>', "NAME", "L", "G", "rw", members=[P.Text("T", "t", "a<b&c\x00")])
    out = vec.def_xml(message="say \"hi\" <now>").decode()
    assert 'device="dev&quot;&lt;&amp;&gt;"' in out and ">a&lt;b&amp;c?</defText>" in out
    assert 'message="say &quot;hi&quot; &lt;now&gt;"' in out
    assert P.parse_number(" 12:30:00 ") == 12.5 and P.parse_number("-1e-3") == -0.001
    for bad in ("nan", "inf", "abc", "1..2", ""):
        with pytest.raises(ValueError):
            P.parse_number(bad)
    assert P.fmt_number(3.2e-05) == "3.2e-05" and P.fmt_number(4.0) == "4"


# ----------------------------------------------------------------------------------------- BLOB layout
def test_blob_wire_layout_matches_libindi() -> None:
    for n in (0, 1, 53, 54, 55, 1000, 54 * 70 + 5):
        raw = os.urandom(n)
        wire = bytes(with_newlines(base64.b64encode(raw)))
        assert len(wire) == wire_length(n) and encoded_length(n) == len(base64.b64encode(raw))
        lines = wire.split(b"\n")
        assert all(len(line) == 72 for line in lines[:-2]) and lines[-1] == b""
        assert base64.b64decode(wire.replace(b"\n", b"")) == raw


def test_encoded_blob_matches_base64() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def run() -> None:
        raw = os.urandom(54 * 1000 + 7)
        blob = EncodedBlob(memoryview(raw), ".fits", asyncio.get_running_loop(), slice_size=54 * 100)
        with ThreadPoolExecutor(1) as pool:
            blob.start(pool)
            assert await blob.wait()
        got = b"".join(bytes(p) for p in blob.pieces(size=10_000))
        assert len(got) == blob.wire_len and blob.enclen == len(base64.b64encode(raw))
        assert got == bytes(with_newlines(base64.b64encode(raw)))
        assert base64.b64decode(got.replace(b"\n", b"")) == raw

    asyncio.run(run())


# ----------------------------------------------------------------------------------------- uploads
def test_upload_confined_to_base(tmp_path: Path) -> None:
    base = tmp_path / "images"
    target = UploadTarget(base)
    assert target.components("") == () and target.components(str(base)) == ()
    assert target.components("night1/m31") == ("night1", "m31")
    assert target.components(str(base / "a")) == ("a",)
    for bad in ("../x", "a/../../x", "/etc", str(tmp_path), "a\x00b", "/".join(["d"] * 40)):
        with pytest.raises(UploadError):
            target.components(bad)
    for bad in ("../x", "a/b", ".hidden", "", "x" * 200, "a\nb"):
        with pytest.raises(UploadError):
            target.check_prefix(bad)
    p1 = target.save(("n1",), "IMAGE_XXX", ".fits", b"one")
    p2 = target.save(("n1",), "IMAGE_XXX", ".fits", b"two")
    assert p1.endswith("n1/IMAGE_001.fits") and p2.endswith("n1/IMAGE_002.fits")
    assert Path(p2).read_bytes() == b"two"


def test_upload_refuses_symlink_escape(tmp_path: Path) -> None:
    base = tmp_path / "images"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = UploadTarget(base)
    (base / "link").symlink_to(outside)
    with pytest.raises(UploadError):
        target.save(("link",), "IMAGE_XXX", ".fits", b"x")
    assert list(outside.iterdir()) == []
    # A symlink where the file would go is not followed or overwritten either.
    (base / "IMAGE_001.fits").symlink_to(outside / "victim")
    path = target.save((), "IMAGE_001", ".fits", b"data")
    assert not (outside / "victim").exists() and path.endswith("IMAGE_001_1.fits")


# ----------------------------------------------------------------------------------------- server lifecycle
def test_server_port_in_use_and_quick_stop() -> None:
    import socket
    import time as _time

    from indi_shim.server import IndiServer

    first = IndiServer([], host="127.0.0.1", port=0).start()
    try:
        assert first.port
        with pytest.raises(OSError, match="cannot listen"):
            IndiServer([], host="127.0.0.1", port=first.port).start()
        c = socket.create_connection(("127.0.0.1", first.port), timeout=5)
        c.sendall(b"<getProperties version='1.7'/><pingRequest uid='7'/>")
        c.settimeout(5)
        assert b'<pingReply uid="7"/>' in c.recv(4096)
    finally:
        t0 = _time.monotonic()
        first.stop()
        assert _time.monotonic() - t0 < 1.0
    assert c.recv(4096) == b""  # the client was closed by stop()
    c.close()
