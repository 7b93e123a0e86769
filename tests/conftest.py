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

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.servers import ServerProcess, start_server


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
