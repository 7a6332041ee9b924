"""What `gpumarket offers verify` found, kept for `gpumarket offers` and routing: one verdict per
(offer id, agent TLS fingerprint), under ``$GPUMARKET_HOME/market/<profile>-<chain>.challenges
.json``, bounded (MAX_ENTRIES, the oldest dropped first) and expiring (TTL_S).

A verdict is bound to the certificate it was measured through: an offer whose provider moved
its endpoint to another machine (another certificate) is not ``challenged`` any more. The file
is the renter's own, but it is read as untrusted bytes all the same (size, shape, values).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.verification import ChallengeVerdict
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["MAX_ENTRIES", "TTL_S", "ChallengeCache", "cache_path"]

log = logging.getLogger(__name__)

MAX_ENTRIES = 2_000
TTL_S = 7 * 24 * 3600.0  # a week: hardware moves, drivers change
MAX_CACHE_BYTES = 4 * 1024 * 1024
_VERDICTS = ("match", "mismatch", "cpu")


def cache_path(profile: NetworkProfile) -> Path:
    return gpumarket_home() / "market" / f"{profile.name}-{profile.chain_id}.challenges.json"


def _key(offer_id: int, fingerprint: str) -> str:
    return f"{int(offer_id)}|{fingerprint.strip().lower()}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if 0 <= f < 1e11 else None


class ChallengeCache:
    """Verdicts of `offers verify`, by (offer id, fingerprint)."""

    def __init__(self, path: Path, *, ttl_s: float = TTL_S, clock: Any = time.time) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def for_profile(cls, profile: NetworkProfile) -> ChallengeCache:
        return cls(cache_path(profile))

    def _read(self) -> dict[str, dict[str, Any]]:
        data = statefile.read_cache(self.path, MAX_CACHE_BYTES, "challenge cache", log)
        if data is None:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            return {}
        now = self._clock()
        out = {}
        for key, entry in list(data["entries"].items())[: 2 * MAX_ENTRIES]:
            if (
                isinstance(key, str)
                and isinstance(entry, dict)
                and entry.get("verdict") in _VERDICTS
                and isinstance(entry.get("reason"), str)
                and (at := _number(entry.get("at"))) is not None
                and now - self.ttl_s < at <= now + 60
            ):
                out[key] = entry
        return out

    def record(self, offer_id: int, fingerprint: str, result: dict[str, Any]) -> None:
        """Keep one `offers verify --json` result (its verdict and figures)."""
        entry = {
            "verdict": result["verdict"],
            "reason": str(result.get("reason", ""))[:300],
            "lowp_tflops": _number(result.get("lowp_tflops")),
            "fp32_of_peak": _number(result.get("fp32_of_peak")),
            "lowp_of_peak": _number(result.get("lowp_of_peak")),
            "at": self._clock(),
        }
        with self._lock:
            entries = self._read()
            entries.pop(_key(offer_id, fingerprint), None)
            entries[_key(offer_id, fingerprint)] = entry
            newest = sorted(entries.items(), key=lambda kv: kv[1]["at"])[-MAX_ENTRIES:]
            self._write(dict(newest))

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        from jupyter_gpumarket.safefs import write_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            data = json.dumps({"version": 1, "entries": entries}).encode()
            write_atomic(fd, self.path.name, [data], mode=0o600)
        finally:
            os.close(fd)

    def verdicts(self) -> dict[str, tuple[ChallengeVerdict, float | None]]:
        """(verdict, measured tensor-core TFLOPS per GPU) by ``"<offer id>|<fingerprint>"``
        (:meth:`lookup` reads one); expired and malformed entries are left out."""
        out = {}
        try:
            entries = self._read()
        except GpuMarketError:
            return {}
        for key, e in entries.items():
            verdict = ChallengeVerdict(
                e["verdict"], e["reason"], _number(e.get("fp32_of_peak")),
                _number(e.get("lowp_of_peak")),
            )  # fmt: skip
            out[key] = (verdict, _number(e.get("lowp_tflops")))
        return out

    @staticmethod
    def lookup(
        verdicts: dict[str, tuple[ChallengeVerdict, float | None]],
        offer_id: int,
        fingerprint: str,
    ) -> tuple[ChallengeVerdict, float | None] | None:
        return verdicts.get(_key(offer_id, fingerprint))
