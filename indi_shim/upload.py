"""Local image upload (UPLOAD_LOCAL / UPLOAD_BOTH) confined to the directory the user configured.

An INDI client chooses UPLOAD_DIR and UPLOAD_PREFIX freely; on a server that is a path-traversal
hole unless the server confines them. Rules:

* The server operator configures one base directory (`upload_dir`); without one, local upload is
  refused with an explanation (nothing is ever written anywhere by default).
* UPLOAD_DIR may be empty (the base), a relative path below the base, or an absolute path that is
  the base or inside it. ".." components, NUL bytes and over-long names are refused.
* Symlinks cannot be used to escape: directories are walked one component at a time with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to the parent's descriptor (no re-resolution of the whole
  path between check and use), and the file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so an
  existing file or symlink is never overwritten or followed.
* The prefix is a file name, not a path: no "/", no leading ".", printable characters only.
  ``XXX`` is replaced by the next free 3-digit index and ``ISO8601`` by the time, as libindi does.
"""

from __future__ import annotations

import errno
import os
import re
from datetime import datetime
from pathlib import Path

MAX_COMPONENT = 255
MAX_DEPTH = 32
MAX_PREFIX = 128


class UploadError(ValueError):
    """The requested directory or prefix is not allowed; the message says why and what is."""


class UploadTarget:
    """The operator's base directory and the checks that keep clients inside it."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        base_path = Path(base).expanduser()
        base_path.mkdir(parents=True, exist_ok=True)
        self.base = Path(os.path.realpath(base_path))

    # ---------------------------------------------------------------- validation
    def components(self, requested: str) -> tuple[str, ...]:
        """The directory components below the base that `requested` names; raises UploadError."""
        req = (requested or "").strip()
        if "\x00" in req:
            raise UploadError("UPLOAD_DIR contains a NUL character")
        if req in ("", "."):
            return ()
        if os.path.isabs(req):
            # Absolute paths are accepted only inside the base. Compare lexically after normalising
            # (no filesystem access: the walk below is what enforces "no symlinks").
            norm = os.path.normpath(req)
            base = str(self.base)
            if norm == base:
                return ()
            if not norm.startswith(base.rstrip("/") + "/"):
                raise UploadError(f"UPLOAD_DIR {requested!r} is outside the server's upload directory {base}; "
                                  f"use a path inside it or a relative path")
            req = norm[len(base.rstrip("/")) + 1:]
        parts: list[str] = []
        for comp in req.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                raise UploadError(f"UPLOAD_DIR {requested!r} may not contain '..'")
            if len(comp.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
                raise UploadError(f"a component of UPLOAD_DIR is longer than {MAX_COMPONENT} bytes")
            if any(ord(ch) < 32 for ch in comp):
                raise UploadError("UPLOAD_DIR contains control characters")
            parts.append(comp)
        if len(parts) > MAX_DEPTH:
            raise UploadError(f"UPLOAD_DIR is nested deeper than {MAX_DEPTH} directories")
        return tuple(parts)

    @staticmethod
    def check_prefix(prefix: str) -> str:
        """Validate UPLOAD_PREFIX; returns it unchanged or raises UploadError."""
        p = prefix or ""
        if not p.strip():
            raise UploadError("UPLOAD_PREFIX is empty")
        if len(p) > MAX_PREFIX:
            raise UploadError(f"UPLOAD_PREFIX is longer than {MAX_PREFIX} characters")
        if "/" in p or "\\" in p or "\x00" in p:
            raise UploadError("UPLOAD_PREFIX is a file name and may not contain '/', '\\' or NUL")
        if p.startswith("."):
            raise UploadError("UPLOAD_PREFIX may not start with '.'")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in p):
            raise UploadError("UPLOAD_PREFIX contains control characters")
        return p

    def display(self, components: tuple[str, ...], name: str = "") -> str:
        return str(self.base.joinpath(*components, name) if name else self.base.joinpath(*components))

    # ---------------------------------------------------------------- writing
    def open_dir(self, components: tuple[str, ...]) -> int:
        """A descriptor of the directory below the base (created as needed, never following links)."""
        fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for comp in components:
                try:
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UploadError(f"{self.display(components)}: {comp!r} is a symlink or not a directory; "
                                          f"refusing to follow it out of the upload directory") from exc
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _next_index(names: list[str], prefix: str, ext: str) -> int:
        if "XXX" not in prefix:
            return 0
        before, _, after = prefix.partition("XXX")
        pat = re.compile(re.escape(before).replace("ISO8601", ".*") + r"(\d+)"
                         + re.escape(after).replace("ISO8601", ".*") + re.escape(ext) + "$")
        best = 0
        for n in names:
            m = pat.match(n)
            if m:
                best = max(best, int(m.group(1)))
        return best + 1

    def save(self, components: tuple[str, ...], prefix: str, ext: str, data: memoryview | bytes,
             now: datetime | None = None) -> str:
        """Write `data` as a new file; returns its full path. Never overwrites, never follows links."""
        self.check_prefix(prefix)
        fd_dir = self.open_dir(components)
        try:
            names = os.listdir(fd_dir)
            index = self._next_index(names, prefix, ext)
            stamp = (now or datetime.now()).strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3]
            stem = prefix.replace("ISO8601", stamp)
            if "XXX" in stem:
                stem = stem.replace("XXX", f"{index:03d}")
            name = stem + ext
            for attempt in range(1000):
                candidate = name if attempt == 0 else f"{stem}_{attempt}{ext}"
                try:
                    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd_dir)
                except FileExistsError:
                    continue
                try:
                    view = memoryview(data).cast("B")
                    written = 0
                    while written < len(view):
                        written += os.write(fd, view[written:written + (16 << 20)])
                finally:
                    os.close(fd)
                return self.display(components, candidate)
            raise UploadError(f"no free file name for prefix {prefix!r} in {self.display(components)}")
        finally:
            os.close(fd_dir)
