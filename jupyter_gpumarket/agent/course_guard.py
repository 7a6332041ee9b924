"""Provider-side course rules for pool-paid leases: a revoked grant, a time window, and a
course-private provider's pool. Reads the chain (blocking: call from a worker thread); the
window is parsed and checked by core.course_window.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["CourseGuard"]

log = logging.getLogger(__name__)

TERMS_TTL = 60.0  # seconds a pool's published terms are reused before they are read again


class CourseGuard:
    """``refusal(channel_info)``: why this provider will not (or no longer) serve a lease."""

    def __init__(self, chain: Any, course_pool: bytes | None = None) -> None:
        self.chain = chain  # a LeaseChain
        self.course_pool = course_pool
        self._terms: dict[bytes, tuple[float, str]] = {}  # pool -> (read at, window text)

    def _window(self, pool_id: bytes) -> str:
        from jupyter_gpumarket.chain.course import pool_terms

        cached = self._terms.get(pool_id)
        if cached is not None and time.monotonic() - cached[0] < TERMS_TTL:
            return cached[1]
        window = pool_terms(self.chain.c, pool_id).window
        self._terms[pool_id] = (time.monotonic(), window)
        return window

    def refusal(self, info: Any, *, now: int | None = None) -> str:
        """ "" when the lease may run. A private provider refuses every other payer; a pool
        lease stops when its grant is revoked or outside the course's window. An RPC error
        refuses nothing (checked again at the next interval)."""
        from jupyter_gpumarket.chain.claims import channel_revoked
        from jupyter_gpumarket.core.course_window import parse_window

        pool = info.pool_id
        if self.course_pool is not None and pool != self.course_pool:
            return f"this provider serves only course pool 0x{self.course_pool.hex()}"
        if pool is None:
            return ""
        try:
            if channel_revoked(self.chain, info.channel_id):
                return "the course admin revoked this student's credit"
            window = parse_window(self._window(pool))
            reason = window.refusal(int(time.time()) if now is None else now)
        except GpuMarketError as exc:
            log.warning("cannot check the course of channel 0x%s: %s", info.channel_id.hex(), exc)
            return ""
        return reason or ""

    def relay_refusal(self, grant: str) -> str | None:
        """Why not to relay an opening paid by ``grant`` ("" = the renter's wallet): another
        payer than a private provider's pool, or outside the pool's window (a deposit opened
        now would only wait locked until the provider settles it unused)."""
        from jupyter_gpumarket.chain.claims import decode_grant
        from jupyter_gpumarket.core.course_window import parse_window

        try:
            pool = bytes.fromhex(decode_grant(grant).pool_id[2:]) if grant else None
        except GpuMarketError as exc:
            return f"unreadable grant: {exc}"
        if self.course_pool is not None and pool != self.course_pool:
            return f"this provider serves only course pool 0x{self.course_pool.hex()}"
        if pool is None:
            return None
        try:
            return parse_window(self._window(pool)).refusal(int(time.time()))
        except GpuMarketError as exc:
            return f"cannot read the course's terms: {exc}"
