"""The web control page: ``/setup`` (the server and its cameras) and ``/setup/v1/camera/{n}/setup``.

Plain HTML/CSS/JS served by the server (``alpaca_server/static/``), no build step. The HTML is a
skeleton rendered here; the script polls ``status.json`` about once a second and drives the camera
through small JSON endpoints (all under ``/setup/v1/camera/{n}/``):

=========================  ====================================================================
``GET status.json``        state, exposure progress, temperatures, cooler, off-peak, settings,
                           schedule, counters, camera facts and a fresh CSRF token
``GET preview.png``        the last frame, stretched, debayered, ~800 px wide (``preview.py``)
``POST action/connect``    ``begin_connect()``;  ``action/disconnect``: ``begin_disconnect()``
``POST action/expose``     ``{"duration": s}``: ``start_exposure()``; ``action/abort``
``POST action/capture``    ``{"exposure": s, "mode": "exposure"|"video", "save": bool, "directory": "...",
                           "pattern": "...", "count": N|null}``: the loop (``zwo_common.capture_files
                           .CaptureLoops``: the core's ``start_capture()``, FITS files when saving)
``POST action/stop``       stop the loop (``stop_capture()``), forgotten: it does not resume
``POST action/settings``   gain, offset, binning, ROI, readout mode, USB, cooler (setpoint, ramp,
                           threshold, warm-up at disconnect): ``configure()``, then saved to the
                           config file as the camera's defaults
``POST action/auto``       ``{"control": "Gain", "on": bool}``: ``set_auto()``, saved too (the
                           list ``auto_controls``, applied at the first connect after a start)
``POST action/schedule``   ``{"window": "HH:MM-HH:MM" | ""}``: ``set_schedule()``, saved too
=========================  ====================================================================

Every camera call goes through the public ``ZWOCamera`` API, in the SDK thread pool (only
``status()`` is read on the event loop). Errors come back as ``{"ok": false, "error": "<the core's
message>"}``, never as a traceback. POSTs need the page's CSRF token (``security.py``).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from driver import controls
from driver.errors import CameraError, InvalidValueError, NotSupportedError
from zwo_common import capture_files
from zwo_common.config import DEFAULT_FIELDS

from . import preview, security
from .camera_api import READOUT_MODES, CameraDevice, ascom_camera_state, run_blocking
from .context import CTX_KEY, ServerContext
from .protocol import AlpacaError

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATE_NAMES = {0: "Idle", 1: "Waiting", 2: "Exposing", 3: "Reading", 4: "Download", 5: "Error"}
LOCATION_MAX = 100


# ------------------------------------------------------------------------------------ page state


@dataclass
class PageState:
    """What the page keeps per camera: its preview cache (its loop is in ``ctx.capture``)."""

    preview: preview.PreviewCache


PAGES_KEY: web.AppKey[dict] = web.AppKey("zwo_alpaca_pages", dict)


def _page_state(request: web.Request, dev: CameraDevice) -> PageState:
    pages = request.app[PAGES_KEY]
    state = pages.get(dev.number)
    if state is None:
        state = PageState(preview.PreviewCache(dev.cam.last_frame))
        pages[dev.number] = state
    return state


# ------------------------------------------------------------------------------------ HTML helpers


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _csrf(request: web.Request) -> str:
    sec = security.security_of(request)
    return sec.csrf_token(security.request_user(request)) if sec is not None else ""


def _page(request: web.Request, title: str, body: str, *, script: str = "", body_attrs: str = "") -> str:
    ctx = request.app[CTX_KEY]
    version = _e(ctx.version)
    user = security.request_user(request)
    sec = security.security_of(request)
    if user:
        auth = f"signed in as <b>{_e(user)}</b>"
    elif sec is not None and sec.enabled:
        auth = "authentication on"
    else:
        auth = "no authentication (see <code>zwo-alpaca passwd</code>)"
    js = f"<script src='/setup/static/{script}?v={version}' defer></script>" if script else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='color-scheme' content='dark'>"
        f"<meta name='csrf-token' content='{_e(_csrf(request))}'>"
        f"<title>{_e(title)}</title><link rel='icon' href='data:,'>"
        f"<link rel='stylesheet' href='/setup/static/style.css?v={version}'>{js}</head>"
        f"<body{body_attrs}>{body}"
        f"<footer>{_e(ctx.server_name)} {version} &middot; {auth} &middot; "
        "<button type='button' class='link' id='night' aria-pressed='false'>night mode</button></footer>"
        "<script src='/setup/static/common.js?v=" + version + "'></script>"
        "</body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                 "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"})


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(value, separators=(",", ":")), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _state_label(st: Any) -> str:
    """A short, human label for a camera's state (what the badge shows)."""
    name = str(getattr(st.state, "value", st.state))
    if name == "warming":  # disconnected for clients; the core still holds the camera for the warm-up
        return "Warming up before releasing the camera"
    if not st.connected:
        return "Connecting" if st.connecting else "Disconnected"
    if name == "off_peak":
        return f"Off-peak until {st.off_peak_until}" if st.off_peak_until else "Off-peak"
    if ascom_camera_state(st) == 5:
        return "Error (reconnecting)"
    return {"connecting": "Connecting", "idle": "Idle", "exposing": "Exposing", "reading": "Reading out",
            "image_ready": "Image ready", "capturing": "Capturing", "disconnecting": "Disconnecting",
            "error": "Error (reconnecting)"}.get(name, name)


# ------------------------------------------------------------------------------------ /setup


def _camera_card(dev: CameraDevice) -> str:
    st = dev.status()
    temp = f"Sensor {st.ccd_temperature:.1f} °C" if st.ccd_temperature is not None else ""
    link = f"/setup/v1/camera/{dev.number}/setup"
    return (
        f"<li><a class='camera' href='{link}' data-number='{dev.number}'>"
        f"<span class='num'>#{dev.number}</span><span class='cname'>{_e(dev.name)}</span>"
        f"<span class='line'><span class='badge' data-state>{_e(_state_label(st))}</span>"
        f"<span class='muted small' data-temp>{_e(temp)}</span></span>"
        f"<span class='muted small uid'>UniqueID {_e(dev.unique_id)}</span></a></li>"
    )


async def setup_index(request: web.Request) -> web.Response:
    """``GET /setup``: the cameras with their connection state, and the server-wide settings."""
    ctx = request.app[CTX_KEY]
    cards = "".join(_camera_card(dev) for _, dev in sorted(ctx.devices.items())) or (
        "<li class='empty' id='no-device'>No camera attached and none known from the config: serving no device. "
        "Plug a camera in: it is served as soon as it is seen (reload this page).</li>")
    note = "<p class='ok'>Saved.</p>" if request.query.get("saved") else ""
    body = (
        f"<header><h1>{_e(ctx.server_name)}</h1></header><main class='narrow'>"
        f"<p class='muted'>ASCOM Alpaca camera server for ZWO ASI cameras ({_e(ctx.manufacturer)}). "
        "Clients connect to this address, port "
        f"<b>{_e(ctx.http_port or request.url.port or '')}</b>; pick a camera to control it here.</p>"
        f"<section class='card'><h2>Cameras</h2><ul class='cameras' id='cameras'>{cards}</ul></section>"
        "<section class='card'><h2>Server</h2>"
        f"{note}<form method='post' action='/setup'>"
        f"<input type='hidden' name='{security.CSRF_FIELD}' value='{_e(_csrf(request))}'>"
        "<div class='field'><label for='location'>Location (shown to Alpaca clients)</label></div>"
        f"<div class='row'><input id='location' name='location' value='{_e(ctx.location)}' "
        f"maxlength='{LOCATION_MAX}'><button type='submit'>Save</button></div></form>"
        "<p class='muted small'>The listening address and port are set on the command line "
        "(<code>zwo-alpaca serve --bind ADDR --port N</code>); users for HTTP authentication with "
        "<code>zwo-alpaca passwd USER</code>.</p></section></main>"
    )
    return _html(_page(request, f"{ctx.server_name} setup", body, script="index.js"))


async def setup_index_post(request: web.Request) -> web.Response:
    """``POST /setup``: save the server location."""
    ctx = request.app[CTX_KEY]
    form = await security.read_body(request)
    location = str(form.get("location", "") or "")[:LOCATION_MAX]
    if ctx.config is not None:
        ctx.config.set_server_value("location", location)
        await asyncio.get_running_loop().run_in_executor(ctx.sdk_pool, _save_config, request, ctx)
    raise web.HTTPSeeOther("/setup?saved=1")


async def cameras_json(request: web.Request) -> web.Response:
    """``GET /setup/cameras.json``: every camera's state (for the /setup list)."""
    ctx = request.app[CTX_KEY]
    out = []
    for _, dev in sorted(ctx.devices.items()):
        st = dev.status()
        out.append({"number": dev.number, "name": dev.name, "connected": bool(st.connected),
                    "connecting": bool(st.connecting), "state": _state_label(st),
                    "ccd_temperature": st.ccd_temperature})
    return _json({"cameras": out})


# ------------------------------------------------------------------------------------ camera page


def _device_or_403(ctx: ServerContext, request: web.Request) -> CameraDevice:
    dtype = request.match_info.get("device_type", "camera")
    num = request.match_info.get("device_number", "")
    dev = ctx.devices.get(int(num)) if dtype == "camera" and num.isdigit() and len(num) < 11 else None
    if dev is None:
        # The management spec answers 403 for a setup URL naming an unsupported device.
        text = (f"<!DOCTYPE html><html><body><h1>Unknown device</h1><p>There is no device {_e(dtype)}/{_e(num)} "
                "here. See <a href='/setup'>/setup</a>.</p></body></html>")
        raise web.HTTPForbidden(text=text, content_type="text/html")
    return dev


def _facts(dev: CameraDevice) -> list[tuple[str, str]]:
    info = dev.cam.info
    facts = [("Device number", str(dev.number)), ("UniqueID", dev.unique_id)]
    if info is not None:
        sensor = (f"{info.max_width} × {info.max_height}, {info.pixel_size_um:g} µm, {info.bit_depth}-bit, "
                  + (f"colour ({info.bayer_pattern or '?'})" if info.is_color else "mono"))
        facts += [("Model", info.model), ("Serial", info.serial or "-"), ("Sensor", sensor),
                  ("Cooler", "yes" if info.has_cooler else "no"), ("ST4 guide port", "yes" if info.has_st4 else "no"),
                  ("USB", "3" if info.usb3 else "2")]
    return facts


def _camera_body(ctx: ServerContext, dev: CameraDevice, *, message: str = "", error: str = "") -> str:
    info = dev.cam.info
    cooler = bool(info is not None and info.has_cooler)
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _facts(dev))
    loops = _loops(ctx)
    root = str(loops.root) if loops is not None else "(saving is off: no capture root)"
    fields_text = " ".join("{" + name + "}" for name in capture_files.PATTERN_FIELDS)
    default_pattern = capture_files.DEFAULT_PATTERN
    notes = (f"<div class='msg ok' role='status'>{_e(message)}</div>" if message else "") + (
        f"<div class='msg err' role='alert'>{_e(error)}</div>" if error else "")
    bins = info.supported_bins if info is not None else (1,)
    bin_opts = "".join(f"<option value='{b}'>{b}×{b}</option>" for b in bins)
    types = tuple(info.image_types) if info is not None else READOUT_MODES
    mode_opts = "".join(f"<option value='{m}'>{m}</option>" for m in READOUT_MODES if m in types)
    cooler_fields = (
        "<div class='field check'><label><input type='checkbox' name='cooler_on' id='f-cooler_on'> Cooler on"
        "</label></div>"
        "<div class='field'><label for='f-target_temperature'>Cooler target °C</label>"
        "<input id='f-target_temperature' name='target_temperature' type='number' step='0.5' inputmode='decimal' "
        "placeholder='e.g. -10'></div>"
        "<div class='field'><label for='f-ramp_slope'>Cooler ramp (°C/min, 0 = off)</label>"
        "<input id='f-ramp_slope' name='ramp_slope' type='number' min='0' step='any' inputmode='decimal'></div>"
        "<div class='field'><label for='f-ramp_threshold'>Setpoint reached within (°C)</label>"
        "<input id='f-ramp_threshold' name='ramp_threshold' type='number' step='any' inputmode='decimal'></div>"
        "<div class='field check'><label><input type='checkbox' name='warm_at_disconnect' "
        "id='f-warm_at_disconnect'> Warm the sensor up at disconnect</label></div>"
        if cooler else ""
    )
    return f"""
<header><a class='back' href='/setup' aria-label='all cameras'>&larr;</a><h1 id='title'>{_e(dev.name)}</h1>
<span class='badge' id='badge'>…</span></header>
<div id='msg' class='msg err' role='alert' hidden><span id='msg-text'></span>
<button type='button' class='link' id='msg-close' aria-label='dismiss'>×</button></div>
{notes}
<main id='cam' class='grid' data-number='{dev.number}' data-cooler='{int(cooler)}'>
<div class='col col-b'>
<section class='card' id='conn'>
  <h2>Connection</h2>
  <p><span id='conn-state' class='big'>…</span> <span id='status-text' class='muted'></span></p>
  <p id='last-error' class='err small' hidden></p>
  <div class='buttons'><button type='button' id='connect' class='primary'>Connect</button>
  <button type='button' id='disconnect'>Disconnect</button></div>
</section>
<section class='card' id='capture'>
  <h2>Capture</h2>
  <div class='row2'>
    <div class='field'><label for='exposure'>Exposure (s)</label>
    <input id='exposure' type='number' min='0' step='any' value='1' inputmode='decimal'></div>
    <div class='field'><label for='mode'>Loop mode</label>
    <select id='mode'><option value='exposure'>exposures</option><option value='video'>video</option></select></div>
  </div>
  <div class='buttons'><button type='button' id='expose' class='primary'>Expose</button>
  <button type='button' id='abort'>Abort</button></div>
  <div class='buttons'><button type='button' id='start'>Start loop</button>
  <button type='button' id='stop'>Stop loop</button></div>
  <div class='progress' aria-hidden='true'><div id='bar'></div></div>
  <div class='field check'><label><input type='checkbox' id='save'> Save every frame of the loop (FITS)</label></div>
  <div id='save-fields'>
    <div class='field'><label for='folder'>Folder
    <span class='muted small'>under <code id='capture-root'>{_e(root)}</code></span></label>
    <input id='folder' autocomplete='off' spellcheck='false' placeholder='e.g. allsky (blank: the root itself)'></div>
    <div class='row2'>
      <div class='field'><label for='pattern'>File names</label>
      <input id='pattern' autocomplete='off' spellcheck='false' placeholder='{_e(default_pattern)}'></div>
      <div class='field'><label for='count'>Frames</label>
      <input id='count' type='number' min='1' step='1' inputmode='numeric' placeholder='until stopped'></div>
    </div>
    <p class='muted small'>Fields: {_e(fields_text)};
    e.g. <code>{{night}}/{{camera}}_{{time}}_{{seq:04d}}.fits</code>. A loop that is running when the server stops
    resumes, in its window, when it starts again.</p>
  </div>
  <p class='small' id='loop-status' role='status'></p>
</section>
<section class='card' id='settings'>
  <h2>Settings</h2>
  <form id='settings-form' autocomplete='off' novalidate>
  <div class='row2'>
    <div class='field'><label for='f-gain'>Gain <span class='muted small' id='r-gain'></span></label>
    <input id='f-gain' name='gain' type='number' step='1' inputmode='numeric'></div>
    <div class='field'><label for='f-offset'>Offset <span class='muted small' id='r-offset'></span></label>
    <input id='f-offset' name='offset' type='number' step='1' inputmode='numeric'></div>
    <div class='field'><label for='f-bin'>Binning</label><select id='f-bin' name='bin'>{bin_opts}</select></div>
    <div class='field'><label for='f-readout_mode'>Readout mode</label>
    <select id='f-readout_mode' name='readout_mode'>{mode_opts}</select></div>
  </div>
  <fieldset><legend>Region of interest <span class='muted small' id='r-roi'></span></legend>
  <div class='row4'>
    <div class='field'><label for='f-start_x'>Start X</label><input id='f-start_x' name='start_x' type='number'
      min='0' step='1' inputmode='numeric'></div>
    <div class='field'><label for='f-start_y'>Start Y</label><input id='f-start_y' name='start_y' type='number'
      min='0' step='1' inputmode='numeric'></div>
    <div class='field'><label for='f-width'>Width</label><input id='f-width' name='width' type='number'
      min='1' step='1' placeholder='full' inputmode='numeric'></div>
    <div class='field'><label for='f-height'>Height</label><input id='f-height' name='height' type='number'
      min='1' step='1' placeholder='full' inputmode='numeric'></div>
  </div>
  <button type='button' id='full-frame' class='small-btn'>Full frame</button></fieldset>
  <div class='row2'>
    <div class='field'><label for='f-usb_bandwidth'>USB bandwidth <span class='muted small' id='r-usb'></span></label>
    <input id='f-usb_bandwidth' name='usb_bandwidth' type='number' step='1' inputmode='numeric'></div>
    <div class='field check'><label><input type='checkbox' name='high_speed'
      id='f-high_speed'> High-speed readout</label></div>
    {cooler_fields}
  </div>
  <fieldset id='auto-controls' hidden><legend>Automatic (run by the SDK)</legend>
  <div class='row4' id='auto-list'></div>
  <p class='muted small'>Applied at once. A control on auto keeps the value the SDK chooses: its field
  above is not sent with Apply (sending a value would take it back to manual).</p></fieldset>
  <div class='buttons'><button type='submit' class='primary' id='apply'>Apply &amp; save</button>
  <button type='button' id='revert'>Revert</button></div>
  <p class='muted small'>Applied to the camera now and saved in the config file as its defaults for the next start.
  Alpaca/INDI clients may still change them.</p>
  </form>
</section>
<section class='card' id='schedule'>
  <h2>Capture schedule</h2>
  <form id='schedule-form' autocomplete='off' novalidate>
  <div class='field'><label for='f-schedule'>Daily window (local time)</label>
  <input id='f-schedule' name='window' placeholder='20:00-06:00'
    pattern='\\s*\\d{{1,2}}:\\d{{2}}\\s*-\\s*\\d{{1,2}}:\\d{{2}}\\s*'></div>
  <div class='buttons'><button type='submit' class='primary' id='schedule-save'>Save</button>
  <button type='button' id='schedule-clear'>Clear</button></div>
  <p class='muted small' id='schedule-now'></p>
  <p class='muted small'>Outside the window the camera is released (another program may use it) and
  continuous capture resumes at the window's start.</p>
  </form>
</section>
</div>
<div class='col col-a'>
<section class='card' id='preview-card'>
  <h2>Last image <span id='preview-info' class='muted small'></span></h2>
  <div class='preview-box'><img id='preview' alt='preview of the last image' data-seq='0' hidden>
  <p id='preview-empty' class='muted'>No image yet: connect and expose.</p></div>
</section>
<section class='card' id='status'>
  <h2>Status</h2>
  <dl class='facts'>
  <dt>Camera state</dt><dd id='s-state'>-</dd>
  <dt>Exposure</dt><dd id='s-progress'>-</dd>
  <dt>Sensor temperature</dt><dd id='s-temp'>-</dd>
  <dt>Cooler</dt><dd id='s-cooler'>-</dd>
  <dt>Off-peak</dt><dd id='s-offpeak'>-</dd>
  <dt>Last exposure</dt><dd id='s-last'>-</dd>
  </dl>
</section>
<section class='card' id='counters'>
  <h2>Counters</h2>
  <table class='counters'><tbody id='counters-body'><tr><td class='muted'>-</td></tr></tbody></table>
  <p class='small'><a id='history-link' href='/setup/v1/camera/{dev.number}/history'>History: the timeline, temperature
  and cooler plots and exposures of the last hours &rarr;</a></p>
</section>
<section class='card' id='about'>
  <h2>Camera</h2><table class='facts-table'>{facts}</table>
  <p class='muted small'>Alpaca: <code>/api/v1/camera/{dev.number}/</code></p>
</section>
</div>
</main>
<noscript><p class='msg err'>This page needs JavaScript.</p></noscript>
"""


async def setup_device(request: web.Request) -> web.Response:
    """``GET /setup/v1/{device_type}/{device_number}/setup``: the camera's control page."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    body = _camera_body(ctx, dev, message="Saved." if request.query.get("saved") else "")
    return _html(_page(request, dev.name, body, script="camera.js"))


# ------------------------------------------------------------------------------------ defaults


def _save_config(request: web.Request, ctx: ServerContext) -> None:
    """Write the config file (blocking; call in a worker thread). Users changed by
    ``zwo-alpaca passwd`` since the last look are picked up first, so this save keeps them."""
    if ctx.config is None:
        return
    sec = security.security_of(request)
    if sec is not None:
        sec.refresh(force=True)
    ctx.config.save()


def parse_defaults_form(form: Any, names: Any = None) -> dict[str, Any]:
    """Parse the fields of the defaults form that are present; raises ValueError with a readable message.

    Only the types are checked here (and the schedule's syntax); the core validates the values when
    they are applied. Blank means "the camera's default" (None). Booleans accept true/on/1 and false/off/0.
    """
    out: dict[str, Any] = {}
    for name, kind in DEFAULT_FIELDS.items():
        if names is not None and name not in names:
            continue
        if name not in form or kind is list:  # lists (auto_controls) have their own action, not the form
            continue
        raw = form.get(name)
        if kind is bool:
            if isinstance(raw, bool):
                out[name] = raw
            else:
                out[name] = str(raw).strip().lower() in ("true", "on", "1", "yes")
            continue
        text = str(raw).strip() if raw is not None else ""
        if text == "":
            out[name] = None
            continue
        try:
            if kind is int:
                if isinstance(raw, bool):
                    raise ValueError
                out[name] = int(text)
            elif kind is float:
                if "," in text:
                    raise ValueError
                value = float(text)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
                out[name] = value
            else:
                if name == "schedule":
                    _parse_window(text)
                out[name] = text
        except ValueError:
            what = {int: "whole number", float: "number"}.get(kind, "valid value")
            if name == "schedule":
                what = "window like 20:00-06:00"
            raise ValueError(f"{name}: {text!r} is not a {what}") from None
    return out


def _parse_window(text: str) -> Any:
    from driver import CaptureWindow  # noqa: PLC0415 - imported late: `zwo-alpaca --help` needs no driver

    try:
        return CaptureWindow.parse(text)  # spaces around the times are the parser's to allow
    except CameraError as exc:
        raise ValueError(exc.message) from None


# Config key (zwo_common.config.DEFAULT_FIELDS) -> CameraSettings field: the same name, except the
# readout mode, which is the core's image type. "schedule" (set_schedule()) and "auto_controls"
# (set_auto()) are not configure() settings.
_NOT_CONFIGURE = frozenset({"schedule", "auto_controls"})
_SETTING_OF = {key: {"readout_mode": "image_type"}.get(key, key) for key in DEFAULT_FIELDS
               if key not in _NOT_CONFIGURE}


# The settings set_subframe() takes together (binned pixels; None width/height: the full frame).
_FRAME_SETTINGS = ("start_x", "start_y", "width", "height", "bin")


def _keeps_current(setting: str, value: Any) -> bool:
    """A blank SDK-control value (gain, offset, USB, cooler target) leaves the camera's current one."""
    return value is None and controls.spec_for_setting(setting) is not None


def apply_defaults(dev: CameraDevice, values: dict[str, Any], log: logging.Logger) -> list[str]:
    """Apply persisted defaults to a camera via the core, one by one; returns readable problems (if any).

    Used at start-up (``serve``) and by the legacy form post. ``None`` values are skipped.
    """
    problems: list[str] = []
    for name, setting in _SETTING_OF.items():
        if name not in values or values[name] is None:
            continue
        try:
            dev.cam.configure(**{setting: values[name]})
        except Exception as exc:  # noqa: BLE001 - report and carry on with the other values
            message = getattr(exc, "message", None) or str(exc)
            problems.append(f"{name}: {message}")
            log.warning("camera %d: default %s=%r not applied: %s", dev.number, name, values[name], message)
    window = values.get("schedule")
    if window:
        try:
            dev.cam.set_schedule(_parse_window(window))
        except Exception as exc:  # noqa: BLE001
            message = getattr(exc, "message", None) or str(exc)
            problems.append(f"schedule: {message}")
            log.warning("camera %d: schedule %r not applied: %s", dev.number, window, message)
    if values.get("auto_controls"):
        _apply_auto(dev, list(values["auto_controls"]), log)
    return problems


def _apply_auto(dev: CameraDevice, names: list[str], log: logging.Logger) -> None:
    """The saved auto controls, through ``set_auto()``: now if the camera's controls are known, else
    once, right after its first connection (the core then keeps them across reconnects)."""
    def apply() -> None:
        for name in names:
            try:
                dev.cam.set_auto(name, True)
            except Exception as exc:  # noqa: BLE001 - a control this camera lacks: say so, go on
                log.warning("camera %d: saved auto control %s not applied: %s", dev.number, name,
                            getattr(exc, "message", None) or exc)

    info = dev.cam.info
    if info is not None and info.controls is not None:
        apply()
        return

    def on_event(event: Any) -> None:
        if getattr(event, "kind", None) != "connected":
            return
        dev.cam.remove_listener(on_event)
        # Not in the core's thread that publishes the event: set_auto() calls the SDK.
        threading.Thread(target=apply, name=f"camera{dev.number}-auto", daemon=True).start()

    dev.cam.add_listener(on_event)


def _auto_saved(dev: CameraDevice) -> dict[str, Any]:
    """The ``auto_controls`` config key for the camera's auto controls now (None removes it)."""
    names = sorted(n for n, on in dev.cam.settings.auto_controls.items() if on)
    return {"auto_controls": names or None}


def _persist(request: web.Request, ctx: ServerContext, dev: CameraDevice, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the camera's saved defaults (None removes a key) and write the file."""
    if ctx.config is None:
        return
    merged = ctx.config.defaults(dev.key)
    merged.update(changes)
    ctx.config.set_defaults(dev.key, merged)
    _save_config(request, ctx)


async def setup_device_post(request: web.Request) -> web.Response:
    """``POST /setup/v1/camera/{n}/setup`` (form): validate, apply and save the defaults it carries."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    form = await security.read_body(request)
    try:
        values = parse_defaults_form(form)
    except ValueError as exc:
        return _html(_page(request, dev.name, _camera_body(ctx, dev, error=str(exc)), script="camera.js"), 400)
    loop = asyncio.get_running_loop()
    problems = await loop.run_in_executor(ctx.sdk_pool, apply_defaults, dev, values, ctx.log)
    if problems:
        text = "Not saved: " + "; ".join(problems)
        return _html(_page(request, dev.name, _camera_body(ctx, dev, error=text), script="camera.js"), 400)
    await loop.run_in_executor(ctx.sdk_pool, _persist, request, ctx, dev, values)
    raise web.HTTPSeeOther(f"/setup/v1/camera/{dev.number}/setup?saved=1")


# ------------------------------------------------------------------------------------ JSON API


def _iso(when: Any) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when is not None else None


def _status_json(dev: CameraDevice, st: Any) -> dict[str, Any]:
    return {
        "state": str(getattr(st.state, "value", st.state)),
        "label": _state_label(st),
        "ascom_state": _STATE_NAMES.get(ascom_camera_state(st), "?"),
        "connected": bool(st.connected),
        "connecting": bool(st.connecting),
        "image_ready": bool(st.image_ready),
        "percent": int(st.percent_completed),
        "status_text": st.status_text,
        "error": st.error,
        "ccd_temperature": st.ccd_temperature,
        "cooler_on": st.cooler_on,
        "cooler_power": st.cooler_power,
        "target_temperature": st.target_temperature,
        "ramp_setpoint": st.ramp_setpoint,
        "temperature_reached": st.temperature_reached,
        "capturing": bool(st.capturing),
        "off_peak_until": st.off_peak_until,
        "frame_seq": int(st.frame_seq),
        "last_exposure_duration": st.last_exposure_duration,
        "last_exposure_start": _iso(st.last_exposure_start),
    }


def _range(known: dict[str, Any] | None, spec: controls.ControlSpec) -> dict[str, Any] | None:
    """The camera's limits of one SDK control (found as the core finds it: by name, alias or type)."""
    ctl = controls.find(known, spec)
    return {"min": ctl.min, "max": ctl.max, "default": ctl.default} if ctl is not None else None


def _info_json(dev: CameraDevice) -> dict[str, Any]:
    info = dev.cam.info
    if info is None:
        return {}
    known = info.controls or {}
    return {
        "model": info.model, "max_width": info.max_width, "max_height": info.max_height,
        "is_color": bool(info.is_color), "bayer_pattern": info.bayer_pattern, "has_cooler": bool(info.has_cooler),
        "supported_bins": list(info.supported_bins),
        "readout_modes": [m for m in READOUT_MODES if m in tuple(info.image_types)] or ["RAW16"],
        "exposure_min": info.exposure_min_s, "exposure_max": info.exposure_max_s,
        "gain": _range(known, controls.GAIN), "offset": _range(known, controls.OFFSET),
        "usb_bandwidth": _range(known, controls.BANDWIDTH), "target_temperature": _range(known, controls.TARGET_TEMP),
        "high_speed": controls.find(known, controls.HIGH_SPEED) is not None if known else None,
        "controls_known": info.controls is not None,
        # the controls the SDK can run itself, with the form field each one's value is in (if any)
        "auto_controls": [{"name": c.name, "setting": controls.setting_for(c.name)}
                          for c in controls.auto_capable(info.controls)],
    }


def _settings_json(dev: CameraDevice) -> dict[str, Any]:
    s = dev.cam.settings
    info = dev.cam.info
    known = info.controls if info is not None else None

    def value(v: Any, spec: controls.ControlSpec) -> Any:
        if v is not None:
            return v
        r = _range(known, spec)
        return r["default"] if r else None

    return {
        "gain": value(s.gain, controls.GAIN), "offset": value(s.offset, controls.OFFSET), "bin": s.bin,
        "readout_mode": s.image_type, "start_x": s.start_x, "start_y": s.start_y, "width": s.width,
        "height": s.height, "usb_bandwidth": value(s.usb_bandwidth, controls.BANDWIDTH),
        "high_speed": bool(s.high_speed),
        "cooler_on": bool(s.cooler_on), "target_temperature": s.target_temperature,
        "ramp_slope": s.ramp_slope, "ramp_threshold": s.ramp_threshold,
        "warm_at_disconnect": bool(s.warm_at_disconnect), "auto_controls": dict(s.auto_controls),
    }


def _slow_status(dev: CameraDevice) -> dict[str, Any]:
    """The parts of status.json that take the core's lock (settings, counters): in a worker thread."""
    schedule = dev.cam.schedule
    return {"settings": _settings_json(dev), "counters": dev.cam.counters(),
            "schedule": str(schedule) if schedule is not None else "", "info": _info_json(dev)}


async def status_json(request: web.Request) -> web.Response:
    """``GET /setup/v1/camera/{n}/status.json``."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    st = dev.status()  # never waits
    try:
        slow = await run_blocking(ctx.sdk_pool, lambda: _slow_status(dev), min(ctx.call_timeout, 10.0))
    except AlpacaError as exc:
        slow = {"settings": None, "counters": None, "schedule": None, "info": None, "slow_error": exc.message}
    loops = _loops(ctx)
    loop = loops.get(dev.key) if loops is not None else None
    return _json({"number": dev.number, "name": dev.name, "status": _status_json(dev, st),
                  "capture": loop.status() if loop is not None else None,
                  "capture_root": str(loops.root) if loops is not None else None,
                  "csrf": _csrf(request), **slow})


async def preview_png(request: web.Request) -> web.StreamResponse:
    """``GET /setup/v1/camera/{n}/preview.png?seq=N&w=800``: the last frame as a stretched PNG."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    width = preview.clamp_width(request.query.get("w", preview.DEFAULT_WIDTH))
    try:
        seq = int(request.query.get("seq", "") or dev.status().frame_seq)
    except ValueError:
        seq = dev.status().frame_seq
    cache = _page_state(request, dev).preview
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(cache.get(seq, width)), 60.0)
    except preview.PreviewBusy as exc:
        return _json({"ok": False, "error": str(exc)}, 503)
    except TimeoutError:
        return _json({"ok": False, "error": "the preview took too long to render"}, 503)
    except Exception:  # a render failure must not become a stack trace
        ctx.log.exception("camera %d: preview failed", dev.number)
        return _json({"ok": False, "error": "the preview could not be rendered (details are in the server log)"}, 409)
    if result is None:
        return _json({"ok": False, "error": "no image yet: take an exposure first"}, 404)
    headers = {"X-Frame-Seq": str(result.seq), "X-Preview-Size": f"{result.cols}x{result.rows}",
               "X-Frame-Size": f"{result.frame_width}x{result.frame_height}",
               "X-Frame-Duration": f"{result.duration:g}", "X-Frame-Type": result.image_type,
               "Cache-Control": ("private, max-age=86400" if "seq" in request.query and result.seq == seq
                                 else "no-store")}
    return web.Response(body=result.png, content_type="image/png", headers=headers)


class ActionError(Exception):
    """A request the page cannot parse (a wrong type, an unknown name): shown as it is."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _seconds(body: dict[str, Any], name: str) -> float:
    """A number of seconds from the body: only its type is checked here, its range by the core."""
    raw = body.get(name)
    try:
        if isinstance(raw, bool):
            raise ValueError
        return float(str(raw).strip())
    except (TypeError, ValueError):
        raise ActionError(f"{name}: {raw!r} is not a number of seconds") from None


def _settings_changes(dev: CameraDevice, body: dict[str, Any]) -> dict[str, Any]:
    """Parse the settings form (no camera access): the config-key values to apply and persist."""
    unknown = set(body) - (set(DEFAULT_FIELDS) - _NOT_CONFIGURE)
    if unknown:
        raise ActionError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        values = parse_defaults_form(body)
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    info = dev.cam.info
    if info is not None and not info.has_cooler:
        values.pop("cooler_on", None)
        values.pop("target_temperature", None)
    for key in ("start_x", "start_y"):
        if key in values and values[key] is None:
            values[key] = 0
    if "bin" in values and values["bin"] is None:
        values["bin"] = 1
    return values


def _apply_settings(dev: CameraDevice, values: dict[str, Any]) -> None:
    """Apply the form's values (all or nothing); the core checks every one, the region included.

    The region and binning go to ``set_subframe()``, which checks the whole subframe against the
    binned sensor now (the page sends it as one value, unlike ASCOM's one-at-a-time setters); the
    rest to one ``configure()``. If that is refused, the region is put back, so nothing changed.
    Runs in a worker thread. Blank gain/offset/USB/target leave the camera's current value.
    """
    cam = dev.cam
    changes = {_SETTING_OF[k]: v for k, v in values.items()
               if k in _SETTING_OF and not _keeps_current(_SETTING_OF[k], v)}
    frame = {k: changes.pop(k) for k in _FRAME_SETTINGS if k in changes}
    if not frame:
        cam.configure(**changes)
        return
    before = cam.settings
    current = {k: getattr(before, k) for k in _FRAME_SETTINGS}
    cam.set_subframe(**{**current, **frame})
    try:
        if changes:
            cam.configure(**changes)
    except Exception:
        try:
            cam.configure(**current)  # valid a moment ago, so only a lost camera can refuse it
        except Exception:  # the original refusal is what the user must see
            dev.log.warning("camera %d: the region could not be put back", dev.number, exc_info=True)
        raise


# ------------------------------------------------------------------------------------ the loop

# How long stopping a loop may take: the core's bounded stop plus writing the frames already queued.
_LOOP_STOP_S = 8.0


def _loops(ctx: ServerContext) -> capture_files.CaptureLoops | None:
    loops = getattr(ctx, "capture", None)
    return loops if isinstance(loops, capture_files.CaptureLoops) else None


def attach_capture(ctx: ServerContext, capture_root: str | None) -> capture_files.CaptureLoops:
    """Give the server its loops: files only under ``capture_root`` (the ``serve --capture-root``
    option; else the config key ``server.capture_root``; else ``~/zwo-alpaca-captures``), their
    intent kept in ``capture-loops.json`` next to the config file (no file without a config)."""
    configured = capture_root or (ctx.config.server_value("capture_root") if ctx.config is not None else None)
    root = capture_files.capture_root(configured if isinstance(configured, str) and configured.strip() else None)
    state = ctx.config.path.parent / capture_files.STATE_FILE if ctx.config is not None else None
    loops = capture_files.CaptureLoops(root, state, logging.getLogger("zwo_alpaca.capture"))
    ctx.capture = loops
    return loops


def resume_capture(ctx: ServerContext, dev: CameraDevice) -> None:
    """Bring back the loop that was running on this camera when the server stopped (returns at once:
    a thread waits for the capture window, connects the camera and starts capturing)."""
    loops = _loops(ctx)
    if loops is not None:
        loops.resume(dev.key, dev.cam, number=dev.number, logger=dev.log)


def close_capture(ctx: ServerContext, timeout: float) -> None:
    """Server shutdown (blocking, bounded): running loops are kept for the next start, queued frames written."""
    loops = _loops(ctx)
    if loops is not None:
        loops.close(timeout)


def _count(body: dict[str, Any]) -> int | None:
    raw = body.get("count")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        if isinstance(raw, bool) or float(str(raw).strip()) != int(float(str(raw).strip())):
            raise ValueError
        return int(float(str(raw).strip()))
    except (TypeError, ValueError, OverflowError):
        raise ActionError(f"count: {raw!r} is not a whole number of frames") from None


def _start_loop(ctx: ServerContext, dev: CameraDevice, body: dict[str, Any], exposure: float, mode: str) -> str:
    """``action/capture`` (blocking): check the request, then start the loop through the core."""
    loops = _loops(ctx)
    save = body.get("save") in (True, "true", "on", "1", 1)
    if loops is None:
        if save:
            raise ActionError("saving frames is not available on this server")
        dev.cam.start_capture(lambda frame: None, exposure=exposure, mode=mode)
        return f"Continuous capture started ({mode}, {exposure:g} s)"
    count = _count(body)
    try:
        spec = loops.prepare(exposure=exposure, mode=mode, save=save, directory=str(body.get("directory") or ""),
                             pattern=str(body.get("pattern") or ""), count=count)
        loops.start(dev.key, dev.cam, spec, number=dev.number, logger=dev.log)
    except capture_files.CaptureSetupError as exc:
        raise ActionError(exc.message) from None
    text = f"Continuous capture started ({mode}, {exposure:g} s)"
    if save:
        text += f", saving {f'{spec.count} frame(s)' if spec.count else 'every frame'} to {spec.directory}"
    return text


def _stop_loop(ctx: ServerContext, dev: CameraDevice) -> str:
    """``action/stop`` (blocking): stop the loop and forget it; the frames already read out are saved."""
    loops = _loops(ctx)
    loop = loops.stop(dev.key, _LOOP_STOP_S) if loops is not None else None
    dev.cam.stop_capture()  # also a capture this page did not start (e.g. an INDI video stream)
    if loop is not None and loop.spec.save:
        return f"Continuous capture stopped: {loop.saved} file(s) saved"
    return "Continuous capture stopped"


async def camera_action(request: web.Request) -> web.Response:
    """``POST /setup/v1/camera/{n}/action/{name}`` (JSON body): one camera operation."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    name = request.match_info["action"]
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            if request.content_type == "application/json":
                parsed = await security.read_body(request, "json")
            else:
                parsed = dict(await security.read_body(request))
        except (ValueError, UnicodeDecodeError):
            return _json({"ok": False, "error": "the request body is not valid JSON"}, 400)
        if not isinstance(parsed, dict):
            return _json({"ok": False, "error": "the request body must be a JSON object"}, 400)
        body = parsed
    cam = dev.cam
    message = ""
    field_name: str | None = None  # the body field whose value the core checks (names its refusal)
    try:
        if name == "connect":
            await run_blocking(ctx.sdk_pool, cam.begin_connect, ctx.call_timeout)
            message = "Connecting…"
        elif name == "disconnect":
            loops = _loops(ctx)
            if loops is not None and loops.get(dev.key) is not None:  # a loop ended here is not resumed
                await run_blocking(ctx.sdk_pool, lambda: loops.stop(dev.key, _LOOP_STOP_S), ctx.call_timeout)
            await run_blocking(ctx.sdk_pool, cam.begin_disconnect, ctx.call_timeout)
            message = "Disconnecting…"
        elif name == "expose":
            duration = _seconds(body, "duration")
            field_name = "duration"
            await run_blocking(ctx.sdk_pool, lambda: cam.start_exposure(duration, True), ctx.call_timeout)
            message = f"Exposing {duration:g} s"
        elif name == "abort":
            await run_blocking(ctx.sdk_pool, cam.abort_exposure, ctx.call_timeout)
            message = "Exposure aborted"
        elif name == "capture":
            exposure = _seconds(body, "exposure")
            mode = str(body.get("mode", "exposure"))
            field_name = "exposure"
            message = await run_blocking(ctx.sdk_pool, lambda: _start_loop(ctx, dev, body, exposure, mode),
                                         ctx.call_timeout)
        elif name == "stop":
            message = await run_blocking(ctx.sdk_pool, lambda: _stop_loop(ctx, dev), ctx.call_timeout)
        elif name == "settings":
            values = _settings_changes(dev, body)
            await run_blocking(ctx.sdk_pool, lambda: _apply_settings(dev, values), ctx.call_timeout)
            # A value given makes its control manual again (the core): the saved auto list follows.
            saved = {**values, **_auto_saved(dev)}
            await run_blocking(ctx.sdk_pool, lambda: _persist(request, ctx, dev, saved), ctx.call_timeout)
            message = "Settings applied and saved"
        elif name == "auto":
            control, on = str(body.get("control", "")), body.get("on")
            if not isinstance(on, bool):
                raise ActionError(f"on: {on!r} is not true or false")
            await run_blocking(ctx.sdk_pool, lambda: cam.set_auto(control, on), ctx.call_timeout)
            await run_blocking(ctx.sdk_pool, lambda: _persist(request, ctx, dev, _auto_saved(dev)), ctx.call_timeout)
            message = f"{control}: {'automatic' if on else 'manual'}"
        elif name == "schedule":
            text = str(body.get("window", "") or "").strip()
            try:
                window = _parse_window(text) if text else None
            except ValueError as exc:
                raise ActionError(str(exc)) from None
            await run_blocking(ctx.sdk_pool, lambda: cam.set_schedule(window), ctx.call_timeout)
            saved = {"schedule": str(window) if window else None}
            await run_blocking(ctx.sdk_pool, lambda: _persist(request, ctx, dev, saved),
                               ctx.call_timeout)
            message = f"Schedule set: capture {window}" if window else "Schedule cleared: no capture window"
        else:
            return _json({"ok": False, "error": f"unknown action {name!r}"}, 404)
    except ActionError as exc:
        return _json({"ok": False, "error": exc.message}, exc.status)
    except Exception as exc:  # noqa: BLE001 - every failure is shown as a readable message
        return _refusal(ctx, dev, name, exc, field_name)
    return _json({"ok": True, "message": message})


def _refusal(ctx: ServerContext, dev: CameraDevice, action: str, exc: BaseException,
             field_name: str | None = None) -> web.Response:
    """The one mapping of a failed page action to its answer: the core's message, unchanged.

    A refused value (InvalidValue) or a missing feature (NotSupported) is HTTP 400, any other core
    or Alpaca-layer error (wrong state, not connected, camera gone, timeout) 409; an InvalidValue is
    prefixed with the body field it refused, e.g. ``duration: exposure -1 s is out of range: valid ...``.
    Anything unexpected is logged and only says where to look.
    """
    if isinstance(exc, (CameraError, AlpacaError)):
        message = exc.message
        if field_name and isinstance(exc, InvalidValueError):
            message = f"{field_name}: {message}"
        status = 400 if isinstance(exc, (InvalidValueError, NotSupportedError)) else 409
    else:
        ctx.log.error("camera %d: page action %s failed", dev.number, action, exc_info=exc)
        message, status = f"{action} failed: internal error (details are in the server log)", 409
    return _json({"ok": False, "error": message}, status)


# ------------------------------------------------------------------------------------ routes


async def root(request: web.Request) -> web.Response:
    """``/``: send browsers to the setup page."""
    raise web.HTTPFound("/setup")


def add_setup_routes(app: web.Application) -> None:
    """Register the browser pages, their JSON endpoints and static files on ``app``."""
    app[PAGES_KEY] = {}
    app.router.add_get("/", root, allow_head=False)
    app.router.add_get("/setup", setup_index, allow_head=False)
    app.router.add_post("/setup", setup_index_post)
    app.router.add_get("/setup/cameras.json", cameras_json, allow_head=False)
    app.router.add_static("/setup/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app.router.add_get("/setup/v1/camera/{device_number:[0-9]{1,10}}/status.json", status_json, allow_head=False)
    app.router.add_get("/setup/v1/camera/{device_number:[0-9]{1,10}}/preview.png", preview_png, allow_head=False)
    app.router.add_post("/setup/v1/camera/{device_number:[0-9]{1,10}}/action/{action:[a-z]{1,20}}", camera_action)
    app.router.add_get("/setup/v1/{device_type:[^/]*}/{device_number:[^/]*}/setup", setup_device, allow_head=False)
    app.router.add_post("/setup/v1/{device_type:[^/]*}/{device_number:[^/]*}/setup", setup_device_post)
