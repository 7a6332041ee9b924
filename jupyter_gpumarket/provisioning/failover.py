"""Which offers a paid kernel may launch on, in order, and which launch failures move on to the
next one (launch failover).

The candidates come from :func:`jupyter_gpumarket.market.routing.candidates`: the offers inside
the renter's constraints whose agents answered a live probe, ranked by the renter's policy. The
provisioner tries the first; when that provider refuses or fails before the kernel is ready, it
tries the next, up to ``failover`` more (trait or GPUMARKET_FAILOVER, default 2). A failed
attempt costs nothing: billing starts only when a kernel is ready, so no voucher is signed for
it, and the lease of the failed attempt is recorded as a launch failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    GpuMarketError,
    WalletError,
)
from jupyter_gpumarket.provisioning.offers import OfferChoice

__all__ = [
    "DEFAULT_FAILOVER",
    "MAX_FAILOVER",
    "Attempt",
    "paid_candidates",
    "parse_failover",
    "retryable",
]

DEFAULT_FAILOVER = 2
MAX_FAILOVER = 10


@dataclass(frozen=True)
class Attempt:
    """One launch attempt: which offer, and how it ended (``ok`` or the failure)."""

    number: int
    offer_id: int
    endpoint: str
    outcome: str


def parse_failover(text: str) -> int:
    """GPUMARKET_FAILOVER / the trait: how many more offers to try, 0 to MAX_FAILOVER."""
    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_FAILOVER:
        raise ConfigError(
            f"failover {text[:20]!r} must be a whole number of extra offers to try, "
            f"0 to {MAX_FAILOVER} (GPUMARKET_FAILOVER)"
        )
    return int(value)


def retryable(exc: BaseException) -> bool:
    """A failure of the provider (another offer may work), not of the renter's own setup."""
    if isinstance(exc, ConfigError | WalletError | ChainError):
        return False
    return isinstance(exc, GpuMarketError | OSError | TimeoutError)


def paid_candidates(network: str, spec: str, probe_timeout: float = 3.0) -> list[OfferChoice]:
    """The usable offers for ``spec`` on ``network`` (a profile name or path, empty: the
    active one), best first (blocking: chain reads and probes)."""
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.market.routing import choose

    profile = load_profile(network) if network else active_profile()
    profile.require_contracts()
    return [OfferChoice.from_market(o) for o in choose(profile, spec, probe_timeout=probe_timeout)]
