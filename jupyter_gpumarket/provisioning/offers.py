"""Offers in the on-chain Registry, and picking one from an id or a filter (GPUMARKET_OFFER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core.market_offer import MarketOffer, OfferQuery
from jupyter_gpumarket.core.offer_filter import parse_offer_filter
from jupyter_gpumarket.core.ranking import rank, usable
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["OfferChoice", "parse_offer_spec", "pick_offer"]


@dataclass(frozen=True)
class OfferChoice:
    offer_id: int
    provider: str
    endpoint: str
    tls_fingerprint: str
    gpu_model: str
    price_per_hour: int
    region: str
    metadata: str = ""
    token: str = ""

    @property
    def unsandboxed(self) -> bool:
        """The provider runs renters' kernels without its sandbox (it said so when publishing)."""
        return "isolation=sandboxed" not in self.metadata

    @property
    def unsandboxed_warning(self) -> str:
        """What the renter is told, in the log and in the notebook, about an unsandboxed offer."""
        return (
            f"[gpumarket] offer {self.offer_id} is UNSANDBOXED: the provider runs kernels "
            "without isolation from its other renters; do not put secrets in this kernel"
        )

    @classmethod
    def from_market(cls, offer: MarketOffer) -> OfferChoice:
        from eth_utils import to_checksum_address

        t = offer.terms
        return cls(
            offer_id=offer.offer_id,
            provider=to_checksum_address(offer.provider),
            endpoint=t.endpoint,
            tls_fingerprint=t.tls_fingerprint,
            gpu_model=t.gpu_model,
            price_per_hour=t.price_per_hour,
            region=t.region,
            metadata=t.metadata_uri,
            token=t.token,
        )


def parse_offer_spec(spec: str) -> int | OfferQuery:
    """``"7"`` -> 7; ``"policy=value,gpu=H100,min_vram=40000,verified=1"`` (or the older
    ``"gpu=H100,max_price=2500000,region=eu,provider=0x.."``) -> an :class:`OfferQuery`
    (grammar: :mod:`jupyter_gpumarket.core.offer_filter`)."""
    return parse_offer_filter(spec)


PAGE = 50  # Registry.MAX_PAGE: offers per offersPage call


def _pages(registry: Any) -> Any:
    """(offer id, raw offer) of every registered offer, PAGE per call (Registry.offersPage)."""
    count = int(registry.functions.offer_count().call())
    for start in range(1, count + 1, PAGE):
        for i, raw in enumerate(registry.functions.offersPage(start, PAGE).call()):
            yield start + i, raw


def _offers(registry: Any) -> list[MarketOffer]:
    out = []
    for offer_id, raw in _pages(registry):
        offer = MarketOffer.from_registry(offer_id, raw)
        if offer is not None and offer.active:
            out.append(offer)
    return out


def pick_offer(registry: Any, spec: str) -> OfferChoice:
    """The offer with that id, or the best active offer matching the filter by its published
    terms alone (no probes; the provisioner ranks live candidates with market.routing)."""
    want = parse_offer_spec(spec)
    offers = _offers(registry)
    if isinstance(want, int):
        for offer in offers:
            if offer.offer_id == want:
                return OfferChoice.from_market(offer)
        raise ConfigError(
            f"offer {want} is not an active offer in the registry: `gpumarket offers` lists them"
        )
    ranked = usable(rank(offers, {}, want.constraints, want.policy, require_probe=False))
    if not ranked:
        raise ConfigError(
            f"no active offer matches {spec!r}: widen the filter (`gpumarket offers` lists them)"
        )
    return OfferChoice.from_market(ranked[0].offer)
