"""Shared fixtures: a live ``zwo-alpaca serve`` on a free loopback port, as a subprocess.

* ``alpaca_server`` (session): one server with ``--simulator asi294mc-pro,asi120mm-mini`` shared by
  every test that only needs *a* server; tests leave the cameras as they found them (see
  :func:`support.servers.reset_camera`).
* ``server_factory``: start private servers with other arguments (e.g. to send them signals); every
  server it started is stopped at the end of the test.

The helpers themselves (:func:`support.servers.start_server`, :class:`support.servers.ServerProcess`,
``wait_until``, ``free_port`` ...) live in the ``tests/support`` package; import them from there,
never from ``conftest`` (each test folder may have a conftest of its own).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.servers import REPO, ServerProcess, start_server

# pyzwoasi (whose wheel bundles ZWO's real libASICamera2) is installed for the tests only, beside the
# venv's packages (scripts/bootstrap): the tests and the servers they start see it, while
# `scripts/serve` from the same .venv still finds no SDK and runs the simulated demo.
TEST_SDK = REPO / ".venv" / "test-sdk"
if TEST_SDK.is_dir() and str(TEST_SDK) not in sys.path:
    sys.path.append(str(TEST_SDK))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TEST_SDK)) if p)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--models", default=os.environ.get("ZWO_TEST_MODELS", "fast"),
                     help="simulated models for the model-dependent tests: fast (default), all (the catalog "
                          "sweep, scripts/sweep) or a comma list of catalog keys; default from $ZWO_TEST_MODELS")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``sweep_model`` runs once per selected model (module scope: one server per model)."""
    if "sweep_model" in metafunc.fixturenames:
        from support import models as sweep  # here: the catalog is imported only where a test needs it

        keys = sweep.resolve(str(metafunc.config.getoption("--models")))
        metafunc.parametrize("sweep_model", keys, ids=keys, scope="module")


@pytest.fixture(scope="session")
def alpaca_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server with the two default simulated cameras (devices 0 and 1)."""
    server = start_server(tmp_path_factory.mktemp("alpaca-session"))
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``server_factory(*extra_args, **kw)`` starts a private server; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def make(*extra: str, **kw: object) -> ServerProcess:
        server = start_server(tmp_path / f"server{len(started)}", *extra, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
