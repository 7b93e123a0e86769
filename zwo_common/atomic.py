"""Replacing a file atomically: the config, the capture-loop state and the history files use it.

A power cut or a crash mid-write must leave either the old file or the new one, never half of
each, because these files hold device numbers, UniqueIDs and a night's record.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_text(path: Path, text: str | Iterable[str], *, prefix: str) -> None:
    """Replace ``path`` with ``text`` (a string, or lines): temp file in the same folder, fsync, rename.

    ``prefix`` names the temp file (e.g. ``".config-"``) so a leftover says whose it was. Raises
    OSError; the temp file is removed when anything fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if isinstance(text, str):
                fh.write(text)
            else:
                fh.writelines(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
