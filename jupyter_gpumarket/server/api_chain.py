"""The chain side of the server API, run off the server's loop (each function is synchronous
and called through ``asyncio.to_thread``): the ranked offers (cached briefly, one refresh at a
time per query), whether an offer id is active, wallet balances, and a lease's stop."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.exceptions import ConfigError

if TYPE_CHECKING:
    from jupyter_gpumarket.chain.profiles import NetworkProfile
    from jupyter_gpumarket.core.market_offer import OfferQuery

__all__ = ["OffersCache", "balances", "check_offer", "profile_for"]

CACHE_SECONDS = 10.0
PROBE_TIMEOUT = 3.0


def profile_for(name: str | None) -> NetworkProfile:
    """The profile ``name`` (a profile name), else the config's network, else the active one."""
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.provisioning.selection_store import load_config

    name = name or load_config().get("network") or None
    return load_profile(name) if name else active_profile()


def token_units(profile: NetworkProfile) -> dict[str, Any]:
    return {"symbol": profile.token_symbol, "decimals": profile.token_decimals}


def _ranked(network: str | None, query: OfferQuery) -> dict[str, Any]:
    from jupyter_gpumarket.market.routing import candidates

    profile = profile_for(network)
    ranked = candidates(profile, query, probe_timeout=PROBE_TIMEOUT)
    return {
        "offers": [r.to_json() for r in ranked],
        "network": profile.name,
        "token": token_units(profile),
    }


class OffersCache:
    """``GET offers`` answers, kept ``CACHE_SECONDS`` per (network, query); concurrent requests
    for the same key share one refresh."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[float, dict[str, Any]]] = {}
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def get(self, network: str | None, query: OfferQuery) -> dict[str, Any]:
        key = f"{network!r}|{query!r}"
        hit = self._done.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(asyncio.to_thread(_ranked, network, query))
            self._running[key] = running
            try:
                result = await asyncio.shield(running)
            finally:
                self._running.pop(key, None)
            if len(self._done) > 64:
                self._done.clear()
            self._done[key] = (time.monotonic(), result)
            return result
        return await asyncio.shield(running)


def check_offer(selection: dict[str, Any]) -> None:
    """The selection's network loads and an offer given by id is active in its registry."""
    from jupyter_gpumarket.core.offer_filter import parse_offer_filter
    from jupyter_gpumarket.market.refresh import shared_index

    profile = profile_for(selection.get("network"))
    want = parse_offer_filter(selection["offer"])
    if isinstance(want, int):
        index = shared_index(profile)
        index.refresh()
        offer = index.get(want)
        if offer is None or not offer.active:
            raise ConfigError(
                f"offer {want} is not an active offer on {profile.name}: GET offers (or "
                "`gpumarket offers`) lists the active ones"
            )


def balances(profile: NetworkProfile, address: str) -> dict[str, int]:
    """The address's token and native (gas) balances, base units."""
    from jupyter_gpumarket.chain.client import call, connect, contract_at
    from jupyter_gpumarket.chain.errors import rpc_errors

    w3 = connect(profile.rpc_url)
    with rpc_errors("eth_getBalance", profile.rpc_url):
        native = int(w3.eth.get_balance(address))  # type: ignore[arg-type]
    token = int(call(contract_at(w3, "TestUSD", profile.token).functions.balanceOf(address)))
    return {"token": token, "native": native}
