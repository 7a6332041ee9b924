"""Background threads that feed the status view: the server's events websocket (polling
``GET launches`` when the websocket is not there), or, inside a remote kernel, the agent's
telemetry file. Each calls ``on_event(dict)`` from its own daemon thread until ``stop()``."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.widgets.client import ServerClient

__all__ = ["EventFeed", "TelemetryFileFeed"]

OnEvent = Callable[[dict[str, Any]], None]
MAX_EVENT = 256 * 1024


class _Loop:
    def __init__(self, on_event: OnEvent, name: str) -> None:
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _emit(self, event: Any) -> None:
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            with contextlib.suppress(Exception):  # a display bug must not kill the feed
                self.on_event(event)

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class EventFeed(_Loop):
    """``GET events`` (websocket); on refusal or loss, poll ``GET launches`` every ``poll_s``
    and retry the websocket now and then."""

    def __init__(self, client: ServerClient, on_event: OnEvent, poll_s: float = 2.0) -> None:
        super().__init__(on_event, "gpumarket-events")
        self.client = client
        self.poll_s = poll_s
        self.mode = "starting"

    def _run(self) -> None:
        self._poll_once()  # the launches as they are now; the websocket brings what follows
        while not self.stopped:
            if not self._websocket():
                self.mode = "polling"
                for _ in range(5):
                    if self.stopped:
                        return
                    self._poll_once()
                    self._stop.wait(self.poll_s)

    def _websocket(self) -> bool:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        headers = {"Authorization": f"token {self.client.token}"} if self.client.token else {}
        try:
            with connect(
                self.client.ws_url("events"),
                additional_headers=headers,
                max_size=MAX_EVENT,
                open_timeout=10,
            ) as ws:
                self.mode = "websocket"
                while not self.stopped:
                    try:
                        msg = ws.recv(timeout=1)
                    except TimeoutError:
                        continue
                    try:
                        self._emit(json.loads(msg))
                    except ValueError:
                        continue
            return True
        except (OSError, WebSocketException, TimeoutError):
            return False

    def _poll_once(self) -> None:
        try:
            body = self.client.api("GET", "launches", timeout=10)
        except GpuMarketError:
            return
        for ev in (body or {}).get("launches", []):
            self._emit({"type": "launch", **ev} if isinstance(ev, dict) else None)


class TelemetryFileFeed(_Loop):
    """Inside a remote kernel: the agent's latest sample (telemetry_view.read_latest) as
    ``telemetry`` events, one per new sample."""

    def __init__(self, on_event: OnEvent, every_s: float = 1.0, path: str | None = None) -> None:
        super().__init__(on_event, "gpumarket-telemetry")
        self.every_s = every_s
        self.path = path

    def _run(self) -> None:
        from jupyter_gpumarket.telemetry_view import read_latest

        last = None
        while not self.stopped:
            sample = read_latest(self.path)
            if sample is not None and sample.get("t") != last:
                last = sample.get("t")
                self._emit(
                    {"type": "telemetry", "kernel_id": None, "t": time.time(), "sample": sample}
                )
            self._stop.wait(self.every_s)
