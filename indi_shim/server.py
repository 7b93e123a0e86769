"""The INDI server: TCP (and stdio) connections, per-client queues, dispatch to camera devices.

Threading model
---------------
* One asyncio event loop in its own thread ("indi-server") owns all INDI state: properties, client
  connections, queues. Nothing else touches that state.
* Blocking calls into the device core (connect, configure, start_exposure, ...) run in a thread pool
  (`io_pool`), FITS building and base64 encoding in another (`cpu_pool`), never on the loop.
* Core events arrive on core threads through `cam.add_listener` and are marshalled onto the loop with
  `call_soon_threadsafe`; the listener itself does nothing else, as the core requires.

Per-client output
-----------------
Each client has its own ordered queue and sender task; a slow client only delays itself. Ordinary
messages are small and queued in order (bounded: a client that stops reading for
`max_client_backlog` bytes is disconnected, as indiserver does). Image BLOBs are references to one
shared `EncodedBlob`, never copied per client; at most one not-yet-started BLOB per property is kept
per client, and a newer image replaces it (the client is told it was skipped), so a client that
cannot keep up gets the freshest image instead of an ever-growing backlog.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import protocol as P
from .blob import EncodedBlob
from .ccd import CcdDevice, device_names
from .xmlparse import Element, IndiStreamParser, ParseError

BLOB_MODES = ("Never", "Also", "Only")
DEFAULT_PORT = 7624


@dataclass
class _BlobSend:
    """A BLOB queued for one client: the shared encoding plus its element framing."""

    key: tuple[str, str]
    head: bytes
    blob: EncodedBlob
    dropped: bool = False


class ClientConnection(asyncio.Protocol):
    """One INDI client (a TCP peer, or indiserver on our stdin/stdout in driver mode)."""

    def __init__(self, server: IndiServer, *, peer: str, blob_default: str = "Never",
                 watch_all: bool = False) -> None:
        self.server = server
        self.peer = peer
        self.log = server.log
        self.parser = IndiStreamParser(max_element_bytes=server.max_element_bytes)
        self.transport: asyncio.BaseTransport | None = None
        self.blob_default = blob_default
        self.blob_modes: dict[tuple[str, str | None], str] = {}
        # Devices (and optionally properties) this client asked for with getProperties; like
        # indiserver, a client hears nothing about a device it has not asked about.
        self.watch_all = watch_all
        self.watch: dict[str, set[str] | None] = {}
        # An indiserver chained to us for all our devices (it asks for device "*"): one link for all
        # of its clients, which it filters BLOBs for itself; see `IndiServer._enable_blob`.
        self.upstream = False
        self._queue: deque[bytes | _BlobSend] = deque()
        self._queued_bytes = 0
        self._pending_blobs: dict[tuple[str, str], _BlobSend] = {}
        self._wakeup = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._closed = False
        self._sender: asyncio.Task[None] | None = None
        self.blobs_sent = 0
        self.blobs_skipped = 0
        self.bytes_sent = 0
        self.errors = 0

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if isinstance(transport, asyncio.WriteTransport):
            # A few MB of kernel+transport buffering keeps loopback/LAN pipes full without letting
            # one client's backlog grow; beyond it we wait in resume_writing().
            transport.set_write_buffer_limits(high=self.server.write_high_water, low=self.server.write_high_water // 4)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._sender = self.server.loop.create_task(self._send_loop(), name=f"indi-send-{self.peer}")
        self.server.client_added(self)

    def data_received(self, data: bytes) -> None:
        for item in self.parser.feed(data):
            self._dispatch(item)

    def eof_received(self) -> bool:
        for item in self.parser.close():
            self._dispatch(item)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wakeup.set()
        self._can_write.set()
        if self._sender is not None:
            self._sender.cancel()
        self.server.client_removed(self)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ------------------------------------------------------------------ input
    def _dispatch(self, item: Element | ParseError) -> None:
        if isinstance(item, ParseError):
            self.errors += 1
            self.log.info("INDI client %s: rejected input: %s", self.peer, item.message)
            self.send(P.message_xml(f"[ERROR] rejected input from this client: {item.message}; "
                                    f"the rest of the stream is still being read"))
            if self.errors > self.server.max_client_errors:
                self.close(f"too many malformed messages ({self.errors})")
            return
        try:
            self.server.handle(self, item)
        except Exception:  # a handler bug must never take the connection (or the server) down
            self.log.exception("INDI: failed to handle <%s> from %s", item.tag, self.peer)
            self.send(P.message_xml(f"[ERROR] internal error handling <{item.tag}>; see the server log"))

    # ------------------------------------------------------------------ interest and BLOB policy
    def watches(self, device: str | None, prop: str | None = None) -> bool:
        if device is None:
            return True
        if self.watch_all:
            return True
        if device not in self.watch:
            return False
        props = self.watch[device]
        return props is None or prop is None or prop in props

    def blob_mode(self, device: str, prop: str | None) -> str:
        if prop is not None and (device, prop) in self.blob_modes:
            return self.blob_modes[(device, prop)]
        return self.blob_modes.get((device, None), self.blob_default)

    # ------------------------------------------------------------------ output
    def send(self, payload: bytes, device: str | None = None, prop: str | None = None, *,
             force: bool = False) -> None:
        """Queue one ordinary (non-BLOB) message for this client, honouring interest and 'Only'."""
        if self._closed:
            return
        if not force and device is not None:
            if not self.watches(device, prop):
                return
            if self.blob_mode(device, prop) == "Only" or self.blob_modes.get((device, None)) == "Only":
                return
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        if self._queued_bytes > self.server.max_client_backlog:
            self.close(f"client is {self._queued_bytes >> 20} MB behind; disconnecting it")
            return
        self._wakeup.set()

    def discard_unsent_blob(self, device: str, prop: str, fmt: str | None = None) -> bool:
        """Silently drop this client's queued BLOB of (device, prop) if its sending has not started
        (and, with ``fmt``, only a BLOB of that format). Whether one was dropped."""
        old = self._pending_blobs.get((device, prop))
        if old is None or old.dropped or (fmt is not None and old.blob.fmt != fmt):
            return False
        old.dropped = True
        self.blobs_skipped += 1
        return True

    def send_blob(self, device: str, prop: str, member: str, blob: EncodedBlob, *, state: str = P.OK) -> bool:
        """Queue a BLOB if this client enabled BLOBs for it; replaces an older unsent one (and says so:
        use `discard_unsent_blob` first to replace one silently)."""
        if self._closed or not self.watches(device, prop) or self.blob_mode(device, prop) not in ("Also", "Only"):
            return False
        key = (device, prop)
        old = self._pending_blobs.get(key)
        if old is not None and not old.dropped:
            old.dropped = True
            self.blobs_skipped += 1
            self.send(P.message_xml(f"[WARNING] this client is not keeping up: an older {prop} image was skipped "
                                    f"in favour of the newest", device), force=True)
        head = P.blob_head(device, prop, member, blob.size, blob.enclen, blob.fmt, state=state)
        item = _BlobSend(key, head, blob)
        self._pending_blobs[key] = item
        self._queue.append(item)
        self._wakeup.set()
        return True

    def close(self, reason: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if reason:
            self.log.warning("INDI client %s: %s", self.peer, reason)
        if isinstance(self.transport, asyncio.WriteTransport) and reason:
            self.transport.abort()  # a misbehaving client: drop what is queued for it
        elif self.transport is not None:
            self.transport.close()

    async def _write(self, data: bytes | memoryview) -> None:
        transport = self.transport
        if transport is None or self._closed:
            raise ConnectionError("client closed")
        transport.write(data)  # type: ignore[attr-defined]
        self.bytes_sent += len(data)
        if not self._can_write.is_set():
            await self._can_write.wait()
            if self._closed:
                raise ConnectionError("client closed")

    async def _send_loop(self) -> None:
        try:
            while not self._closed:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = self._queue.popleft()
                if isinstance(item, _BlobSend):
                    if self._pending_blobs.get(item.key) is item:
                        del self._pending_blobs[item.key]
                    if item.dropped:
                        continue
                    await self._send_blob(item)
                    continue
                # Coalesce consecutive small messages into one write (fewer syscalls).
                batch = [item]
                size = len(item)
                while self._queue and not isinstance(self._queue[0], _BlobSend) and size < (256 << 10):
                    nxt = self._queue.popleft()
                    batch.append(nxt)  # type: ignore[arg-type]
                    size += len(nxt)  # type: ignore[arg-type]
                self._queued_bytes -= size
                await self._write(b"".join(batch) if len(batch) > 1 else batch[0])
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover - defensive: a sender bug closes only this client
            self.log.exception("INDI client %s: sender failed", self.peer)
            self.close("internal error in the sender")

    async def _send_blob(self, item: _BlobSend) -> None:
        if not await item.blob.wait():
            self.send(P.message_xml(f"[ERROR] the {item.key[1]} image could not be encoded: {item.blob.error}",
                                    item.key[0]), force=True)
            return
        await self._write(item.head)
        for piece in item.blob.pieces():
            await self._write(piece)
        await self._write(P.BLOB_TAIL)
        self.blobs_sent += 1


class IndiServer:
    """Serves every `ZWOCamera` as an INDI CCD device over TCP (default port 7624).

    `start()` returns once the port is bound (raising OSError if it cannot be); the server runs in
    its own thread and event loop. `stop()` is bounded in time. `port` is the bound port (useful
    with port=0). Cameras are never disconnected by the server: the process that owns them does.

    `host` is the address to listen on, or several (one port on all of them); "" (the default)
    is every IPv4 and IPv6 address, IPv4 only on a host without IPv6.
    """

    def __init__(self, cameras: Sequence[Any], host: str | Sequence[str] = "", port: int = DEFAULT_PORT,
                 logger: logging.Logger | None = None, *, upload_dir: str | os.PathLike[str] | None = None,
                 driver_exec: str = "zwo-alpaca-indi", max_element_bytes: int = 1 << 20,
                 max_clients: int = 64, max_client_backlog: int = 32 << 20, max_client_errors: int = 1000,
                 write_high_water: int = 8 << 20, config_file: Callable[[Any], Path | None] | None = None) -> None:
        self.cameras = list(cameras)
        # Where each camera's saved INDI configuration lives (indi_shim/config.py); None: not saved.
        self.config_file = config_file
        self.host = host
        self._requested_port = port
        self.log = logger or logging.getLogger("zwo_alpaca.indi")
        if upload_dir is None:
            upload_dir = os.environ.get("ZWO_ALPACA_UPLOAD_DIR") or None
        self.upload_dir = upload_dir
        self.driver_exec = driver_exec
        self.max_element_bytes = max_element_bytes
        self.max_clients = max_clients
        self.max_client_backlog = max_client_backlog
        self.max_client_errors = max_client_errors
        self.write_high_water = write_high_water
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        n = max(1, len(self.cameras))
        self.io_pool = ThreadPoolExecutor(max_workers=2 * n + 2, thread_name_prefix="indi-io")
        self.cpu_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="indi-cpu")
        self.clients: set[ClientConnection] = set()
        self.devices: dict[str, CcdDevice] = {}
        self._thread: threading.Thread | None = None
        self._tcp: list[asyncio.base_events.Server] = []
        self._stdio_done: asyncio.Future[None] | None = None
        self.port: int | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def _new_device(self, cam: Any, name: str) -> CcdDevice:
        return CcdDevice(self, cam, name, upload_dir=os.fspath(self.upload_dir) if self.upload_dir else None,
                         driver_exec=self.driver_exec,
                         config_path=self.config_file(cam) if self.config_file is not None else None)

    def _build_devices(self) -> None:
        names = device_names(self.cameras, self.log)
        for cam, name in zip(self.cameras, names):
            self.devices[name] = self._new_device(cam, name)

    def add_camera(self, cam: Any, timeout: float = 10.0) -> str:
        """Serve a camera plugged in after start (thread-safe; not from the server's own loop).

        It gets the next free device name, and every client that asked for all devices is sent its
        definitions, as a driver defining a new device does. Returns the INDI device name.
        """
        if not self._started or self.loop.is_closed():
            raise RuntimeError("the INDI server is not running")
        return asyncio.run_coroutine_threadsafe(self._add_camera(cam), self.loop).result(timeout)

    async def _add_camera(self, cam: Any) -> str:
        name = device_names(self.cameras + [cam], self.log)[-1]
        self.cameras.append(cam)
        dev = self._new_device(cam, name)
        self.devices[name] = dev
        dev.attach()
        for client in list(self.clients):
            if client.watch_all:
                dev.send_definitions(client)
                self._send_snoop_requests(client, dev)
        self.log.info("INDI: serving %s, plugged in after start", name)
        return name

    def start(self, *, listen: bool = True) -> IndiServer:
        """Start the loop thread and (unless `listen` is False) bind the TCP port."""
        if self._started:
            return self
        self._started = True
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self._build_devices()
                for dev in self.devices.values():
                    dev.attach()
                if listen:
                    self._tcp = self._listen()
                    self.port = self._tcp[0].sockets[0].getsockname()[1]
                    self.log.info("INDI server listening on %s (%d device(s): %s)", self._where(self.port),
                                  len(self.devices), ", ".join(self.devices))
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                failure.append(exc)
                for dev in self.devices.values():
                    dev.detach()
                self.loop.close()
                ready.set()
                return
            ready.set()
            try:
                self.loop.run_forever()
            finally:
                try:
                    self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                except Exception:  # noqa: BLE001 - the loop closes either way
                    pass
                self.loop.close()

        self._thread = threading.Thread(target=run, name="indi-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread.join(2)
            self.io_pool.shutdown(wait=False)
            self.cpu_pool.shutdown(wait=False)
            exc = failure[0]
            if isinstance(exc, OSError):
                raise OSError(exc.errno, f"INDI server cannot listen on {self._where(self._requested_port)}: "
                                         f"{exc.strerror or exc}") from exc
            raise exc
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listener and every client, detach from the cameras, end the thread.

        Bounded by `timeout` in total (the serve process has 2 s for its whole shutdown); normally
        it takes a few tens of milliseconds.
        """
        if not self._started or self._thread is None:
            return
        deadline = time.monotonic() + timeout
        done = threading.Event()

        async def shutdown() -> None:
            try:
                for tcp in self._tcp:
                    tcp.close()
                for dev in self.devices.values():
                    dev.detach()
                for c in list(self.clients):
                    c.close()
                if self._stdio_done is not None and not self._stdio_done.done():
                    self._stdio_done.set_result(None)
                await asyncio.sleep(0.05)  # let transports flush their close
            finally:
                done.set()
                self.loop.stop()

        if self.loop.is_running():
            try:
                self.loop.call_soon_threadsafe(lambda: self.loop.create_task(shutdown()))
            except RuntimeError:
                pass
            done.wait(max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self._started = False

    def _given_hosts(self) -> list[str]:
        return [h for h in ([self.host] if isinstance(self.host, str) else self.host) if h]

    def _hosts(self) -> list[str]:
        """The addresses to listen on: those given, or every IPv4 and IPv6 address."""
        return self._given_hosts() or ["0.0.0.0", "::"]

    def _where(self, port: int) -> str:
        return " and ".join(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in self._hosts())

    def _listen(self) -> list[asyncio.base_events.Server]:
        """One listener per address, all on one port (the first one's, when the port is 0)."""
        default = not self._given_hosts()
        servers: list[asyncio.base_events.Server] = []
        port = self._requested_port
        try:
            for host in self._hosts():
                try:
                    tcp = self.loop.run_until_complete(
                        self.loop.create_server(self._new_tcp_client, host, port, reuse_address=True, backlog=64))
                    if not tcp.sockets:  # asyncio skips a family the host does not have
                        tcp.close()
                        raise OSError(errno.EAFNOSUPPORT, "address family not supported")
                except OSError as exc:
                    if default and host == "::" and servers and exc.errno != errno.EADDRINUSE:
                        self.log.info("INDI: IPv6 is not available on this host (%s); listening on IPv4 only",
                                      exc.strerror or exc)
                        continue
                    raise
                servers.append(tcp)
                port = tcp.sockets[0].getsockname()[1]
        except BaseException:
            for tcp in servers:
                tcp.close()
            raise
        return servers

    def _new_tcp_client(self) -> ClientConnection:
        client = ClientConnection(self, peer="tcp")
        return client

    def client_added(self, client: ClientConnection) -> None:
        """A client connected: serve it (or turn it away when the server is full)."""
        if client.transport is not None and client.peer != "stdio":
            peer = client.transport.get_extra_info("peername")
            if peer:
                client.peer = f"{peer[0]}:{peer[1]}"
        if len(self.clients) >= self.max_clients:
            client.send(P.message_xml(f"[ERROR] server full ({self.max_clients} clients); try again later"))
            self.loop.call_later(0.1, client.close)
            return
        self.clients.add(client)
        self.log.debug("INDI client %s connected (%d clients)", client.peer, len(self.clients))

    def client_removed(self, client: ClientConnection) -> None:
        """A client went away."""
        self.clients.discard(client)
        self.log.debug("INDI client %s gone (%d clients)", client.peer, len(self.clients))
        if self._stdio_done is not None and client.peer == "stdio" and not self._stdio_done.done():
            self._stdio_done.set_result(None)

    # ------------------------------------------------------------------ driver mode (stdin/stdout)
    def serve_stdio(self, rfd: int, wfd: int) -> None:
        """Speak INDI on the given descriptors (driver mode); returns when the link ends.

        indiserver hands a driver either two pipes or one UNIX socket (a socketpair end) as both
        stdin and stdout. A socket must be driven as one bidirectional socket transport: asyncio's
        write-pipe transport watches its descriptor for readability to detect a closed peer, and
        on a shared socket the incoming requests would look like exactly that.
        Must be called from a thread other than the server's; `start(listen=False)` first.
        """
        async def attach() -> asyncio.Future[None]:
            self._stdio_done = self.loop.create_future()
            # indiserver filters BLOBs per client itself; a driver always sends them.
            client = ClientConnection(self, peer="stdio", blob_default="Also", watch_all=True)
            rst, wst = os.fstat(rfd), os.fstat(wfd)
            if stat.S_ISSOCK(rst.st_mode) and (rst.st_dev, rst.st_ino) == (wst.st_dev, wst.st_ino):
                sock = socket.socket(fileno=os.dup(rfd))
                sock.setblocking(False)
                await self.loop.connect_accepted_socket(lambda: client, sock)
            else:
                rpipe = os.fdopen(rfd, "rb", buffering=0, closefd=False)
                wpipe = os.fdopen(wfd, "wb", buffering=0, closefd=False)
                wtransport, _ = await self.loop.connect_write_pipe(lambda: _WriteOnly(client), wpipe)
                client.connection_made(wtransport)
                await self.loop.connect_read_pipe(lambda: _ReadOnly(client), rpipe)
            return self._stdio_done

        fut = asyncio.run_coroutine_threadsafe(attach(), self.loop)
        done = fut.result(10)
        asyncio.run_coroutine_threadsafe(_await(done), self.loop).result()

    # ------------------------------------------------------------------ dispatch
    def handle(self, client: ClientConnection, el: Element) -> None:
        """One element a client sent: answer it or hand it to its device."""
        tag = el.tag
        if tag == "getProperties":
            self._get_properties(client, el)
        elif tag == "enableBLOB":
            self._enable_blob(client, el)
        elif tag in ("newSwitchVector", "newNumberVector", "newTextVector", "newBLOBVector"):
            name = el.get("device") or ""
            dev = self.devices.get(name)
            if dev is None:
                client.send(P.message_xml(f"[ERROR] {tag} for unknown device {name!r}; devices here: "
                                          f"{', '.join(self.devices) or 'none'}"))
                return
            dev.handle_new(client, el)
        elif tag == "pingRequest":
            client.send(f'<pingReply uid="{P.attr(el.get("uid") or "")}"/>\n'.encode())
        elif tag in ("pingReply", "setSwitchVector", "setNumberVector", "setTextVector", "setBLOBVector",
                     "setLightVector", "defSwitchVector", "defNumberVector", "defTextVector", "defBLOBVector",
                     "defLightVector", "delProperty", "message"):
            # Snooped traffic: what indiserver relays of the devices we asked for (indi_shim/snoop.py),
            # in driver mode and when chained; each device takes what its ACTIVE_DEVICES names.
            for dev in list(self.devices.values()):
                dev.snoop.feed(el)
            return
        else:
            client.send(P.message_xml(f"[ERROR] unknown INDI command <{tag}> ignored"))

    def _get_properties(self, client: ClientConnection, el: Element) -> None:
        device = el.get("device")
        name = el.get("name")
        if not device or device == "*":  # "*": an indiserver chaining to us for all our devices
            client.watch_all = True
            client.upstream = client.upstream or device == "*"
            for each in self.devices.values():
                each.send_definitions(client)
                self._send_snoop_requests(client, each)
            return
        dev = self.devices.get(device)
        if dev is None:
            # Not an error for indiserver-style snooping clients; say so politely.
            client.send(P.message_xml(f"[WARNING] getProperties: no device named {device!r} here; devices: "
                                      f"{', '.join(self.devices) or 'none'}"))
            return
        if name:
            props = client.watch.get(device, set())
            if props is not None:
                props.add(name)
                client.watch[device] = props
        else:
            client.watch[device] = None
        dev.send_definitions(client, name)
        if not name:
            self._send_snoop_requests(client, dev)

    @staticmethod
    def _send_snoop_requests(client: ClientConnection, dev: CcdDevice) -> None:
        """The device's snoop requests to a connection that asked for it: indiserver (our driver link,
        or chained to our port) registers them; a plain client ignores getProperties (snoop.py)."""
        for payload in dev.snoop.requests():
            client.send(payload, dev.name, force=True)

    def _enable_blob(self, client: ClientConnection, el: Element) -> None:
        mode = el.text.strip()
        device = el.get("device") or ""
        name = el.get("name") or None
        if mode not in BLOB_MODES:
            client.send(P.message_xml(f"[ERROR] enableBLOB: {mode!r} is not one of Never, Also, Only", device or None),
                        force=True)
            return
        if device and device not in self.devices:
            client.send(P.message_xml(f"[WARNING] enableBLOB for unknown device {device!r}"))
            return
        if client.upstream:
            # indiserver passes each of its clients' enableBLOB on to us: one client's Never or Only
            # must not take BLOBs or properties from the others; indiserver applies them per client.
            if mode == "Never":
                return
            mode = "Also"
        if not device:
            for d in self.devices:
                client.blob_modes[(d, name)] = mode
        else:
            client.blob_modes[(device, name)] = mode

    # ------------------------------------------------------------------ fan-out (used by devices)
    def broadcast(self, payload: bytes, device: str, prop: str | None = None,
                  exclude: ClientConnection | None = None) -> None:
        for c in list(self.clients):
            if c is not exclude:
                c.send(payload, device, prop)

    def broadcast_blob(self, device: str, prop: str, member: str, blob: EncodedBlob) -> int:
        n = 0
        for c in list(self.clients):
            if c.send_blob(device, prop, member, blob):
                n += 1
        return n

    def discard_unsent_blobs(self, device: str, prop: str, fmt: str | None = None) -> None:
        """Silently drop every client's queued BLOB of (device, prop) whose sending has not started
        (with ``fmt``: only BLOBs of that format), e.g. stream frames made stale by a newer one."""
        for c in list(self.clients):
            c.discard_unsent_blob(device, prop, fmt)

    def clients_wanting_blob(self, device: str, prop: str) -> int:
        return sum(1 for c in self.clients if c.watches(device, prop) and c.blob_mode(device, prop) in ("Also", "Only"))

    def call(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run a blocking device-core call in the I/O pool; awaitable from the loop."""
        return self.loop.run_in_executor(self.io_pool, fn, *args)

    def compute(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run CPU-heavy work (FITS, encoding, file writes) in the CPU pool."""
        return self.loop.run_in_executor(self.cpu_pool, fn, *args)

    def run_sync(self, coro: Any, timeout: float = 10.0) -> Any:
        """From another thread: run a coroutine on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def device_names(self) -> Iterable[str]:
        return list(self.devices)


async def _await(fut: asyncio.Future[None]) -> None:
    await fut


class _ReadOnly(asyncio.Protocol):
    """Adapter: the stdin half of a driver-mode connection."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.data_received(data)

    def eof_received(self) -> bool:
        self.client.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.connection_lost(exc)


class _WriteOnly(asyncio.Protocol):
    """Adapter: the stdout half; forwards flow control to the client connection."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client

    def pause_writing(self) -> None:
        self.client.pause_writing()

    def resume_writing(self) -> None:
        self.client.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.connection_lost(exc)
