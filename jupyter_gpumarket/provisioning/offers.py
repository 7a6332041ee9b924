"""Offers in the on-chain Registry, and picking one from an id or a filter (GPUMARKET_OFFER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def parse_offer_spec(spec: str) -> int | dict[str, str]:
    """``"7"`` -> 7; ``"gpu=H100,max_price=2500000"`` -> {"gpu": "H100", "max_price": ...}."""
    spec = spec.strip()
    if spec.isdigit():
        return int(spec)
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("gpu", "max_price", "region", "provider"):
            raise ConfigError(
                f"offer filter {part!r} is not understood: use an offer id, or keys gpu=, "
                "max_price=, region=, provider= separated by commas"
            )
        out[key] = value
    return out


PAGE = 50  # Registry.MAX_PAGE: offers per offersPage call


def _pages(registry: Any) -> Any:
    """(offer id, raw offer) of every registered offer, PAGE per call (Registry.offersPage)."""
    count = int(registry.functions.offer_count().call())
    for start in range(1, count + 1, PAGE):
        for i, raw in enumerate(registry.functions.offersPage(start, PAGE).call()):
            yield start + i, raw


def _offers(registry: Any) -> list[OfferChoice]:
    out = []
    for offer_id, raw in _pages(registry):
        if not raw[10]:
            continue
        out.append(
            OfferChoice(
                offer_id=offer_id,
                provider=raw[0],
                endpoint=raw[1],
                tls_fingerprint="sha256:" + bytes(raw[2]).hex(),
                gpu_model=raw[3],
                price_per_hour=int(raw[6]),
                region=raw[8],
                metadata=raw[9],
                token=raw[7],
            )
        )
    return out


def pick_offer(registry: Any, spec: str) -> OfferChoice:
    """The offer with that id, or the cheapest active offer matching the filter."""
    want = parse_offer_spec(spec)
    offers = _offers(registry)
    if isinstance(want, int):
        for offer in offers:
            if offer.offer_id == want:
                return offer
        raise ConfigError(f"offer {want} is not an active offer in the registry")
    matching = [
        o
        for o in offers
        if want.get("gpu", "").lower() in o.gpu_model.lower()
        and o.price_per_hour <= int(want.get("max_price", str(2**255)))
        and want.get("region", o.region) == o.region
        and want.get("provider", o.provider).lower() == o.provider.lower()
    ]
    if not matching:
        raise ConfigError(f"no active offer matches {spec!r}: widen the filter")
    return min(matching, key=lambda o: (o.price_per_hour, o.offer_id))
