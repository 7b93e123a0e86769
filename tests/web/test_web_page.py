"""The web control page in a real headless browser (playwright + Debian's chromium).

Loads /setup and a camera's page, connects, exposes, sees the preview change, runs and stops
continuous capture, shows the core's errors as readable messages, persists settings across a server
restart, and disconnects. Screenshots (desktop and phone) go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.servers import ServerProcess, start_server

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # tests/artifacts (git-ignored)
T = 15_000  # ms: generous bound for one UI step (a 4144x2822 simulated frame reads out in well under 1 s)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium is not installed (scripts/bootstrap test)")


@pytest.fixture(scope="module")
def pw() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        yield p


def _context(pw: object, profile: Path, **kw: object):
    profile.mkdir(parents=True, exist_ok=True)
    return pw.chromium.launch_persistent_context(  # type: ignore[attr-defined]
        str(profile), executable_path=CHROMIUM, args=ARGS, headless=True, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("web-page"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def desktop(pw: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    # bypass_csp: the page's Content-Security-Policy forbids eval, which wait_for_function needs. The phone
    # test runs under the real policy.
    ctx = _context(pw, tmp_path_factory.mktemp("chromium-desktop"), viewport={"width": 1280, "height": 900},
                   bypass_csp=True)
    yield ctx
    ctx.close()


def _page(ctx: object, errors: list[str]):
    page = ctx.new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(T)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    # Refused actions (HTTP 400/409) are expected in some steps; Chrome logs each as "Failed to load resource".
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    return page


def _wait_state(page, *states: str) -> None:
    page.wait_for_selector(", ".join(f"#badge[data-state={s}]" for s in states), timeout=T)


def _seq(page) -> int:
    return int(page.get_attribute("#preview", "data-seq") or 0)


def _wait_seq_above(page, seq: int) -> int:
    page.wait_for_function(f"Number(document.getElementById('preview').dataset.seq) > {seq} && "
                           "document.getElementById('preview').naturalWidth > 0", timeout=T)
    return _seq(page)


def _message(page) -> str:
    page.wait_for_selector("#msg.err:not([hidden])", timeout=T)
    return page.inner_text("#msg-text")


def _shot(page, name: str, **kw: object) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kw)
    assert path.stat().st_size > 10_000
    return path


def test_index_lists_cameras_with_state(server: ServerProcess, desktop: object) -> None:
    errors: list[str] = []
    page = _page(desktop, errors)
    page.goto(server.url("/setup"))
    cams = page.locator("a.camera")
    assert cams.count() == 2
    assert "ASI294MC Pro" in cams.nth(0).inner_text() and "ASI120MM Mini" in cams.nth(1).inner_text()
    assert "Disconnected" in cams.nth(0).locator("[data-state]").inner_text()
    # The list follows the camera's state without a reload.
    requests.put(server.api(1, "connected"), data={"Connected": "true"}, timeout=10).raise_for_status()
    page.wait_for_function("document.querySelector(\"a.camera[data-number='1'] [data-state]\").textContent === 'Idle'")
    requests.put(server.api(1, "connected"), data={"Connected": "false"}, timeout=10).raise_for_status()
    cams.nth(0).click()
    page.wait_for_url("**/setup/v1/camera/0/setup")
    assert page.inner_text("#title").startswith("ZWO ASI294MC Pro")
    page.close()
    assert errors == []


def test_connect_expose_preview_capture_disconnect(server: ServerProcess, desktop: object) -> None:
    errors: list[str] = []
    page = _page(desktop, errors)
    page.goto(server.url("/setup/v1/camera/0/setup"))
    _wait_state(page, "disconnected")
    assert page.is_disabled("#expose") and page.is_disabled("#disconnect")
    page.click("#connect")
    _wait_state(page, "idle", "image_ready")
    page.wait_for_function("document.getElementById('s-temp').textContent.includes('°C')")
    assert "ASCOM Idle" in page.inner_text("#s-state")

    # A single exposure: the preview appears; a second one changes it.
    page.fill("#exposure", "0.2")
    page.click("#expose")
    seq1 = _wait_seq_above(page, 0)
    page.wait_for_selector("#preview-info:has-text('4144 × 2822')")
    shot1 = page.locator("#preview").screenshot()
    colour = page.evaluate("""() => {
        const img = document.getElementById('preview'); const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
        g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
        let diff = 0, sum = 0;
        for (let i = 0; i < d.length; i += 4) {
            diff += Math.abs(d[i] - d[i + 1]) + Math.abs(d[i + 1] - d[i + 2]); sum += d[i];
        }
        return {w: c.width, diff: diff / (d.length / 4), mean: sum / (d.length / 4)}; }""")
    assert 600 <= colour["w"] <= 900, colour
    assert colour["diff"] > 1.0, "the colour camera's preview should be debayered (not grey)"
    assert 20 < colour["mean"] < 160, "the stretch should put the background in the midtones"
    page.wait_for_function("!document.getElementById('expose').disabled")
    page.click("#expose")
    seq2 = _wait_seq_above(page, seq1)
    shot2 = page.locator("#preview").screenshot()
    assert seq2 > seq1 and shot2 != shot1

    # Continuous capture: frames keep coming until Stop.
    page.fill("#exposure", "0.05")
    page.select_option("#mode", "exposure")
    page.click("#start")
    _wait_state(page, "capturing")
    page.wait_for_selector("#s-progress:has-text('Continuous (exposure, 0.05 s)')")
    seq3 = _wait_seq_above(page, seq2)
    _wait_seq_above(page, seq3)
    assert page.is_disabled("#expose") and page.is_enabled("#stop")
    _shot(page, "web-camera-desktop.png", full_page=True)
    page.click("#stop")
    _wait_state(page, "idle", "image_ready")
    page.wait_for_function("document.getElementById('stop').disabled")
    frames = int(page.locator("#counters-body tr:has-text('Frames') td").nth(1).inner_text())
    assert frames >= 2

    # Errors from the core are shown as its message, never as a trace.
    page.fill("#exposure", "-1")
    page.click("#expose")
    assert "duration" in _message(page)
    page.click("#msg-close")
    page.fill("#f-gain", "9999")
    page.click("#apply")
    text = _message(page)
    assert "gain 9999 is out of range: valid 0 to 570" in text and "Traceback" not in text
    page.click("#revert")
    assert page.input_value("#f-gain") != "9999"

    page.click("#disconnect")
    _wait_state(page, "disconnected")
    assert page.is_enabled("#connect") and _seq(page) >= seq3  # the last image stays on show
    page.close()
    assert errors == []


def _window(offset_start_min: int, offset_end_min: int) -> str:
    now = dt.datetime.now()
    a = now + dt.timedelta(minutes=offset_start_min)
    b = now + dt.timedelta(minutes=offset_end_min)
    return f"{a:%H:%M}-{b:%H:%M}"


def test_settings_and_schedule_persist_across_restart(tmp_path: Path, pw: object) -> None:
    work = tmp_path / "persist"
    srv = start_server(work)
    ctx = _context(pw, tmp_path / "chromium", viewport={"width": 1100, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    try:
        page = _page(ctx, errors)
        page.goto(srv.url("/setup/v1/camera/0/setup"))
        page.click("#connect")
        _wait_state(page, "idle", "image_ready")
        page.wait_for_selector("#r-gain:has-text('0–570')")  # ranges are known once connected

        # Off-peak: a window that excludes now releases the camera at once; clearing it brings it back.
        page.fill("#f-schedule", _window(120, 180))
        page.click("#schedule-save")
        _wait_state(page, "off_peak")
        assert "Off-peak until" in page.inner_text("#badge")
        assert "Released until" in page.inner_text("#s-offpeak")
        page.click("#schedule-clear")
        _wait_state(page, "idle", "image_ready")

        page.fill("#f-gain", "150")
        page.fill("#f-offset", "20")
        page.select_option("#f-bin", "2")
        page.select_option("#f-readout_mode", "RAW8")
        page.fill("#f-start_x", "100")
        page.fill("#f-start_y", "50")
        page.fill("#f-width", "640")
        page.fill("#f-height", "480")
        page.check("#f-cooler_on")
        page.fill("#f-target_temperature", "-5")
        page.click("#apply")
        page.wait_for_selector("#msg.ok:has-text('Settings applied and saved')")
        inside = _window(-60, 60)
        page.fill("#f-schedule", inside)
        page.click("#schedule-save")
        page.wait_for_selector(f"#schedule-now:has-text('{inside}')")
        page.fill("#exposure", "0.1")
        page.click("#expose")
        _wait_seq_above(page, 0)
        page.wait_for_selector("#preview-info:has-text('640 × 480')")
        assert "RAW8" in page.inner_text("#preview-info")
        page.close()
    finally:
        assert srv.stop() == 0
    stored = json.loads(srv.config_path.read_text())
    defaults = [e["defaults"] for e in stored["cameras"].values() if e.get("defaults", {}).get("gain") == 150]
    assert defaults == [{"gain": 150, "offset": 20, "bin": 2, "readout_mode": "RAW8", "start_x": 100, "start_y": 50,
                         "width": 640, "height": 480, "high_speed": False, "cooler_on": True,
                         "target_temperature": -5.0, "usb_bandwidth": defaults[0]["usb_bandwidth"],
                         "ramp_slope": 0.0, "ramp_threshold": 0.2, "warm_at_disconnect": False,
                         "schedule": inside}]

    again = start_server(work, port=srv.port)
    try:
        status = requests.get(again.url("/setup/v1/camera/0/status.json"), timeout=5).json()
        assert status["schedule"] == inside
        s = status["settings"]
        assert (s["gain"], s["offset"], s["bin"], s["readout_mode"]) == (150, 20, 2, "RAW8")
        assert (s["start_x"], s["start_y"], s["width"], s["height"]) == (100, 50, 640, 480)
        assert s["cooler_on"] is True and s["target_temperature"] == -5.0
        page = _page(ctx, errors)
        page.goto(again.url("/setup/v1/camera/0/setup"))
        page.wait_for_function("document.getElementById('f-gain').value === '150'")
        assert page.input_value("#f-width") == "640" and page.input_value("#f-bin") == "2"
        assert page.input_value("#f-readout_mode") == "RAW8" and page.is_checked("#f-cooler_on")
        assert page.input_value("#f-schedule") == inside
        page.close()
    finally:
        ctx.close()
        again.stop()
    assert errors == []


def test_phone_layout(server: ServerProcess, pw: object, tmp_path: Path) -> None:
    ctx = _context(pw, tmp_path / "chromium-phone", viewport={"width": 390, "height": 844}, device_scale_factor=2,
                   is_mobile=True, has_touch=True)
    errors: list[str] = []
    try:
        page = _page(ctx, errors)
        page.goto(server.url("/setup/v1/camera/1/setup"))
        page.tap("#connect")
        _wait_state(page, "idle", "image_ready")
        page.fill("#exposure", "0.1")
        page.tap("#expose")
        # No wait_for_function here: this context keeps the page's CSP (no eval), which proves the
        # page itself runs under it.
        page.wait_for_selector("#preview:not([hidden])")
        assert page.evaluate("document.getElementById('preview').naturalWidth") > 0
        assert page.inner_text("#s-cooler") == "none on this model"
        assert page.locator("#f-cooler_on").count() == 0  # no cooler fields on an uncooled model
        layout = page.evaluate("""() => ({
            overflow: document.documentElement.scrollWidth - window.innerWidth,
            small: [...document.querySelectorAll(
                        'button:not(.link):not(.small-btn), input:not([type=checkbox]), select')]
                .filter(e => e.offsetParent !== null && e.getBoundingClientRect().height < 44).map(e => e.id),
            font: parseFloat(getComputedStyle(document.getElementById('exposure')).fontSize),
        })""")
        assert layout["overflow"] <= 0, "the page must not scroll sideways on a phone"
        assert layout["small"] == [], f"touch targets under 44 px: {layout['small']}"
        assert layout["font"] >= 16  # no zoom-on-focus on iOS
        _shot(page, "web-camera-phone.png", full_page=True)
        page.tap("#disconnect")
        _wait_state(page, "disconnected")
        page.goto(server.url("/setup"))
        _shot(page, "web-index-phone.png")
        page.close()
    finally:
        ctx.close()
    assert errors == []


def test_preview_endpoint_png(server: ServerProcess) -> None:
    """The preview is a valid PNG: RGB for the colour camera (debayered), grey for the mono one."""
    token = requests.get(server.url("/setup/v1/camera/0/status.json"), timeout=5).json()["csrf"]
    for n, colour_type in ((0, 2), (1, 0)):
        hdr = {"X-CSRF-Token": token}
        assert requests.post(server.url(f"/setup/v1/camera/{n}/action/connect"), json={}, headers=hdr, timeout=5).ok
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = requests.get(server.url(f"/setup/v1/camera/{n}/status.json"), timeout=5).json()["status"]
            if st["state"] in ("idle", "image_ready"):
                break
            time.sleep(0.05)
        before = st["frame_seq"]
        r = requests.post(server.url(f"/setup/v1/camera/{n}/action/expose"), json={"duration": 0.05}, headers=hdr,
                          timeout=5)
        assert r.json() == {"ok": True, "message": "Exposing 0.05 s"}
        while time.monotonic() < deadline:
            st = requests.get(server.url(f"/setup/v1/camera/{n}/status.json"), timeout=5).json()["status"]
            if st["frame_seq"] > before and st["state"] == "image_ready":
                break
            time.sleep(0.05)
        r = requests.get(server.url(f"/setup/v1/camera/{n}/preview.png"), params={"w": 400}, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
        assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
        width, height, depth, ctype = struct.unpack(">IIBB", r.content[16:26])
        assert ctype == colour_type and depth == 8 and 200 <= width <= 400 and height > 0
        assert int(r.headers["X-Frame-Seq"]) == st["frame_seq"]
        requests.post(server.url(f"/setup/v1/camera/{n}/action/disconnect"), json={}, headers=hdr, timeout=5)
    assert requests.get(server.url("/setup/v1/camera/7/preview.png"), timeout=5).status_code == 403


def test_page_works_with_authentication(tmp_path: Path, pw: object) -> None:
    """With a user configured, the browser asks for credentials; given them, the page works as usual
    (its own posts carry the CSRF token bound to the signed-in user)."""
    from alpaca_server import security

    work = tmp_path / "auth"
    work.mkdir()
    (work / "config.json").write_text(json.dumps(
        {"version": 1, "server": {"auth": {"users": {"astro": security.hash_password("s3cret pw")}}}, "cameras": {}}))
    srv = start_server(work)
    ctx = _context(pw, tmp_path / "chromium", http_credentials={"username": "astro", "password": "s3cret pw"},
                   viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    try:
        assert requests.get(srv.url("/setup/v1/camera/1/setup"), timeout=5).status_code == 401
        page = _page(ctx, errors)
        assert page.goto(srv.url("/setup/v1/camera/1/setup")).status == 200
        assert "signed in as astro" in page.inner_text("footer")
        page.click("#connect")
        _wait_state(page, "idle", "image_ready")
        page.fill("#f-gain", "42")
        page.click("#apply")
        page.wait_for_selector("#msg.ok:has-text('Settings applied and saved')")
        page.click("#disconnect")
        _wait_state(page, "disconnected")
        page.close()
    finally:
        ctx.close()
        srv.stop()
    saved = json.loads(srv.config_path.read_text())
    assert [e["defaults"]["gain"] for e in saved["cameras"].values() if e.get("defaults", {}).get("gain")] == [42]
    assert saved["server"]["auth"]["users"]["astro"].startswith("scrypt$")  # the page's save kept the users
    assert errors == []
