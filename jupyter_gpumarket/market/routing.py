"""Choosing offers for a kernel: the index's offers inside the renter's constraints, probed
live, ranked by the renter's policy (:func:`jupyter_gpumarket.core.ranking.rank`).

:func:`candidates` returns the whole ranking (usable offers first, best first; then the
unusable ones with their reason). The provisioner tries the usable ones in order, the first
and then up to ``failover`` more when a launch fails. No offer is usable before its agent
answered a probe, so no channel is ever opened to an agent that is down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from jupyter_gpumarket.chain.profiles import NetworkProfile
from jupyter_gpumarket.core.market_offer import Constraints, MarketOffer, OfferQuery, Policy
from jupyter_gpumarket.core.offer_filter import parse_offer_filter
from jupyter_gpumarket.core.ranking import Ranked, rank, usable
from jupyter_gpumarket.exceptions import ConfigError, ProviderUnreachable
from jupyter_gpumarket.market.evidence import gather
from jupyter_gpumarket.market.index import OfferIndex
from jupyter_gpumarket.market.probing import DEFAULT_TIMEOUT, probe_offers
from jupyter_gpumarket.market.refresh import shared_index

__all__ = ["MAX_PROBED", "candidates", "choose", "describe_none", "run_coroutine"]

MAX_PROBED = 256  # offers probed for one choice: the best ones by their published terms

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from synchronous code, also from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _query(spec: str | int | OfferQuery) -> int | OfferQuery:
    if isinstance(spec, OfferQuery | int):
        return spec
    return parse_offer_filter(spec)


def candidates(
    profile: NetworkProfile,
    spec: str | int | OfferQuery,
    *,
    index: OfferIndex | None = None,
    probe_timeout: float = DEFAULT_TIMEOUT,
    refresh: bool = True,
) -> list[Ranked]:
    """The ranking for ``spec`` (a GPUMARKET_OFFER string, an offer id or a query) on
    ``profile``'s Registry, after a refresh of the index and live probes."""
    want = _query(spec)
    index = index or shared_index(profile)
    if refresh:
        index.refresh()
    if isinstance(want, int):
        offer = index.get(want)
        if offer is None or not offer.active:
            raise ConfigError(
                f"offer {want} is not an active offer in the registry of {profile.name}: "
                f"`gpumarket offers --network {profile.name}` lists the active ones"
            )
        pool, query = [offer], OfferQuery(Policy.CHEAPEST, Constraints())
    else:
        query = want
        # drop what the constraints exclude, and probe the best by their published terms only
        pre = rank(index.offers(), {}, query.constraints, query.policy, require_probe=False)
        pool = [r.offer for r in pre][:MAX_PROBED]
    probes = run_coroutine(probe_offers(pool, timeout=probe_timeout))
    ev = gather(profile, pool, probes)  # challenges kept, attestations on chain
    return rank(
        pool,
        probes,
        query.constraints,
        query.policy,
        assessments=ev.assessments,
        reputations=ev.reputations,
        measured=ev.measured,
    )


def describe_none(ranked: list[Ranked], spec: str | int | OfferQuery) -> str:
    """Why nothing is usable, for an error message."""
    if not ranked:
        return (
            f"no active offer matches {spec!r}: widen the filter "
            "(`gpumarket offers` lists the offers with their reasons)"
        )
    why = "; ".join(f"offer {r.offer.offer_id}: {r.reason}" for r in ranked[:5])
    more = f" (and {len(ranked) - 5} more)" if len(ranked) > 5 else ""
    return (
        f"no offer matching {spec!r} can take a kernel now: {why}{more}; nothing was paid. "
        "`gpumarket offers` shows every offer with its reason"
    )


def choose(
    profile: NetworkProfile, spec: str | int | OfferQuery, **kwargs: Any
) -> list[MarketOffer]:
    """The usable offers for ``spec``, best first; ProviderUnreachable when there is none."""
    ranked = candidates(profile, spec, **kwargs)
    best = usable(ranked)
    if not best:
        raise ProviderUnreachable(describe_none(ranked, spec))
    return [r.offer for r in best]
