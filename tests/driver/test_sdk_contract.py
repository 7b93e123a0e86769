"""The SDK contract (driver/sdk_contract.py): its table in docs/simulator.md, its sources, and the parts
of it the self-test cannot reach on a camera, checked here against the simulator.

The rest of the contract is run against every simulated model by `zwo-alpaca selftest`
(tests/cli/test_cli_selftest.py), and the no-camera clauses against the real library by
tests/driver/test_sdk_differential.py.
"""

from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path

import pytest

from driver import handle
from driver import sdk_contract as K
from driver.simulator.sdk import SimulatedSDK

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "simulator.md"
BEGIN = re.compile(r"<!-- sdk-contract:begin[^>]*-->\n")
END = "<!-- sdk-contract:end -->"


def doc_table() -> str:
    text = DOC.read_text(encoding="utf-8")
    m = BEGIN.search(text)
    assert m, "docs/simulator.md has no '<!-- sdk-contract:begin -->' marker"
    end = text.index(END, m.end())
    return text[m.end():end]


def test_docs_table_is_the_module_table():
    assert doc_table() == K.markdown_table(), (
        "docs/simulator.md 'The SDK contract' differs from driver/sdk_contract.py: paste the output of "
        "'python -m driver.sdk_contract' between the markers")


def test_every_clause_in_the_doc_once():
    table = doc_table()
    for c in K.CLAUSES:
        assert table.count(f"| `{c.key}` |") == 1, c.key


def test_clauses_are_well_formed():
    keys = [c.key for c in K.CLAUSES]
    assert len(keys) == len(set(keys))
    for c in K.CLAUSES:
        assert re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", c.key), c.key
        assert c.call and c.situation and c.expected and c.source, c.key
        assert c.applies in K.APPLIES, (c.key, c.applies)
        assert all(code in K.ERROR_NAMES for code in c.codes), c.key
        assert all(s in K.STATUS_NAMES for s in c.statuses), c.key
        if not c.assumed:
            # A clause that is not assumed names where it comes from.
            assert any(s in c.source for s in ("ASICamera2.h", "measured", "indi-asi", "docs/", "issue #")), c.key
        else:
            assert "**assumed**" in K.markdown_table().split(f"`{c.key}`")[1].split("\n")[0], c.key


def test_clause_lookup_names_the_valid_keys():
    assert K.clause("exp.stop_keeps_image").assumed
    with pytest.raises(KeyError, match="known: sdk.version"):
        K.clause("no.such")


def test_accepts():
    c = K.clause("roi.width_multiple_8")
    assert c.accepts_code(K.INVALID_SIZE) and not c.accepts_code(K.SUCCESS)
    assert K.clause("exp.poll_fast_at_end").accepts_code(123)  # no codes listed: nothing to contradict
    assert K.clause("exp.sequence").accepts_status(K.EXP_SUCCESS)
    assert not K.clause("exp.sequence").accepts_status(K.EXP_FAILED)
    assert K.clause("roi.width_multiple_8").expectation() == "INVALID_SIZE (8)"


def test_gone_codes_follow_the_contract():
    """The codes the contract says mean "this camera is gone" are the ones the core treats so."""
    gone = set(K.clause("gone.unplugged").codes) | set(K.clause("id.absent").codes) | set(K.clause("call.closed").codes)
    assert gone <= handle.GONE_CODES
    # ...and none the contract lists as an ordinary refusal of a request.
    refusals = {K.INVALID_SIZE, K.INVALID_IMGTYPE, K.OUTOF_BOUNDARY, K.INVALID_SEQUENCE, K.VIDEO_MODE_ACTIVE,
                K.EXPOSURE_IN_PROGRESS, K.INVALID_CONTROL_TYPE, K.INVALID_MODE}
    assert not refusals & handle.GONE_CODES
    # A close answered "no such camera / closed / removed" is not retried: nothing is left to close.
    assert set(K.clause("gone.unplugged").codes) <= handle._NOTHING_TO_CLOSE


# ----------------------------------------------------------------------------- clauses the self-test leaves out

@pytest.fixture
def lib(tmp_path):
    sim = SimulatedSDK(["asi294mc-pro", "asi120mc"], lock_dir=str(tmp_path))
    yield sim, sim.library
    sim.shutdown()


def _open(library, cid):
    assert library.ASIOpenCamera(cid) == 0
    assert library.ASIInitCamera(cid) == 0


def test_buffer_too_small_is_refused_not_crashed(lib):
    """exp.buffer_size: the real library may crash; the simulator answers 13 so the defect shows."""
    sim, library = lib
    _open(library, 0)
    assert library.ASISetROIFormat(0, 64, 32, 1, 2) == 0
    library.ASISetControlValue(0, 1, 32, 0)
    assert library.ASIStartExposure(0, 0) == 0
    status = ctypes.c_int(1)
    for _ in range(400):
        library.ASIGetExpStatus(0, ctypes.byref(status))
        if status.value != 1:
            break
        time.sleep(0.005)
    assert status.value == K.EXP_SUCCESS
    small = ctypes.create_string_buffer(64 * 32)
    assert library.ASIGetDataAfterExp(0, small, len(small)) == K.BUFFER_TOO_SMALL
    whole = ctypes.create_string_buffer(64 * 32 * 2)
    assert library.ASIGetDataAfterExp(0, whole, len(whole)) == 0  # the image stayed available


def test_asi_id_survives_close_and_is_usb3_only(lib):
    sim, library = lib
    from driver.simulator.library import ASI_ID

    _open(library, 0)
    value = ASI_ID()
    value.id[:] = list(b"NIGHT-01")
    assert library.ASISetID(0, value) == 0
    assert library.ASICloseCamera(0) == 0
    sim.unplug(0)
    sim.replug(0)
    _open(library, 0)
    back = ASI_ID()
    assert library.ASIGetID(0, ctypes.byref(back)) == 0
    assert bytes(back.id) == b"NIGHT-01"
    _open(library, 1)  # the ASI120MC: USB 2.0
    assert library.ASIGetID(1, ctypes.byref(back)) == K.GENERAL_ERROR


def test_unsupported_mode(lib):
    _, library = lib
    _open(library, 0)
    assert library.ASISetCameraMode(0, 3) == K.INVALID_MODE
    assert library.ASISetCameraMode(0, 0) == 0


def test_unplugged_camera_answers_a_gone_code(lib):
    sim, library = lib
    _open(library, 0)
    sim.unplug(0)
    n = ctypes.c_int()
    code = library.ASIGetNumOfControls(0, ctypes.byref(n))
    assert K.clause("gone.unplugged").accepts_code(code)
    assert K.clause("gone.unplugged").accepts_code(library.ASICloseCamera(0))


def test_no_camera_at_all(tmp_path):
    """enum.count_none and id.absent with a simulator of no cameras (as the real library measured)."""
    sim = SimulatedSDK((), lock_dir=str(tmp_path))
    try:
        library = sim.library
        assert library.ASIGetNumOfConnectedCameras() == 0
        n = ctypes.c_int()
        assert library.ASIGetNumOfControls(0, ctypes.byref(n)) == K.INVALID_ID
        assert library.ASIOpenCamera(0) == K.INVALID_ID
    finally:
        sim.shutdown()


def test_core_names_the_clause_when_a_camera_discards_a_stopped_exposure(tmp_path: Path) -> None:
    """exp.stop_keeps_image is assumed. On a camera that disagrees (the simulator's quirk), the core
    ends the stopped exposure FAILED with a message that says what happened and names the clause,
    instead of a bare "exposure failed"; the camera stays usable."""
    from driver import ExposureEnded, ExposureOutcome, ZWOCamera, sdk, simulator

    sdk.load(simulator=["asi294mc-pro"], sim_options={"lock_dir": str(tmp_path)})
    sim = simulator.current()
    assert sim is not None
    sim.faults.set_quirk("stop_discards_image")
    ends: list[ExposureEnded] = []
    cam = ZWOCamera(0)
    cam.add_listener(lambda e: ends.append(e) if isinstance(e, ExposureEnded) else None)
    try:
        cam.connect()
        cam.configure(width=64, height=64)
        cam.start_exposure(2.0)
        time.sleep(0.2)
        cam.stop_exposure()
        assert cam.wait_for(lambda s: len(ends) == 1, 5.0)
        assert ends[0].outcome == ExposureOutcome.FAILED
        assert "discarded the exposure when it was stopped early" in (ends[0].reason or "")
        assert "exp.stop_keeps_image" in (ends[0].reason or "")
        sim.faults.set_quirk("stop_discards_image", on=False)
        cam.start_exposure(0.01)
        assert cam.wait_for(lambda s: len(ends) == 2, 5.0)
        assert ends[1].outcome == ExposureOutcome.COMPLETED
    finally:
        cam.disconnect_camera()
        simulator.uninstall()
