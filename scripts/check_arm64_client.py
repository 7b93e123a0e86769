"""Host side of scripts/check-arm64: drives the server running in the emulated arm64 root.

One exposure and download through alpyca (ASCOM Alpaca, ImageBytes) and one through libindi's client
library (pyindi-client, a FITS BLOB), each checked for size, type and plausible content; then the two
images are compared, which catches a transpose that scrambles pixels while keeping the statistics.
Prints one ``check: ...`` line per result and exits non-zero on the first failure.
Usage: .venv/bin/python scripts/check_arm64_client.py --alpaca-port N --indi-port M [--model NAME]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from alpaca.camera import Camera, ImageArrayElementTypes
from astropy.io import fits

from support.indi_client import PyIndi, PyIndiClient
from support.servers import wait_until


class CheckFailed(Exception):
    """A result that contradicts what a working install must give."""


def check(ok: object, what: str) -> None:
    """Print one result line; raise CheckFailed when it is false."""
    print(f"check: {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        raise CheckFailed(what)


def plausible(img: np.ndarray, max_adu: int, label: str) -> None:
    """Not blank, not saturated, not constant, inside the ADC's range."""
    lo, hi, mean, std = int(img.min()), int(img.max()), float(img.mean()), float(img.std())
    check(lo >= 0 and hi <= max_adu, f"{label}: values {lo}..{hi} within 0..{max_adu}")
    check(std > 1.0, f"{label}: not constant (std {std:.1f})")
    check(0 < mean < 0.9 * max_adu, f"{label}: mean {mean:.1f} neither black nor saturated")


def block_means(img: np.ndarray, n: int = 32) -> np.ndarray:
    """The image (rows, cols) averaged over an n x n grid of blocks: a fingerprint of its layout."""
    rows, cols = (img.shape[0] // n) * n, (img.shape[1] // n) * n
    return img[:rows, :cols].astype(np.float64).reshape(n, rows // n, n, cols // n).mean(axis=(1, 3))


def alpaca_frame(port: int, exposure: float, timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Full frame through alpyca: returns (image as rows x cols, facts about the camera)."""
    cam = Camera(f"127.0.0.1:{port}", 0)
    cam.Connected = True
    wait_until(lambda: cam.Connected, timeout, "Connected")
    cam.BinX = cam.BinY = 1
    cam.StartX = cam.StartY = 0
    cam.NumX, cam.NumY = cam.CameraXSize, cam.CameraYSize
    facts = {"name": cam.Name, "x": cam.CameraXSize, "y": cam.CameraYSize, "max_adu": cam.MaxADU}
    t0 = time.monotonic()
    cam.StartExposure(exposure, True)
    wait_until(lambda: cam.ImageReady, timeout, "ImageReady")
    img = np.array(cam.ImageArray)  # alpyca asks for ImageBytes: the server's transpose path
    info = cam.ImageArrayInfo  # set by alpyca from that download's metadata
    print(f"alpaca: {facts['name']}: exposure + ImageBytes download {time.monotonic() - t0:.1f} s "
          f"(emulated; not a performance figure)", flush=True)
    check(img.shape == (facts["x"], facts["y"]), f"Alpaca image shape {img.shape} == (NumX, NumY) "
          f"({facts['x']}, {facts['y']})")
    element = ImageArrayElementTypes(int(info.ImageElementType)).name
    check(np.issubdtype(img.dtype, np.integer) and element == "Int32",
          f"Alpaca image is integer ({img.dtype}; ImageElementType {element})")
    plausible(img, facts["max_adu"], "Alpaca image")
    cam.Connected = False
    return img.T, facts  # ASCOM's [x][y] back to rows x cols, as FITS stores it


def indi_frame(port: int, exposure: float, timeout: float, facts: dict[str, Any]) -> np.ndarray:
    """Full frame through pyindi-client as a FITS BLOB: returns the FITS data (rows x cols)."""
    if PyIndi is None:
        raise CheckFailed("pyindi-client is not installed in .venv (bash scripts/bootstrap test)")
    client = PyIndiClient(port)
    try:
        device = client.wait_event(lambda e: e.name == "CONNECTION", timeout).device
        client.setBLOBMode(PyIndi.B_ALSO, device, None)
        client.connect_device(device, timeout)
        t0 = time.monotonic()
        mark = client.mark()
        client.set_numbers(device, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=exposure)
        client.wait_event(lambda e: e.name == "CCD_EXPOSURE" and e.state == "Ok", timeout, mark)
        blobs = [e for e in client.since(mark) if e.name == "CCD1" and e.kind == "update"]
        check(bool(blobs), "INDI sent the image as a CCD1 BLOB")
        fmt, payload = blobs[-1].values["CCD1"]
        print(f"indi: {device}: exposure + FITS BLOB {len(payload)} bytes {time.monotonic() - t0:.1f} s "
              f"(emulated; not a performance figure)", flush=True)
        check(fmt == ".fits", f"INDI BLOB format {fmt!r} is .fits")
        with fits.open(io.BytesIO(payload)) as hdul:
            hdr, data = hdul[0].header, np.asarray(hdul[0].data)
            check(hdr["NAXIS1"] == facts["x"] and hdr["NAXIS2"] == facts["y"],
                  f"FITS NAXIS1 x NAXIS2 {hdr['NAXIS1']} x {hdr['NAXIS2']} == sensor {facts['x']} x {facts['y']}")
            check(hdr["BITPIX"] in (8, 16), f"FITS BITPIX {hdr['BITPIX']} (8 or 16 bits)")
            plausible(data, facts["max_adu"], "INDI FITS image")
        client.set_switch(device, "CONNECTION", "DISCONNECT")
        return data
    finally:
        client.close()


def main() -> int:
    """Run the checks; exit status 0 when all pass."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpaca-port", type=int, required=True)
    ap.add_argument("--indi-port", type=int, required=True)
    ap.add_argument("--exposure", type=float, default=0.2)
    ap.add_argument("--timeout", type=float, default=300.0, help="per step, generous: the server is emulated")
    args = ap.parse_args()
    try:
        alpaca_img, facts = alpaca_frame(args.alpaca_port, args.exposure, args.timeout)
        indi_img = indi_frame(args.indi_port, args.exposure, args.timeout, facts)
        # Same scene, two exposures: the coarse layout (vignetting, gradient, stars) must agree. A
        # transpose that mixed up rows and columns or strides keeps the statistics but not this.
        check(indi_img.shape == alpaca_img.shape, f"INDI and Alpaca images have one shape {indi_img.shape}")
        a, b = block_means(alpaca_img), block_means(indi_img)
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() and b.std() else 0.0
        print(f"compare: block-mean correlation of the Alpaca and INDI images {corr:.3f}")
        check(corr > 0.5, "the Alpaca and INDI images show the same scene layout (correlation > 0.5)")
    except (CheckFailed, TimeoutError, ConnectionError) as exc:
        print(f"check-arm64 client: failed: {exc}", file=sys.stderr)
        return 1
    print("check-arm64 client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
