"""A client of a real Jupyter server's /gpumarket/api/events websocket for tests: collects
every event on a thread; ``wait`` for one that matches."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jupyterproc import JupyterServer

Event = dict[str, Any]


class EventWatch:
    def __init__(self, server: JupyterServer) -> None:
        self.ws = connect(server.ws_url("/gpumarket/api/events"), open_timeout=30).__enter__()
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for text in self.ws:
                with self._cond:
                    self.events.append(json.loads(text))
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        except BaseException as exc:  # seen by the test: a reader that died must not hang it
            with self._cond:
                self.events.append({"type": "reader-died", "kernel_id": None, "error": repr(exc)})
                self._cond.notify_all()

    def wait(self, match: Callable[[Event], bool], timeout: float = 60, since: int = 0) -> Event:
        """The first event from index ``since`` on that matches (AssertionError on a hang)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    assert ev["type"] != "reader-died", ev
                    if match(ev):
                        return ev
                left = deadline - time.monotonic()
                assert left > 0, f"no matching event in {timeout} s; saw {self.events[-20:]}"
                self._cond.wait(left)

    def states(self, kernel_id: str) -> list[str]:
        """The launch states of ``kernel_id`` in order, repeats folded."""
        with self._cond:
            seen = [
                e["state"]
                for e in self.events
                if e["type"] == "launch" and e["kernel_id"] == kernel_id
            ]
        return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]

    def of(self, kind: str, kernel_id: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e["type"] == kind and e["kernel_id"] == kernel_id]

    def close(self) -> None:
        self.ws.close()
        self._thread.join(10)


def launch(kernel_id: str, state: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "launch" and e["kernel_id"] == kernel_id and e["state"] == state


def any_launch(state: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "launch" and e["state"] == state
