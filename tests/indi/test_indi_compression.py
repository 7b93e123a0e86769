"""CCD_COMPRESSION: Rice tile-compressed FITS (``.fits.fz``) as libindi's CCD sends it.

The writer (`zwo_common.fpack`) is checked against the two independent decoders a user has: astropy
(a test dependency) and cfitsio's own ``funpack`` (Debian's libcfitsio-bin), which must give back
exactly the original pixels and header cards, for 16-bit mono, 8-bit and R, G, B frames of odd
sizes; and against ``fpack`` itself, whose Rice bytes ours must equal. Then over INDI, through
libindi's client (pyindi-client): the switch, the BLOB's format and size, and a local upload.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from support.indi_client import (
    DEV120,
    DEV294,
    IndiServer,
    PyIndi,
    PyIndiClient,
    RawIndi,
    blob_payloads,
    needs_pyindi,
    start_indi_server,
)
from zwo_common import fpack
from zwo_common.fits import build_fits, camera_cards, parse_header, read_fits

astropy_fits = pytest.importorskip("astropy.io.fits")
needs_funpack = pytest.mark.skipif(shutil.which("funpack") is None or shutil.which("fpack") is None,
                                   reason="cfitsio's fpack/funpack are not installed (Debian libcfitsio-bin; "
                                          "scripts/bootstrap test installs it)")

RNG = np.random.default_rng(20261206)


def _frames() -> list[tuple[str, np.ndarray]]:
    """Frames of each kind the camera delivers, with sizes that end mid-block and mid-byte."""
    sky = (900 + RNG.normal(0, 12, (61, 97))).astype(np.uint16)
    sky[30, 40:44] = 65535  # a saturated star: differences of the full 16-bit range
    return [
        ("16-bit sky", sky),
        ("16-bit full range", RNG.integers(0, 65536, (7, 33), dtype=np.uint16)),
        ("16-bit flat", np.full((5, 70), 4095, np.uint16)),
        ("16-bit one pixel", np.array([[12345]], np.uint16)),
        ("8-bit", (RNG.normal(40, 6, (19, 131))).clip(0, 255).astype(np.uint8)),
        ("8-bit full range", RNG.integers(0, 256, (3, 65), dtype=np.uint8)),
        ("RGB24", RNG.integers(0, 256, (13, 29, 3), dtype=np.uint8)),
    ]


FRAMES = _frames()


def _cards() -> list[tuple[str, object, str]]:
    return camera_cards(exptime=2.5, start=datetime(2026, 12, 6, 21, 30, tzinfo=UTC), instrume=DEV294,
                        frame_type="Light", xbin=1, ybin=1,
                        pixel_size_um=4.63, ccd_temp=-9.875, gain=120, offset=8,
                        extra=[("OBSERVER", "O'Neil", "quotes survive")])


def _physical(data: np.ndarray) -> np.ndarray:
    """What a reader returns for an SDK frame: R, G, B planes first for colour."""
    return np.stack([data[:, :, 2], data[:, :, 1], data[:, :, 0]]) if data.ndim == 3 else data


@pytest.mark.parametrize(("name", "data"), FRAMES, ids=[n for n, _ in FRAMES])
def test_astropy_reads_exact_pixels_and_cards(name: str, data: np.ndarray) -> None:
    cards = _cards()
    fz = fpack.build_fits_fz(data, cards)
    with astropy_fits.open(io.BytesIO(fz.tobytes())) as hdul:
        assert len(hdul) == 2 and hdul[0].header["NAXIS"] == 0
        comp = hdul[1]
        got = comp.data
        assert got.dtype.kind == "u" and np.array_equal(got, _physical(data)), name
        plain_hdr, _ = parse_header(build_fits(data, cards).tobytes())
        for key, value in plain_hdr.items():
            if key in ("SIMPLE", "EXTEND"):
                continue
            assert comp.header[key] == value, key
    with astropy_fits.open(io.BytesIO(fz.tobytes()), disable_image_compression=True) as raw:
        h = raw[1].header
        assert (h["XTENSION"], h["ZIMAGE"], h["ZCMPTYPE"], h["EXTNAME"]) == ("BINTABLE", True, "RICE_1",
                                                                            "COMPRESSED_IMAGE")
        assert (h["ZNAME1"], h["ZVAL1"], h["ZNAME2"], h["ZVAL2"]) == ("BLOCKSIZE", 32, "BYTEPIX",
                                                                       data.dtype.itemsize)
        assert h["ZBITPIX"] == 8 * data.dtype.itemsize and h["ZTILE1"] == data.shape[1] and h["ZTILE2"] == 1


def test_numpy_coder_writes_the_same_bytes_as_the_c_coder() -> None:
    if fpack.CODER != "c":
        pytest.skip("the compiled Rice coder (zwo_common._rice) is not built: nothing to compare with")
    for name, data in FRAMES:
        assert fpack.build_fits_fz(data, _cards(), coder="numpy").tobytes() == \
            fpack.build_fits_fz(data, _cards(), coder="c").tobytes(), name


def test_bands_on_threads_give_the_same_file() -> None:
    """A frame tall enough to be coded in bands on several threads is the same file as in one band."""
    data = (500 + RNG.normal(0, 30, (1031, 211))).astype(np.uint16)
    assert len(fpack._bands(1031, 3)) == 3
    banded = fpack.build_fits_fz(data, _cards(), threads=3).tobytes()
    assert banded == fpack.build_fits_fz(data, _cards(), threads=1).tobytes()
    with astropy_fits.open(io.BytesIO(banded)) as h:
        assert np.array_equal(h[1].data, data)


def _cards_to_end(fits: bytes) -> list[bytes]:
    """The primary header's cards up to END, without the CHECKSUM/DATASUM cards funpack adds."""
    _, off = parse_header(fits)
    cards = [fits[j:j + 80] for j in range(0, off, 80) if fits[j:j + 8] not in (b"CHECKSUM", b"DATASUM ")]
    return cards[:next(i for i, x in enumerate(cards) if x.startswith(b"END ")) + 1]


@needs_funpack
def test_funpack_restores_the_uncompressed_file(tmp_path: Path) -> None:
    """cfitsio's funpack turns our .fits.fz back into the very file build_fits writes (it only adds
    its CHECKSUM/DATASUM cards)."""
    for i, (name, data) in enumerate(FRAMES):
        plain = build_fits(data, _cards()).tobytes()
        src = tmp_path / f"f{i}.fits.fz"
        src.write_bytes(fpack.build_fits_fz(data, _cards()).tobytes())
        out = tmp_path / f"f{i}.fits"
        r = subprocess.run(["funpack", "-O", str(out), str(src)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, (name, r.stderr)
        back = out.read_bytes()
        hdr_plain, off_plain = parse_header(plain)
        hdr_back, off_back = parse_header(back)
        assert {k: v for k, v in hdr_back.items() if k not in ("CHECKSUM", "DATASUM")} == hdr_plain, name
        assert back[off_back:] == plain[off_plain:], name
        assert _cards_to_end(back) == _cards_to_end(plain), name  # card for card, comments and all


@needs_funpack
def test_our_rice_bytes_equal_fpacks(tmp_path: Path) -> None:
    """fpack compressing the uncompressed file writes the same tiles (so any RICE_1 reader agrees)."""
    for i, (name, data) in enumerate(FRAMES):
        src = tmp_path / f"g{i}.fits"
        src.write_bytes(build_fits(data, _cards()).tobytes())
        r = subprocess.run(["fpack", "-C", "-r", str(src)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, (name, r.stderr)
        ref = Path(str(src) + ".fz").read_bytes()
        ours = fpack.build_fits_fz(data, _cards()).tobytes()
        with astropy_fits.open(io.BytesIO(ref), disable_image_compression=True) as a, \
                astropy_fits.open(io.BytesIO(ours), disable_image_compression=True) as b:
            assert [bytes(t) for t in a[1].data.field(0)] == [bytes(t) for t in b[1].data.field(0)], name


def test_compression_pays_on_a_sky_frame() -> None:
    data = (1000 + RNG.normal(0, 10, (400, 600))).astype(np.uint16)
    assert len(fpack.build_fits_fz(data)) < 0.6 * len(build_fits(data))


# ------------------------------------------------------------------------------------- over INDI
# libindi's client (pyindi-client) drives the camera; the BLOBs are read off the wire by a plain socket
# client, because pyindi-client's getblobdata() returns `size` bytes - for a compressed BLOB that is
# the uncompressed length, more than it decoded (so it would read past its buffer).
@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndiServer]:
    s = start_indi_server(tmp_path_factory.mktemp("indi-compression"))
    yield s
    s.server.stop()


def _wire_blob(raw: RawIndi, start: int) -> tuple[str, int, bytes]:
    """The format, size attribute and decoded payload of the first BLOB received after `start`."""
    i = raw.wait_for(b"<oneBLOB", 20, start)
    raw.wait_for(b"</oneBLOB>", 20, i)
    data = raw.text()[i:]
    head = data[:data.index(b">")].decode()
    fmt, payload = blob_payloads(data)[0]
    size = re.search(r'size="(\d+)"', head)
    assert size is not None, head
    return fmt, int(size.group(1)), payload


@pytest.fixture
def clients(srv: IndiServer) -> Iterator[tuple[PyIndiClient, RawIndi]]:
    c = PyIndiClient(srv.port)
    raw = RawIndi(srv.port)
    raw.send(f'<getProperties version="1.7"/><enableBLOB device="{DEV120}">Only</enableBLOB>'
             f'<enableBLOB device="{DEV294}">Only</enableBLOB>')
    yield c, raw
    c.close()
    raw.close()


def _disconnect(c: PyIndiClient, device: str) -> None:
    mark = c.mark()
    c.set_switch(device, "CCD_FRAME_RESET", "RESET")
    c.set_switch(device, "CONNECTION", "DISCONNECT")
    c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)


@needs_pyindi
def test_ccd_compression_sends_and_saves_fits_fz(srv: IndiServer, clients: tuple[PyIndiClient, RawIndi]) -> None:
    c, raw = clients
    try:
        c.connect_device(DEV120)
        new = c.wait_new(DEV120, "CCD_COMPRESSION")
        assert new.values == {"INDI_ENABLED": False, "INDI_DISABLED": True} and new.perm == PyIndi.IP_RW
        mark = c.mark()
        c.set_numbers(DEV120, "CCD_FRAME", X=0, Y=0, WIDTH=333, HEIGHT=201)  # odd sizes
        c.wait_event(lambda e: e.name == "CCD_FRAME" and e.state == "Ok", 5, mark)
        c.set_switch(DEV120, "CCD_COMPRESSION", "INDI_ENABLED")
        c.wait_event(lambda e: e.name == "CCD_COMPRESSION" and e.state == "Ok" and e.values["INDI_ENABLED"], 5, mark)
        c.set_switch(DEV120, "UPLOAD_MODE", "UPLOAD_BOTH")
        c.set_texts(DEV120, "UPLOAD_SETTINGS", UPLOAD_DIR="fz", UPLOAD_PREFIX="IMAGE_XXX")
        c.wait_event(lambda e: e.name == "UPLOAD_SETTINGS" and e.state == "Ok", 5, mark)
        mark, at = c.mark(), raw.size()
        c.set_numbers(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.05)
        c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", 20, mark)
        fmt, size, payload = _wire_blob(raw, at)
        assert fmt == ".fits.fz" and len(payload) < size
        with astropy_fits.open(io.BytesIO(payload)) as h:
            image = h[1]
            assert image.data.shape == (201, 333) and image.data.dtype == np.uint16
            assert image.header["INSTRUME"] == DEV120 and image.header["EXPTIME"] == pytest.approx(0.05)
        path = c.wait_event(lambda e: e.name == "CCD_FILE_PATH" and e.state == "Ok", 5, mark).values["FILE_PATH"]
        assert path.endswith("IMAGE_001.fits.fz") and Path(path).read_bytes() == payload
        if shutil.which("funpack"):  # the BLOB's size attribute is the uncompressed file's, as libindi sends it
            back = subprocess.run(["funpack", "-S", path], capture_output=True, timeout=20, check=True).stdout
            _, off = parse_header(back)
            assert size == -(-len(_cards_to_end(back)) * 80 // 2880) * 2880 + len(back) - off  # its checksums aside
        # off again: plain FITS
        mark, at = c.mark(), raw.size()
        c.set_switch(DEV120, "CCD_COMPRESSION", "INDI_DISABLED")
        c.set_switch(DEV120, "UPLOAD_MODE", "UPLOAD_CLIENT")
        c.set_numbers(DEV120, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.05)
        c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", 20, mark)
        fmt, size, payload = _wire_blob(raw, at)
        assert fmt == ".fits" and size == len(payload) and read_fits(payload)[1].shape == (201, 333)
    finally:
        _disconnect(c, DEV120)


@needs_pyindi
def test_compression_survives_a_reconnection_and_colour_frames(clients: tuple[PyIndiClient, RawIndi]) -> None:
    c, raw = clients
    try:
        c.connect_device(DEV294)
        mark = c.mark()
        c.set_switch(DEV294, "CCD_COMPRESSION", "INDI_ENABLED")
        c.wait_event(lambda e: e.name == "CCD_COMPRESSION" and e.state == "Ok", 5, mark)
        c.set_switch(DEV294, "CONNECTION", "DISCONNECT")
        c.wait_event(lambda e: e.name == "CONNECTION" and e.values.get("DISCONNECT"), 5, mark)
        mark = c.mark()
        c.connect_device(DEV294)
        again = c.wait_event(lambda e: e.kind == "new" and e.name == "CCD_COMPRESSION", 5, mark)
        assert again.values["INDI_ENABLED"]  # the choice outlives the connection, as in libindi
        c.set_numbers(DEV294, "CCD_FRAME", X=0, Y=0, WIDTH=640, HEIGHT=480)
        c.set_switch(DEV294, "CCD_CAPTURE_FORMAT", "ASI_IMG_RGB24")
        c.wait_event(lambda e: e.name == "CCD_CAPTURE_FORMAT" and e.state == "Ok", 5, mark)
        mark, at = c.mark(), raw.size()
        c.set_numbers(DEV294, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=0.05)
        c.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", 20, mark)
        fmt, _, payload = _wire_blob(raw, at)
        assert fmt == ".fits.fz"
        with astropy_fits.open(io.BytesIO(payload)) as h:
            assert h[1].data.shape == (3, 480, 640) and h[1].header["NAXIS"] == 3
    finally:
        mark = c.mark()
        c.set_switch(DEV294, "CCD_COMPRESSION", "INDI_DISABLED")
        c.set_switch(DEV294, "CCD_CAPTURE_FORMAT", "ASI_IMG_RAW16")
        c.wait_event(lambda e: e.name == "CCD_CAPTURE_FORMAT" and e.state == "Ok", 5, mark)
        _disconnect(c, DEV294)
