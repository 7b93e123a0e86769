"""The camera's history page: ``/setup/v1/camera/{n}/history`` and its ``history.json``.

A timeline of the camera's events (connects, USB drops and how long recovery took, failed
reconnect attempts, errors, exposures and how they ended, off-peak releases) and plots of sensor
temperature, cooler power and exposure outcomes over the last hours, drawn in the browser as SVG by
``static/history.js`` (no build step, no library). The data is the camera's
:class:`zwo_common.history.CameraHistory`, the same JSON Alpaca's ``Action("telemetry")`` returns.
Translation only: the history is recorded in ``zwo_common/history.py``.
"""

from __future__ import annotations

from aiohttp import web

from zwo_common import history

from .camera_api import run_blocking
from .context import CTX_KEY
from .protocol import AlpacaError
from .setup_pages import _device_or_403, _e, _html, _json, _page

HOURS_CHOICES = (3, 6, 12, 24, 48)


def _body(number: int, name: str, hours: float, version: str) -> str:
    choices = "".join(
        f"<button type='button' data-hours='{h}' aria-pressed='{'true' if h == hours else 'false'}'>{h} h</button>"
        for h in HOURS_CHOICES)
    return f"""
<link rel='stylesheet' href='/setup/static/history.css?v={_e(version)}'>
<header><a class='back' href='/setup/v1/camera/{number}/setup' aria-label='camera page'>&larr;</a>
<h1 id='title'>{_e(name)} &middot; history</h1><span class='badge' id='h-updated'>…</span></header>
<main id='hist' class='narrow hist' data-number='{number}' data-hours='{hours:g}'>
<section class='card' id='h-summary'>
  <h2>Last <span id='h-hours'>{hours:g}</span> hours</h2>
  <p id='h-summary-text' class='big'>…</p>
  <div class='buttons range' id='h-range' role='group' aria-label='time span'>{choices}</div>
</section>
<section class='card' id='h-timeline-card'>
  <h2>Connection</h2>
  <div class='plot' id='plot-events' aria-label='connection timeline'></div>
  <p class='legend small'><span class='k up'></span>connected <span class='k lost'></span>lost
  <span class='k off'></span>off-peak <span class='k down'></span>disconnected</p>
</section>
<section class='card' id='h-temp-card'>
  <h2>Sensor temperature <span class='muted small'>°C; dashed: cooler target</span></h2>
  <div class='plot' id='plot-temp' aria-label='sensor temperature plot'></div>
</section>
<section class='card' id='h-power-card'>
  <h2>Cooler power <span class='muted small'>%</span></h2>
  <div class='plot' id='plot-power' aria-label='cooler power plot'></div>
</section>
<section class='card' id='h-exp-card'>
  <h2>Exposures <span class='muted small' id='h-exp-count'></span></h2>
  <div class='plot' id='plot-exp' aria-label='exposure outcomes'></div>
</section>
<section class='card' id='h-list-card'>
  <h2>Events <span class='muted small'>newest first</span></h2>
  <ol class='timeline' id='timeline'><li class='muted'>…</li></ol>
</section>
<p class='muted small'>Kept by the server across restarts (see docs/web.md). JSON:
<a href='/setup/v1/camera/{number}/history.json?hours={hours:g}'>history.json</a>, or Alpaca
<code>Action("telemetry")</code>.</p>
</main>
<noscript><p class='msg err'>This page needs JavaScript.</p></noscript>
"""


def _hours(request: web.Request) -> float:
    raw = request.query.get("hours", "")
    if not raw:
        return history.DEFAULT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not 0 < hours <= history.MAX_HOURS:
        raise web.HTTPBadRequest(text=f"hours: {raw!r} is out of range: valid 0 to {history.MAX_HOURS:g}",
                                 content_type="text/plain")
    return hours


async def history_page(request: web.Request) -> web.Response:
    """``GET /setup/v1/camera/{n}/history``: the timeline and plots."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    body = _body(dev.number, dev.name, _hours(request), ctx.version)
    return _html(_page(request, f"{dev.name} history", body, script="history.js"))


async def history_json(request: web.Request) -> web.Response:
    """``GET /setup/v1/camera/{n}/history.json?hours=12``: what ``Action("telemetry")`` returns."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    hours = _hours(request)
    try:
        data = await run_blocking(ctx.sdk_pool, lambda: history.telemetry(dev.cam, hours), 10.0)
    except AlpacaError as exc:
        return _json({"ok": False, "error": exc.message}, 503)
    return _json(data)


def add_history_routes(app: web.Application) -> None:
    """Register the history page and its JSON on ``app``."""
    app.router.add_get("/setup/v1/camera/{device_number:[0-9]{1,10}}/history", history_page, allow_head=False)
    app.router.add_get("/setup/v1/camera/{device_number:[0-9]{1,10}}/history.json", history_json, allow_head=False)
