"""HTTP Basic authentication: hashing, the ``passwd`` command, what is covered, alpyca with credentials.

A module-scoped server gets its users from ``zwo-alpaca passwd`` (run as a real subprocess with
``--password-stdin``), so the stored format, the CLI and the server's reading of it are tested together.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from alpaca_server import security
from support.servers import REPO, ServerProcess, start_server

USER, PASSWORD = "astro", "M31 andromeda!"


def passwd(config: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "zwo_runtime", "passwd", "--config", str(config), *args]
    return subprocess.run(cmd, input=(password + "\n") if password is not None else "", capture_output=True,
                          text=True, timeout=30, env=env, cwd=str(REPO))


# ------------------------------------------------------------------------------------ units


def test_hash_is_salted_scrypt_and_verifies() -> None:
    a, b = security.hash_password(PASSWORD), security.hash_password(PASSWORD)
    assert a.startswith("scrypt$16384$8$1$") and a != b  # a fresh salt every time
    assert PASSWORD not in a
    assert security.verify_password(PASSWORD, a) and security.verify_password(PASSWORD, b)
    assert not security.verify_password(PASSWORD + "x", a)
    assert not security.verify_password("", a)
    for broken in ("", "plain", "scrypt$1$2$3$!!$!!", "scrypt$99999999$8$1$AAAA$AAAA", "md5$x$y"):
        assert not security.verify_password(PASSWORD, broken)
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000, dklen=32)
    stored = f"pbkdf2_sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert security.verify_password("pw", stored) and not security.verify_password("pW", stored)


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    stored = security.hash_password("secret")
    assert security.verify_password("secret", stored) and not security.verify_password("secreT", stored)
    assert len(calls) == 2  # the digests are compared with hmac.compare_digest, not ==
    sec = security.Security(secret=b"k" * 32)
    token = sec.csrf_token("u")
    calls.clear()
    assert sec.csrf_valid(token, "u") and calls


def test_unknown_user_costs_a_hash_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user name takes as long to refuse as a wrong password (no user enumeration)."""

    class Cfg:
        path = None

        def server_value(self, name: str, default: object = None) -> object:
            return {"users": {"astro": security.hash_password("right")}}

    sec = security.Security(Cfg())
    derived: list[str] = []
    real = security._derive
    def recording(pw: str, stored: str) -> tuple[bytes, bytes] | None:
        derived.append(stored)
        return real(pw, stored)

    monkeypatch.setattr(security, "_derive", recording)
    assert sec.check_slow("astro", "wrong") is False
    assert sec.check_slow("nobody", "wrong") is False
    assert len(derived) == 2 and all(s.startswith("scrypt$") for s in derived)
    assert sec.check_slow("astro", "right") is True
    assert sec.check_cached("astro", "right") is True  # remembered: no scrypt on the next request
    assert sec.check_cached("astro", "wrong") is None


def test_parse_basic_header() -> None:
    enc = base64.b64encode(b"astro:pa:ss").decode()
    assert security.parse_basic(f"Basic {enc}") == ("astro", "pa:ss")
    assert security.parse_basic(f"basic   {enc}") == ("astro", "pa:ss")
    for bad in (None, "", "Bearer x", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
        assert security.parse_basic(bad) is None
    assert security.valid_username("astro") is None
    for bad in ("", "a:b", "a b", "x" * 65, "tab\t"):
        assert security.valid_username(bad) is not None


# ------------------------------------------------------------------------------------ passwd command


def test_passwd_command_stores_only_a_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    from zwo_runtime import cli

    cfg = tmp_path / "config.json"

    def run(*args: str, password: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        code = cli.main(["passwd", "--config", str(cfg), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    r = passwd(cfg, "--list")  # once as a real command: `zwo-alpaca passwd` is registered in the CLI
    assert r.returncode == 0 and "OFF" in r.stdout
    code, out, err = run(USER, "--password-stdin", password=PASSWORD)
    assert code == 0, err
    assert "authentication is ON" in out
    text = cfg.read_text()
    assert PASSWORD not in text and "andromeda" not in text
    stored = json.loads(text)["server"]["auth"]["users"][USER]
    assert stored.startswith("scrypt$") and security.verify_password(PASSWORD, stored)
    assert "shorter than" in run("guest", "--password-stdin", password="abc")[2]  # warned, saved
    assert run("bad:name", "--password-stdin", password="x" * 10)[0] == 2
    assert run("empty", "--password-stdin", password="")[0] == 1
    code, out, _ = run("--list")
    assert "ON" in out and "astro" in out and "guest" in out
    assert run("guest", "--delete")[0] == 0
    assert run("guest", "--delete")[0] == 1
    assert list(json.loads(cfg.read_text())["server"]["auth"]["users"]) == [USER]


# ------------------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("auth")
    r = passwd(work / "config.json", USER, "--password-stdin", password=PASSWORD)
    assert r.returncode == 0, r.stderr
    srv = start_server(work)
    yield srv
    srv.stop()


AUTH = (USER, PASSWORD)


def test_api_and_setup_need_credentials(server: ServerProcess) -> None:
    for path in ("/api/v1/camera/0/name", "/api/v1/camera/0/connected", "/setup", "/setup/v1/camera/0/setup",
                 "/setup/v1/camera/0/status.json", "/setup/static/style.css", "/", "/api/v1/camera/9/name"):
        r = requests.get(server.url(path), timeout=5, allow_redirects=False)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="zwo-alpaca"'), path
        assert requests.get(server.url(path), auth=(USER, "wrong"), timeout=5,
                            allow_redirects=False).status_code == 401, path
        assert requests.get(server.url(path), auth=("nobody", PASSWORD), timeout=5,
                            allow_redirects=False).status_code == 401, path
        r = requests.get(server.url(path), auth=AUTH, timeout=5, allow_redirects=False)
        assert r.status_code in (200, 302, 400), path
    # PUTs too (the Alpaca API's state changes), before any parameter is looked at.
    r = requests.put(server.api(0, "connected"), data={"Connected": "true"}, timeout=5)
    assert r.status_code == 401
    r = requests.put(server.api(0, "connected"), data={"Connected": "false"}, auth=AUTH, timeout=5)
    assert r.status_code == 200 and r.json()["ErrorNumber"] == 0
    # A malformed Authorization header is a plain 401, not an error page.
    r = requests.get(server.url("/api/v1/camera/0/name"), headers={"Authorization": "Basic %%%"}, timeout=5)
    assert r.status_code == 401


def test_management_api_stays_open(server: ServerProcess) -> None:
    """Documented choice: clients must still find the server and its devices (ASCOM discovery flow)."""
    for path in ("/management/apiversions", "/management/v1/description", "/management/v1/configureddevices"):
        r = requests.get(server.url(path), timeout=5)
        assert r.status_code == 200 and r.json()["ErrorNumber"] == 0, path


def test_polling_with_credentials_is_cheap(server: ServerProcess) -> None:
    """A verified password is remembered (HMAC-keyed), so polling does not pay for scrypt each time."""
    session = requests.Session()
    session.auth = AUTH
    assert session.get(server.api(0, "name"), timeout=5).status_code == 200
    t0 = time.monotonic()
    for _ in range(40):
        assert session.get(server.api(0, "camerastate"), timeout=5).status_code == 200
    per_request = (time.monotonic() - t0) / 40
    assert per_request < 0.02, f"{per_request * 1000:.1f} ms per authenticated request"


def test_alpyca_with_credentials(server: ServerProcess) -> None:
    """alpyca has no auth option, but its requests session takes user:password from the URL."""
    from alpaca.camera import Camera
    from alpaca.exceptions import DriverException  # noqa: F401 - imported to prove the package is whole

    cam = Camera(f"{USER}:{quote(PASSWORD, safe='')}@{server.address}", 0)
    assert "ASI294MC Pro" in cam.Name
    cam.Connected = True
    try:
        assert cam.Connected is True
        cam.StartExposure(0.05, True)
        deadline = time.monotonic() + 10
        while not cam.ImageReady and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.ImageReady
        assert len(cam.ImageArray) == cam.NumX
    finally:
        cam.Connected = False
    anonymous = Camera(server.address, 0)
    with pytest.raises(Exception):  # noqa: B017 - alpyca raises requests' HTTPError for the 401
        _ = anonymous.Name


def test_passwd_while_running_is_picked_up(tmp_path: Path) -> None:
    """Changing or removing users with the CLI takes effect without a restart, and the server's own
    later saves of the config (setup page) keep the change."""
    work = tmp_path / "live"
    assert passwd(work / "config.json", USER, "--password-stdin", password=PASSWORD).returncode == 0
    srv = start_server(work)
    try:
        url = srv.api(0, "name")
        assert requests.get(url, auth=AUTH, timeout=5).status_code == 200
        assert passwd(srv.config_path, USER, "--password-stdin", password="new password 2").returncode == 0

        def status(auth: tuple[str, str] | None) -> int:
            return requests.get(url, auth=auth, timeout=5).status_code

        deadline = time.monotonic() + 5
        while status(AUTH) != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(AUTH) == 401 and status((USER, "new password 2")) == 200
        # A save from the setup page must not bring the old hash back.
        s = requests.Session()
        s.auth = (USER, "new password 2")
        token = s.get(srv.url("/setup/v1/camera/0/status.json"), timeout=5).json()["csrf"]
        r = s.post(srv.url("/setup/v1/camera/0/action/schedule"), json={"window": ""},
                   headers={"X-CSRF-Token": token}, timeout=5)
        assert r.json()["ok"] is True
        stored = json.loads(srv.config_path.read_text())["server"]["auth"]["users"][USER]
        assert security.verify_password("new password 2", stored)
        assert passwd(srv.config_path, USER, "--delete").returncode == 0
        deadline = time.monotonic() + 5
        while status(None) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(None) == 200  # the last user removed: authentication off
    finally:
        srv.stop()
    assert "authentication users reloaded" in srv.log_text()
