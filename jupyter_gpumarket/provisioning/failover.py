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

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    GpuMarketError,
    LaunchCancelled,
    WalletError,
)
from jupyter_gpumarket.provisioning import launch_flow
from jupyter_gpumarket.provisioning.offers import OfferChoice

if TYPE_CHECKING:
    from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

__all__ = [
    "DEFAULT_FAILOVER",
    "MAX_FAILOVER",
    "Attempt",
    "launch_paid_with_failover",
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
    if isinstance(exc, ConfigError | WalletError | ChainError | LaunchCancelled):
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


async def launch_paid_with_failover(prov: GpuMarketProvisioner, env: dict[str, str]) -> None:
    """Rank the live candidates, then launch on the best; when its provider refuses or
    fails before the kernel is ready, the next one (``failover`` more at most). A failed
    attempt is never billed (billing starts at ready) and is recorded as such."""
    prov._paid_settings()  # a missing password fails before the chain is read
    extra = parse_failover(prov._setting("GPUMARKET_FAILOVER", str(prov.failover)))
    prov._progress("finding offer (index, live probes, ranking)")
    offers = await asyncio.to_thread(
        paid_candidates,
        prov._setting("GPUMARKET_NETWORK", prov.network),
        prov._setting("GPUMARKET_OFFER", prov.offer),
    )
    offers = offers[: extra + 1]
    prov.launch_attempts = []
    for n, offer in enumerate(offers, 1):
        prov._progress(
            f"launch attempt {n}/{len(offers)}: offer {offer.offer_id} at {offer.endpoint}"
        )
        try:
            await launch_flow.confirm_paid(prov, offer)
            await prov._open_paid(offer)
            await prov._start_remote(env, prov._kernel_args)
        except BaseException as exc:
            paid_run, prov._paid = prov._paid, None
            await prov._teardown(end_lease=True)
            if paid_run is not None and not paid_run.ever_ready:
                with contextlib.suppress(GpuMarketError):
                    await asyncio.to_thread(paid_run.lease.record_launch_failure, str(exc))
            reason = str(exc)[:300] or type(exc).__name__
            prov.launch_attempts.append(
                Attempt(n, offer.offer_id, offer.endpoint, f"failed: {reason}")
            )
            if n == len(offers) or not retryable(exc):
                raise
            prov.log.warning(
                "gpumarket %s: offer %s failed during launch (%s); trying the next "
                "candidate, nothing was billed",
                prov.kernel_id,
                offer.offer_id,
                reason,
            )
            continue
        prov.launch_attempts.append(Attempt(n, offer.offer_id, offer.endpoint, "ok"))
        return
