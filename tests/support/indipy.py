"""indipyclient (PyPI), a from-scratch asyncio INDI client, driven synchronously for the tests.

`IndipyCamera` runs the client on its own event loop in a thread and offers blocking calls (wait
for a property, set one, expose and return the saved BLOB file), so a test reads like the other
INDI tests. The client saves received BLOBs itself (its ``BLOBfolder``), which is what its users do.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import indipyclient  # type: ignore[import-untyped]
except Exception:  # noqa: BLE001 - pragma: no cover; absent means the tests skip
    indipyclient = None


class IndipyCamera:
    """An indipyclient connection to an INDI server, with every received event recorded."""

    def __init__(self, port: int, blob_dir: Path, host: str = "127.0.0.1") -> None:
        if indipyclient is None:
            raise RuntimeError("indipyclient is not installed")
        self.events: list[Any] = []
        self._cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        outer = self

        class _Client(indipyclient.IPyClient):
            async def rxevent(self, event: Any) -> None:
                with outer._cond:
                    outer.events.append(event)
                    outer._cond.notify_all()

        self.client = _Client(indihost=host, indiport=port)
        self.client.BLOBfolder = blob_dir
        self.blob_dir = blob_dir
        self._task: asyncio.Future[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="indipyclient", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = asyncio.ensure_future(self.client.asyncrun(), loop=self.loop)
        try:
            self.loop.run_until_complete(self._task)
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the client stopped; tests see the effect
            pass

    # ---- waiting
    def wait_for(self, pred: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = pred()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    last = [(getattr(e, "eventtype", e), getattr(e, "vectorname", "")) for e in self.events[-8:]]
                    raise TimeoutError(f"indipyclient: no {what} within {timeout} s; last events: {last}")
                self._cond.wait(min(left, 0.1))

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def wait_event(self, pred: Callable[[Any], object], since: int = 0, timeout: float = 15.0,
                   what: str = "event") -> Any:
        return self.wait_for(lambda: next((e for e in self.events[since:] if pred(e)), None), timeout, what)

    def vector(self, device: str, name: str, timeout: float = 15.0) -> Any:
        return self.wait_for(lambda: self.client.get(device, {}).get(name) if device in self.client else None,
                             timeout, f"{device}.{name}")

    # ---- sending
    def send(self, device: str, name: str, **members: object) -> None:
        coro = self.client.send_newVector(device, name, members={k: str(v) for k, v in members.items()})
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def set_state(self, device: str, name: str, state: str, since: int, timeout: float = 15.0) -> Any:
        return self.wait_event(lambda e: getattr(e, "devicename", None) == device and
                               getattr(e, "vectorname", None) == name and getattr(e, "state", None) == state,
                               since, timeout, f"{device}.{name} {state}")

    def connect_device(self, device: str) -> None:
        self.vector(device, "CONNECTION")
        mark = self.mark()
        self.send(device, "CONNECTION", CONNECT="On", DISCONNECT="Off")
        self.set_state(device, "CONNECTION", "Ok", mark)
        self.vector(device, "CCD_EXPOSURE")

    def expose(self, device: str, seconds: float, timeout: float = 30.0) -> Path:
        """Expose; returns the file the client saved the image BLOB to."""
        mark = self.mark()
        self.send(device, "CCD_EXPOSURE", CCD_EXPOSURE_VALUE=seconds)
        ev = self.wait_event(lambda e: getattr(e, "eventtype", "") == "SetBLOB" and e.devicename == device,
                             mark, timeout, f"{device} image BLOB")
        member = ev.vector.member("CCD1")
        return self.blob_dir / member.filename

    def close(self) -> None:
        try:
            self.client.shutdown()
        except Exception:  # noqa: BLE001 - already stopped
            pass
        self._thread.join(5)
        if self._thread.is_alive() and self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(5)
