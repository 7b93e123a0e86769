"""One composition root (zwo_runtime): both programs serve the same camera set the same way.

* ``zwo-alpaca serve`` and ``zwo-alpaca-indi`` (driver mode, INDI over stdin/stdout) build their
  cameras through the same runtime code: for the same ``--simulator`` list and config file they
  give the same Alpaca device numbers, names and UniqueIDs, and the same INDI device names;
* the Alpaca and INDI front ends implement the runtime's one front-end interface, and adding and
  removing a camera through it works while they serve.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from support.servers import REPO, free_port, start_server

# A repeated model: the INDI names ("... 1") and the numbering order both come into play.
SIMS = "asi120mm-mini,asi294mc-pro,asi120mm-mini"


def _indi_names(raw: bytes) -> list[str]:
    """The INDI device names defined in ``raw``, in order of first appearance."""
    names: list[str] = []
    for name in re.findall(rb'<defTextVector device="([^"]+)" name="DRIVER_INFO"', raw):
        text = name.decode()
        if text not in names:
            names.append(text)
    return names


def _read_until(read: Callable[[], bytes], done: Callable[[bytes], bool], timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data) and time.monotonic() < deadline:
        data += read()
    return data


def _configured(port: int) -> list[tuple[int, str, str]]:
    value = requests.get(f"http://127.0.0.1:{port}/management/v1/configureddevices", timeout=5).json()["Value"]
    return sorted((d["DeviceNumber"], d["DeviceName"], d["UniqueID"]) for d in value)


def _serve_view(workdir: Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    indi_port = free_port()
    server = start_server(workdir, "--indi-port", str(indi_port), simulator=SIMS)
    try:
        devices = _configured(server.port)
        with socket.create_connection(("127.0.0.1", indi_port), timeout=5) as sock:
            sock.sendall(b"<getProperties version='1.7'/>\n")
            sock.settimeout(0.5)

            def read() -> bytes:
                try:
                    return sock.recv(1 << 16)
                except TimeoutError:
                    return b""

            raw = _read_until(read, lambda d: len(_indi_names(d)) >= 3, 15)
    finally:
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()
    return devices, _indi_names(raw)


def _driver_view(workdir: Path, config: Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, ZWO_ALPACA_SIM_LOCK_DIR=str(workdir / "sim-locks"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ZWO_ALPACA_PORT", None)
    log = open(workdir / "driver.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "zwo_runtime.indi_main", "--simulator", SIMS, "--port", str(port),
                             "--bind", "127.0.0.1", "--no-discovery", "--config", str(config)],
                            cwd=str(REPO), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=True)
    log.close()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"<getProperties version='1.7'/>\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdout.fileno(), False)

        def read() -> bytes:
            chunk = proc.stdout.read()  # type: ignore[union-attr]
            if not chunk:
                time.sleep(0.05)
            return chunk or b""

        raw = _read_until(read, lambda d: len(_indi_names(d)) >= 3, 20)
        deadline = time.monotonic() + 20
        while True:
            try:
                devices = _configured(port)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, (workdir / "driver.log").read_text()
                time.sleep(0.1)
        proc.stdin.close()  # indiserver went away: the driver shuts down by itself
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
    text = (workdir / "driver.log").read_text()
    assert "Traceback" not in text, text
    return devices, _indi_names(raw)


def test_serve_and_driver_mode_build_the_same_camera_set(tmp_path: Path) -> None:
    """Same --simulator list and config file: same numbers, names, UniqueIDs and INDI devices."""
    served, served_indi = _serve_view(tmp_path / "serve")
    driven, driven_indi = _driver_view(tmp_path / "driver", tmp_path / "serve" / "config.json")
    assert [n for n, _, _ in served] == [0, 1, 2]
    assert [name for _, name, _ in served] == ["ZWO ASI120MM Mini (simulated)", "ZWO ASI294MC Pro (simulated)",
                                               "ZWO ASI120MM Mini (simulated)"]
    assert driven == served
    assert sorted(served_indi) == ["ZWO CCD ASI120MM Mini", "ZWO CCD ASI120MM Mini 1", "ZWO CCD ASI294MC Pro"]
    assert driven_indi == served_indi


def test_front_ends_implement_the_runtime_interface() -> None:
    """AlpacaFrontEnd and IndiFrontEnd have every member of zwo_runtime.frontend.FrontEnd, alike."""
    from alpaca_server.frontend import AlpacaFrontEnd
    from indi_shim.frontend import IndiFrontEnd
    from zwo_runtime.frontend import FrontEnd

    members = [m for m in ("start", "stop", "add_camera", "remove_camera") if hasattr(FrontEnd, m)]
    assert members == ["start", "stop", "add_camera", "remove_camera"]
    for cls in (AlpacaFrontEnd, IndiFrontEnd):
        assert isinstance(cls.title, str) and cls.title
        for name in members:
            want, got = getattr(FrontEnd, name), getattr(cls, name)
            assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), (cls, name)
            assert list(inspect.signature(got).parameters) == list(inspect.signature(want).parameters), (cls, name)


def _raw_indi(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"<getProperties version='1.7'/>\n")
    sock.settimeout(0.2)
    return sock


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except TimeoutError:
        return b""


def test_front_ends_add_and_remove_cameras_while_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the interface alone: cameras added before and after start are served, a removed one
    is gone (Alpaca: not in configureddevices; INDI: delProperty to a watching client)."""
    from alpaca_server.frontend import AlpacaFrontEnd
    from driver import simulator
    from indi_shim.frontend import IndiFrontEnd
    from zwo_runtime.runtime import Runtime

    monkeypatch.setenv("ZWO_ALPACA_SIM_LOCK_DIR", str(tmp_path / "locks"))
    runtime = Runtime.open(simulator="asi120mm-mini,asi294mc-pro", sdk_path=None,
                           config_path=str(tmp_path / "config.json"))
    first, second = runtime.cameras.snapshot()
    http_port, indi_port = free_port(), free_port()
    sdk = runtime.cameras.sdk
    alpaca = AlpacaFrontEnd(bind="127.0.0.1", port=http_port, config=runtime.config, sdk_pool=runtime.sdk_pool,
                            codec_pool=runtime.codec_pool, version=runtime.version, sdk_description=sdk.description,
                            simulated=True, discovery_port=None)
    indi = IndiFrontEnd(host="127.0.0.1", port=indi_port)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        for fe in (alpaca, indi):
            shown = fe.add_camera(first.number, first.cam, key=first.key, unique_id=first.unique_id)
            assert str(first.number) in shown or "ZWO CCD ASI120MM Mini" in shown, shown
            await fe.start()
        assert [n for n, _, _ in await loop.run_in_executor(None, _configured, http_port)] == [0]
        sock = _raw_indi(indi_port)
        try:
            raw = await loop.run_in_executor(None, _read_until, lambda: _recv(sock),
                                             lambda d: len(_indi_names(d)) >= 1, 10)
            assert _indi_names(raw) == ["ZWO CCD ASI120MM Mini"]
            for fe in (alpaca, indi):  # plugged in later: from a worker thread, as the hotplug watcher does
                await loop.run_in_executor(None, functools.partial(fe.add_camera, second.number, second.cam,
                                                                   key=second.key, unique_id=second.unique_id))
            assert [n for n, _, _ in await loop.run_in_executor(None, _configured, http_port)] == [0, 1]
            raw = await loop.run_in_executor(None, _read_until, lambda: _recv(sock),
                                             lambda d: b"ZWO CCD ASI294MC Pro" in d, 10)
            assert b'device="ZWO CCD ASI294MC Pro"' in raw
            for fe in (alpaca, indi):
                await loop.run_in_executor(None, fe.remove_camera, second.number)
            assert [n for n, _, _ in await loop.run_in_executor(None, _configured, http_port)] == [0]
            raw = await loop.run_in_executor(None, _read_until, lambda: _recv(sock),
                                             lambda d: b"<delProperty" in d, 10)
            assert re.search(rb'<delProperty device="ZWO CCD ASI294MC Pro"(?! name=)', raw), raw[-2000:]
        finally:
            sock.close()
            for fe in (indi, alpaca):
                await fe.stop(1.0)

    try:
        asyncio.run(scenario())
    finally:
        runtime.close()
        simulator.uninstall()
