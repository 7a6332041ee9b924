"""Provider-side course rules for pool-paid leases: a revoked or expired grant, a time window,
the course's published offer terms (GPU class, price ceiling, providers), and a course-private
provider's pool. Reads the chain (blocking: call from a worker thread); the window is parsed and
checked by core.course_window.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jupyter_gpumarket.core.course import Terms
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["CourseGuard", "offer_refusal"]

log = logging.getLogger(__name__)

TERMS_TTL = 60.0  # seconds a pool's published terms are reused before they are read again


def offer_refusal(terms: Terms, *, provider: str, price_per_hour: int, gpu_model: str) -> str:
    """Why this offer is outside the course's published terms ("" = inside): the same rules
    the student's side applies when it lists the offers a course allows."""
    if terms.providers and provider.lower() not in {p.lower() for p in terms.providers}:
        return f"this provider ({provider}) is not one of the course's providers"
    if terms.max_price and price_per_hour > terms.max_price:
        return (
            f"this offer's price ({price_per_hour} base units per hour) is above the course's "
            f"ceiling of {terms.max_price}"
        )
    if terms.gpu and terms.gpu.lower() not in gpu_model.lower():
        return f"this offer's GPU ({gpu_model or 'none'}) is not the course's class {terms.gpu}"
    return ""


class CourseGuard:
    """``refusal(channel_info)``: why this provider will not (or no longer) serve a lease."""

    def __init__(
        self,
        chain: Any,
        course_pool: bytes | None = None,
        *,
        provider: str = "",
        price_per_hour: int = 0,
        gpu_model: str = "",
    ) -> None:
        self.chain = chain  # a LeaseChain
        self.course_pool = course_pool
        self.provider, self.price_per_hour, self.gpu_model = provider, price_per_hour, gpu_model
        self._terms: dict[bytes, tuple[float, Terms]] = {}  # pool -> (read at, its terms)
        self._expiry: dict[bytes, int] = {}  # channel -> its grant's expiry (never changes)

    def _pool_terms(self, pool_id: bytes) -> Terms:
        from jupyter_gpumarket.chain.course import pool_terms

        cached = self._terms.get(pool_id)
        if cached is not None and time.monotonic() - cached[0] < TERMS_TTL:
            return cached[1]
        terms = pool_terms(self.chain.c, pool_id)
        self._terms[pool_id] = (time.monotonic(), terms)
        return terms

    def _grant_expiry(self, channel_id: bytes) -> int:
        from jupyter_gpumarket.chain.claims import channel_grant_expiry

        if channel_id not in self._expiry:
            self._expiry[channel_id] = channel_grant_expiry(self.chain, channel_id)
        return self._expiry[channel_id]

    def _terms_refusal(self, terms: Terms, now: int) -> str:
        from jupyter_gpumarket.core.course_window import parse_window

        if self.provider:
            outside = offer_refusal(
                terms,
                provider=self.provider,
                price_per_hour=self.price_per_hour,
                gpu_model=self.gpu_model,
            )
            if outside:
                return f"{outside}: the course does not pay for this offer; pick one it allows"
        return parse_window(terms.window).refusal(now) or ""

    def refusal(self, info: Any, *, now: int | None = None) -> str:
        """ "" when the lease may run. A private provider refuses every other payer; a pool
        lease stops when its grant is revoked or expired, outside the course's window, or when
        this offer is outside the course's terms. An RPC error refuses nothing (checked again
        at the next interval)."""
        from jupyter_gpumarket.chain.claims import channel_revoked

        pool = info.pool_id
        if self.course_pool is not None and pool != self.course_pool:
            return f"this provider serves only course pool 0x{self.course_pool.hex()}"
        if pool is None:
            return ""
        at = int(time.time()) if now is None else now
        try:
            if channel_revoked(self.chain, info.channel_id):
                return "the course admin revoked this student's credit"
            outside = self._terms_refusal(self._pool_terms(pool), at)
            if outside:
                return outside
            expiry = self._grant_expiry(info.channel_id)
        except GpuMarketError as exc:
            log.warning("cannot check the course of channel 0x%s: %s", info.channel_id.hex(), exc)
            return ""
        if at > expiry:
            day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expiry))
            return (
                f"the course credit expired ({day}): the kernel is stopped; ask your "
                "course's educator for a new code"
            )
        return ""

    def relay_refusal(self, grant: str) -> str | None:
        """Why not to relay an opening paid by ``grant`` ("" = the renter's wallet): another
        payer than a private provider's pool, this offer outside the course's terms, or outside
        the pool's window (a deposit opened now would only wait locked until the provider
        settles it unused)."""
        from jupyter_gpumarket.chain.claims import decode_grant

        try:
            pool = bytes.fromhex(decode_grant(grant).pool_id[2:]) if grant else None
        except GpuMarketError as exc:
            return f"unreadable grant: {exc}"
        if self.course_pool is not None and pool != self.course_pool:
            return f"this provider serves only course pool 0x{self.course_pool.hex()}"
        if pool is None:
            return None
        try:
            return self._terms_refusal(self._pool_terms(pool), int(time.time())) or None
        except GpuMarketError as exc:
            return f"cannot read the course's terms: {exc}"
