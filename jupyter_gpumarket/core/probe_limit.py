"""Rate limits for the agent's unauthenticated ``probe`` exchange: token buckets per source and
one for the whole agent, with bounded memory. Pure: the caller passes the time.

.. code-block:: text

    allow(source, now):
        refill both buckets by (now - last) * rate, capped at burst
        global bucket empty          -> False  (a flood from many sources)
        this source's bucket empty   -> False  (one source probing too often)
        else take one token from each -> True

A source is whatever the shell keys on (the peer's IP address). At most ``max_sources`` are
remembered; when full, the one seen longest ago is forgotten (it comes back with a full bucket,
which the global bucket still bounds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["ProbeLimiter"]


@dataclass
class _Bucket:
    tokens: float
    last: float


class ProbeLimiter:
    def __init__(
        self,
        *,
        per_source_rate: float = 2.0,
        per_source_burst: int = 5,
        global_rate: float = 200.0,
        global_burst: int = 400,
        max_sources: int = 10_000,
    ) -> None:
        for name, value in (
            ("per_source_rate", per_source_rate),
            ("per_source_burst", per_source_burst),
            ("global_rate", global_rate),
            ("global_burst", global_burst),
            ("max_sources", max_sources),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"probe limit {name} must be a positive number, not {value!r}")
        self._rate, self._burst = float(per_source_rate), float(per_source_burst)
        self._grate, self._gburst = float(global_rate), float(global_burst)
        self._max = int(max_sources)
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._global: _Bucket | None = None

    @staticmethod
    def _refill(b: _Bucket, now: float, rate: float, burst: float) -> None:
        if now > b.last:
            b.tokens = min(burst, b.tokens + (now - b.last) * rate)
            b.last = now

    def allow(self, source: str, now: float) -> bool:
        """Whether to answer this probe (``now``: a monotonic clock, seconds)."""
        g = self._global
        if g is None:
            g = self._global = _Bucket(self._gburst, now)
        self._refill(g, now, self._grate, self._gburst)
        b = self._sources.get(source)
        if b is None:
            b = _Bucket(self._burst, now)
            self._sources[source] = b
            if len(self._sources) > self._max:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
            self._refill(b, now, self._rate, self._burst)
        if g.tokens < 1 or b.tokens < 1:
            return False
        g.tokens -= 1
        b.tokens -= 1
        return True

    @property
    def sources(self) -> int:
        """How many sources are remembered now (never more than ``max_sources``)."""
        return len(self._sources)
