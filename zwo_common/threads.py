"""Blocking steps awaited from an event loop without letting them hold the process at exit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


def in_daemon_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> asyncio.Future[None]:
    """Run ``fn(*args)`` in a daemon thread; the returned future completes when it returns.

    Not the loop's executor: ``asyncio.run()`` joins executor threads without a time limit, and a
    step stuck in the SDK must not hold the process beyond the shutdown budget. The future carries
    ``fn``'s exception, if it raised one.
    """
    fut: asyncio.Future[None] = loop.create_future()

    def done(exc: BaseException | None) -> None:
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(None)

    def run() -> None:
        err: BaseException | None = None
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported through the future
            err = exc
        try:
            loop.call_soon_threadsafe(done, err)
        except RuntimeError:  # the loop is already closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name=f"shutdown-{getattr(fn, '__name__', 'step')}", daemon=True).start()
    return fut
