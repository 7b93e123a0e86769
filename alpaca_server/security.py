"""HTTP security: optional Basic authentication and cross-site request protection for the setup pages.

Both are described, with their trade-offs, in ``docs/security.md``. In short:

* **Basic authentication** is off until a user is added (``zwo-alpaca passwd USER``), because ASCOM
  clients on a trusted LAN expect none. With users configured, every request to the device API
  (``/api/...``), the setup pages (``/setup...``) and ``/`` needs a valid ``Authorization: Basic``
  header; the management API (``/management/...``: API versions, server description, the list of
  devices) and UDP discovery stay open so that clients can still find the server, as ASCOM's
  discovery process expects. Passwords are stored in the config file as salted scrypt hashes
  (``server.auth.users``), compared in constant time, and a successful check is remembered in memory
  (keyed by an HMAC of the credentials) so that clients polling many times a second do not pay for
  scrypt on each request. The server re-reads the users from the config file when it changes.
* **CSRF**: state-changing requests to the setup pages (POST under ``/setup``) must carry a token
  (form field ``csrf`` or header ``X-CSRF-Token``) made from a per-process secret, and must not come
  from another origin (``Origin``, else ``Referer``, is compared with ``Host``). The Alpaca API is not
  covered: ASCOM clients send no tokens; its state changes are PUTs, which a browser only sends
  cross-site after a CORS pre-flight that this server never grants.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("zwo_alpaca.security")

REALM = "zwo-alpaca"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_TTL_S = 24 * 3600.0
# Paths that stay reachable without credentials (ASCOM management API: finding the server).
OPEN_PREFIXES = ("/management/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_TIMEOUT_S = 30.0  # a post whose body does not arrive is answered 408 (as the Alpaca API does)

# scrypt: N=2^14, r=8, p=1 needs 16 MiB and ~50 ms on a PC, ~0.2-0.4 s on a Raspberry Pi 4.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 200_000
_MAX_CACHE = 64
_MAX_CONCURRENT_CHECKS = 2
USERNAME_MAX = 64


# ------------------------------------------------------------------------------------ passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted hash of ``password`` for the config file: ``scrypt$N$r$p$salt$hash`` (base64 parts).

    Falls back to PBKDF2-HMAC-SHA256 (``pbkdf2_sha256$iterations$salt$hash``) where the Python
    build's OpenSSL has no scrypt.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    pw = password.encode("utf-8")
    if hasattr(hashlib, "scrypt"):
        try:
            digest = hashlib.scrypt(pw, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
                                    maxmem=64 * 1024 * 1024)
            return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
        except (ValueError, MemoryError):  # pragma: no cover - OpenSSL without scrypt support
            pass
    digest = hashlib.pbkdf2_hmac("sha256", pw, salt, PBKDF2_ITERATIONS, dklen=32)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"


def _derive(password: str, stored: str) -> tuple[bytes, bytes] | None:
    """(expected digest, computed digest) for a stored hash, or None when it is malformed."""
    parts = stored.split("$")
    pw = password.encode("utf-8")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
                return None
            salt, expected = _unb64(parts[4]), _unb64(parts[5])
            got = hashlib.scrypt(pw, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 1024 * 1024)
            return expected, got
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if not 1000 <= iterations <= 10_000_000:
                return None
            salt, expected = _unb64(parts[2]), _unb64(parts[3])
            return expected, hashlib.pbkdf2_hmac("sha256", pw, salt, iterations, dklen=len(expected))
    except (ValueError, binascii.Error, MemoryError):
        return None
    return None


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time comparison of the digests)."""
    pair = _derive(password, stored)
    if pair is None:
        return False
    expected, got = pair
    return hmac.compare_digest(expected, got)


def valid_username(name: str) -> str | None:
    """None when ``name`` can be a Basic-auth user name, else why not."""
    if not name:
        return "the user name is empty"
    if len(name) > USERNAME_MAX:
        return f"the user name is longer than {USERNAME_MAX} characters"
    if ":" in name:
        return "the user name must not contain ':' (HTTP Basic authentication separates it from the password with one)"
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        return "the user name must not contain spaces or control characters"
    return None


def users_from(auth: Any) -> dict[str, str]:
    """The ``{user: hash}`` table of a config ``server.auth`` value (anything malformed is dropped)."""
    if not isinstance(auth, dict):
        return {}
    raw = auth.get("users")
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str) and valid_username(str(k)) is None}


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4096:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


# ------------------------------------------------------------------------------------ the policy


class Security:
    """Per-process security state: users, the verified-credentials cache and the CSRF secret."""

    def __init__(self, config: Any = None, *, secret: bytes | None = None) -> None:
        self.config = config
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._users: dict[str, str] = users_from(config.server_value("auth", {}) if config is not None else {})
        self._verified: dict[bytes, str] = {}
        self._dummy_hash: str | None = None
        self._checks: asyncio.Semaphore | None = None
        self._stat_at = 0.0
        self._mtime = self._file_mtime()

    # --- users ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether Basic authentication is required (at least one user is configured)."""
        with self._lock:
            return bool(self._users)

    def users(self) -> list[str]:
        """The configured user names."""
        with self._lock:
            return sorted(self._users)

    def _file_mtime(self) -> int | None:
        path = getattr(self.config, "path", None)
        if path is None:
            return None
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None

    def refresh(self, force: bool = False) -> None:
        """Pick up users changed in the config file by ``zwo-alpaca passwd`` (checked at most once a second).

        The new ``server.auth`` also replaces the in-memory copy, so the server's next save of the
        config keeps the change instead of overwriting it.
        """
        if self.config is None:
            return
        now = time.monotonic()
        if not force and now - self._stat_at < 1.0:
            return
        self._stat_at = now
        mtime = self._file_mtime()
        if mtime is None or mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            with open(self.config.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            log.warning("could not re-read %s for users: %s", self.config.path, exc)
            return
        server = data.get("server") if isinstance(data, dict) else None
        auth = server.get("auth") if isinstance(server, dict) else None
        current = self.config.server_value("auth", None)
        if auth == current:
            return
        if auth is None:
            # The file lost its auth section: keep the users we have rather than open the server.
            log.warning("%s has no server.auth any more; keeping the %d user(s) loaded", self.config.path,
                        len(self.users()))
            return
        self.config.set_server_value("auth", auth)
        users = users_from(auth)
        with self._lock:
            self._users = users
            self._verified.clear()
        names = ", ".join(sorted(users)) or "none (authentication off)"
        log.info("authentication users reloaded from %s: %s", self.config.path, names)

    # --- Basic authentication ---------------------------------------------------------------

    def _cache_key(self, user: str, password: str) -> bytes:
        return hmac.new(self.secret, f"{user}\0{password}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def check_cached(self, user: str, password: str) -> bool | None:
        """True when these credentials were verified against the current hash; None: unknown yet."""
        key = self._cache_key(user, password)
        with self._lock:
            stored = self._users.get(user)
            seen = self._verified.get(key)
        if stored is not None and seen is not None and hmac.compare_digest(seen, stored):
            return True
        return None

    def check_slow(self, user: str, password: str) -> bool:
        """Verify against the stored hash (blocking: scrypt); remember a success."""
        with self._lock:
            stored = self._users.get(user)
        if stored is None:
            # Unknown user: spend the same time as for a known one, then refuse.
            if self._dummy_hash is None:
                self._dummy_hash = hash_password(secrets.token_hex(8))
            verify_password(password, self._dummy_hash)
            return False
        if not verify_password(password, stored):
            return False
        key = self._cache_key(user, password)
        with self._lock:
            if len(self._verified) >= _MAX_CACHE:
                self._verified.clear()
            self._verified[key] = stored
        return True

    async def authenticate(self, request: web.Request) -> str | None:
        """The authenticated user name, or None (wrong or missing credentials)."""
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            return None
        user, password = creds
        if self.check_cached(user, password):
            return user
        if self._checks is None:
            self._checks = asyncio.Semaphore(_MAX_CONCURRENT_CHECKS)
        async with self._checks:  # scrypt is CPU- and memory-hungry: at most two at a time
            ok = await asyncio.get_running_loop().run_in_executor(None, self.check_slow, user, password)
        if not ok:
            log.warning("authentication failed for user %r from %s", user[:USERNAME_MAX], request.remote)
            return None
        return user

    # --- CSRF -------------------------------------------------------------------------------

    def _csrf_mac(self, user: str, issued: str) -> str:
        mac = hmac.new(self.secret, f"csrf|{user}|{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    def csrf_token(self, user: str | None = None, now: float | None = None) -> str:
        """A token for the setup pages' own posts (valid for a day, for this process and user)."""
        issued = format(int(now if now is not None else time.time()), "x")
        return f"{issued}.{self._csrf_mac(user or '', issued)}"

    def csrf_valid(self, token: str | None, user: str | None = None, now: float | None = None) -> bool:
        """Whether ``token`` was made by :meth:`csrf_token` of this process for ``user`` and is fresh."""
        if not token or len(token) > 200:
            return False
        issued, sep, mac = token.partition(".")
        if not sep:
            return False
        try:
            when = int(issued, 16)
        except ValueError:
            return False
        t = now if now is not None else time.time()
        if not t - CSRF_TTL_S <= when <= t + 60:
            return False
        return hmac.compare_digest(mac.encode("ascii", "replace"), self._csrf_mac(user or "", issued).encode("ascii"))


def _netloc(url: str, default_scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url if "://" in url else f"{default_scheme}://{url}")
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (host, port) if host else None


def same_origin(source: str, host_header: str) -> bool:
    """Whether an ``Origin``/``Referer`` URL names the host (and port) the request was sent to."""
    if not source or source == "null" or not host_header:
        return False
    scheme = source.split("://", 1)[0].lower() if "://" in source else "http"
    a, b = _netloc(source, scheme), _netloc(host_header, scheme)
    return a is not None and a == b


# ------------------------------------------------------------------------------------ wiring

SECURITY_KEY: web.AppKey[Security] = web.AppKey("zwo_alpaca_security", Security)
USER_KEY = "zwo_alpaca_user"


async def read_body(request: web.Request, kind: str = "form") -> Any:
    """``request.post()`` (or ``.json()``) bounded by BODY_TIMEOUT_S: 408 for a body that never comes."""
    coro = request.post() if kind == "form" else request.json()
    try:
        return await asyncio.wait_for(coro, BODY_TIMEOUT_S)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {BODY_TIMEOUT_S:g} s",
                                     content_type="text/plain") from None


def security_of(request: web.Request) -> Security | None:
    """The app's Security object (None in apps built without :func:`install`)."""
    return request.app.get(SECURITY_KEY)


def request_user(request: web.Request) -> str | None:
    """The authenticated user of this request (None when authentication is off)."""
    return request.get(USER_KEY)


def needs_auth(path: str) -> bool:
    """Whether ``path`` is covered by Basic authentication when it is on."""
    return not any(path.startswith(p) for p in OPEN_PREFIXES)


def csrf_protected(request: web.Request) -> bool:
    """State-changing requests to the setup pages."""
    return request.method not in SAFE_METHODS and (request.path == "/" or request.path.startswith("/setup"))


def _unauthorized(request: web.Request) -> web.Response:
    return web.Response(
        status=401,
        text="401: authentication required (this server has HTTP Basic authentication on; see docs/security.md)",
        content_type="text/plain",
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def _forbidden(reason: str) -> web.Response:
    return web.Response(status=403, text=f"403: {reason}", content_type="text/plain")


async def csrf_check(request: web.Request, sec: Security) -> str | None:
    """None when the request may go on, else why it is refused."""
    host = request.headers.get("Host", "")
    origin = request.headers.get("Origin")
    if origin is not None:
        if not same_origin(origin, host):
            return f"cross-site request refused (Origin {origin[:100]!r} is not this server)"
    else:
        referer = request.headers.get("Referer")
        if referer is not None and not same_origin(referer, host):
            return "cross-site request refused (Referer is not this server)"
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await read_body(request)  # aiohttp keeps the parsed form for the handler
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not sec.csrf_valid(token, request_user(request)):
        return ("missing or invalid CSRF token: reload the page and try again" if token
                else "missing CSRF token: post from the setup page (reload it and try again)")
    return None


@web.middleware
async def security_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Basic authentication (when users are configured), then CSRF checks for setup-page posts."""
    sec = security_of(request)
    if sec is None:
        return await handler(request)
    sec.refresh()
    if sec.enabled and needs_auth(request.path):
        user = await sec.authenticate(request)
        if user is None:
            return _unauthorized(request)
        request[USER_KEY] = user
    if csrf_protected(request):
        problem = await csrf_check(request, sec)
        if problem is not None:
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, problem)
            return _forbidden(problem)
    return await handler(request)


def install(app: web.Application, config: Any = None) -> Security:
    """Add the security middleware to ``app`` (before it starts) and return its Security object."""
    sec = Security(config)
    app[SECURITY_KEY] = sec
    app.middlewares.append(security_middleware)
    if sec.enabled:
        log.info("HTTP Basic authentication is on (%d user(s)) for /api and /setup; /management/ and discovery "
                 "stay open, and INDI has no authentication (use --indi-port 0 or --bind to restrict it)",
                 len(sec.users()))
    return sec
