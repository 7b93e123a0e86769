"""The camera's history page in a real headless Chromium (playwright + Debian's chromium).

A server records a camera's history; the test adds a synthetic night to the same files (six hours of
cooling samples, exposures with every outcome, two USB drops and their recoveries), restarts the
server, opens the page from the camera page's link on a phone-sized screen under the page's real
Content-Security-Policy, and checks what was drawn: the temperature and cooler-power lines have
their points, every exposure has its mark, each drop its marker, the timeline one item per event.
Screenshots go to ``tests/artifacts/`` (``web-history-phone.png``, ``web-history-desktop.png``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.servers import ServerProcess, alpaca_put, start_server, wait_until
from zwo_common import history

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # tests/artifacts (git-ignored)
T = 15_000

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
              pytest.mark.timeout(180)]

CONFIG = {"version": 1, "server": {"health_interval": 0.2, "history": {"sample_interval": 0.5}}, "cameras": {}}
OUTCOMES = ["completed"] * 9 + ["failed", "aborted", "stopped"]


def _night(now: float) -> tuple[list[dict], list[dict]]:
    """Six hours ending 10 minutes ago: samples every 30 s, an exposure every 5 min, two drops."""
    start = now - 6 * 3600 - 600

    def at(s: float) -> str:
        return history.iso_utc(start + s)

    events: list[dict] = [{"t": at(0), "type": "server_start", "camera": "ZWO ASI294MC Pro"},
                          {"t": at(5), "type": "connected"},
                          {"t": at(6), "type": "settings", "changes": {"gain": 120, "cooler_on": True}}]
    for i in range(72):
        t0 = 60 + i * 300
        outcome = OUTCOMES[i % len(OUTCOMES)]
        events.append({"t": at(t0), "type": "exposure_started", "id": i + 1, "duration": 240.0, "frame_type": "Light"})
        ended = {"t": at(t0 + 240), "type": "exposure_ended", "id": i + 1, "duration": 240.0, "frame_type": "Light",
                 "outcome": outcome}
        if outcome == "failed":
            ended["reason"] = "the camera was unplugged"
        events.append(ended)
    for t0, recovery in ((7300, 0.8), (15100, 1.1)):
        events += [{"t": at(t0), "type": "connection_lost", "cause": "usb",
                    "reason": "camera removed or not answering (health check failed: Camera removed (ASI error 5))"},
                   {"t": at(t0 + 0.5), "type": "reconnect_failed", "attempt": 1, "reason": "not plugged in"},
                   {"t": at(t0 + recovery), "type": "reconnected", "recovery_s": recovery, "attempts": 2}]
    events += [{"t": at(20000), "type": "error", "message": "exposure did not complete within 250 s"},
               {"t": at(21000), "type": "off_peak", "until": "20:00"},
               {"t": at(21500), "type": "off_peak_end"}, {"t": at(21505), "type": "resumed"},
               {"t": at(6 * 3600), "type": "server_stop"}]
    events.sort(key=lambda e: e["t"])
    samples = []
    for k in range(720):
        s = k * 30
        temp = -10 + 30 * math.exp(-s / 1500) + 0.3 * math.sin(s / 200)
        samples.append({"t": at(s), "type": "sample", "temp": round(temp, 2), "power": round(min(100, 35 + temp), 1),
                        "cooler": True, "target": -10.0, "state": "idle"})
    return events, samples


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    workdir = tmp_path_factory.mktemp("web-history")
    (workdir / "config.json").write_text(json.dumps(CONFIG))
    first = start_server(workdir, simulator="asi294mc-pro")
    alpaca_put(first, 0, "connected", Connected=True)
    first.stop()
    (events_file,) = [p for p in (workdir / "history").glob("*.jsonl") if not p.name.endswith(".samples.jsonl")]
    samples_file = events_file.with_name(events_file.name.replace(".jsonl", ".samples.jsonl"))
    live_events = events_file.read_text()
    live_samples = samples_file.read_text() if samples_file.exists() else ""
    events, samples = _night(time.time())
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events) + live_events)
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples) + live_samples)
    srv = start_server(workdir, simulator="asi294mc-pro")
    alpaca_put(srv, 0, "connected", Connected=True)
    alpaca_put(srv, 0, "startexposure", Duration=0.1, Light=True)
    wait_until(lambda: requests.get(srv.api(0, "imageready"), timeout=5).json()["Value"], 10, "image ready")
    yield srv, len(events)
    srv.stop()


@pytest.fixture(scope="module")
def pw() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        yield p


def _context(pw: object, profile: Path, **kw: object):
    profile.mkdir(parents=True, exist_ok=True)
    return pw.chromium.launch_persistent_context(  # type: ignore[attr-defined]
        str(profile), executable_path=CHROMIUM, args=ARGS, headless=True, **kw)


def _watch(page, errors: list[str]) -> None:
    page.set_default_timeout(T)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)


def _drawn(page) -> None:
    """Wait until history.js has drawn the page once (it counts its drawings in data-drawn)."""
    page.wait_for_selector("#hist[data-drawn]", timeout=T)


def _points(page, plot: str) -> int:
    return int(page.get_attribute(f"#{plot} svg", "data-points") or 0)


def _shot(page, name: str, **kw: object) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kw)
    assert path.stat().st_size > 10_000
    return path


def test_history_page_draws_the_night_on_a_phone(server: tuple[ServerProcess, int], pw: object,
                                                 tmp_path: Path) -> None:
    srv, _ = server
    data = requests.get(srv.url("/setup/v1/camera/0/history.json?hours=12"), timeout=10).json()
    night = data["events"]
    ended = [e for e in night if e["type"] == "exposure_ended"]
    assert len(ended) == 73 and data["summary"]["drops"] == 2 and len(data["samples"]) >= 720
    ctx = _context(pw, tmp_path / "chromium-phone", viewport={"width": 390, "height": 844}, device_scale_factor=2,
                   is_mobile=True, has_touch=True)  # the page's own CSP: no eval in the page
    errors: list[str] = []
    try:
        page = ctx.new_page()
        _watch(page, errors)
        page.goto(srv.url("/setup/v1/camera/0/setup"))
        page.tap("#history-link")
        page.wait_for_url("**/setup/v1/camera/0/history")
        _drawn(page)
        assert "2 USB drops, recovered in 0.8 s and 1.1 s" in page.inner_text("#h-summary-text")
        # One timeline item per event but the exposure starts (their ends carry the outcome).
        items = page.locator("#timeline li.item")
        assert items.count() == len([e for e in night if e["type"] != "exposure_started"])
        newest = [e["type"] for e in night if e["type"] != "exposure_started"][-1]
        assert items.first.get_attribute("data-type") == newest  # newest first
        assert page.locator("#timeline li.err[data-type=connection_lost]").count() == 2
        assert "Recovered in 1.1 s" in page.inner_text("#timeline")
        # The plots: every sample a point of the temperature and power lines, every exposure a mark.
        assert _points(page, "plot-temp") >= len([s for s in data["samples"] if s.get("temp") is not None])
        assert _points(page, "plot-power") >= 720
        assert page.locator("#plot-temp svg polyline.line").count() >= 2  # temperature and the dashed target
        assert page.locator("#plot-exp svg rect.exp").count() == len(ended)
        assert page.locator("#plot-exp svg rect.exp-failed").count() == 6
        assert page.locator("#plot-events svg circle.ev-connection_lost").count() == 2
        assert page.locator("#plot-events svg rect.span-lost").count() == 2
        assert page.locator("#plot-events svg rect.span-off").count() == 1
        layout = page.evaluate("""() => ({
            overflow: document.documentElement.scrollWidth - window.innerWidth,
            svgWidth: document.querySelector('#plot-temp svg').getBoundingClientRect().width,
            small: [...document.querySelectorAll('button:not(.link)')]
                .filter(e => e.offsetParent !== null && e.getBoundingClientRect().height < 44).map(e => e.textContent),
        })""")
        assert layout["overflow"] <= 0 and 300 <= layout["svgWidth"] <= 390, layout
        assert layout["small"] == [], layout
        _shot(page, "web-history-phone.png", full_page=True)
        # A shorter span: fewer items, redrawn without a reload.
        page.tap("#h-range button[data-hours='3']")
        page.wait_for_selector("#h-hours:text-is('3')", timeout=T)
        assert 0 < page.locator("#plot-exp svg rect.exp").count() < len(ended)
        assert page.get_attribute("#h-range button[data-hours='3']", "aria-pressed") == "true"
        page.close()
    finally:
        ctx.close()
    assert errors == []


def test_history_page_on_a_desktop_and_unknown_camera(server: tuple[ServerProcess, int], pw: object,
                                                      tmp_path: Path) -> None:
    srv, _ = server
    ctx = _context(pw, tmp_path / "chromium-desktop", viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    try:
        page = ctx.new_page()
        _watch(page, errors)
        page.goto(srv.url("/setup/v1/camera/0/history?hours=24"))
        _drawn(page)
        assert page.get_attribute("#h-range button[data-hours='24']", "aria-pressed") == "true"
        width = page.evaluate("document.querySelector('#plot-temp svg').getBoundingClientRect().width")
        assert width > 600  # drawn at the card's width, not scaled up from a phone's
        _shot(page, "web-history-desktop.png", full_page=True)
        page.close()
    finally:
        ctx.close()
    assert errors == []
    assert requests.get(srv.url("/setup/v1/camera/7/history"), timeout=5).status_code == 403
    assert requests.get(srv.url("/setup/v1/camera/0/history.json?hours=x"), timeout=5).status_code == 400
    body = requests.get(srv.url("/setup/v1/camera/0/history.json"), timeout=5).json()
    assert body["hours"] == 12.0 and body["now"].endswith("Z")  # UTC in the JSON; the page shows local times
    assert dt.datetime.fromisoformat(body["now"].replace("Z", "+00:00")).tzinfo is not None
