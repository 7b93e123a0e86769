"""The gold standard: the real KStars/Ekos (Debian's ``kstars``) captures frames from our server.

KStars runs headless under Xvfb with a private HOME and a private D-Bus session bus; Ekos gets a
*Mode: Remote* profile pointing at our INDI port, is started and connects over D-Bus, and its Capture
module runs a two-frame sequence loaded from an ``.esq`` file. The test then checks the FITS files
Ekos wrote and that our server (through Alpaca) saw the exposures.

Slow tier (5-10 s): ``bash scripts/bootstrap-kstars && .venv/bin/python -m pytest -m slow
tests/system/test_kstars_ekos.py``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from support.kstars import KStars, missing_tools
from support.servers import alpaca_get, free_port, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()),
                       reason=f"KStars/Xvfb/D-Bus tools missing ({', '.join(missing_tools())}); "
                              "run scripts/bootstrap-kstars"),
]

MODEL = "asi120mm-mini"
DEVICE = "ZWO CCD ASI120MM Mini"
WIDTH, HEIGHT = 1280, 960          # the ASI120MM Mini's sensor
EXPOSURE = 0.125                   # s; distinctive, so the server's LastExposureDuration proves it was ours
GAIN = 37                          # set by the sequence job through INDI CCD_CONTROLS
FRAMES = 2
PROFILE = "zwo-alpaca-test"
CAPTURE = "/KStars/Ekos/Capture"
CAPTURE_IF = "org.kde.kstars.Ekos.Capture"
EKOS_IF = "org.kde.kstars.Ekos"


def sequence_file(path: Path, frames_dir: Path) -> Path:
    """An Ekos sequence queue (format 2.4, as KStars 3.6 saves it) with one light-frame job."""
    d = escape(str(frames_dir))
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<SequenceQueue version='2.4'>
<GuideDeviation enabled='false'>2</GuideDeviation>
<GuideStartDeviation enabled='false'>2</GuideStartDeviation>
<Autofocus enabled='false'>0</Autofocus>
<RefocusOnTemperatureDelta enabled='false'>1</RefocusOnTemperatureDelta>
<RefocusEveryN enabled='false'>60</RefocusEveryN>
<RefocusOnMeridianFlip enabled='false'/>
<Job>
<Exposure>{EXPOSURE}</Exposure>
<Format>Mono</Format>
<Encoding>FITS</Encoding>
<Binning><X>1</X><Y>1</Y></Binning>
<Frame><X>0</X><Y>0</Y><W>{WIDTH}</W><H>{HEIGHT}</H></Frame>
<Type>Light</Type>
<Count>{FRAMES}</Count>
<Delay>0</Delay>
<TargetName>zwotest</TargetName>
<FITSDirectory>{d}</FITSDirectory>
<PlaceholderFormat>{d}/%t_%T_%e_%F</PlaceholderFormat>
<PlaceholderSuffix>3</PlaceholderSuffix>
<UploadMode>0</UploadMode>
<Properties>
<PropertyVector name='CCD_CONTROLS'>
<OneElement name='Gain'>{GAIN}</OneElement>
</PropertyVector>
</Properties>
<Calibration><PreAction><Type>0</Type></PreAction>
<FlatDuration dark='false'><Type>Manual</Type></FlatDuration></Calibration>
</Job>
</SequenceQueue>
""")
    return path


def test_ekos_captures_frames_through_our_indi_server(tmp_path: Path) -> None:
    from astropy.io import fits

    started = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)
    indi_port = free_port()
    server = start_server(tmp_path / "server", "--indi-port", str(indi_port), simulator=MODEL)
    ks = KStars(tmp_path / "kstars")
    (tmp_path / "kstars").mkdir()
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    try:
        with ks:
            try:
                # Profile first (the Ekos window loads profiles when it opens), then open Ekos.
                ks.add_remote_profile(PROFILE, "127.0.0.1", indi_port)
                ks.open_ekos(PROFILE)
                assert ks.qdbus("/KStars/Ekos", "setProfile", PROFILE) == "true"
                ks.qdbus("/KStars/Ekos", "start")
                # indiStatus 2 = Ekos::Success: connected to the remote INDI server; the profile's
                # autoconnect then connects the camera and Ekos creates the Capture module for it.
                ks.wait_for(lambda: ks.qdbus("/KStars/Ekos", f"{EKOS_IF}.indiStatus", check=False) == "2",
                            60, "Ekos connecting to our INDI server")
                ks.wait_for(lambda: ks.qdbus(CAPTURE, f"{CAPTURE_IF}.camera", check=False) == DEVICE,
                            60, f"Ekos Capture selecting camera {DEVICE!r}")

                seq = sequence_file(tmp_path / "test.esq", frames_dir)
                assert ks.qdbus(CAPTURE, "loadSequenceQueue", str(seq)) == "true"
                assert ks.qdbus(CAPTURE, "getJobCount") == "1"
                ks.qdbus(CAPTURE, "start")

                def job_done() -> bool:
                    state = ks.qdbus(CAPTURE, "getJobState", "0", check=False)
                    if state in ("Error", "Aborted"):
                        raise RuntimeError(f"Ekos capture job ended in state {state}")
                    return state == "Complete"

                ks.wait_for(job_done, 60, f"Ekos capturing {FRAMES} frames")
                assert ks.qdbus(CAPTURE, "getJobImageProgress", "0") == str(FRAMES)

                # What our server saw (the same camera, through Alpaca): our exposures, the job's gain.
                assert alpaca_get(server, 0, "connected")["Value"] is True
                assert alpaca_get(server, 0, "lastexposureduration")["Value"] == pytest.approx(EXPOSURE)
                t = dt.datetime.fromisoformat(alpaca_get(server, 0, "lastexposurestarttime")["Value"])
                assert t >= started, (t, started)
                assert alpaca_get(server, 0, "gain")["Value"] == GAIN
                assert alpaca_get(server, 0, "camerastate")["Value"] == 0  # idle
                assert (alpaca_get(server, 0, "cameraxsize")["Value"],
                        alpaca_get(server, 0, "cameraysize")["Value"]) == (WIDTH, HEIGHT)

                # Ekos' "Disconnect" releases the camera on our side.
                ks.qdbus("/KStars/Ekos", "disconnectDevices")
                ks.wait_for(lambda: alpaca_get(server, 0, "connected")["Value"] is False, 20,
                            "our camera to be disconnected after Ekos' disconnectDevices")
                ks.qdbus("/KStars/Ekos", "stop")
                ks.wait_for(lambda: ks.qdbus("/KStars/Ekos", f"{EKOS_IF}.ekosStatus", check=False) == "0",
                            20, "Ekos to stop")
            except BaseException:
                print(ks.diagnostics())
                print("--- Ekos log\n" + ks.qdbus("/KStars/Ekos", f"{EKOS_IF}.logText", check=False, timeout=5))
                print("--- Capture log\n" + ks.qdbus(CAPTURE, f"{CAPTURE_IF}.logText", check=False, timeout=5))
                raise

        # What Ekos wrote: FRAMES FITS files of the full sensor, as our server sent them.
        files = sorted(frames_dir.rglob("*.fits"))
        assert len(files) == FRAMES, f"Ekos wrote {files}"
        for f in files:
            with fits.open(f) as hdul:
                hdr, data = hdul[0].header, hdul[0].data
                assert data.shape == (HEIGHT, WIDTH)
                assert (hdr["NAXIS1"], hdr["NAXIS2"]) == (WIDTH, HEIGHT)
                assert hdr["BITPIX"] == 16
                assert hdr["INSTRUME"] == DEVICE
                assert hdr["EXPTIME"] == pytest.approx(EXPOSURE)
                assert str(hdr["FRAME"]).strip() == "Light"
                assert hdr["GAIN"] == GAIN                      # written by our server at this gain
                assert hdr["PIXSIZE1"] == pytest.approx(3.75)
                assert dt.datetime.fromisoformat(hdr["DATE-OBS"]) >= started
                assert data.std() > 0                           # a simulated sky, not a blank frame
        assert server.alive()
        print("--- timeline\n" + "\n".join(ks.timeline))
    except BaseException:
        print("--- server log (tail)\n" + "\n".join(server.log_text().splitlines()[-40:]))
        raise
    finally:
        server.stop()
