"""The INDI property framework of one device, as libindi's ``INDI::DefaultDevice``.

One job: the property vectors a device defines and the INDI traffic about them, whatever the
device is. A `PropertyDevice` owns its vectors (in definition order), defines and deletes them,
publishes their values to every interested client, parses a client's ``new*Vector`` request
(kind, permission, member names, number syntax, switch rules), serialises requests, and answers
a refused request to the requesting client only: the property in Alert with a message saying what
was wrong and what is allowed. The property's shared state is untouched, so one client's typo
cannot make another client's capture sequence see an Alert.

What a request *means* is the subclass's: `handler(name)` returns the coroutine for a property
(``_new_<property name in lower case>`` by default). Number members are checked against their
min/max here only for vectors that are not ``core_validated``; for those the device core is the
validator and its message is what the client sees (see `Vector.core_validated`).

Nothing here imports the server: the server is reached through the small `DeviceHost` interface,
and clients through `Client`, so the server can import the devices without a cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from . import protocol as P
from .blob import EncodedBlob
from .protocol import ALERT, IDLE, Number, Switch, Text, Vector
from .xmlparse import Element


class Client(Protocol):
    """One INDI client connection, as a device sees it."""

    peer: str

    def send(self, payload: bytes, device: str | None = None, prop: str | None = None, *,
             force: bool = False) -> None:
        """Queue an ordinary message for this client (`force`: even if it did not ask for the property)."""


class DeviceHost(Protocol):
    """What a device needs of the server that serves it (`IndiServer` implements it)."""

    loop: asyncio.AbstractEventLoop
    log: logging.Logger

    @property
    def cpu_pool(self) -> Executor:
        """The pool for CPU-heavy work (image encoding)."""

    def broadcast(self, payload: bytes, device: str, prop: str | None = None) -> None:
        """Send a message to every client interested in (device, prop)."""

    def broadcast_blob(self, device: str, prop: str, member: str, blob: EncodedBlob) -> int:
        """Queue a BLOB for every client that enabled BLOBs for it; how many clients."""

    def discard_unsent_blobs(self, device: str, prop: str, fmt: str | None = None) -> None:
        """Silently drop every client's queued, not yet started BLOB of (device, prop)."""

    def clients_wanting_blob(self, device: str, prop: str) -> int:
        """How many clients would receive a BLOB of (device, prop)."""

    def call(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run a blocking device-core call off the loop; awaitable."""

    def compute(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run CPU-heavy work (FITS, encoding, file writes) off the loop; awaitable."""


Handler = Callable[[Client, Vector, dict[str, Any]], Awaitable[None]]


class Reject(Exception):
    """A client request is refused; `message` goes back to that client with the property in Alert."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PropertyDevice:
    """One INDI device's properties and the requests about them. All methods run on the server's loop.

    Subclasses define vectors with `make_vector` + `define`, change them and `publish`, and handle
    requests in `_new_<name>` coroutines (or override `handler`). A handler refuses a request by
    raising `Reject`; any other exception is turned into the Alert text by `error_text`.
    """

    def __init__(self, host: DeviceHost, name: str) -> None:
        self.server = host
        self.name = name
        self.log = host.log
        self.loop = host.loop
        self._vectors: dict[str, Vector] = {}  # every property currently defined, in definition order
        self._request_lock = asyncio.Lock()

    # ================================================================== vectors
    def make_vector(self, kind: str, name: str, label: str, group: str, perm: P.Perm, members: list[Any], *,
                    rule: str | None = None, timeout: float = 60, state: str = IDLE,
                    core_validated: bool = False) -> Vector:
        """A new (not yet defined) vector of this device."""
        return Vector(kind, self.name, name, label, group, perm, state, timeout, rule, members,
                      core_validated=core_validated)

    def vector(self, name: str) -> Vector | None:
        """The defined vector called `name`, if any."""
        return self._vectors.get(name)

    def vectors(self) -> list[Vector]:
        """Every defined vector, in definition order."""
        return list(self._vectors.values())

    def define(self, vec: Vector) -> None:
        """Add a vector (after the ones defined before it) and announce it to interested clients."""
        self._vectors[vec.name] = vec
        self.server.broadcast(vec.def_xml(), self.name, vec.name)

    def delete(self, name: str) -> Vector | None:
        """Remove a vector and tell interested clients; the removed vector, or None if it was not defined."""
        vec = self._vectors.pop(name, None)
        if vec is not None:
            self.server.broadcast(P.del_property_xml(self.name, name), self.name, name)
        return vec

    def send_definitions(self, client: Client, name: str | None = None) -> None:
        """getProperties: the definitions of every vector (or only `name`) to one client."""
        for vec in self.vectors():
            if name is None or vec.name == name:
                client.send(vec.def_xml(), self.name, vec.name)

    def publish(self, vec: Vector, message: str | None = None, **kw: Any) -> None:
        """Send a vector's current values (set*Vector) to every interested client, if it is defined."""
        if self._vectors.get(vec.name) is vec:
            self.server.broadcast(vec.set_xml(message, **kw), self.name, vec.name)

    def message(self, text: str, client: Client | None = None) -> None:
        """A device message to every interested client, or to `client` only."""
        payload = P.message_xml(text, self.name)
        if client is None:
            self.server.broadcast(payload, self.name)
        else:
            client.send(payload, self.name, force=True)

    def reject(self, client: Client, vec: Vector | None, why: str) -> None:
        """Answer a refused request: that client sees the property in Alert with the reason."""
        self.log.info("INDI %s: rejected request from %s: %s", self.name, client.peer, why)
        if vec is not None:
            client.send(vec.set_xml(f"[ERROR] {why}", state=ALERT), self.name, vec.name, force=True)
        else:
            self.message(f"[ERROR] {why}", client)

    # ================================================================== requests
    @property
    def request_lock(self) -> asyncio.Lock:
        """Held while a client request runs: requests of one device run one at a time, in order.

        Work that is not a request but must not interleave with one (e.g. a recording that ends on
        its own and stops the stream) takes it too.
        """
        return self._request_lock

    def handler(self, name: str) -> Handler | None:
        """The coroutine handling a client's new value for property `name` (``_new_<name>``)."""
        fn = getattr(self, "_new_" + name.lower(), None)
        return fn if callable(fn) else None

    def immediate(self, name: str) -> bool:
        """Whether requests for `name` run at once instead of waiting for the request before (e.g. abort)."""
        return False

    def unknown_property_hint(self) -> str:
        """Appended to the "unknown property" answer (e.g. why a property is missing right now)."""
        return ""

    def error_text(self, exc: Exception, vec: Vector) -> str:
        """The Alert text for an exception a handler raised that is not a `Reject`."""
        self.log.exception("INDI %s: %s failed", self.name, vec.name)
        return str(exc) or type(exc).__name__

    def handle_new(self, client: Client, el: Element) -> None:
        """A client's newXxxVector: check it against the vector, then run its handler (serialised)."""
        name = el.get("name") or ""
        vec = self._vectors.get(name)
        if vec is None:
            known = ", ".join(self._vectors)
            self.reject(client, None, f"unknown property {name!r}{self.unknown_property_hint()}; properties: {known}")
            return
        kind = el.tag[3:-6]  # newXxxVector -> Xxx
        if kind != vec.kind:
            self.reject(client, vec, f"{name} is a {vec.kind} property, not {kind}")
            return
        if vec.perm == "ro":
            self.reject(client, vec, f"{name} is read-only")
            return
        try:
            values = self.parse_members(vec, el)
        except Reject as exc:
            self.reject(client, vec, exc.message)
            return
        handler = self.handler(name)
        if handler is None:  # pragma: no cover - every writable property has a handler
            self.reject(client, vec, f"{name} cannot be set")
            return
        if self.immediate(name):  # must not wait behind a long operation
            self.loop.create_task(self._guarded(client, vec, handler(client, vec, values)))
            return
        self.loop.create_task(self._serialized(client, vec, handler, values))

    @staticmethod
    def parse_members(vec: Vector, el: Element) -> dict[str, Any]:
        """The member values of a request (floats, bools, strings by member name); raises `Reject`."""
        values: dict[str, Any] = {}
        expect = "one" + vec.kind
        for child in el.children:
            if child.tag != expect:
                raise Reject(f"<{child.tag}> is not a member element of a {vec.kind} vector (expected <{expect}>)")
            mname = child.get("name") or ""
            m = vec.member(mname)
            if m is None:
                raise Reject(f"{vec.name} has no member {mname!r}; members: {', '.join(x.name for x in vec.members)}")
            if isinstance(m, Number):
                try:
                    v = P.parse_number(child.text)
                except ValueError as exc:
                    raise Reject(f"{vec.name}.{mname}: {exc}") from None
                if not vec.core_validated and not (m.min <= v <= m.max) and not (m.min == m.max == 0):
                    raise Reject(f"{vec.name}.{mname} = {P.fmt_number(v)} is out of range "
                                 f"[{P.fmt_number(m.min)}, {P.fmt_number(m.max)}]")
                values[mname] = v
            elif isinstance(m, Switch):
                t = child.text.strip()
                if t not in ("On", "Off"):
                    raise Reject(f"{vec.name}.{mname}: switch state must be On or Off, got {t[:40]!r}")
                values[mname] = t == "On"
            elif isinstance(m, Text):
                values[mname] = child.text
            else:
                raise Reject(f"{vec.name} cannot be set by clients")
        if not values:
            raise Reject(f"{vec.name}: the request names no members")
        if vec.kind == "Switch" and vec.rule == "OneOfMany":
            on = [k for k, v in values.items() if v]
            if len(on) > 1:
                raise Reject(f"{vec.name}: only one of {', '.join(m.name for m in vec.members)} may be On")
            if not on:
                raise Reject(f"{vec.name}: one of {', '.join(m.name for m in vec.members)} must be On")
        return values

    async def _serialized(self, client: Client, vec: Vector, handler: Handler, values: dict[str, Any]) -> None:
        async with self._request_lock:
            await self._guarded(client, vec, handler(client, vec, values))

    async def _guarded(self, client: Client, vec: Vector, coro: Awaitable[None]) -> None:
        try:
            await coro
        except Reject as exc:
            self.reject(client, vec, exc.message)
        except Exception as exc:  # noqa: BLE001 - every request is answered; a failure never reaches the loop
            self.reject(client, vec, self.error_text(exc, vec))
