"""ASCOM Alpaca discovery responder (IPv4 broadcast/unicast and IPv6 multicast).

Alpaca clients find servers by sending the 16-byte text ``alpacadiscovery1``
(optionally followed by up to 48 reserved bytes) to UDP port 32227: as an IPv4
broadcast, or as an IPv6 datagram to the link-scope multicast group
``ff12::a1:9aca``.  Every server answers the sender by unicast with
``{"AlpacaPort": N}``, N being its HTTP port; the client takes the server's IP
address from the reply's source address.

:class:`DiscoveryResponder` implements the server side in one daemon thread:

* one IPv4 socket and one IPv6-only socket, both on the same UDP port with
  ``SO_REUSEADDR`` + ``SO_REUSEPORT`` so that several Alpaca servers on one host
  can all answer broadcasts and multicasts (no root needed for port 32227);
* ``IP_PKTINFO`` / ``IPV6_RECVPKTINFO`` tell on which interface and to which
  address each query arrived, so that with ``bind_address`` the responder only
  answers on the interface that holds the HTTP server's address and replies
  *from* that address (never advertising a port the client cannot reach);
* the IPv6 socket joins ``ff12::a1:9aca`` on every up, multicast-capable
  interface, re-scanning on rtnetlink link/address events and every
  ``rescan_interval`` seconds;
* everything that is not a query costs one ``recvmsg`` and one comparison, and
  log lines about bad packets or failing interfaces are rate limited.

Run ``python -m alpaca_server.discovery --help`` for a standalone responder
(manual testing); see ``docs/discovery.md`` for the operator's view.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence

__all__ = [
    "DISCOVERY_MESSAGE",
    "DISCOVERY_PORT",
    "IPV6_GROUP",
    "DiscoveryError",
    "DiscoveryResponder",
    "DiscoveryStats",
    "main",
]

DISCOVERY_PORT = 32227
"""The UDP port the Alpaca discovery protocol uses."""

IPV6_GROUP = "ff12::a1:9aca"
"""The link-scope IPv6 multicast group Alpaca clients send their queries to."""

DISCOVERY_MESSAGE = b"alpacadiscovery1"
"""A query starts with this; up to :data:`RESERVED_BYTES` more bytes may follow."""

RESERVED_BYTES = 48
MAX_QUERY_LEN = len(DISCOVERY_MESSAGE) + RESERVED_BYTES

log = logging.getLogger(__name__)

# Linux values; Python 3.11's socket module lacks IP_PKTINFO.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IN_PKTINFO = struct.Struct("=I4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000

# Per wake-up, read at most this many datagrams from one socket before looking
# at the stop flag and the re-scan timer again: a flood cannot starve them.
_RECV_BUDGET = 256
_ANC_BUFSIZE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))


class DiscoveryError(RuntimeError):
    """Discovery could not start (only raised by ``start(strict=True)``)."""


@dataclasses.dataclass
class DiscoveryStats:
    """Counters for tests and telemetry; only the responder thread writes them."""

    received: int = 0
    """Datagrams read from the discovery sockets."""
    answered: int = 0
    """Queries answered (one reply each)."""
    ignored_malformed: int = 0
    """Datagrams that are not ``alpacadiscovery1`` (+ up to 48 bytes)."""
    ignored_oversized: int = 0
    """Datagrams longer than 64 bytes."""
    ignored_filtered: int = 0
    """Valid queries that arrived where the HTTP server does not listen (``bind_address``)."""
    send_errors: int = 0
    """Replies the kernel refused to send (unreachable client, firewall, ...)."""
    rescans: int = 0
    """Interface scans done (start, rtnetlink events, periodic)."""

    @property
    def ignored(self) -> int:
        """All datagrams that got no reply on purpose."""
        return self.ignored_malformed + self.ignored_oversized + self.ignored_filtered

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict, ``ignored`` included."""
        d = dataclasses.asdict(self)
        d["ignored"] = self.ignored
        return d


class _RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds for each kind of message.

    Bad packets and failing interfaces must not flood the log, but the first
    occurrences are worth seeing; the number swallowed is reported later.
    """

    def __init__(self, logger: logging.Logger, burst: int = 5, interval: float = 60.0) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._windows: dict[str, list[float | int]] = {}  # key -> [window start, count, suppressed]

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        w = self._windows.get(key)
        if w is None or now - w[0] >= self._interval:
            suppressed = int(w[2]) if w is not None else 0
            if len(self._windows) > 64:  # keys are a fixed small set; stay bounded anyway
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            if suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, suppressed)
            self._logger.log(level, msg, *args)
        elif w[1] < self._burst:
            w[1] += 1
            self._logger.log(level, msg, *args)
        else:
            w[2] += 1


# --------------------------------------------------------------------------
# Interface table via rtnetlink (pure Python, no subprocess, works per netns)
# --------------------------------------------------------------------------

_NLMSG_HDR = struct.Struct("=IHHII")
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWLINK = 16
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFLA_IFNAME = 3
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100


@dataclasses.dataclass
class _Interface:
    index: int
    name: str
    flags: int
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address]


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _nl_attrs(buf: bytes, off: int) -> Iterator[tuple[int, bytes]]:
    while off + 4 <= len(buf):
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or off + alen > len(buf):
            return
        yield atype & 0x3FFF, buf[off + 4 : off + alen]  # strip NLA_F_NESTED/NET_BYTEORDER
        off += _align4(alen)


def _nl_dump(msg_type: int, payload: bytes) -> list[tuple[int, bytes]]:
    """One rtnetlink dump request; returns ``(type, body)`` of each answer message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.settimeout(0.5)  # the kernel answers in microseconds; keeps stop() bounded
        s.bind((0, 0))
        seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(payload), msg_type, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
        s.send(header + payload)
        out: list[tuple[int, bytes]] = []
        for _ in range(10_000):  # bounded even against a misbehaving kernel
            data = s.recv(1 << 16)
            off = 0
            while off + _NLMSG_HDR.size <= len(data):
                length, typ, _flags, mseq, _pid = _NLMSG_HDR.unpack_from(data, off)
                if length < _NLMSG_HDR.size or off + length > len(data):
                    raise OSError(errno.EPROTO, "truncated rtnetlink message")
                body = data[off + _NLMSG_HDR.size : off + length]
                off += _align4(length)
                if mseq != seq:
                    continue
                if typ == _NLMSG_DONE:
                    return out
                if typ == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", body)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    continue
                out.append((typ, body))
        raise OSError(errno.EPROTO, "rtnetlink dump did not end")


def _list_interfaces() -> dict[int, _Interface]:
    """All interfaces of this process's network namespace, with their addresses."""
    ifaces: dict[int, _Interface] = {}
    for typ, body in _nl_dump(_RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)):
        if typ != _RTM_NEWLINK or len(body) < 16:
            continue
        _fam, _type, index, flags, _change = struct.unpack_from("=BxHiII", body)
        name = ""
        for atype, val in _nl_attrs(body, 16):
            if atype == _IFLA_IFNAME:
                name = val.split(b"\0", 1)[0].decode(errors="replace")
        ifaces[index] = _Interface(index, name, flags, [])
    for typ, body in _nl_dump(_RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)):
        if typ != _RTM_NEWADDR or len(body) < 8:
            continue
        family, _plen, _flags, _scope, index = struct.unpack_from("=BBBBI", body)
        attrs = dict(_nl_attrs(body, 8))
        # For IPv4, IFA_LOCAL is the local address (IFA_ADDRESS is the peer on
        # point-to-point links); IPv6 only sends IFA_ADDRESS.
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        iface = ifaces.get(index)
        if iface is None or raw is None:
            continue
        if family == socket.AF_INET and len(raw) == 4:
            iface.addrs.append(ipaddress.IPv4Address(raw))
        elif family == socket.AF_INET6 and len(raw) == 16:
            iface.addrs.append(ipaddress.IPv6Address(raw))
    return ifaces


def _list_interfaces_fallback() -> dict[int, _Interface]:
    """Names and indexes only (no flags, no addresses) when rtnetlink is unusable."""
    return {idx: _Interface(idx, name, _IFF_UP | _IFF_MULTICAST, []) for idx, name in socket.if_nameindex()}


# --------------------------------------------------------------------------
# The responder
# --------------------------------------------------------------------------


def _parse_bind(bind_address: str) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """``bind_address`` -> list of (address, IPv6 scope id or 0).

    Accepts IP literals (IPv6 optionally in brackets and with ``%scope``) and
    host names, which resolve like the HTTP server would resolve them (e.g.
    ``localhost`` -> 127.0.0.1 and ::1).
    """
    text = bind_address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    host, _, scope = text.partition("%")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(text, None, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise ValueError(
                f"bind_address {bind_address!r} is neither an IP address nor a resolvable name: {e}") from e
        out: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
        for fam, _t, _p, _c, sa in infos:
            if fam in (socket.AF_INET, socket.AF_INET6):
                a = ipaddress.ip_address(str(sa[0]).partition("%")[0])
                entry = (a, int(sa[3]) if fam == socket.AF_INET6 and len(sa) > 3 else 0)
                if entry not in out:
                    out.append(entry)
        return out
    scope_id = 0
    if scope:
        if addr.version != 6:
            raise ValueError(f"bind_address {bind_address!r}: only IPv6 addresses take a %scope")
        try:
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        except OSError as e:
            raise ValueError(f"bind_address {bind_address!r}: no interface {scope!r}") from e
    return [(addr, scope_id)]


class DiscoveryResponder:
    """Answers Alpaca discovery queries with ``{"AlpacaPort": http_port}``.

    Args:
        http_port: the TCP port the Alpaca HTTP server has *actually* bound
            (after resolving port 0).
        port: UDP port to listen on; 0 picks an ephemeral port (tests), see
            :attr:`port`.
        bind_address: the address the HTTP server listens on (``--bind``), a
            list of them (``--bind`` given more than once), or None when it
            listens on all addresses of both families.  With a specific address
            only queries arriving on the interface holding it (or sent to it)
            are answered, and replies come from that address.  ``0.0.0.0``
            means all IPv4 interfaces and no IPv6; ``::`` all IPv6 interfaces
            and no IPv4 (asyncio binds ``::`` IPv6-only); both (the server's
            default) all interfaces of both families.
        ipv6: also answer IPv6 (multicast ``ff12::a1:9aca`` and unicast).
        logger: where to log; defaults to ``alpaca_server.discovery``.
        rescan_interval: seconds between periodic interface re-scans (joins
            the multicast group on new interfaces, refreshes ``bind_address``'s
            interface); rtnetlink events trigger a re-scan sooner.

    Call :meth:`start` once the HTTP server is listening and :meth:`stop` when
    it stops.  If the UDP port cannot be bound (another program holds it
    without ``SO_REUSEPORT``), ``start()`` logs one WARNING and the server
    runs without discovery for that address family; ``start(strict=True)``
    raises :class:`DiscoveryError` instead.
    """

    def __init__(
        self,
        http_port: int,
        *,
        port: int = DISCOVERY_PORT,
        bind_address: str | Sequence[str] | None = None,
        ipv6: bool = True,
        logger: logging.Logger | None = None,
        rescan_interval: float = 30.0,
    ) -> None:
        if not 1 <= int(http_port) <= 65535:
            raise ValueError(f"http_port must be 1..65535, not {http_port!r}")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be 0..65535, not {port!r}")
        if rescan_interval <= 0:
            raise ValueError("rescan_interval must be positive")
        self.http_port = int(http_port)
        if bind_address is None or isinstance(bind_address, str):
            addresses = [bind_address] if bind_address else []
        else:
            addresses = [a for a in bind_address if a]
        self.bind_addresses: list[str] = addresses
        """Every address the HTTP server listens on (empty: all of both families)."""
        self.bind_address = ", ".join(addresses) or None
        self.ipv6 = ipv6
        self.rescan_interval = float(rescan_interval)
        self.logger = logger or log
        self.stats = DiscoveryStats()
        self.reply = json.dumps({"AlpacaPort": self.http_port}).encode()  # b'{"AlpacaPort": N}'
        self._requested_port = int(port)
        self._bound_port = 0
        self._ratelog = _RateLimitedLog(self.logger)

        # Which families to serve and which local addresses the HTTP server
        # holds: None = any address of that family.
        self._want_v4 = True
        self._want_v6 = ipv6
        self._bind_v4: list[ipaddress.IPv4Address] | None = None
        self._bind_v6: list[tuple[ipaddress.IPv6Address, int]] | None = None
        if addresses:
            parsed = [entry for address in addresses for entry in _parse_bind(address)]
            v4 = [a for a, _ in parsed if isinstance(a, ipaddress.IPv4Address)]
            v6 = [(a, s) for a, s in parsed if isinstance(a, ipaddress.IPv6Address)]
            self._want_v4 = bool(v4)
            self._want_v6 = ipv6 and bool(v6)
            self._bind_v4 = None if any(a.is_unspecified for a in v4) else v4
            self._bind_v6 = None if any(a.is_unspecified for a, _ in v6) else v6

        # Derived from the interface table at each re-scan; read by the hot path.
        self._v4_ifaces: dict[int, bytes] = {}  # arrival ifindex -> reply source
        self._v4_addrs: set[bytes] = {a.packed for a in self._bind_v4 or ()}
        self._v6_ifaces: dict[int, bytes] = {}
        self._v6_addrs: set[bytes] = {a.packed for a, _ in self._bind_v6 or ()}
        self._joined: dict[int, str] = {}  # ifindex -> name where IPV6_GROUP is joined
        self._join_failed: set[int] = set()  # warned once already; retried at each re-scan
        self._bind_missing_warned = False
        self._group = socket.inet_pton(socket.AF_INET6, IPV6_GROUP)

        self._sock4: socket.socket | None = None
        self._sock6: socket.socket | None = None
        self._nl: socket.socket | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.error: str | None = None
        """Why (part of) discovery is not running, after ``start()``; None if all is well."""

    # ----------------------------------------------------------- public API

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port=0``); 0 when not running."""
        return self._bound_port

    @property
    def running(self) -> bool:
        """True while the responder thread is answering on at least one family."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def families(self) -> tuple[str, ...]:
        """The families being answered: a subset of ``("ipv4", "ipv6")``."""
        out = []
        if self._sock4 is not None:
            out.append("ipv4")
        if self._sock6 is not None:
            out.append("ipv6")
        return tuple(out)

    @property
    def joined_interfaces(self) -> list[str]:
        """Names of the interfaces on which :data:`IPV6_GROUP` is joined."""
        return sorted(self._joined.values())

    def start(self, *, strict: bool = False) -> None:
        """Bind the sockets and start the responder thread.

        A family whose socket cannot be bound (port taken without
        ``SO_REUSEPORT``, IPv6 disabled, ...) is skipped with one WARNING and
        recorded in :attr:`error`; with ``strict=True`` any such failure
        raises :class:`DiscoveryError` and nothing keeps running.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("DiscoveryResponder already started")
            self._stopping.clear()
            self.error = None
            problems = self._open_sockets()
            if problems and (strict or (self._sock4 is None and self._sock6 is None)):
                self._close_sockets()
                message = "; ".join(problems)
                if strict:
                    raise DiscoveryError(message)
                self.error = message
                self.logger.warning(
                    "Alpaca discovery is OFF: %s. The server runs without discovery; clients can still "
                    "connect by address (HTTP port %d).",
                    message,
                    self.http_port,
                )
                return
            if problems:
                self.error = "; ".join(problems)
                self.logger.warning("Alpaca discovery partly unavailable: %s", self.error)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._open_netlink_events()
            self._rescan()
            self._thread = threading.Thread(target=self._run, name="alpaca-discovery", daemon=True)
            self._thread.start()
            where = ", ".join(self.joined_interfaces) or "no interface yet"
            self.logger.info(
                "Alpaca discovery answering on UDP port %d (%s%s) with HTTP port %d%s",
                self._bound_port,
                " and ".join(self.families),
                f"; IPv6 group {IPV6_GROUP} joined on {where}" if self._sock6 is not None else "",
                self.http_port,
                f"; only for {self.bind_address}" if self._bind_v4 is not None or self._bind_v6 is not None else "",
            )

    def stop(self) -> None:
        """Stop answering and close the sockets; idempotent, returns within ~1 s."""
        with self._lock:
            thread = self._thread
            self._stopping.set()
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"x")
                except OSError:
                    pass
            if thread is not None:
                thread.join(timeout=1.0)
                if thread.is_alive():  # should not happen: poll() wakes on the pipe
                    self.logger.warning("Alpaca discovery thread did not stop within 1 s")
            self._thread = None
            self._close_sockets()

    def __enter__(self) -> DiscoveryResponder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- sockets

    def _new_socket(self, family: socket.AddressFamily) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            # Both, so that every Alpaca server on this host can bind 32227 and
            # receive each broadcast/multicast query (unicast ones are handed
            # to one of them by the kernel, which is fine: each sender asks by
            # broadcast or multicast in practice).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            else:
                # Without V6ONLY the IPv6 socket would also receive IPv4
                # broadcasts and each query would be answered twice.
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    def _bind_one(self, family: socket.AddressFamily, port: int) -> socket.socket:
        s = self._new_socket(family)
        try:
            s.bind(("0.0.0.0", port) if family == socket.AF_INET else ("::", port))
        except BaseException:
            s.close()
            raise
        return s

    def _describe_bind_error(self, fam: str, port: int, e: OSError) -> str:
        if e.errno == errno.EADDRINUSE:
            return (
                f"UDP port {port} ({fam}) is in use by another program that did not set SO_REUSEPORT "
                f"(or runs as another user); find it with: ss -ulpn 'sport = :{port}'"
            )
        if e.errno == errno.EACCES:
            return f"no permission to bind UDP port {port} ({fam}); ports below 1024 need root"
        return f"cannot bind UDP port {port} ({fam}): {e.strerror or e}"

    def _open_sockets(self) -> list[str]:
        """Bind what was asked for; returns human-readable problems."""
        problems: list[str] = []
        for _attempt in range(8):
            problems = []
            port = self._requested_port
            if self._want_v4:
                try:
                    self._sock4 = self._bind_one(socket.AF_INET, port)
                    port = self._sock4.getsockname()[1]
                except OSError as e:
                    problems.append(self._describe_bind_error("IPv4", port, e))
            if self._want_v6:
                try:
                    self._sock6 = self._bind_one(socket.AF_INET6, port)
                    port = self._sock6.getsockname()[1]
                except OSError as e:
                    if (
                        e.errno == errno.EADDRINUSE
                        and self._requested_port == 0
                        and self._sock4 is not None
                    ):
                        # The ephemeral port picked for IPv4 is taken on IPv6: pick again.
                        self._close_sockets()
                        continue
                    if e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                        problems.append("IPv6 is not available on this host")
                    else:
                        problems.append(self._describe_bind_error("IPv6", port, e))
            self._bound_port = port if (self._sock4 or self._sock6) else 0
            return problems
        return problems + ["could not find a free ephemeral UDP port for both IPv4 and IPv6"]

    def _open_netlink_events(self) -> None:
        # Being told when links or addresses change lets us join the group on a
        # new interface within a second instead of at the next periodic scan.
        try:
            nl = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
            nl.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
            self._nl = nl
        except OSError as e:
            self.logger.debug("rtnetlink events unavailable (%s); relying on periodic re-scan", e)
            self._nl = None

    def _close_sockets(self) -> None:
        for attr in ("_sock4", "_sock6", "_nl"):
            s = getattr(self, attr)
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
                setattr(self, attr, None)
        for attr in ("_wake_r", "_wake_w"):
            fd = getattr(self, attr)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, None)
        self._joined.clear()
        self._join_failed.clear()
        self._bound_port = 0

    # ----------------------------------------------------------- interfaces

    def _rescan(self) -> None:
        """Refresh the bind-address interface map and join the group where missing."""
        self.stats.rescans += 1
        try:
            ifaces = _list_interfaces()
        except OSError as e:
            self._ratelog("netlink", logging.WARNING, "Alpaca discovery: cannot list interfaces via rtnetlink: %s", e)
            try:
                ifaces = _list_interfaces_fallback()
            except OSError:
                ifaces = {}
        loopbacks = [i.index for i in ifaces.values() if i.flags & _IFF_LOOPBACK]

        if self._bind_v4 is not None:
            v4: dict[int, bytes] = {}
            for a in self._bind_v4:
                if a.is_loopback:
                    # 127.0.0.2 is not listed on lo (127.0.0.1/8 covers it), so
                    # go by the loopback flag rather than by address.
                    v4.update((idx, a.packed) for idx in loopbacks)
                v4.update((i.index, a.packed) for i in ifaces.values() if a in i.addrs)
            self._v4_ifaces = v4
        if self._bind_v6 is not None:
            v6: dict[int, bytes] = {}
            for a6, scope in self._bind_v6:
                if scope:
                    v6[scope] = a6.packed
                elif a6.is_loopback:
                    v6.update((idx, a6.packed) for idx in loopbacks)
                else:
                    v6.update((i.index, a6.packed) for i in ifaces.values() if a6 in i.addrs)
            self._v6_ifaces = v6
        if self._bind_v4 is not None or self._bind_v6 is not None:
            if self._v4_ifaces or self._v6_ifaces:
                self._bind_missing_warned = False
            elif not self._bind_missing_warned:
                # The HTTP server could not be listening there either; most
                # likely the address comes from DHCP and is not back yet.
                self._bind_missing_warned = True
                self.logger.warning(
                    "Alpaca discovery: no interface holds %s (yet); not answering until one does", self.bind_address
                )

        if self._sock6 is None:
            return
        for idx in [idx for idx in self._joined if idx not in ifaces]:
            del self._joined[idx]  # the kernel dropped the membership with the interface
        for iface in ifaces.values():
            if iface.index in self._joined:
                continue
            if not (iface.flags & _IFF_UP and iface.flags & _IFF_MULTICAST):
                continue
            if self._bind_v6 is not None and iface.index not in self._v6_ifaces:
                continue  # with --bind, only the HTTP server's interface is advertised
            mreq = self._group + struct.pack("@I", iface.index)
            try:
                self._sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:  # EADDRINUSE: still joined from before
                    # Typically IPv6 disabled on that interface: say so once,
                    # not at every re-scan.
                    level = logging.DEBUG if iface.index in self._join_failed else logging.WARNING
                    self._join_failed.add(iface.index)
                    self._ratelog(
                        "join",
                        level,
                        "Alpaca discovery: cannot join %s on %s: %s",
                        IPV6_GROUP,
                        iface.name,
                        e.strerror or e,
                    )
                    continue
            self._join_failed.discard(iface.index)
            self._joined[iface.index] = iface.name
            self.logger.debug("Alpaca discovery: joined %s on %s", IPV6_GROUP, iface.name)

    def _drain_netlink(self) -> None:
        assert self._nl is not None
        for _ in range(64):
            try:
                if not self._nl.recv(1 << 16):
                    return
            except BlockingIOError:
                return
            except OSError:  # ENOBUFS after an event storm: a re-scan covers it
                return

    # ----------------------------------------------------------- hot path

    def _run(self) -> None:
        poller = select.poll()  # not select(): the server may hold fds >= 1024
        socks: dict[int, socket.socket] = {}
        for s in (self._sock4, self._sock6):
            if s is not None:
                socks[s.fileno()] = s
                poller.register(s, select.POLLIN)
        assert self._wake_r is not None
        poller.register(self._wake_r, select.POLLIN)
        nl_fd = self._nl.fileno() if self._nl is not None else -1
        if self._nl is not None:
            poller.register(self._nl, select.POLLIN)
        next_scan = time.monotonic() + self.rescan_interval
        while not self._stopping.is_set():
            try:
                timeout_ms = max(0, int((next_scan - time.monotonic()) * 1000))
                events = poller.poll(timeout_ms)
                for fd, _ev in events:
                    if fd in socks:
                        self._drain(socks[fd])
                    elif fd == nl_fd:
                        self._drain_netlink()
                        # Debounce: an interface coming up sends a burst of events.
                        next_scan = min(next_scan, time.monotonic() + 0.2)
                if self._stopping.is_set():
                    break
                if time.monotonic() >= next_scan:
                    self._rescan()
                    next_scan = time.monotonic() + self.rescan_interval
            except Exception as e:  # noqa: BLE001 - the responder must outlive any single failure
                self._ratelog("loop", logging.ERROR, "Alpaca discovery: unexpected error: %r", e)
                self._stopping.wait(0.05)  # no hot loop if the error repeats

    def _drain(self, sock: socket.socket) -> None:
        v6 = sock.family == socket.AF_INET6
        for _ in range(_RECV_BUDGET):
            try:
                data, anc, flags, addr = sock.recvmsg(MAX_QUERY_LEN, _ANC_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # e.g. a queued ICMP error; it concerns one packet, not the socket.
                self._ratelog("recv", logging.WARNING, "Alpaca discovery: receive error: %s", e)
                continue
            self.stats.received += 1
            if flags & socket.MSG_TRUNC:
                self.stats.ignored_oversized += 1
                self._debug_ignored("oversized datagram", addr)
                continue
            if not data.startswith(DISCOVERY_MESSAGE):
                self.stats.ignored_malformed += 1
                self._debug_ignored("not a discovery query", addr)
                continue
            try:
                if v6:
                    self._answer6(sock, anc, addr)
                else:
                    self._answer4(sock, anc, addr)
            except OSError as e:
                self.stats.send_errors += 1
                self._ratelog("send", logging.WARNING, "Alpaca discovery: cannot reply to %s: %s", addr[0], e)

    def _debug_ignored(self, why: str, addr: object) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self._ratelog("ignored", logging.DEBUG, "Alpaca discovery: ignored %s from %s", why, addr)

    @staticmethod
    def _pktinfo(anc: list[tuple[int, int, bytes]], level: int, kind: int, st: struct.Struct) -> tuple | None:
        for lvl, typ, data in anc:
            if lvl == level and typ == kind and len(data) >= st.size:
                return st.unpack_from(data)
        return None

    def _answer4(self, sock: socket.socket, anc: list, addr: tuple) -> None:
        info = self._pktinfo(anc, socket.IPPROTO_IP, _IP_PKTINFO, _IN_PKTINFO)
        if self._bind_v4 is None:
            # Reply from the address the kernel picked for this query (the
            # interface address for a broadcast), so the client learns an
            # address on its own network.
            src = info[1] if info else None
        else:
            if info is None:
                src = None
            else:
                ifindex, _spec, dst = info
                src = dst if dst in self._v4_addrs else self._v4_ifaces.get(ifindex)
            if src is None:
                self.stats.ignored_filtered += 1
                self._debug_ignored("query on an interface the HTTP server does not listen on", addr)
                return
        if src is not None and src != b"\0\0\0\0":
            pktinfo = (socket.IPPROTO_IP, _IP_PKTINFO, _IN_PKTINFO.pack(0, src, b"\0\0\0\0"))
            sock.sendmsg([self.reply], [pktinfo], 0, addr)
        else:
            sock.sendto(self.reply, addr)
        self.stats.answered += 1

    def _answer6(self, sock: socket.socket, anc: list, addr: tuple) -> None:
        info = self._pktinfo(anc, socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO)
        src: bytes | None = None
        if self._bind_v6 is None:
            # A unicast query is answered from the address it was sent to; for
            # the multicast group the kernel picks the source (link-local for
            # a link-local client, which is what the client expects).
            if info is not None and info[0][0] != 0xFF:
                src = info[0]
        else:
            if info is not None:
                dst, ifindex = info
                src = dst if dst in self._v6_addrs else self._v6_ifaces.get(ifindex)
            if src is None:
                self.stats.ignored_filtered += 1
                self._debug_ignored("query on an interface the HTTP server does not listen on", addr)
                return
        if src is not None:
            sock.sendmsg([self.reply], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(src, 0))], 0, addr)
        else:
            sock.sendto(self.reply, addr)
        self.stats.answered += 1


# --------------------------------------------------------------------------
# Standalone responder for manual testing
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_server.discovery``: run a responder until SIGINT/SIGTERM.

    Prints one JSON line ``{"ready": true, "port": P, "families": [...]}`` on
    stdout once answering (``"ready": false`` and exit status 2 if it cannot),
    and a JSON line of counters when stopped.
    """
    p = argparse.ArgumentParser(prog="python -m alpaca_server.discovery", description=__doc__.split("\n\n")[0])
    p.add_argument("--http-port", type=int, required=True, help="HTTP port to advertise")
    p.add_argument("--port", type=int, default=DISCOVERY_PORT, help="UDP port (default %(default)s; 0 = ephemeral)")
    p.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="only answer for the interface holding ADDR (may be given more than once)")
    p.add_argument("--no-ipv6", action="store_true", help="IPv4 only")
    p.add_argument("--strict", action="store_true", help="exit with an error if any family cannot bind")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        responder = DiscoveryResponder(args.http_port, port=args.port, bind_address=args.bind, ipv6=not args.no_ipv6)
    except ValueError as e:
        p.error(str(e))
    try:
        responder.start(strict=args.strict)
    except DiscoveryError as e:
        print(json.dumps({"ready": False, "error": str(e)}), flush=True)
        return 2
    if not responder.running:
        print(json.dumps({"ready": False, "error": responder.error}), flush=True)
        return 2
    print(
        json.dumps(
            {"ready": True, "port": responder.port, "families": list(responder.families),
             "joined": responder.joined_interfaces}
        ),
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        responder.stop()
        print(json.dumps({"stats": responder.stats.as_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
