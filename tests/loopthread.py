"""An asyncio server object (a fault proxy, a link emulator) run on its own event loop in a
daemon thread, so synchronous tests can start it, drive it and stop it.

The object needs ``await start()``, ``await aclose()`` and a ``port``. ``start()`` here returns
that port; calls made through :meth:`OnLoopThread.call` block until the object's loop has run
them, so a test can call ``proxy.reset()`` and then assert. ``stop()`` closes the object, stops
its loop and joins the thread; it is safe to call twice. Usable as a context manager.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, Self, TypeVar

T = TypeVar("T")

CLOSE_TIMEOUT = 5.0


class _Served(Protocol):
    port: int

    async def start(self) -> Any: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=_Served)


class OnLoopThread(Generic[S]):
    """Subclasses say how to make the object (:meth:`make`, called on its loop)."""

    thread_name = "loop-thread"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._obj: S | None = None

    def make(self) -> S:
        raise NotImplementedError

    @property
    def obj(self) -> S:
        if self._obj is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() first")
        return self._obj

    @property
    def port(self) -> int:
        return self.obj.port

    def start(self, timeout: float = CLOSE_TIMEOUT) -> int:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()

        async def start() -> S:
            obj = self.make()
            await obj.start()
            return obj

        self._obj = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout)
        return self._obj.port

    def stop(self, timeout: float = CLOSE_TIMEOUT) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._obj is not None:
                asyncio.run_coroutine_threadsafe(self._obj.aclose(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def call(self, fn: Callable[[], T], timeout: float = CLOSE_TIMEOUT) -> T:
        """Run ``fn`` on the object's loop and return what it returned."""
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() first")
        if threading.current_thread() is self._thread:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
