"""The README's first command still runs the simulated demo after the second one installed the tests.

The test set-up installs pyzwoasi, whose wheel bundles ZWO's real SDK, for the tests only (in
``.venv/test-sdk``, put on the path by tests/conftest.py). A server started from the same ``.venv``
outside the tests must not see it: with no SDK installed it serves the simulated camera, while a
server that does see it (as the tests' servers do) serves real cameras only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from driver import sdk
from support.servers import REPO, start_server

TEST_SDK = REPO / ".venv" / "test-sdk"


def _names(address: str) -> list[str]:
    r = requests.get(f"http://{address}/management/v1/configureddevices", timeout=5)
    return [d["DeviceName"] for d in r.json()["Value"]]


@pytest.mark.skipif(sdk._pyzwoasi_library() is None, reason="pyzwoasi's bundled SDK has no copy for this platform")
def test_the_test_only_sdk_is_invisible_to_a_plain_server(tmp_path: Path) -> None:
    assert TEST_SDK.is_dir() and str(TEST_SDK) in os.environ.get("PYTHONPATH", "")
    outside = os.pathsep.join(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                              if p and Path(p) != TEST_SDK)
    plain = start_server(tmp_path / "plain", simulator=None, env={"PYTHONPATH": f"{REPO}{os.pathsep}{outside}"})
    try:
        assert _names(plain.address) == ["ZWO ASI294MC Pro (simulated)"]
    finally:
        plain.stop()
    tests_view = start_server(tmp_path / "tests", simulator=None)  # sees .venv/test-sdk: a real SDK, no camera
    try:
        assert _names(tests_view.address) == []
    finally:
        tests_view.stop()
