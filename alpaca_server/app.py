"""The aiohttp application: routing, the never-500 guard, and the device-API request path.

URL handling follows the Alpaca rules:

* ``/api/v1/{device_type}/{device_number}/{member}``: every element lower case. A mis-cased device
  type or member, or an unknown member, is 404; an unknown (lower-case) device type or an unknown
  device number is 400 (the spec's "invalid device number or misspelt device type"); a known member
  with the wrong HTTP method is 405.
* Anything that escapes a handler becomes an ASCOM driver error (0x5FF, HTTP 200) for API paths or a
  plain page for others, with the traceback only in the server log - never a 500.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import struct
import termios
import traceback
from typing import Any

from aiohttp import web

from . import imagecodec, limits, security
from .camera_api import NO_VALUE, Blocking, CameraDevice, run_blocking
from .context import CTX_KEY, ServerContext
from .history_page import add_history_routes
from .protocol import (
    INTERNAL_ERROR,
    UINT32_MAX,
    AlpacaError,
    AlpacaRequest,
    BadRequest,
    envelope,
    envelope_suffix,
    error_from_exception,
)
from .setup_pages import add_setup_routes

__all__ = ["CTX_KEY", "ServerContext", "build_app"]  # ServerContext/CTX_KEY live in context.py; kept importable here

ASCOM_DEVICE_TYPES = frozenset(
    {
        "camera",
        "covercalibrator",
        "dome",
        "filterwheel",
        "focuser",
        "observingconditions",
        "rotator",
        "safetymonitor",
        "switch",
        "telescope",
    }
)
_DIGITS = re.compile(r"^[0-9]+$")
# Large bodies are written in slices so aiohttp's flow control (drain) keeps the transport buffer
# small: the cached image is the only full-size copy in memory during a download.
WRITE_CHUNK = 4 * 1024 * 1024
JSON_CONTENT_TYPE = "application/json"

def json_response(body: bytes, status: int = 200) -> web.Response:
    """A JSON response from pre-encoded bytes."""
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_CONTENT_TYPE})


def text_response(text: str, status: int) -> web.Response:
    """A plain-text response (HTTP 400 reasons and the like)."""
    return web.Response(text=text, status=status, content_type="text/plain")


@web.middleware
async def guard_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every escaped exception into a well-formed answer; log the traceback server-side."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BadRequest as exc:
        return text_response(exc.reason, 400)
    except asyncio.CancelledError:
        raise
    except Exception:  # this is the last line of defence
        ctx = request.app[CTX_KEY]
        ctx.log.exception("unexpected error serving %s %s", request.method, request.path)
        message = "internal server error (details are in the server log)"
        if request.path.startswith("/api/") or request.path.startswith("/management/"):
            err = AlpacaError(INTERNAL_ERROR, message)
            return json_response(envelope(0, ctx.counter.next(), error=err))
        return web.Response(text=f"<html><body><p>{message}</p></body></html>", content_type="text/html")


def _to_alpaca_error(ctx: ServerContext, exc: BaseException, what: str, member: str | None = None) -> AlpacaError:
    mapped = error_from_exception(exc, member)
    if mapped is not None:
        return mapped
    ctx.log.error("unexpected error in %s", what, exc_info=exc)
    return AlpacaError(INTERNAL_ERROR, f"internal error in {what} (details are in the server log)")


async def parse_alpaca_request(request: web.Request) -> AlpacaRequest:
    """GET: query string, names case-insensitive. PUT: form body, names exact."""
    if request.method == "GET":
        return AlpacaRequest.from_get(request.query.items())
    try:
        form = await asyncio.wait_for(request.post(), limits.BODY_TIMEOUT_S)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {limits.BODY_TIMEOUT_S:g} s",
                                     content_type="text/plain") from None
    items = [(k, v) for k, v in form.items() if isinstance(v, str)]
    return AlpacaRequest.from_put(items)


def resolve_device(ctx: ServerContext, device_type: str, device_number: str) -> CameraDevice:
    """The device for a path, or the HTTP error the Alpaca rules ask for."""
    if device_type != device_type.lower():
        raise web.HTTPNotFound(text=f"device type {device_type!r} must be lower case", content_type="text/plain")
    if device_type not in ASCOM_DEVICE_TYPES:
        raise BadRequest(f"unknown device type {device_type!r}")
    if not _DIGITS.match(device_number) or int(device_number) > UINT32_MAX:
        raise BadRequest(f"device number {device_number!r} is not an unsigned integer (0 to {UINT32_MAX})")
    number = int(device_number)
    device = ctx.devices.get(number) if device_type == "camera" else None
    if device is None:
        have = ", ".join(str(n) for n in sorted(ctx.devices)) or "none"
        raise BadRequest(f"there is no {device_type} device number {number} (cameras: {have})")
    return device


async def device_api(request: web.Request) -> web.StreamResponse:
    """``/api/v1/{device_type}/{device_number}/{member}``."""
    ctx = request.app[CTX_KEY]
    member = request.match_info["member"]
    device = resolve_device(ctx, request.match_info["device_type"], request.match_info["device_number"])
    if member != member.lower():
        raise web.HTTPNotFound(text=f"member {member!r} must be lower case", content_type="text/plain")
    methods = CameraDevice.MEMBERS.get(member)
    if methods is None:
        raise web.HTTPNotFound(text=f"camera has no member {member!r}", content_type="text/plain")
    if request.method not in methods:
        raise web.HTTPMethodNotAllowed(request.method, sorted(methods),
                                       text=f"{member} allows {', '.join(sorted(methods))}")
    req = await parse_alpaca_request(request)
    if member in ("imagearray", "imagearrayvariant"):
        return await image_response(request, ctx, device, member, req)
    stid = ctx.counter.next()
    ctid = req.client_transaction_id
    handler = device.handler(member, request.method)
    assert handler is not None  # MEMBERS is built from the handlers
    # Handlers parse their parameters and make cheap checks before returning a Blocking call; they
    # have no side effects until that call runs. So a request that cannot be understood is 400 even
    # when the camera is disconnected, and NotConnected wins over any other ASCOM error.
    try:
        device.require_connected(member)
        not_connected: AlpacaError | None = None
    except AlpacaError as exc:
        not_connected = exc
    checked: str | None = None  # the ASCOM member whose value the core checks (names its InvalidValue)
    try:
        try:
            result = handler(req)
        except BadRequest:
            raise
        except Exception:
            if not_connected is not None:
                raise not_connected from None
            raise
        if not_connected is not None:
            raise not_connected
        if isinstance(result, Blocking):
            checked = result.member
            result = await run_blocking(ctx.sdk_pool, result.fn, ctx.call_timeout)
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes an ASCOM error here
        err = _to_alpaca_error(ctx, exc, f"{request.method} {member}", checked)
        if err.number >= 0x500:
            ctx.log.info("camera %d %s %s: error 0x%X %s", device.number, request.method, member, err.number,
                         err.message)
        return json_response(envelope(ctid, stid, error=err))
    if result is NO_VALUE:
        return json_response(envelope(ctid, stid, has_value=False))
    return json_response(envelope(ctid, stid, result))


class StalledClient(ConnectionError):
    """The client took no bytes of a reply for the send timeout; its connection was closed."""


def _unsent_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes of this connection not yet taken by the client: asyncio's buffer plus the kernel's send
    queue. The kernel part matters: the socket is reported writable again only once a good part of
    its (multi-MB) send buffer is free, so asyncio's own buffer can stand still for seconds while a
    slow client is in fact reading."""
    if transport is None:
        return 0
    size = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            size += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:  # not a TCP socket, or the connection is already gone
            pass
    return size


async def _write_watched(resp: web.StreamResponse, request: web.Request, chunk: memoryview, timeout: float) -> None:
    """``resp.write(chunk)``, closing the connection if the socket accepts no byte for ``timeout`` s.

    Progress, not total time, is what counts: a slow link that keeps taking bytes is never cut off,
    however long a slice takes to drain.
    """
    write = asyncio.ensure_future(resp.write(chunk))
    transport = request.transport
    loop = asyncio.get_running_loop()
    last_size, last_progress = None, loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({write}, timeout=max(0.05, timeout / 4))
            if done:
                write.result()
                return
            size = _unsent_bytes(transport)
            now = loop.time()
            if last_size is None or size < last_size:
                last_size, last_progress = size, now
            elif now - last_progress >= timeout:
                if transport is not None:
                    transport.abort()
                raise StalledClient(f"the client read nothing for {timeout:g} s")
    finally:
        if not write.done():
            write.cancel()
            await asyncio.gather(write, return_exceptions=True)


async def _write_chunks(resp: web.StreamResponse, request: web.Request, data: memoryview | bytes,
                        timeout: float) -> None:
    view = memoryview(data)
    for offset in range(0, len(view), WRITE_CHUNK):
        await _write_watched(resp, request, view[offset : offset + WRITE_CHUNK], timeout)
        # When the socket takes each slice at once (a fast reader, loopback), aiohttp's drain never
        # suspends, and a whole 122 MB frame would go out without the loop answering anyone else:
        # polls waited for the entire download (p99 63 ms). Yield after every slice.
        await asyncio.sleep(0)


async def image_response(
    request: web.Request, ctx: ServerContext, device: CameraDevice, member: str, req: AlpacaRequest
) -> web.StreamResponse:
    """ImageArray / ImageArrayVariant as ImageBytes (``Accept: application/imagebytes``) or JSON."""
    want_bytes = imagecodec.IMAGEBYTES_CONTENT_TYPE in request.headers.get("Accept", "").lower()
    stid = ctx.counter.next()
    ctid = req.client_transaction_id
    slot = None
    try:
        device.require_connected(member)
        frame = await run_blocking(ctx.sdk_pool, device.image_frame, ctx.call_timeout)
        slot = device.acquire(frame)
        # Shielded: the prepared image is shared, and a client that goes away (cancelling this wait)
        # must not cancel it for everyone else.
        prepared = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(slot.future)), ctx.call_timeout)
    except Exception as exc:  # noqa: BLE001 - the error goes back in the client's chosen format
        if slot is not None:
            device.release(slot)
        err = _to_alpaca_error(ctx, exc, f"GET {member}")
        if want_bytes:
            body = imagecodec.imagebytes_error(err.number, err.message, ctid, stid)
            return web.Response(body=body, headers={"Content-Type": imagecodec.IMAGEBYTES_CONTENT_TYPE})
        return json_response(envelope(ctid, stid, error=err))
    try:
        if want_bytes:
            return await _send_imagebytes(request, ctx, prepared, ctid, stid)
        return await _send_json_image(request, ctx, prepared, ctid, stid)
    finally:
        device.release(slot)


async def _send_imagebytes(request: web.Request, ctx: ServerContext, prepared: imagecodec.PreparedImage,
                           ctid: int, stid: int) -> web.StreamResponse:
    """The 44-byte header (this request's ids) then the shared pixel buffer, in slices, each band of
    the transpose as soon as it is final (the first download of a frame overlaps its transpose)."""
    header = imagecodec.imagebytes_header(prepared, ctid, stid)
    resp = web.StreamResponse(headers={"Content-Type": imagecodec.IMAGEBYTES_CONTENT_TYPE})
    resp.content_length = len(header) + prepared.nbytes
    try:
        await resp.prepare(request)
        await resp.write(header)
        for band, view in prepared.parts():
            if band is not None:
                if not band.done():
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(band)), ctx.call_timeout)
                band.result()  # a failed transpose raises here rather than sending garbage
            await _write_chunks(resp, request, view, ctx.send_timeout)
        await resp.write_eof()
    except StalledClient as exc:
        ctx.log.warning("image download to %s dropped: %s (send timeout; frees its image)", request.remote, exc)
    except ConnectionError as exc:
        ctx.log.debug("image download to %s ended early: %r", request.remote, exc)
    except Exception:  # the header is out: the client can only be told by a short body
        ctx.log.exception("image download to %s aborted: the image could not be prepared", request.remote)
        if request.transport is not None:
            request.transport.close()
    return resp


async def _send_json_image(request: web.Request, ctx: ServerContext, prepared: imagecodec.PreparedImage,
                           ctid: int, stid: int) -> web.StreamResponse:
    """JSON encoded from the shared prepared array in the codec pool (no Python lists; in parts, so
    the GIL is free between orjson calls), then sent as prefix / parts / suffix: the text is never
    copied into a second buffer."""
    loop = asyncio.get_running_loop()
    value = await loop.run_in_executor(ctx.codec_pool, imagecodec.json_value_parts, prepared)
    prefix = imagecodec.json_prefix(prepared)
    suffix = envelope_suffix(ctid, stid)
    resp = web.StreamResponse(headers={"Content-Type": JSON_CONTENT_TYPE})
    resp.content_length = len(prefix) + sum(len(part) for part in value) + len(suffix)
    try:
        await resp.prepare(request)
        await resp.write(prefix)
        for part in value:
            await _write_chunks(resp, request, part, ctx.send_timeout)
        await resp.write(suffix)
        await resp.write_eof()
    except ConnectionError as exc:
        if isinstance(exc, StalledClient):
            ctx.log.warning("JSON image download to %s dropped: %s (send timeout; frees its image)",
                            request.remote, exc)
        else:
            ctx.log.debug("JSON image download to %s ended early: %r", request.remote, exc)
        # asyncio keeps this exception in a reference cycle until the next garbage collection, and the
        # finished frames of its traceback would keep the whole JSON text (70-400 MB) alive that long.
        traceback.clear_frames(exc.__traceback__)
    del value
    return resp


# ---------------------------------------------------------------------------------- management


async def management_apiversions(request: web.Request) -> web.Response:
    """``/management/apiversions``: this server speaks Alpaca API version 1."""
    ctx = request.app[CTX_KEY]
    req = AlpacaRequest.from_get(request.query.items())
    return json_response(envelope(req.client_transaction_id, ctx.counter.next(), [1]))


async def management_description(request: web.Request) -> web.Response:
    """``/management/v1/description``."""
    ctx = request.app[CTX_KEY]
    req = AlpacaRequest.from_get(request.query.items())
    value = {
        "ServerName": ctx.server_name,
        "Manufacturer": ctx.manufacturer,
        "ManufacturerVersion": ctx.version,
        "Location": ctx.location,
    }
    return json_response(envelope(req.client_transaction_id, ctx.counter.next(), value))


async def management_configureddevices(request: web.Request) -> web.Response:
    """``/management/v1/configureddevices``: one entry per camera, in device-number order."""
    ctx = request.app[CTX_KEY]
    req = AlpacaRequest.from_get(request.query.items())
    value = [
        {"DeviceName": dev.name, "DeviceType": "Camera", "DeviceNumber": dev.number, "UniqueID": dev.unique_id}
        for _, dev in sorted(ctx.devices.items())
    ]
    return json_response(envelope(req.client_transaction_id, ctx.counter.next(), value))


def build_app(ctx: ServerContext) -> web.Application:
    """The whole HTTP application for ``ctx`` (device API, management API and setup pages)."""
    app = web.Application(middlewares=[guard_middleware], client_max_size=limits.MAX_BODY_BYTES)
    app[CTX_KEY] = ctx
    security.install(app, ctx.config)  # Basic auth (when users are configured) + CSRF for /setup posts
    app.router.add_route("*", "/api/v1/{device_type}/{device_number}/{member}", device_api)
    app.router.add_get("/management/apiversions", management_apiversions, allow_head=False)
    app.router.add_get("/management/v1/description", management_description, allow_head=False)
    app.router.add_get("/management/v1/configureddevices", management_configureddevices, allow_head=False)
    add_setup_routes(app)
    add_history_routes(app)
    return app
