"""The Alpaca protocol rules, checked with plain HTTP (requests and http.client).

URL case rules, HTTP status codes, parameter-name casing (GET vs PUT), transaction ids, strict
value parsing, the JSON envelope, the management API, setup pages, and process behaviour
(signals, SO_REUSEADDR, stable UniqueIDs). No input may produce a 5xx.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
import uuid
from typing import Any

import pytest
import requests

from support.servers import ServerProcess, alpaca_get, alpaca_put, reset_camera, start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def srv(alpaca_server: ServerProcess) -> ServerProcess:
    """The shared server, camera 1 connected and idle."""
    reset_camera(alpaca_server, 1)
    return alpaca_server


def raw_request(server: ServerProcess, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client, exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    conn.close()
    return out


# ------------------------------------------------------------------------------ URLs and methods


@pytest.mark.parametrize(
    "path,status",
    [
        ("/api/v1/Camera/1/name", 404),  # paths are case-sensitive, lower case
        ("/api/v1/CAMERA/1/name", 404),
        ("/api/v1/camera/1/Name", 404),
        ("/api/V1/camera/1/name", 404),
        ("/api/v2/camera/1/name", 404),
        ("/apx/v1/camera/1/name", 404),
        ("/api/v1/camera/1/descrip", 404),
        ("/api/v1/camera/1", 404),
        ("/api/v1/baddevicetype/0/description", 400),
        ("/api/v1/telescope/0/description", 400),  # a valid type this server does not serve
        ("/api/v1/camera/99999/description", 400),
        ("/api/v1/camera/2/description", 400),
        ("/api/v1/camera/-1/description", 400),
        ("/api/v1/camera/A/description", 400),
        ("/api/v1/camera/4294967296/description", 400),
    ],
)
def test_bad_urls_are_4xx(srv: ServerProcess, path: str, status: int) -> None:
    code, headers, body = raw_request(srv, "GET", path + "?ClientID=1&ClientTransactionID=2")
    assert code == status, body
    assert headers["content-type"].startswith("text/plain")
    assert body  # a reason, never empty


@pytest.mark.parametrize(
    "method,member",
    [("POST", "connected"), ("DELETE", "connected"), ("PUT", "name"), ("GET", "startexposure"),
     ("GET", "abortexposure"), ("PUT", "imagearray"), ("PATCH", "binx")],
)
def test_wrong_method_is_405(srv: ServerProcess, method: str, member: str) -> None:
    code, headers, _ = raw_request(srv, method, f"/api/v1/camera/1/{member}", body="Connected=true")
    assert code == 405
    assert "allow" in headers


def test_good_request_shape(srv: ServerProcess) -> None:
    code, headers, body = raw_request(srv, "GET", "/api/v1/camera/1/name?ClientID=9&ClientTransactionID=123")
    assert code == 200
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    assert set(data) == {"Value", "ClientTransactionID", "ServerTransactionID", "ErrorNumber", "ErrorMessage"}
    assert data["ClientTransactionID"] == 123 and data["ErrorNumber"] == 0 and data["ErrorMessage"] == ""
    assert data["ServerTransactionID"] >= 1
    # A method returns no Value
    data = alpaca_put(srv, 1, "abortexposure", ClientTransactionID=5)
    assert "Value" not in data and data["ClientTransactionID"] == 5


# ------------------------------------------------------------------------------ parameter casing


def test_get_parameter_names_are_case_insensitive(srv: ServerProcess) -> None:
    for name in ("ClientTransactionID", "clienttransactionid", "CLIENTTRANSACTIONID", "cLiEnTtRaNsAcTiOnId"):
        r = requests.get(srv.api(1, "interfaceversion"), params={name: 4321, "clientid": 1}, timeout=5)
        assert r.status_code == 200
        assert r.json()["ClientTransactionID"] == 4321
    r = requests.get(srv.api(1, "interfaceversion"), params={"ExtraParameter": "ExtraValue"}, timeout=5)
    assert r.status_code == 200 and r.json()["Value"] == 4


def test_put_misscased_ids_are_ignored(srv: ServerProcess) -> None:
    r = requests.put(srv.api(1, "connected"), data={"Connected": "true", "clienttransactionid": "77", "clientid": "x"},
                     timeout=5)
    assert r.status_code == 200
    assert r.json()["ClientTransactionID"] == 0
    r = requests.put(srv.api(1, "connected"), data={"Connected": "true", "ClientTransactionID": "77"}, timeout=5)
    assert r.json()["ClientTransactionID"] == 77


@pytest.mark.parametrize(
    "member,params",
    [
        ("connected", {"connected": "true"}),
        ("connected", {"CONNECTED": "true"}),
        ("binx", {"binx": "1"}),
        ("startexposure", {"duration": "0.1", "Light": "true"}),
        ("startexposure", {"Duration": "0.1", "light": "true"}),
        ("pulseguide", {"Direction": "0", "duration": "10"}),
        ("gain", {"GAIN": "10"}),
    ],
)
def test_put_misscased_operational_parameter_is_400(srv: ServerProcess, member: str, params: dict) -> None:
    r = requests.put(srv.api(1, member), data=params, timeout=5)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "mis-cased" in r.text or "missing" in r.text


def test_missing_parameter_is_400(srv: ServerProcess) -> None:
    for member, params in (("connected", {}), ("startexposure", {"Duration": "1"}), ("binx", {"BinY": "1"})):
        r = requests.put(srv.api(1, member), data=params, timeout=5)
        assert r.status_code == 400, member
        assert "missing" in r.text


def test_extra_parameters_and_reordering_are_fine(srv: ServerProcess) -> None:
    r = requests.put(srv.api(1, "connected"),
                     data=[("ClientTransactionID", "3"), ("Connected", "True"), ("ClientID", "4"), ("Extra", "x")],
                     timeout=5)
    assert r.status_code == 200 and r.json()["ErrorNumber"] == 0


# ------------------------------------------------------------------------------ transaction ids


def test_transaction_ids(srv: ServerProcess) -> None:
    r = requests.get(srv.api(1, "name"), timeout=5)
    assert r.json()["ClientTransactionID"] == 0
    ids = [alpaca_get(srv, 1, "camerastate", ClientTransactionID=i)["ServerTransactionID"] for i in range(1, 6)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    top = alpaca_get(srv, 1, "name", ClientTransactionID=4294967295)
    assert top["ClientTransactionID"] == 4294967295


@pytest.mark.parametrize("value", ["", "   ", "-1", "-12345", "qweqwe", "1.5", "4294967296", "0x10"])
@pytest.mark.parametrize("name", ["ClientID", "ClientTransactionID"])
def test_bad_id_values_are_400(srv: ServerProcess, name: str, value: str) -> None:
    r = requests.get(srv.api(1, "name"), params={name: value}, timeout=5)
    assert r.status_code == 400
    r = requests.put(srv.api(1, "connected"), data={name: value, "Connected": "true"}, timeout=5)
    assert r.status_code == 400


def test_server_transaction_ids_unique_under_concurrency(srv: ServerProcess) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        s = requests.Session()
        got = [s.get(srv.api(1, "camerastate"), timeout=10).json()["ServerTransactionID"] for _ in range(40)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 320 and len(set(seen)) == 320
    assert min(seen) >= 1


# ------------------------------------------------------------------------------ value parsing


@pytest.mark.parametrize("value", ["true", "false", "True", "FALSE", "tRuE"])
def test_booleans_any_case(srv: ServerProcess, value: str) -> None:
    r = requests.put(srv.api(1, "connected"), data={"Connected": value}, timeout=5)
    assert r.status_code == 200 and r.json()["ErrorNumber"] == 0
    assert alpaca_get(srv, 1, "connected")["Value"] is (value.lower() == "true")
    alpaca_put(srv, 1, "connected", Connected=True)


@pytest.mark.parametrize("value", ["", "1", "0", "yes", "on", "123456", "asdqwe", "true ", " true"])
def test_bad_booleans_are_400(srv: ServerProcess, value: str) -> None:
    r = requests.put(srv.api(1, "connected"), data={"Connected": value}, timeout=5)
    assert r.status_code == 400
    assert "boolean" in r.text


@pytest.mark.parametrize("value", ["1,5", "abc", "NaN", "inf", "-Infinity", "", "1.2.3", "0x1p3", "1e999"])
def test_bad_numbers_are_400(srv: ServerProcess, value: str) -> None:
    r = requests.put(srv.api(1, "startexposure"), data={"Duration": value, "Light": "true"}, timeout=5)
    assert r.status_code == 400, value
    assert alpaca_get(srv, 1, "camerastate")["Value"] == 0


@pytest.mark.parametrize("value", ["1.0", "1.5", "1e2", "2147483648", "-2147483649", "", " 1", "one"])
def test_bad_integers_are_400(srv: ServerProcess, value: str) -> None:
    r = requests.put(srv.api(1, "gain"), data={"Gain": value}, timeout=5)
    assert r.status_code == 400, value


@pytest.mark.parametrize("value", ["0.001", "1e-3", ".5", "0", "1.", "+0.25"])
def test_good_numbers(srv: ServerProcess, value: str) -> None:
    data = alpaca_put(srv, 1, "startexposure", Duration=value, Light=True)
    assert data["ErrorNumber"] == 0
    alpaca_put(srv, 1, "abortexposure")


def test_ascom_errors_are_200_with_number_and_range(srv: ServerProcess) -> None:
    data = alpaca_put(srv, 1, "gain", Gain=1000)
    assert data["ErrorNumber"] == 0x401
    assert "0 to 100" in data["ErrorMessage"]
    data = alpaca_get(srv, 1, "cooleron")
    assert data["ErrorNumber"] == 0x400 and data["ErrorMessage"]
    data = alpaca_put(srv, 1, "action", Action="nope", Parameters="")
    assert data["ErrorNumber"] == 0x40C
    alpaca_put(srv, 1, "connected", Connected=False)
    data = alpaca_get(srv, 1, "cameraxsize")
    assert data["ErrorNumber"] == 0x407 and "Value" not in data
    # A request that cannot be understood is 400 even when disconnected.
    r = requests.put(srv.api(1, "binx"), data={"binx": "1"}, timeout=5)
    assert r.status_code == 400
    alpaca_put(srv, 1, "connected", Connected=True)


def test_never_a_server_error(srv: ServerProcess) -> None:
    """Garbage of every kind at every member: always 2xx/4xx, never 5xx, never a traceback."""
    from alpaca_server.camera_api import CameraDevice

    garbage = ["", "-", "%00", "\u00e9", "9" * 40, "true", "-1", "0", "1e308", "null", "[1]", "' OR 1=1"]
    names = ["BinX", "BinY", "NumX", "NumY", "StartX", "StartY", "Gain", "Offset", "ReadoutMode", "FastReadout",
             "CoolerOn", "SetCCDTemperature", "SubExposureDuration", "Duration", "Light", "Direction",
             "Command", "Raw"]
    session = requests.Session()
    for member, methods in sorted(CameraDevice.MEMBERS.items()):
        if member in ("connected", "connect", "disconnect", "action"):
            continue
        for method in methods:
            for g in garbage:
                params = {"ClientTransactionID": "1", **{n: g for n in names}}
                if method == "GET":
                    r = session.get(srv.api(1, member), params=params, timeout=10)
                else:
                    r = session.put(srv.api(1, member), data=params, timeout=10)
                assert r.status_code < 500, (member, method, g, r.text)
                assert "Traceback" not in r.text
                if r.status_code == 200 and "json" in r.headers.get("Content-Type", ""):
                    body = r.json()
                    assert body["ErrorNumber"] == 0 or 0x400 <= body["ErrorNumber"] <= 0xFFF
    for body in (b"\xff\xfe\x00", b"=" * 5000, b"a=1&" * 2000):
        code, _, _ = raw_request(srv, "PUT", "/api/v1/camera/1/binx", body=body.decode("latin-1"))
        assert code < 500
    alpaca_put(srv, 1, "abortexposure")
    reset_camera(srv, 1)


# ------------------------------------------------------------------------------ management and setup


def test_management_api(srv: ServerProcess) -> None:
    v = alpaca_get_url(srv, "/management/apiversions", ClientTransactionID=8)
    assert v["Value"] == [1] and v["ClientTransactionID"] == 8
    d = alpaca_get_url(srv, "/management/v1/description")["Value"]
    assert {"ServerName", "Manufacturer", "ManufacturerVersion", "Location"} <= set(d)
    devices = alpaca_get_url(srv, "/management/v1/configureddevices")["Value"]
    assert [(x["DeviceType"], x["DeviceNumber"]) for x in devices] == [("Camera", 0), ("Camera", 1)]
    assert "ASI294MC Pro" in devices[0]["DeviceName"] and "ASI120MM Mini" in devices[1]["DeviceName"]
    for x in devices:
        uuid.UUID(x["UniqueID"])
    assert len({x["UniqueID"] for x in devices}) == 2
    r = requests.get(srv.url("/management/apiversions"), params={"ClientTransactionID": "x"}, timeout=5)
    assert r.status_code == 400
    assert requests.get(srv.url("/management/V1/description"), timeout=5).status_code == 404
    assert requests.put(srv.url("/management/apiversions"), timeout=5).status_code == 405


def alpaca_get_url(server: ServerProcess, path: str, **params: Any) -> dict:
    r = requests.get(server.url(path), params=params, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    return r.json()


def _csrf(server: ServerProcess, path: str = "/setup") -> str:
    """The CSRF token a setup page carries (its form posts must send it back)."""
    page = requests.get(server.url(path), timeout=5).text
    match = re.search(r"name='csrf-token' content='([^']+)'", page)
    assert match is not None, page[:200]
    return match.group(1)


def test_setup_pages(srv: ServerProcess) -> None:
    r = requests.get(srv.url("/setup"), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "ASI294MC Pro" in r.text and "ASI120MM Mini" in r.text
    r = requests.get(srv.url("/setup/v1/camera/1/setup"), timeout=5)
    assert r.status_code == 200 and "ASI120MM Mini" in r.text and "gain" in r.text
    assert requests.get(srv.url("/setup/v1/camera/7/setup"), timeout=5).status_code == 403
    assert requests.get(srv.url("/setup/v1/telescope/0/setup"), timeout=5).status_code == 403
    assert requests.get(srv.url("/setup/v1/camera/x/setup"), timeout=5).status_code == 403
    r = requests.post(srv.url("/setup/v1/camera/1/setup"), data={"gain": "abc", "csrf": _csrf(srv)}, timeout=5)
    assert r.status_code == 400 and "gain" in r.text


def test_setup_defaults_persist_and_apply(tmp_path) -> None:
    work = tmp_path / "persist"
    server = start_server(work)
    try:
        r = requests.post(server.url("/setup/v1/camera/1/setup"),
                          data={"gain": "77", "offset": "12", "readout_mode": "RAW8", "bin": "2",
                                "csrf": _csrf(server)}, timeout=5)
        assert r.status_code == 200  # after the redirect
        assert "Saved" in r.text
        stored = json.loads(server.config_path.read_text())
        entries = [e for e in stored["cameras"].values() if e.get("defaults", {}).get("gain") == 77]
        assert len(entries) == 1 and entries[0]["defaults"]["readout_mode"] == "RAW8"
        alpaca_put(server, 1, "connected", Connected=True)
        assert alpaca_get(server, 1, "gain")["Value"] == 77
        r = requests.post(server.url("/setup"), data={"location": "Roof", "csrf": _csrf(server)}, timeout=5)
        assert r.status_code == 200
        uids = [d["UniqueID"] for d in alpaca_get_url(server, "/management/v1/configureddevices")["Value"]]
    finally:
        assert server.stop() == 0
    again = start_server(work, port=server.port)  # same port at once: SO_REUSEADDR
    try:
        assert [d["UniqueID"] for d in alpaca_get_url(again, "/management/v1/configureddevices")["Value"]] == uids
        assert alpaca_get_url(again, "/management/v1/description")["Value"]["Location"] == "Roof"
        alpaca_put(again, 1, "connected", Connected=True)
        assert alpaca_get(again, 1, "gain")["Value"] == 77
        assert alpaca_get(again, 1, "readoutmode")["Value"] == 1
        assert alpaca_get(again, 1, "binx")["Value"] == 2
    finally:
        again.stop()


# ------------------------------------------------------------------------------ process behaviour


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_exposure_exits_cleanly(server_factory, sig: int) -> None:
    server = server_factory()
    alpaca_put(server, 0, "connected", Connected=True)
    alpaca_put(server, 1, "connected", Connected=True)
    alpaca_put(server, 0, "startexposure", Duration=30, Light=True)
    time.sleep(0.2)
    t0 = time.monotonic()
    server.proc.send_signal(sig)
    code = server.proc.wait(5)
    elapsed = time.monotonic() - t0
    assert code == 0, server.log_text()
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert "Traceback" not in server.log_text()
    # The port can be reused at once.
    again = server_factory(port=server.port)
    assert alpaca_get(again, 0, "name")["ErrorNumber"] == 0


def test_sigterm_to_process_group(server_factory) -> None:
    server = server_factory()
    alpaca_put(server, 1, "connected", Connected=True)
    alpaca_put(server, 1, "startexposure", Duration=30, Light=True)
    t0 = time.monotonic()
    os.killpg(os.getpgid(server.proc.pid), signal.SIGTERM)
    assert server.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0


def test_fallback_simulated_camera_when_no_sdk(server_factory, tmp_path) -> None:
    """No ZWO SDK installed at all and no --simulator: one simulated ASI294MC Pro, said so in the log
    and the name. (pyzwoasi's bundled SDK is installed here: an empty package of that name, first
    on the path, hides it, as on a machine without it.)"""
    from driver import sdk
    from support.servers import REPO

    if sdk.candidate_paths()[0][1] is not None:
        pytest.skip("this machine has ZWO's SDK on the system library path")
    stub = tmp_path / "no-pyzwoasi"
    (stub / "pyzwoasi").mkdir(parents=True)
    (stub / "pyzwoasi" / "__init__.py").write_text("")
    server = server_factory(simulator=None, env={"ZWO_ASI_LIB": "", "LD_LIBRARY_PATH": "",
                                                 "PYTHONPATH": os.pathsep.join([str(stub), str(REPO)])})
    assert "no ZWO SDK installed" in server.log_text()
    name = alpaca_get(server, 0, "name")["Value"]
    assert "ASI294MC Pro" in name and "simulated" in name
    assert "simulated: no ZWO SDK installed" in alpaca_get(server, 0, "description")["Value"]
    assert re.search(r"simulat", server.log_text(), re.I)
    r = requests.get(server.api(1, "name"), timeout=5)
    assert r.status_code == 400  # only one device


def test_discovery_is_wired_to_the_http_port(tmp_path) -> None:
    """serve starts the discovery responder (bound to loopback here) and it names the HTTP port."""
    import socket

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    disc_port = udp.getsockname()[1]
    udp.close()
    server = start_server(tmp_path / "disc", "--discovery-port", str(disc_port), simulator="asi120mm-mini",
                          discovery=True)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.5)
        reply = None
        deadline = time.monotonic() + 10
        while reply is None and time.monotonic() < deadline:
            sock.sendto(b"alpacadiscovery1", ("127.0.0.1", disc_port))
            try:
                reply = sock.recvfrom(1024)[0]
            except OSError:
                pass
        sock.close()
        assert reply is not None, "no discovery reply"
        assert json.loads(reply) == {"AlpacaPort": server.port}
    finally:
        assert server.stop() == 0


def test_indi_server_is_wired_to_the_same_cameras(tmp_path) -> None:
    """serve starts the INDI server on --indi-port, offering the same cameras."""
    import socket

    pytest.importorskip("indi_shim.server")
    from support.servers import free_port

    indi_port = free_port()
    server = start_server(tmp_path / "indi", "--indi-port", str(indi_port))
    try:
        with socket.create_connection(("127.0.0.1", indi_port), timeout=5) as sock:
            sock.sendall(b'<getProperties version="1.7"/>\n')
            data = b""
            deadline = time.monotonic() + 5
            while b"ASI120MM Mini" not in data and time.monotonic() < deadline:
                try:
                    data += sock.recv(65536)
                except TimeoutError:
                    break
        assert b"ASI294MC Pro" in data and b"ASI120MM Mini" in data
    finally:
        assert server.stop() == 0
