"""Blocking work (disk I/O in a renter's working dir) off the event loop, with a deadline.

``asyncio.to_thread`` cannot give up on a call: a thread stuck in the kernel (a FIFO opened
without ``O_NONBLOCK``, a hung filesystem) keeps the caller waiting, holds one of the shared
executor's few workers, and makes the interpreter wait for it at exit, so SIGTERM would not
stop the agent. :class:`BlockingRunner` runs each call on its own daemon thread, stops waiting
at the deadline, and refuses new calls while an abandoned one is still running, so one stuck
lease holds at most one thread and never delays shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from jupyter_gpumarket.exceptions import AgentError

__all__ = ["BlockingRunner", "OperationTimedOut"]

T = TypeVar("T")


class OperationTimedOut(AgentError, TimeoutError):
    """A blocking operation did not finish within its deadline."""


class BlockingRunner:
    """Runs one blocking call at a time on a daemon thread, each within ``timeout`` s."""

    def __init__(self, timeout: float, what: str = "file operation") -> None:
        self.timeout = timeout
        self.what = what
        self._abandoned: threading.Thread | None = None

    @property
    def stuck(self) -> bool:
        """A call given up on at its deadline is still running."""
        return self._abandoned is not None and self._abandoned.is_alive()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.stuck:
            raise OperationTimedOut(
                f"an earlier {self.what} of this lease is still stuck on the provider's disk; "
                "try again later or start a new lease"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                (future.set_result if ok else future.set_exception)(value)

        def work() -> None:
            try:
                result: Any = (True, fn(*args))
            except BaseException as exc:  # handed to the awaiting coroutine
                result = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle, *result)

        thread = threading.Thread(target=work, name=self.what, daemon=True)
        thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            self._abandoned = thread
            raise OperationTimedOut(
                f"the {self.what} did not finish within {self.timeout:g} s and was abandoned; "
                "the provider's disk may be hung: try again later"
            ) from None
