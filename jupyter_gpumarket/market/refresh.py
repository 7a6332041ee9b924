"""Keeping offer indexes fresh in long-lived processes: a daemon thread per index refreshes it
every ``interval`` seconds (errors logged and retried), and :func:`shared_index` gives a process
one such index per network profile (a Jupyter server launching many kernels reads the chain
once, then only new blocks)."""

from __future__ import annotations

import logging
import threading

from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.market.index import OfferIndex, cache_path

__all__ = ["BackgroundRefresh", "shared_index"]

log = logging.getLogger(__name__)


class BackgroundRefresh:
    """Refreshes an index every ``interval`` seconds from a daemon thread (errors are logged
    and retried at the next tick); :meth:`index` returns it, refreshed at least once."""

    def __init__(self, index: OfferIndex, interval: float = 30.0) -> None:
        self._index = index
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> BackgroundRefresh:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="gpumarket-offer-index", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._index.refresh()
                self.error = None
            except GpuMarketError as exc:
                self.error = str(exc)
                log.warning(
                    "offer index refresh failed (retried in %.0f s): %s", self.interval, exc
                )

    def index(self) -> OfferIndex:
        return self._index

    def stop(self) -> None:
        self._stop.set()


_SHARED: dict[tuple[str, int, str, str, str], BackgroundRefresh] = {}
_SHARED_LOCK = threading.Lock()


def shared_index(profile: NetworkProfile, interval: float = 30.0) -> OfferIndex:
    """The process's index of ``profile``, kept fresh in the background (a Jupyter server
    launching many kernels reads the chain once, then only new blocks)."""
    key = (
        profile.name,
        profile.chain_id,
        str(profile.registry),
        profile.rpc_url,
        str(cache_path(profile)),
    )
    with _SHARED_LOCK:
        bg = _SHARED.get(key)
        if bg is None:
            bg = _SHARED[key] = BackgroundRefresh(OfferIndex(profile), interval).start()
    return bg.index()
