"""Cross-site request protection of the setup pages' own posts (forms and JSON actions).

A post needs the page's CSRF token (made from a per-process secret) and must not come from another
origin. The Alpaca API is deliberately not covered (ASCOM clients send no tokens; see docs/security.md).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from alpaca_server import security
from support.servers import ServerProcess, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("csrf"))
    yield srv
    srv.stop()


def token_of(server: ServerProcess, path: str = "/setup", **kw: Any) -> str:
    page = requests.get(server.url(path), timeout=5, **kw).text
    match = re.search(r"name='csrf-token' content='([^']+)'", page)
    assert match is not None, page[:200]
    return match.group(1)


def location(server: ServerProcess) -> str:
    r = requests.get(server.url("/management/v1/description"), timeout=5)
    return r.json()["Value"]["Location"]


def test_token_unit() -> None:
    sec = security.Security(secret=b"s" * 32)
    now = time.time()
    token = sec.csrf_token("astro", now=now)
    assert sec.csrf_valid(token, "astro", now=now)
    assert sec.csrf_valid(token, "astro", now=now + security.CSRF_TTL_S - 5)
    assert not sec.csrf_valid(token, "astro", now=now + security.CSRF_TTL_S + 5)  # expired
    assert not sec.csrf_valid(token, "other", now=now)  # bound to the user
    assert not security.Security(secret=b"t" * 32).csrf_valid(token, "astro", now=now)  # another process
    issued, mac = token.split(".")
    assert not sec.csrf_valid(f"{issued}.{mac[:-1]}A" if mac[-1] != "A" else f"{issued}.{mac[:-1]}B", "astro", now=now)
    assert not sec.csrf_valid(f"{int(issued, 16) + 1:x}.{mac}", "astro", now=now)
    for junk in (None, "", ".", "zz.zz", "x" * 500, "1.é"):
        assert not sec.csrf_valid(junk, "astro", now=now)


def test_same_origin_rules() -> None:
    assert security.same_origin("http://pi.local:11111", "pi.local:11111")
    assert security.same_origin("http://PI.local:11111/setup", "pi.local:11111")
    assert security.same_origin("http://pi.local", "pi.local:80")
    assert security.same_origin("https://pi.example", "pi.example")  # behind a TLS proxy
    assert not security.same_origin("http://evil.example:11111", "pi.local:11111")
    assert not security.same_origin("http://pi.local:8080", "pi.local:11111")
    assert not security.same_origin("null", "pi.local:11111")
    assert not security.same_origin("", "pi.local:11111")


def test_form_posts_need_token_and_same_origin(server: ServerProcess) -> None:
    before = location(server)
    url = server.url("/setup")
    own = f"http://{server.address}"
    refused = [
        ({"location": "pwned"}, {}),                                           # no token
        ({"location": "pwned", "csrf": "1.bogus"}, {}),                        # wrong token
        ({"location": "pwned", "csrf": token_of(server)}, {"Origin": "http://evil.example"}),
        ({"location": "pwned", "csrf": token_of(server)}, {"Origin": "null"}),
        ({"location": "pwned", "csrf": token_of(server)}, {"Referer": "http://evil.example/page"}),
        ({"location": "pwned", "csrf": token_of(server)}, {"Origin": f"http://127.0.0.1:{server.port + 1}"}),
    ]
    for data, headers in refused:
        r = requests.post(url, data=data, headers=headers, timeout=5, allow_redirects=False)
        assert r.status_code == 403, (data, headers)
        assert "Traceback" not in r.text
    assert location(server) == before
    # The page's own post: same origin (as a browser sends it) with the token from the page.
    r = requests.post(url, data={"location": "Backyard", "csrf": token_of(server)},
                      headers={"Origin": own, "Referer": own + "/setup"}, timeout=5, allow_redirects=False)
    assert r.status_code == 303
    assert location(server) == "Backyard"
    # The legacy per-camera defaults form is covered the same way.
    r = requests.post(server.url("/setup/v1/camera/1/setup"), data={"gain": "5"}, timeout=5)
    assert r.status_code == 403
    assert "refused POST /setup" in server.log_text()


def test_json_actions_need_token(server: ServerProcess) -> None:
    url = server.url("/setup/v1/camera/1/action/connect")
    assert requests.post(url, json={}, timeout=5).status_code == 403
    assert requests.post(url, json={}, headers={"X-CSRF-Token": "abc.def"}, timeout=5).status_code == 403
    token = requests.get(server.url("/setup/v1/camera/1/status.json"), timeout=5).json()["csrf"]
    r = requests.post(url, json={}, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}, timeout=5)
    assert r.status_code == 403
    # A "simple" cross-site form (text/plain or urlencoded) cannot carry the header and has no field.
    r = requests.post(url, data="{}", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 403
    st = requests.get(server.url("/setup/v1/camera/1/status.json"), timeout=5).json()["status"]
    assert st["connected"] is False
    r = requests.post(url, json={}, headers={"X-CSRF-Token": token, "Origin": f"http://{server.address}"}, timeout=5)
    assert r.status_code == 200 and r.json()["ok"] is True
    requests.post(server.url("/setup/v1/camera/1/action/disconnect"), json={}, headers={"X-CSRF-Token": token},
                  timeout=5)


def test_token_from_another_server_process_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    other = start_server(tmp_path / "other")
    try:
        foreign = token_of(other)
    finally:
        other.stop()
    r = requests.post(server.url("/setup"), data={"location": "x", "csrf": foreign}, timeout=5, allow_redirects=False)
    assert r.status_code == 403


def test_alpaca_api_is_not_token_protected(server: ServerProcess) -> None:
    """ASCOM clients send no token: the API's PUTs work as before (protected by Basic auth/--bind)."""
    r = requests.put(server.api(1, "connected"), data={"Connected": "false"}, timeout=5)
    assert r.status_code == 200 and r.json()["ErrorNumber"] == 0
    # And a browser cannot send them cross-site without a CORS pre-flight, which is never granted.
    r = requests.options(server.api(1, "connected"), headers={"Origin": "http://evil.example",
                                                             "Access-Control-Request-Method": "PUT"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert requests.post(server.api(1, "connected"), data={"Connected": "true"}, timeout=5).status_code == 405


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_cross_site_form_in_a_real_browser(server: ServerProcess, tmp_path: Path) -> None:
    """A page on another origin auto-submits a form to /setup: the browser's Origin gets it refused."""
    sync_api = pytest.importorskip("playwright.sync_api")
    target = server.url("/setup")
    attack = (f"<html><body><form id='f' method='post' action='{target}'>"
              "<input name='location' value='pwned-by-browser'><input name='csrf' value='1.guess'></form>"
              "<script>document.getElementById('f').submit()</script></body></html>")
    results: list[int] = []
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS,
                                                   headless=True)
        try:
            page = ctx.new_page()
            # The attacker's site, served by playwright itself (no network): http://evil.test/
            page.route("http://evil.test/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                           body=attack))
            page.on("response", lambda resp: results.append(resp.status) if resp.url == target else None)
            page.goto("http://evil.test/")
            page.wait_for_url(target, timeout=10_000)
            page.wait_for_load_state()
            assert "403" in page.content()
        finally:
            ctx.close()
    assert results == [403]
    assert location(server) != "pwned-by-browser"
    logged = [line for line in server.log_text().splitlines() if "refused POST /setup" in line]
    assert any("evil.test" in line for line in logged), logged
