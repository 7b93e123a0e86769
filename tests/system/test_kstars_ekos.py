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
  issue's "mono cameras do not work" was);
* with INDI's fast exposure on, Ekos asks our server for the job's frames in one series
  (``CCD_FAST_COUNT``) and they follow each other at the exposure plus readout;
* in a profile whose ``indiserver`` runs libindi's mount, wheel and focuser simulators with our
  camera chained in, Ekos fills the camera's ``ACTIVE_DEVICES``/``SCOPE_INFO`` and the light frame
  it saves carries the mount's pointing, the filter, the optics, the focuser and the site.

Each test has its own KStars HOME: Ekos 3.6 keeps, per profile, an "optical train" naming the camera
by its INDI device name, generated the first time the profile connects; a profile that once saw
another camera keeps pointing at it (docs/kstars.md, "Changing cameras").

Slow tier (about 20-30 s a test): ``bash scripts/bootstrap-kstars && .venv/bin/python -m pytest -m slow
tests/system/test_kstars_ekos.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.indi_client import RawIndi, indiserver_command
from support.kstars import DEBUG_LOG_RULES, KStars, missing_tools, sequence_file
from support.servers import ServerProcess, alpaca_get, free_port, start_server, stop_process, wait_port

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
    server_indi_port: int = 0


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
        s = Session(server, ks, started, tmp_path, indi_port)
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


# ------------------------------------------------------------------ fast exposure
FAST_FRAMES = 5
FAST_EXPOSURE = 0.5
FAST_SUBFRAME = (1024, 768)  # small enough that Ekos keeps up with 0.5 s frames on a slow machine
_FAST_COUNT = re.compile(rb"<(?:set|def)NumberVector[^>]*name=[\"']CCD_FAST_COUNT[\"'][^>]*>\s*"
                         rb"<(?:one|def)Number[^>]*name=[\"']FRAMES[\"'][^>]*>\s*([0-9.eE+-]+)")


def _fast_job(s: Session, model: Model, fast: bool) -> tuple[list[float], float]:
    """One Capture job of FAST_FRAMES subframes with CCD_FAST_TOGGLE ``fast`` (set as the INDI
    Control Panel would): the times between the exposure starts our server wrote into the FITS
    files Ekos saved, and the largest CCD_FAST_COUNT our server published meanwhile."""
    from astropy.io import fits

    member = "INDI_ENABLED" if fast else "INDI_DISABLED"
    subprocess.run(["indi_setprop", "-p", str(s.server_indi_port), "-t", "5",
                    f"{model.device}.CCD_FAST_TOGGLE.{member}=On"], check=True, timeout=20, capture_output=True)
    time.sleep(1.0)  # Ekos takes the toggle from the switch's update: let it arrive before the job
    frames_dir = s.tmp / f"frames-fast-{'on' if fast else 'off'}"
    frames_dir.mkdir()
    seq = sequence_file(s.tmp / "fast.esq", frames_dir, exposure=FAST_EXPOSURE, count=FAST_FRAMES,
                        width=FAST_SUBFRAME[0], height=FAST_SUBFRAME[1])
    watch = RawIndi(s.server_indi_port)
    watch.send('<getProperties version="1.7"/>')
    try:
        s.ks.run_sequence(seq, FAST_FRAMES, 90)
    finally:
        watch.close()
    starts = []
    for f in sorted(frames_dir.rglob("*.fits")):
        with fits.open(f) as hdul:
            assert hdul[0].data.shape == (FAST_SUBFRAME[1], FAST_SUBFRAME[0])
            starts.append(dt.datetime.fromisoformat(hdul[0].header["DATE-OBS"]))
    starts.sort()
    assert len(starts) == FAST_FRAMES and len(set(starts)) == FAST_FRAMES, starts  # distinct frames, none repeated
    counts = [float(v) for v in _FAST_COUNT.findall(watch.text())]
    return [(b - a).total_seconds() for a, b in zip(starts, starts[1:])], max(counts, default=0.0)


def test_ekos_fast_exposure_runs_the_series_in_our_server(session_for) -> None:
    """With CCD_FAST_TOGGLE on, Ekos 3.6 sets CCD_FAST_COUNT to the job's frames and sends one
    CCD_EXPOSURE; our core starts each next frame at readout, so the exposures follow each other at
    the exposure plus readout instead of waiting for Ekos to receive, save and ask again."""
    s = session_for(COLOUR)
    try:
        off_gaps, off_count = _fast_job(s, COLOUR, fast=False)
        on_gaps, on_count = _fast_job(s, COLOUR, fast=True)
        print(f"fast off: {off_gaps} (max CCD_FAST_COUNT {off_count}); on: {on_gaps} (max {on_count})")
        assert off_count <= 1  # one exposure at a time, Ekos asking for each
        assert on_count == FAST_FRAMES  # Ekos asked our server for the whole series at once
        assert all(g >= FAST_EXPOSURE for g in on_gaps), on_gaps  # each frame exposed in full
        # On: exposure plus readout (a few ms for this subframe) with no round trip to Ekos between.
        assert statistics.median(on_gaps) < FAST_EXPOSURE + 0.15, on_gaps
        assert statistics.median(on_gaps) < statistics.median(off_gaps), (on_gaps, off_gaps)
        _disconnect(s)
    except BaseException:
        _report(s)
        raise


# ------------------------------------------------------------------ snooping in a profile
MOUNT, WHEEL, FOCUSER = "Telescope Simulator", "Filter Simulator", "Focuser Simulator"
JNOW = (5.6, -5.4)      # where the mount is synced (hours, degrees), JNow as INDI mounts report
FILTER = "Green"        # the wheel simulator's slot 2; the job asks for it by name


def _getprop(port: int, spec: str) -> dict[str, str]:
    """libindi's indi_getprop: ``{"device.property.element": value}`` for ``spec`` (wildcards allowed)."""
    r = subprocess.run(["indi_getprop", "-p", str(port), "-t", "3", spec], capture_output=True, text=True,
                       timeout=20)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def _setprop(port: int, spec: str) -> None:
    subprocess.run(["indi_setprop", "-p", str(port), "-t", "5", spec], check=True, timeout=20, capture_output=True)


def _sexa(text: str) -> float:
    d, m, sec = (float(v) for v in text.split())
    sign = -1 if text.strip().startswith("-") else 1
    return sign * (abs(d) + m / 60 + sec / 3600)


needs_sims = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("indiserver", "indi_getprop", "indi_simulator_telescope",
                                          "indi_simulator_wheel", "indi_simulator_focus")),
    reason="Debian's indi-bin (indiserver, indi_getprop and the simulators) is not installed")


@needs_sims
def test_ekos_profile_snoops_mount_wheel_and_focuser(tmp_path: Path) -> None:
    """What docs/kstars.md, "Snooping in a profile", tells a user to do: one indiserver runs the
    mount, the filter wheel and the focuser and chains our camera (``"DEVICE"@host:port``); an Ekos
    profile has all four. Ekos fills the camera's ACTIVE_DEVICES itself; the mount is unparked and
    synced, the job names a filter, and the light frame Ekos saves carries the mount's pointing, the
    filter, the optics, the focuser position and the site."""
    from astropy import units as u
    from astropy.coordinates import FK5
    from astropy.io import fits
    from astropy.time import Time

    our_port = free_port()
    server = start_server(tmp_path / "server", "--indi-port", str(our_port), simulator=MONO.key)
    hub_port = free_port()
    hub_dir = tmp_path / "indiserver"
    hub_dir.mkdir()
    with open(hub_dir / "indiserver.log", "wb") as log:  # simulators keep their config in a private HOME
        hub = subprocess.Popen(indiserver_command(hub_port, "indi_simulator_telescope", "indi_simulator_wheel",
                                                  "indi_simulator_focus", f"{MONO.device}@127.0.0.1:{our_port}"),
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=hub_dir,
                               env=dict(os.environ, HOME=str(hub_dir)), start_new_session=True)
    wait_port(hub_port)
    (tmp_path / "kstars").mkdir()
    ks = KStars(tmp_path / "kstars", extra_env={"QT_LOGGING_RULES": DEBUG_LOG_RULES})
    s = Session(server, ks, dt.datetime.now(dt.UTC).replace(tzinfo=None), tmp_path, our_port)
    try:
        ks.start()
        ks.add_remote_profile(PROFILE, "127.0.0.1", hub_port,
                              others={"Mount": MOUNT, "Filter": WHEEL, "Focuser": FOCUSER})
        ks.open_ekos(PROFILE)
        ks.start_ekos(PROFILE, "127.0.0.1", hub_port)
        ks.wait_for(lambda: ks.module_property("Capture", "camera") == MONO.device, 60,
                    f"Ekos Capture selecting camera {MONO.device!r}")
        ks.wait_for(lambda: _getprop(hub_port, f"{MOUNT}.CONNECTION.CONNECT").get(
            f"{MOUNT}.CONNECTION.CONNECT") == "On", 30, "Ekos connecting the mount")
        # Ekos itself points the camera at the profile's mount and focuser (Manager::syncActiveDevices).
        active = f"{MONO.device}.ACTIVE_DEVICES."
        ks.wait_for(lambda: _getprop(hub_port, active + "*").get(active + "ACTIVE_TELESCOPE") == MOUNT, 30,
                    "Ekos setting the camera's ACTIVE_TELESCOPE")

        # The mount: unparked, tracking, synced to known coordinates (as Ekos' Mount tab would).
        _setprop(hub_port, f"{MOUNT}.TELESCOPE_PARK.UNPARK=On")
        _setprop(hub_port, f"{MOUNT}.TELESCOPE_TRACK_STATE.TRACK_ON=On")
        _setprop(hub_port, f"{MOUNT}.ON_COORD_SET.SYNC=On")
        _setprop(hub_port, f"{MOUNT}.EQUATORIAL_EOD_COORD.RA;DEC={JNOW[0]};{JNOW[1]}")
        eod = f"{MOUNT}.EQUATORIAL_EOD_COORD."

        def synced() -> bool:
            p = _getprop(hub_port, eod + "*")
            return (abs(float(p.get(eod + "RA", "nan")) - JNOW[0]) < 0.01
                    and abs(float(p.get(eod + "DEC", "nan")) - JNOW[1]) < 0.1)

        ks.wait_for(synced, 30, "the mount synced to the test's coordinates")

        frames_dir = tmp_path / "frames"
        frames_dir.mkdir()
        seq = sequence_file(tmp_path / "snoop.esq", frames_dir, exposure=EXPOSURE, count=1,
                            width=MONO.width, height=MONO.height, filter_name=FILTER)
        ks.run_sequence(seq, 1, 90)
        seen = _getprop(hub_port, "*.*.*")
        files = sorted(frames_dir.rglob("*.fits"))
        assert len(files) == 1, files
        hdr = fits.getheader(files[0])
        print(repr(hdr))
        print({k: v for k, v in seen.items() if "ACTIVE_DEVICES" in k or "SCOPE_INFO" in k or "TELESCOPE_INFO" in k})

        # Ekos chose the filter through the wheel and told the camera which wheel (ACTIVE_FILTER).
        assert seen[active + "ACTIVE_FILTER"] == WHEEL
        assert seen[active + "ACTIVE_FOCUSER"] == FOCUSER
        assert seen[f"{WHEEL}.FILTER_SLOT.FILTER_SLOT_VALUE"] == "2"
        assert hdr["FILTER"] == FILTER
        # The pointing: J2000 of the mount's JNow. Astropy's precession alone, to within what
        # libindi's nutation and aberration add (well under an arcminute).
        assert hdr["TELESCOP"] == MOUNT
        j2000 = FK5(ra=JNOW[0] * 15 * u.deg, dec=JNOW[1] * u.deg,
                    equinox=Time(hdr["DATE-OBS"], scale="utc")).transform_to(FK5(equinox="J2000"))
        here = FK5(ra=hdr["RA"] * u.deg, dec=hdr["DEC"] * u.deg, equinox="J2000")
        assert here.separation(j2000).arcsec < 60, (hdr["RA"], hdr["DEC"], j2000)
        assert JNOW[0] * 15 - hdr["RA"] > 0.2  # really precessed, not the JNow copied
        assert abs(_sexa(hdr["OBJCTRA"]) * 15 - hdr["RA"]) < 1e-3
        assert abs(_sexa(hdr["OBJCTDEC"]) - hdr["DEC"]) < 1e-3
        assert hdr["EQUINOX"] == 2000
        # The site, as the mount has it (Ekos sends KStars' location, Greenwich in a fresh HOME).
        assert hdr["SITELAT"] == pytest.approx(float(seen[f"{MOUNT}.GEOGRAPHIC_COORD.LAT"]), abs=1e-3)
        assert hdr["SITELONG"] == pytest.approx(float(seen[f"{MOUNT}.GEOGRAPHIC_COORD.LONG"]) % 360, abs=1e-3)
        assert hdr["AIRMASS"] >= 1 and -90 <= hdr["OBJCTALT"] <= 90
        # The optics: Ekos sends the optical train's telescope as SCOPE_INFO (its Guide module does,
        # for the train's camera), which wins over the mount's TELESCOPE_INFO, as in libindi.
        scope_fl = float(seen[f"{MONO.device}.SCOPE_INFO.FOCAL_LENGTH"])
        scope_ap = float(seen[f"{MONO.device}.SCOPE_INFO.APERTURE"])
        assert scope_fl > 0 and scope_fl != float(seen[f"{MOUNT}.TELESCOPE_INFO.TELESCOPE_FOCAL_LENGTH"])
        assert (hdr["FOCALLEN"], hdr["APTDIA"]) == pytest.approx((scope_fl, scope_ap))
        assert hdr["FOCUSPOS"] == pytest.approx(float(seen[f"{FOCUSER}.ABS_FOCUS_POSITION.FOCUS_ABSOLUTE_POSITION"]))
        ks.stop_ekos()
    except BaseException:
        _report(s)
        print("--- indiserver log (tail)\n" + "\n".join(
            (hub_dir / "indiserver.log").read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        ks.stop()
        stop_process(hub)
        server.stop()
