"""`zwo-alpaca selftest`: the SDK contract run on a camera, here on every simulated model.

Every model in the simulator's catalog must agree with every clause the self-test checks (the
simulator follows the contract table); one run includes the busy and unplug steps (the simulated
user pulls the cable); one runs against a simulator made to behave differently (a camera whose
StopExposure discards the image, and an injected fault) and must flag the clause by key and exit 1;
and the JSON report keeps its schema. The commands run in-process through the real entry point
(`zwo_runtime.cli.main`) so a run costs about a second; the busy step's helper is a real process.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from driver import sdk_contract as K
from driver import simulator
from driver.simulator import catalog
from zwo_runtime import cli, cmd_selftest

MODELS = sorted(catalog.MODELS)
VERDICTS = {"agrees", "contradicts", "info", "skipped", "error"}
# Clauses no self-test step can check on a camera, and why (each is checked elsewhere).
NOT_BY_SELFTEST = {
    "enum.count_none": "needs no camera attached: tests/driver/test_sdk_differential.py",
    "exp.buffer_size": "could crash a real library: tests/driver/test_sdk_contract.py",
    "asi_id.flash": "writes the camera's flash: tests/driver/test_sdk_contract.py",
    "mode.unsupported": "no simulated model has trigger modes: tests/driver/test_sdk_contract.py",
    "serial.none": "every catalog model reports a serial",
    "close.cooler": "not observable without a thermometer",
    "exp.failed_restart": "a camera failing on purpose cannot be asked for",
    "exp.stop_may_block": "needs a second camera streaming video",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("ZWO_ALPACA_SIM_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("ZWO_ASI_LIB", raising=False)
    yield
    from zwo_runtime import logsetup

    logsetup.reset()
    simulator.uninstall()


def selftest(tmp_path: Path, capsys: Any, *args: str) -> tuple[int, str, dict[str, Any]]:
    path = tmp_path / "report.json"
    rc = cli.main(["selftest", "--quick", "--json", str(path), *args])
    out = capsys.readouterr().out
    return rc, out, json.loads(path.read_text())


def with_faults(monkeypatch: Any, arm: Any) -> None:
    """Arm faults on the simulator the command installs, right after it installs it."""
    real = cmd_selftest.load_simulator

    def load(models: list[str]) -> Any:
        info = real(models)
        sim = simulator.current()
        assert sim is not None
        arm(sim)
        return info

    monkeypatch.setattr(cmd_selftest, "load_simulator", load)


def by_clause(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["clause"] == key]


@pytest.mark.parametrize("model", MODELS)
def test_every_simulated_model_agrees_with_the_contract(model, tmp_path, capsys):
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", model, "--no-busy", "--no-unplug")
    assert doc["contradictions"] == [], out
    assert rc == 0, out
    assert doc["summary"]["error"] == 0, out
    assert doc["summary"]["agrees"] >= 60, doc["summary"]
    info = catalog.lookup(model)
    # What depends on the model was really exercised, not skipped.
    assert [r["verdict"] for r in by_clause(doc, "exp.stop_keeps_image")] == ["agrees"]
    assert by_clause(doc, "st4.pulse" if info.st4 else "st4.absent")[0]["verdict"] == "agrees"
    if info.cooled:
        assert by_clause(doc, "controls.cooler_on_off")[0]["verdict"] == "agrees"
    if info.size_multiple_1024:
        assert by_clause(doc, "roi.asi120_area_1024")[0]["verdict"] == "agrees"
    if "ASI120" in info.name or "ASI130" in info.name:
        assert by_clause(doc, "roi.asi120_raw16")[0]["verdict"] == "agrees"
    bins = [r for r in by_clause(doc, "roi.binned_size") if r["check"].startswith("bin ")]
    assert len(bins) == len(info.supported_bins)
    assert "Contradicts" not in out and "Report written to" in out


def test_unplug_accepted_and_busy_elsewhere(tmp_path, capsys):
    """The full run: a second process holds the camera, then the (simulated) user pulls the cable
    during an exposure and plugs it back in."""
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--yes-unplug")
    assert rc == 0, out
    assert doc["contradictions"] == []
    assert by_clause(doc, "open.busy_elsewhere")[0]["verdict"] == "agrees"
    assert by_clause(doc, "open.busy_elsewhere")[0]["code"] == K.GENERAL_ERROR
    assert [r["verdict"] for r in by_clause(doc, "exp.unplug")] == ["agrees"]
    assert [r["verdict"] for r in by_clause(doc, "gone.unplugged")] == ["agrees"]
    assert [r["verdict"] for r in by_clause(doc, "gone.replug")] == ["agrees"]
    unplug = doc["measured"]["unplug"]
    assert unplug["code"] == K.CAMERA_REMOVED and 0 < unplug["noticed_s"] < 5 and 0 < unplug["back_s"] < 5
    assert "simulated user: pulling the cable" in out
    # Every clause is checked by some step, or has a stated reason not to be.
    checked = {r["clause"] for r in doc["results"] if r["clause"] and r["verdict"] in ("agrees", "info")}
    unchecked = {c.key for c in K.CLAUSES if c.key not in checked and c.key not in NOT_BY_SELFTEST}
    applies_elsewhere = {c.key for c in K.CLAUSES if c.applies in ("st4", "asi120", "asi120_130", "no-serial",
                                                                     "usb2")}
    assert unchecked <= applies_elsewhere, sorted(unchecked)


def test_a_camera_that_discards_a_stopped_exposure_is_flagged(tmp_path, capsys, monkeypatch):
    """A simulated camera that behaves as the contract does not expect (the simulator's quirk
    "stop_discards_image": StopExposure fails the exposure instead of keeping its image). The
    self-test names the clause and exits 1."""
    with_faults(monkeypatch, lambda sim: sim.faults.set_quirk("stop_discards_image"))
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--only", "stop_abort")
    assert rc == 1
    keys = [c["clause"] for c in doc["contradictions"]]
    assert keys == ["exp.stop_keeps_image"]
    bad = doc["contradictions"][0]
    assert bad["assumed"] is True and "FAILED" in bad["observed"][0]
    assert "FAIL StopExposure after" in out and "[exp.stop_keeps_image]" in out
    assert "Contradicts the SDK contract:\n  exp.stop_keeps_image:" in out


def test_an_injected_fault_is_flagged(tmp_path, capsys, monkeypatch):
    """Through the simulator's fault plan: the first ASIStopVideoCapture fails, where the header says
    stopping a video that is not running succeeds."""
    with_faults(monkeypatch, lambda sim: sim.inject("ASIStopVideoCapture", K.GENERAL_ERROR, count=1))
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", "asi120mc", "--only", "open_close")
    assert rc == 1
    assert [c["clause"] for c in doc["contradictions"]] == ["video.stop_twice"]
    assert "returned GENERAL_ERROR (16)" in doc["contradictions"][0]["observed"][0]


def test_a_busy_camera_answering_removed_agrees(tmp_path, capsys, monkeypatch):
    """The contract allows either code for a camera busy in another process (nothing documents it)."""
    with_faults(monkeypatch, lambda sim: sim.faults.set_quirk("busy_open_removed"))
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--only", "busy")
    assert rc == 0, out
    busy = by_clause(doc, "open.busy_elsewhere")
    assert busy[0]["verdict"] == "agrees" and busy[0]["code"] == K.CAMERA_REMOVED


def test_json_report_schema(tmp_path, capsys):
    rc, _, doc = selftest(tmp_path, capsys, "--simulator", "asi178mm", "--only", "enumerate", "--only", "controls")
    assert rc == 0
    assert set(doc) == {"schema", "zwo_alpaca_version", "started", "duration_s", "host", "sdk", "camera",
                        "controls", "options", "measured", "results", "summary", "contradictions"}
    assert doc["schema"] == "zwo-alpaca-selftest/1"
    assert doc["sdk"]["kind"] == "simulator" and re.fullmatch(r"\d+, \d+, \d+, \d+", doc["sdk"]["version"])
    assert doc["camera"]["name"] == "ZWO ASI178MM" and len(doc["camera"]["serial"]) == 16
    assert doc["options"] == {"quick": True, "unplug": None, "no_guide": False, "only": ["enumerate", "controls"]}
    assert set(doc["summary"]) == VERDICTS and sum(doc["summary"].values()) == len(doc["results"])
    for r in doc["results"]:
        assert set(r) == {"step", "check", "verdict", "clause", "expected", "observed", "code", "status", "seconds",
                          "detail"}
        assert r["step"] in ("enumerate", "controls") and r["verdict"] in VERDICTS
        assert r["clause"] is None or r["clause"] in K.BY_KEY
        assert r["code"] is None or isinstance(r["code"], int)
    gain = next(c for c in doc["controls"] if c["Name"] == "Gain")
    assert {"MinValue", "MaxValue", "DefaultValue", "IsWritable", "IsAutoSupported", "Value"} <= set(gain)
    assert isinstance(doc["measured"]["step_seconds"]["controls"], float)


def test_default_report_name_and_attach_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["selftest", "--simulator", "asi294mc-pro", "--quick", "--only", "enumerate"])
    out = capsys.readouterr().out
    assert rc == 0
    files = list(tmp_path.glob("zwo-alpaca-selftest-*.json"))
    assert len(files) == 1 and re.fullmatch(r"zwo-alpaca-selftest-ASI294MC-Pro-\d{8}-\d{6}\.json", files[0].name)
    assert f"Report written to {files[0].name}" in out
    assert f"attach {files[0].name} to the bug report" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_unplug_needs_consent(tmp_path, capsys, monkeypatch):
    """Without a terminal, and when the user says no at the prompt, the unplug step is skipped."""
    rc, _, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--only", "unplug")
    assert rc == 0
    assert by_clause(doc, "gone.unplugged")[0]["verdict"] == "skipped"
    assert "not a terminal" in by_clause(doc, "gone.unplugged")[0]["observed"]
    simulator.uninstall()
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    rc, out, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--only", "unplug")
    assert "[y/N]" in out
    assert by_clause(doc, "gone.unplugged")[0]["observed"] == "not agreed at the prompt"
    assert doc["measured"].get("unplug") is None
    rc, _, doc = selftest(tmp_path, capsys, "--simulator", "asi294mc-pro", "--only", "unplug", "--no-unplug")
    assert by_clause(doc, "gone.unplugged")[0]["observed"] == "--no-unplug given"


def test_unknown_camera_is_a_usage_error(tmp_path, capsys):
    rc = cli.main(["selftest", "--simulator", "asi294mc-pro", "--camera", "ASI9999", "--json",
                   str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no camera 'ASI9999'" in err and "ZWO ASI294MC Pro" in err
