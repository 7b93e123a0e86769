"""Process exit releases every camera: a second process can open it at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driver import CameraState, ZWOCamera, sdk, simulator

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from driver import ZWOCamera, sdk, registry
sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": sys.argv[1]})
registry.install_signal_handlers()
cam = ZWOCamera(0)
cam.connect()
cam.configure(bin=2)
cam.start_capture(lambda f: None, exposure=float(sys.argv[2]), mode=sys.argv[3])
print("capturing", flush=True)
while True:
    time.sleep(0.5)
"""


def start_child(lock_dir: Path, exposure: float, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(lock_dir), str(exposure), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    assert line.strip() == "capturing", proc.stderr.read() if proc.poll() is not None else line
    return proc


@pytest.mark.parametrize("sig,mode,exposure", [
    (signal.SIGTERM, "exposure", 30.0),
    (signal.SIGINT, "exposure", 30.0),
    (signal.SIGTERM, "video", 0.01),
])
def test_signal_mid_capture_leaves_no_busy_camera(tmp_path, sig, mode, exposure):
    lock_dir = tmp_path / "locks"
    sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(lock_dir)})
    proc = start_child(lock_dir, exposure, mode)
    try:
        time.sleep(0.3)
        probe = ZWOCamera(0)
        with pytest.raises(Exception, match="another program|busy"):
            probe.connect()  # the child really holds it
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=5)
        assert time.monotonic() - t0 < 2.0
        cam = ZWOCamera(0)
        cam.connect()  # at once: no retry, no wait
        assert cam.state == CameraState.IDLE
        cam.disconnect_camera()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        simulator.uninstall()
