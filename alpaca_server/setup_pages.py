"""Browser pages: ``/setup`` (the server and its cameras) and ``/setup/v1/camera/{n}/setup``.

The per-camera page shows the camera's state and a form for the persisted defaults (gain, offset,
readout mode, binning, USB bandwidth, high-speed mode, cooler set point). Saving writes the config
file and applies the values to the camera at once (the core stores them while disconnected and
applies them at the next connect). Plain server-rendered HTML: no scripts, no external assets.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any

from aiohttp import web

from .app import CTX_KEY, ServerContext
from .camera_api import READOUT_MODES, CameraDevice, ascom_camera_state
from .config import DEFAULT_FIELDS

_STATE_NAMES = {0: "Idle", 1: "Waiting", 2: "Exposing", 3: "Reading", 4: "Download", 5: "Error"}
_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:60em;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}"
    "th{background:#eee}.err{color:#a00}.ok{color:#060}label{display:inline-block;min-width:14em}"
    "form p{margin:.4em 0}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _camera_row(dev: CameraDevice) -> str:
    st = dev.status()
    state = _STATE_NAMES.get(ascom_camera_state(st), "?") if st.connected else "Not connected"
    text = getattr(st, "status_text", "") or ""
    temp = f"{st.ccd_temperature:.1f} °C" if st.ccd_temperature is not None else "-"
    link = f"/setup/v1/camera/{dev.number}/setup"
    return (
        f"<tr><td>{dev.number}</td><td><a href='{link}'>{html.escape(dev.name)}</a></td>"
        f"<td>{html.escape(state)}</td><td>{html.escape(text)}</td><td>{temp}</td>"
        f"<td><code>{html.escape(dev.unique_id)}</code></td></tr>"
    )


async def setup_index(request: web.Request) -> web.Response:
    """``GET /setup``: server identity, cameras with state, and the server-wide settings form."""
    ctx = request.app[CTX_KEY]
    rows = "".join(_camera_row(dev) for _, dev in sorted(ctx.devices.items()))
    note = ""
    if request.query.get("saved"):
        note = "<p class='ok'>Saved.</p>"
    body = (
        f"<p>{html.escape(ctx.server_name)} {html.escape(ctx.version)} &mdash; ASCOM Alpaca camera server for "
        f"ZWO ASI cameras ({html.escape(ctx.manufacturer)}).</p>"
        "<h2>Cameras</h2><table><tr><th>Device</th><th>Name</th><th>State</th><th>Status</th>"
        f"<th>Sensor</th><th>UniqueID</th></tr>{rows}</table>"
        "<h2>Server</h2>"
        f"{note}<form method='post' action='/setup'>"
        "<p><label for='location'>Location</label>"
        f"<input id='location' name='location' value='{html.escape(ctx.location, quote=True)}' maxlength='100'></p>"
        "<p><button type='submit'>Save</button></p></form>"
        "<p>The listening address and port are set on the command line (<code>zwo-alpaca serve --bind --port</code>).</p>"
    )
    return _html(_page(f"{ctx.server_name} setup", body))


async def setup_index_post(request: web.Request) -> web.Response:
    """``POST /setup``: save the server location."""
    ctx = request.app[CTX_KEY]
    form = await request.post()
    location = str(form.get("location", "") or "")[:100]
    if ctx.config is not None:
        ctx.config.set_server_value("location", location)
        ctx.config.save()
    raise web.HTTPSeeOther("/setup?saved=1")


def _device_or_403(ctx: ServerContext, request: web.Request) -> CameraDevice:
    dtype = request.match_info.get("device_type", "")
    num = request.match_info.get("device_number", "")
    dev = ctx.devices.get(int(num)) if dtype == "camera" and num.isdigit() and len(num) < 11 else None
    if dev is None:
        # The management spec answers 403 for a setup URL naming an unsupported device.
        page = _page("Unknown device", f"<p class='err'>There is no device {html.escape(dtype)}/{html.escape(num)} here. "
                     "See <a href='/setup'>/setup</a>.</p>")
        raise web.HTTPForbidden(text=page, content_type="text/html")
    return dev


def _field_input(name: str, value: Any, kind: type, hint: str) -> str:
    shown = "" if value is None else str(value)
    if kind is bool:
        checked = " checked" if value else ""
        return (
            f"<p><label for='{name}'>{name}</label><input type='checkbox' id='{name}' name='{name}' value='true'{checked}>"
            f" <small>{html.escape(hint)}</small></p>"
        )
    if name == "readout_mode":
        opts = "".join(
            f"<option value='{m}'{' selected' if m == value else ''}>{m}</option>" for m in ("",) + READOUT_MODES
        )
        return f"<p><label for='{name}'>{name}</label><select id='{name}' name='{name}'>{opts}</select> <small>{html.escape(hint)}</small></p>"
    return (
        f"<p><label for='{name}'>{name}</label><input id='{name}' name='{name}' value='{html.escape(shown, quote=True)}'>"
        f" <small>{html.escape(hint)}</small></p>"
    )


def _hints(dev: CameraDevice) -> dict[str, str]:
    info = dev.cam.info
    controls = (info.controls or {}) if info is not None else {}
    out: dict[str, str] = {}
    for name, ctl_name in (("gain", "Gain"), ("offset", "Offset"), ("usb_bandwidth", "BandWidth"), ("target_temperature", "TargetTemp")):
        ctl = controls.get(ctl_name)
        out[name] = f"{ctl.min} to {ctl.max} (SDK default {ctl.default})" if ctl is not None else "blank = SDK default"
    bins = ", ".join(map(str, info.supported_bins)) if info is not None else "1"
    out["bin"] = f"one of {bins}"
    out["readout_mode"] = "image type of new exposures"
    out["high_speed"] = "ZWO high-speed readout (FastReadout)"
    return out


def _camera_page(ctx: ServerContext, dev: CameraDevice, *, message: str = "", error: str = "",
                 values: dict[str, Any] | None = None) -> str:
    st = dev.status()
    info = dev.cam.info
    defaults = values if values is not None else (ctx.config.defaults(dev.key) if ctx.config else {})
    hints = _hints(dev)
    facts = [
        ("Device number", str(dev.number)),
        ("UniqueID", dev.unique_id),
        ("Connected", "yes" if st.connected else "no"),
        ("State", _STATE_NAMES.get(ascom_camera_state(st), "?") if st.connected else "Not connected"),
        ("Status", getattr(st, "status_text", "") or ""),
        ("Sensor temperature", f"{st.ccd_temperature:.1f} °C" if st.ccd_temperature is not None else "-"),
    ]
    if info is not None:
        facts += [
            ("Model", info.model),
            ("Serial", info.serial or "-"),
            ("Sensor", f"{info.max_width} x {info.max_height}, {info.pixel_size_um:g} µm, {info.bit_depth}-bit, "
                       f"{'colour ' + (info.bayer_pattern or '') if info.is_color else 'mono'}"),
            ("Cooler", "yes" if info.has_cooler else "no"),
            ("ST4 guide port", "yes" if info.has_st4 else "no"),
        ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    fields = "".join(
        _field_input(name, defaults.get(name), kind, hints.get(name, ""))
        for name, kind in DEFAULT_FIELDS.items()
        if not (name == "target_temperature" and info is not None and not info.has_cooler)
    )
    notes = (f"<p class='ok'>{html.escape(message)}</p>" if message else "") + (
        f"<p class='err'>{html.escape(error)}</p>" if error else ""
    )
    body = (
        f"<p><a href='/setup'>&larr; all cameras</a></p><table>{rows}</table>"
        "<h2>Defaults</h2><p>Applied when the server starts and when saved here; clients can still change them.</p>"
        f"{notes}<form method='post'>{fields}<p><button type='submit'>Save</button></p></form>"
    )
    return _page(dev.name, body)


async def setup_device(request: web.Request) -> web.Response:
    """``GET /setup/v1/{device_type}/{device_number}/setup``."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    return _html(_camera_page(ctx, dev, message="Saved." if request.query.get("saved") else ""))


def parse_defaults_form(form: Any) -> dict[str, Any]:
    """Validate the defaults form; raises ValueError with a readable message."""
    out: dict[str, Any] = {}
    for name, kind in DEFAULT_FIELDS.items():
        raw = form.get(name)
        if kind is bool:
            out[name] = str(raw).lower() in ("true", "on", "1") if raw is not None else False
            continue
        text = str(raw).strip() if raw is not None else ""
        if text == "":
            out[name] = None
            continue
        try:
            if kind is int:
                out[name] = int(text)
            elif kind is float:
                if "," in text:
                    raise ValueError
                out[name] = float(text)
            else:
                if name == "readout_mode" and text not in READOUT_MODES:
                    raise ValueError
                out[name] = text
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a valid {kind.__name__}") from None
    return out


def apply_defaults(dev: CameraDevice, values: dict[str, Any], log: logging.Logger) -> list[str]:
    """Apply persisted defaults to a camera via the core; returns human-readable problems (if any)."""
    mapping = {
        "gain": "gain",
        "offset": "offset",
        "usb_bandwidth": "usb_bandwidth",
        "readout_mode": "image_type",
        "bin": "bin",
        "high_speed": "high_speed",
        "target_temperature": "target_temperature",
    }
    problems: list[str] = []
    for name, setting in mapping.items():
        if name not in values or values[name] is None:
            continue
        try:
            dev.cam.configure(**{setting: values[name]})
        except Exception as exc:  # noqa: BLE001 - report and carry on with the other values
            message = getattr(exc, "message", None) or str(exc)
            problems.append(f"{name}: {message}")
            log.warning("camera %d: default %s=%r not applied: %s", dev.number, name, values[name], message)
    return problems


async def setup_device_post(request: web.Request) -> web.Response:
    """``POST /setup/v1/camera/{n}/setup``: validate, persist and apply the defaults."""
    ctx = request.app[CTX_KEY]
    dev = _device_or_403(ctx, request)
    form = await request.post()
    try:
        values = parse_defaults_form(form)
    except ValueError as exc:
        return _html(_camera_page(ctx, dev, error=str(exc), values={k: form.get(k) for k in DEFAULT_FIELDS}), 400)
    # configure() may touch the SDK: never on the event loop.
    problems = await asyncio.get_running_loop().run_in_executor(ctx.sdk_pool, apply_defaults, dev, values, ctx.log)
    if problems:
        return _html(_camera_page(ctx, dev, error="Not saved: " + "; ".join(problems), values=values), 400)
    if ctx.config is not None:
        ctx.config.set_defaults(dev.key, values)
        ctx.config.save()
    raise web.HTTPSeeOther(f"/setup/v1/camera/{dev.number}/setup?saved=1")


async def root(request: web.Request) -> web.Response:
    """``/``: send browsers to the setup page."""
    raise web.HTTPFound("/setup")


def add_setup_routes(app: web.Application) -> None:
    """Register the browser pages on ``app``."""
    app.router.add_get("/", root, allow_head=False)
    app.router.add_get("/setup", setup_index, allow_head=False)
    app.router.add_post("/setup", setup_index_post)
    app.router.add_get("/setup/v1/{device_type:[^/]*}/{device_number:[^/]*}/setup", setup_device, allow_head=False)
    app.router.add_post("/setup/v1/{device_type:[^/]*}/{device_number:[^/]*}/setup", setup_device_post)
