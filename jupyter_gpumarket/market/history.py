"""An offer's track record as this renter saw it: the outcomes of its last probes (kept under
``$GPUMARKET_HOME/market/<profile>-<chain>.probes.json``, MAX_PROBES per offer, MAX_OFFERS
offers) and its launches (from the renter's lease ledger: a lease whose kernel started, or one
that failed before it did). Both feed core.reputation's ``History``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.market_offer import ProbeResult
from jupyter_gpumarket.core.reputation import History
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["MAX_PROBES", "ProbeHistory", "histories", "launch_history"]

log = logging.getLogger(__name__)

MAX_PROBES = 100  # outcomes kept per offer (the newest)
MAX_OFFERS = 10_000
MAX_FILE_BYTES = 8 * 1024 * 1024


class ProbeHistory:
    """Probe outcomes per offer id, newest last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def for_profile(cls, profile: NetworkProfile) -> ProbeHistory:
        return cls(gpumarket_home() / "market" / f"{profile.name}-{profile.chain_id}.probes.json")

    def _read(self) -> dict[str, str]:
        data = statefile.read_cache(self.path, MAX_FILE_BYTES, "probe history", log)
        if data is None:
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v[-MAX_PROBES:]
            for k, v in list(data.items())[:MAX_OFFERS]
            if k.isdigit() and isinstance(v, str) and set(v) <= {"0", "1"}
        }

    def record(self, probes: Iterable[ProbeResult]) -> dict[int, History]:
        """Add these outcomes; every offer's history after them."""
        from jupyter_gpumarket.safefs import write_atomic

        with self._lock:
            data = self._read()
            for p in probes:
                key = str(p.offer_id)
                data[key] = (data.pop(key, "") + ("1" if p.reachable else "0"))[-MAX_PROBES:]
            while len(data) > MAX_OFFERS:  # the least recently probed go first
                data.pop(next(iter(data)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                write_atomic(fd, self.path.name, [json.dumps(data).encode()], mode=0o600)
            finally:
                os.close(fd)
        return {int(k): History(v.count("1"), v.count("0")) for k, v in data.items()}


def launch_history(profile: NetworkProfile) -> dict[int, History]:
    """Per offer id: leases of this network whose kernel started (ok), and those that failed
    before it did (failed), from the renter's lease ledger."""
    from jupyter_gpumarket.chain.renter_ledger import NetworkKey, RenterLedger, ledger_path

    if profile.escrow is None or not ledger_path().exists():
        return {}
    counts: dict[int, list[int]] = {}
    for record in RenterLedger().list(NetworkKey(profile.chain_id, profile.escrow)):
        offer_id = getattr(record, "offer_id", None)
        if not isinstance(offer_id, int):
            continue
        ok = record.started_at is not None
        failed = not ok and bool(record.error)
        if ok or failed:
            c = counts.setdefault(offer_id, [0, 0])
            c[0 if ok else 1] += 1
    return {k: History(ok, failed) for k, (ok, failed) in counts.items()}


def histories(
    profile: NetworkProfile, probes: Mapping[int, ProbeResult]
) -> tuple[dict[int, History], dict[int, History]]:
    """(probe histories, launch histories) by offer id, recording ``probes`` first; empty
    where the renter's files cannot be read (logged)."""
    try:
        probed = ProbeHistory.for_profile(profile).record(probes.values())
    except (OSError, GpuMarketError) as exc:
        log.warning("probe history not kept: %s", exc)
        probed = {}
    try:
        launched = launch_history(profile)
    except (OSError, GpuMarketError, ValueError, sqlite3.Error) as exc:
        log.warning("launch history not read: %s", exc)
        launched = {}
    return probed, launched
