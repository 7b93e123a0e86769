"""Request limits of the HTTP server, and a TCP site that caps concurrent connections.

The figures and their reasons are in docs/reliability.md:

* ``MAX_BODY_BYTES``: request bodies (Alpaca PUT forms, setup-page posts) are a few hundred bytes;
  anything over 64 KB is refused with 413 before it is read further.
* ``BODY_TIMEOUT_S``: a client that announces a body and does not send it gets 408 after 30 s
  instead of holding its connection (and a slot of the connection cap) for ever.
* ``MAX_LINE_BYTES``/``MAX_FIELD_BYTES``/``MAX_HEADERS``: the request line, each header, and the
  number of headers (aiohttp's parser limits, pinned here): beyond them the answer is 400.
* ``MAX_CONNECTIONS``: at most 256 open HTTP connections. Connection 257 gets a one-line
  ``503 Service Unavailable`` (``Retry-After: 1``) and is closed; the connections already open are
  not affected, and new ones are accepted as soon as others close. 256 is far above what an
  observatory uses (an imaging program, a guider, a planetarium, a few browsers: 10-30 keep-alive
  connections) and far below the usual 1024-descriptor limit, so a runaway client or a flood can
  never starve the process of file descriptors (the SDK, INDI and log files need some too).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

MAX_CONNECTIONS = 256
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
# How long a refused connection is kept to let the client read the 503 before it is closed.
REFUSE_LINGER_S = 2.0

log = logging.getLogger("zwo_alpaca.http")


class _Refuse(asyncio.Protocol):
    """Answers one over-the-cap connection with 503 and closes it (after the client read it)."""

    def __init__(self, site: CappedTCPSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.site._refusers.add(self)  # noqa: SLF001 - the site's own helper (same module)
        body = (f"server busy: {self.site.max_connections} connections are open; try again\n").encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        transport.write(head + body)  # type: ignore[attr-defined]
        # Half-close and keep draining what the client sends: closing a socket with unread input
        # makes the kernel send a reset, which may reach the client before it read the 503.
        try:
            transport.write_eof()  # type: ignore[attr-defined]
        except (OSError, RuntimeError, NotImplementedError):
            pass
        self.timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, self.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.site._refusers.discard(self)  # noqa: SLF001


class CappedTCPSite(web.BaseSite):
    """Like ``web.TCPSite`` (SO_REUSEADDR listener), but with at most ``max_connections`` open."""

    def __init__(self, runner: web.BaseRunner, host: str | list[str] | None, port: int, *,
                 max_connections: int = MAX_CONNECTIONS, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self.max_connections = max_connections
        self.active = 0
        self.refused = 0
        self._refusers: set[_Refuse] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        forward = server.connection_lost

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            # aiohttp's RequestHandler reports every closed connection here exactly once.
            self.active = max(0, self.active - 1)
            forward(handler, exc)

        server.connection_lost = connection_lost  # type: ignore[method-assign]

        def factory() -> asyncio.BaseProtocol:
            if self.active >= self.max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 100 == 0:
                    log.warning("HTTP: %d connections open (the limit); refusing new ones with 503 "
                                "(%d refused so far)", self.active, self.refused)
                return _Refuse(self)
            self.active += 1
            return server()

        self._server = await loop.create_server(factory, self._host, self._port, backlog=self._backlog,
                                                reuse_address=True)

    async def stop(self) -> None:
        await super().stop()
        for refuser in list(self._refusers):
            refuser.close()
