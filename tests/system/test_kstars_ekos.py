"""The gold standard: the real KStars/Ekos (Debian's ``kstars`` 3.6) captures from our server.

KStars runs headless under Xvfb with a private HOME and a private D-Bus session bus; Ekos gets a
*Mode: Remote* profile pointing at our INDI port, is started over D-Bus, connects, and:

* its Capture module runs a two-frame sequence from a **mono** camera (ASI2600MM Pro) and from a
  **colour** camera (ASI294MC Pro); the test checks the FITS files Ekos wrote and that our server
  (through Alpaca) saw the exposures;
* with a **guide camera with an ST4 port** (ASI120MM Mini) its Guide module takes our camera as the
  guide camera and the same device as the ST4 guider ("via" our camera), captures a guide frame,
  and the frames Capture takes from it work too;
* a profile first used with the colour camera keeps an optical train naming it, so the mono camera
  behind the same profile is "online" but never reaches Capture until the train names it (what the
  issue's "mono cameras do not work" was).

Each test has its own KStars HOME: Ekos 3.6 keeps, per profile, an "optical train" naming the camera
by its INDI device name, generated the first time the profile connects; a profile that once saw
another camera keeps pointing at it (docs/kstars.md, "Changing cameras").

Slow tier (about 20-30 s a test): ``bash scripts/bootstrap-kstars && .venv/bin/python -m pytest -m slow
tests/system/test_kstars_ekos.py``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.kstars import DEBUG_LOG_RULES, KStars, missing_tools, sequence_file
from support.servers import ServerProcess, alpaca_get, free_port, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()),
                       reason=f"KStars/Xvfb/D-Bus tools missing ({', '.join(missing_tools())}); "
                              "run scripts/bootstrap-kstars"),
]

EXPOSURE = 0.125                   # s; distinctive, so the server's LastExposureDuration proves it was ours
GAIN = 37                          # set by the sequence job through INDI CCD_CONTROLS
FRAMES = 2
PROFILE = "zwo-alpaca-test"


@dataclass(frozen=True)
class Model:
    """A simulated camera and what Ekos' FITS files of it must show."""
    key: str
    device: str
    width: int
    height: int
    pixel_um: float
    bayer: str | None           # BAYERPAT of a raw frame (None: mono)


MONO = Model("asi2600mm-pro", "ZWO CCD ASI2600MM Pro", 6248, 4176, 3.76, None)
COLOUR = Model("asi294mc-pro", "ZWO CCD ASI294MC Pro", 4144, 2822, 4.63, "RGGB")
GUIDE = Model("asi120mm-mini", "ZWO CCD ASI120MM Mini", 1280, 960, 3.75, None)


@dataclass
class Session:
    server: ServerProcess
    ks: KStars
    started: dt.datetime
    tmp: Path


@pytest.fixture
def session_for(tmp_path: Path) -> Iterator:
    """``session_for(model)``: our server with that one camera, and Ekos connected to it with a
    fresh profile; on failure prints KStars' diagnostics, Ekos' module logs and the server log."""
    opened: list[Session] = []

    def open_session(model: Model) -> Session:
        started = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)
        indi_port = free_port()
        server = start_server(tmp_path / "server", "--indi-port", str(indi_port), simulator=model.key)
        (tmp_path / "kstars").mkdir()
        ks = KStars(tmp_path / "kstars", extra_env={"QT_LOGGING_RULES": DEBUG_LOG_RULES})
        s = Session(server, ks, started, tmp_path)
        opened.append(s)
        try:
            ks.start()
            # Profile first (the Ekos window loads profiles when it opens), then open Ekos.
            ks.add_remote_profile(PROFILE, "127.0.0.1", indi_port)
            ks.open_ekos(PROFILE)
            ks.start_ekos(PROFILE, "127.0.0.1", indi_port)
            # The profile's autoconnect connects the camera; Ekos generates the profile's optical
            # train from the cameras it then knows, and Capture takes the train's camera.
            ks.wait_for(lambda: ks.module_property("Capture", "camera") == model.device, 60,
                        f"Ekos Capture selecting camera {model.device!r}")
        except BaseException:
            _report(s)
            raise
        return s

    yield open_session
    for s in opened:
        s.ks.stop()
        s.server.stop()


def _report(s: Session) -> None:
    print(s.ks.diagnostics())
    for module in ("", "Capture", "Guide"):
        print(f"--- {module or 'Ekos'} log\n" + s.ks.module_log(module))
    print("--- server log (tail)\n" + "\n".join(s.server.log_text().splitlines()[-40:]))


def _capture_and_check(s: Session, model: Model, fmt: str) -> None:
    """Capture FRAMES light frames through Ekos' Capture module and check what Ekos wrote."""
    from astropy.io import fits

    frames_dir = s.tmp / "frames"
    frames_dir.mkdir()
    seq = sequence_file(s.tmp / "test.esq", frames_dir, exposure=EXPOSURE, count=FRAMES,
                        width=model.width, height=model.height, capture_format=fmt, gain=GAIN)
    s.ks.run_sequence(seq, FRAMES, 90)

    # What our server saw (the same camera, through Alpaca): our exposures, the job's gain.
    assert alpaca_get(s.server, 0, "connected")["Value"] is True
    assert alpaca_get(s.server, 0, "lastexposureduration")["Value"] == pytest.approx(EXPOSURE)
    t = dt.datetime.fromisoformat(alpaca_get(s.server, 0, "lastexposurestarttime")["Value"])
    assert t >= s.started, (t, s.started)
    assert alpaca_get(s.server, 0, "gain")["Value"] == GAIN
    assert alpaca_get(s.server, 0, "camerastate")["Value"] == 0  # idle

    # What Ekos wrote: FRAMES FITS files of the full sensor, as our server sent them.
    files = sorted(frames_dir.rglob("*.fits"))
    assert len(files) == FRAMES, f"Ekos wrote {files}"
    for f in files:
        with fits.open(f) as hdul:
            hdr, data = hdul[0].header, hdul[0].data
            assert data.shape == (model.height, model.width)
            assert hdr["BITPIX"] == 16
            assert hdr["INSTRUME"] == model.device
            assert hdr["EXPTIME"] == pytest.approx(EXPOSURE)
            assert str(hdr["FRAME"]).strip() == "Light"
            assert hdr["GAIN"] == GAIN                      # written by our server at this gain
            assert hdr["PIXSIZE1"] == pytest.approx(model.pixel_um)
            assert hdr.get("BAYERPAT") == model.bayer       # colour: what Ekos debayers with; mono: none
            assert dt.datetime.fromisoformat(hdr["DATE-OBS"]) >= s.started
            assert data.std() > 0                           # a simulated sky, not a blank frame


def _disconnect(s: Session) -> None:
    """Ekos' "Disconnect" releases the camera on our side; then Ekos stops."""
    s.ks.qdbus("/KStars/Ekos", "disconnectDevices")
    s.ks.wait_for(lambda: alpaca_get(s.server, 0, "connected")["Value"] is False, 20,
                  "our camera to be disconnected after Ekos' disconnectDevices")
    s.ks.stop_ekos()
    assert s.server.alive()


@pytest.mark.parametrize("model", [MONO, COLOUR], ids=["mono", "colour"])
def test_ekos_captures_frames_through_our_indi_server(session_for, model: Model) -> None:
    s = session_for(model)
    try:
        # The optical train Ekos generated names our device for imaging (what Capture looks up).
        trains = s.ks.optical_trains()
        assert [t["camera"] for t in trains] == [model.device], trains
        _capture_and_check(s, model, "Raw 16 bit")
        _disconnect(s)
        print("--- timeline\n" + "\n".join(s.ks.timeline))
    except BaseException:
        _report(s)
        raise


def test_a_profile_keeps_the_camera_it_first_saw(tmp_path: Path) -> None:
    """The issue's "mono camera never reaches Capture": a profile first connected to a colour
    camera keeps an optical train naming it; with a mono camera behind the same profile Ekos has the
    camera online but Capture gets none, until the train names the new camera (docs/kstars.md,
    "Changing cameras")."""
    ks = KStars(tmp_path / "kstars", extra_env={"QT_LOGGING_RULES": DEBUG_LOG_RULES})
    (tmp_path / "kstars").mkdir()
    server: ServerProcess | None = None

    def session(model: Model, first: bool) -> int:
        nonlocal server
        port = free_port()
        server = start_server(tmp_path / f"server-{model.key}-{time.monotonic_ns()}", "--indi-port", str(port),
                              simulator=model.key)
        if first:
            ks.start()
            ks.add_remote_profile(PROFILE, "127.0.0.1", port)
        else:  # the same profile, now pointing at the server with the other camera
            ks.edit_userdb("UPDATE profile SET port=? WHERE name=?", port, PROFILE)
            ks.start()
        ks.open_ekos(PROFILE)
        ks.start_ekos(PROFILE, "127.0.0.1", port)
        return port

    def end_session() -> None:
        ks.stop()
        assert server is not None
        server.stop()

    try:
        session(COLOUR, first=True)
        ks.wait_for(lambda: ks.module_property("Capture", "camera") == COLOUR.device, 60,
                    "Capture on the colour camera")
        end_session()

        session(MONO, first=False)
        ks.wait_for(lambda: f"{MONO.device} is online." in ks.module_log(), 30, "Ekos having the mono camera online")
        time.sleep(5)  # Ekos has every device ready well within this; Capture would have its camera
        assert ks.module_property("Capture", "camera") == ""
        assert [t["camera"] for t in ks.optical_trains()] == [COLOUR.device]
        end_session()

        # The remedy: the train names the camera now behind the profile (the train editor's Camera field).
        ks.edit_userdb("UPDATE opticaltrains SET camera=?", MONO.device)
        session(MONO, first=False)
        ks.wait_for(lambda: ks.module_property("Capture", "camera") == MONO.device, 60, "Capture on the mono camera")
        end_session()
    except BaseException:
        print(ks.diagnostics())
        for module in ("", "Capture"):
            print(f"--- {module or 'Ekos'} log\n" + ks.module_log(module))
        raise
    finally:
        ks.stop()
        if server is not None:
            server.stop()


def test_ekos_guides_with_our_camera_and_its_st4_port(session_for) -> None:
    """A guide camera with ST4: Ekos' Guide module uses our device as camera and as ST4 guider,
    and a frame it captures comes from our camera at the guide exposure."""
    s = session_for(GUIDE)
    ks = s.ks
    try:
        trains = ks.optical_trains()
        assert [(t["camera"], t["guider"]) for t in trains] == [(GUIDE.device, GUIDE.device)], trains
        ks.wait_for(lambda: ks.module_property("Guide", "camera") == GUIDE.device, 30,
                    f"Ekos Guide selecting camera {GUIDE.device!r}")
        ks.wait_for(lambda: ks.module_property("Guide", "guider") == GUIDE.device, 30,
                    f"Ekos Guide selecting {GUIDE.device!r} as its ST4 guider")

        before = ks.log_text().count("Received guide frame.")
        mark = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=0.5)
        ks.qdbus("/KStars/Ekos/Guide", "capture")
        # Ekos' guide debug line "Received guide frame." follows the frame from our camera.
        ks.wait_for(lambda: ks.log_text().count("Received guide frame.") > before, 30,
                    "Ekos Guide receiving a guide frame")
        t = dt.datetime.fromisoformat(alpaca_get(s.server, 0, "lastexposurestarttime")["Value"])
        assert t >= mark, (t, mark)
        guide_exposure = alpaca_get(s.server, 0, "lastexposureduration")["Value"]
        assert guide_exposure >= 0.1, guide_exposure   # Ekos' guide exposure (1 s by default), not a bias

        # Calibration (with an automatically selected star of the simulated sky) pulses the mount
        # through the ST4 guider Ekos chose: the pulses arrive at our camera's ST4 port.
        ks.qdbus("/KStars/Ekos/Guide", "setAutoStarEnabled", "true")
        assert ks.qdbus("/KStars/Ekos/Guide", "calibrate") == "true"
        ks.wait_for(lambda: alpaca_get(s.server, 0, "ispulseguiding")["Value"] is True, 45,
                    "a calibration pulse from Ekos Guide at our camera's ST4 port", interval=0.1)
        ks.qdbus("/KStars/Ekos/Guide", "abort")
        ks.wait_for(lambda: alpaca_get(s.server, 0, "ispulseguiding")["Value"] is False
                    and alpaca_get(s.server, 0, "camerastate")["Value"] == 0, 20, "guiding to stop")

        # The same camera also images through Capture (a guide camera doubling as an imager).
        time.sleep(0.5)
        _capture_and_check(s, GUIDE, "")
        _disconnect(s)
        print("--- timeline\n" + "\n".join(ks.timeline))
    except BaseException:
        _report(s)
        raise
