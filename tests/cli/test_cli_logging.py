"""Logging for the commands: levels, one line per event with the camera's name, JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zwo_runtime import logsetup

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    level = root.level
    yield
    logsetup.reset()
    root.setLevel(level)


def emit(stream: io.StringIO, logger: str, level: int, msg: str, *args, **kw) -> list[str]:
    logging.getLogger(logger).log(level, msg, *args, **kw)
    return stream.getvalue().splitlines()


def test_text_lines_carry_the_camera_and_stay_on_one_line():
    out = io.StringIO()
    logsetup.setup("info", stream=out)
    lines = emit(out, "zwo_alpaca.camera", logging.WARNING, "%s: teardown step '%s' failed: %s",
                 "ZWO ASI294MC Pro", "close camera", "ASI error 4\nsecond line")
    assert len(lines) == 1
    assert lines[0].endswith("WARNING [ZWO ASI294MC Pro] teardown step 'close camera' failed: ASI error 4"
                             " | second line")
    emit(out, "zwo_alpaca.camera", logging.DEBUG, "hidden")
    assert "hidden" not in out.getvalue()  # below the level
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("x").exception("it broke", extra={"camera": "cam A"})
    last = out.getvalue().splitlines()[-1]
    assert "[cam A] it broke (ValueError: bad | value)" in last


def test_json_lines(tmp_path):
    out = io.StringIO()
    log_file = tmp_path / "log.jsonl"
    logsetup.setup("debug", json_lines=True, stream=out, log_file=str(log_file))
    logging.getLogger("zwo_alpaca.camera").info("%s: disconnected", "ZWO ASI120MM Mini")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("zwo_alpaca.capture").error("write failed", exc_info=True, extra={"path": "/x.fits"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and log_file.read_text().splitlines() == lines
    first, second = (json.loads(ln) for ln in lines)
    assert first["camera"] == "ZWO ASI120MM Mini" and first["msg"] == "disconnected" and first["level"] == "info"
    assert first["ts"].endswith("Z") and first["logger"] == "zwo_alpaca.camera"
    assert second["camera"] is None and "ZeroDivisionError" in second["exc"] and second["path"] == "/x.fits"


def test_journald_gets_priorities_and_no_timestamps(tmp_path, monkeypatch):
    f = tmp_path / "stderr"
    with open(f, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logsetup.setup("info", stream=stream)
        logging.getLogger("zwo_alpaca").error("%s: camera removed", "ZWO ASI294MC Pro")
    assert f.read_text() == "<3>ERROR   [ZWO ASI294MC Pro] camera removed\n"


def test_levels_from_options_and_environment(monkeypatch):
    monkeypatch.delenv(logsetup.ENV_LEVEL, raising=False)
    assert logsetup.resolve_level() == logging.INFO
    assert logsetup.resolve_level(verbose=True) == logging.DEBUG
    monkeypatch.setenv(logsetup.ENV_LEVEL, "warning")
    assert logsetup.resolve_level() == logging.WARNING
    assert logsetup.resolve_level("error") == logging.ERROR
    with pytest.raises(ValueError, match="valid: debug"):
        logsetup.resolve_level("loud")


@pytest.mark.parametrize("before", [True, False])
def test_log_options_work_before_and_after_the_command(tmp_path, before):
    opts = ["--log-level", "warning", "--log-json"]
    cmd = ["list", "--simulator", "asi294mc-pro"]
    argv = opts + cmd if before else cmd + opts
    env = dict(os.environ, PYTHONPATH=str(REPO), ZWO_ALPACA_SIM_LOCK_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "zwo_runtime", *argv], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in r.stderr.splitlines()]
    assert events and all(e["level"] in ("warning", "error") for e in events)
    assert any("SIMULATED" in e["msg"] for e in events)
