"""What the market knows of an offer: its Registry terms, what a live probe found, and the
constraints and policy a renter ranks offers by. Plain frozen dataclasses, checked where made.

An offer is the Registry's :class:`~jupyter_gpumarket.core.offer_terms.PublishedTerms` plus its
id, provider and ``active`` flag; what the market derives from it (GPU class, ``simulated`` and
``sandboxed`` from the metadata, the hardware :class:`~jupyter_gpumarket.core.verification.Claim`)
is computed once, when the offer is made.

The probe (the agent's unauthenticated ``probe`` exchange, run by the market's I/O) answers
:data:`PROBE_REPLY_FIELDS`; :meth:`ProbeResult.from_reply` turns that hostile JSON object into a
result (bounded, typed), the I/O adds the round trip it measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from jupyter_gpumarket.core.gpu_catalog import MAX_NAME_CHARS, GpuClass
from jupyter_gpumarket.core.gpu_slices import SliceTerms
from jupyter_gpumarket.core.offer_meta import parse_offer_metadata
from jupyter_gpumarket.core.offer_terms import OfferOnChain, PublishedTerms
from jupyter_gpumarket.core.verification import Claim, Detected, Level
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

__all__ = [
    "PROBE_REPLY_FIELDS",
    "Constraints",
    "MarketOffer",
    "OfferQuery",
    "Policy",
    "ProbeResult",
]

PROBE_REPLY_FIELDS = ("free_kernels", "free_gpus", "sandboxed", "inventory")
MAX_PROBE_REASON = 200


@dataclass(frozen=True)
class MarketOffer:
    """One active (or inactive) Registry offer as the market sees it."""

    offer_id: int
    provider: str
    terms: PublishedTerms
    active: bool = True
    gpu_class: GpuClass | None = field(init=False, compare=False)
    simulated: bool = field(init=False, compare=False)
    sandboxed: bool = field(init=False, compare=False)
    claim: Claim = field(init=False, compare=False)
    slice: SliceTerms | None = field(init=False, compare=False)  # a shared GPU's slice

    def __post_init__(self) -> None:
        oid = self.offer_id
        if isinstance(oid, bool) or not isinstance(oid, int) or oid < 1:
            raise ConfigError(f"offer_id must be an integer >= 1, not {oid!r}")
        if not isinstance(self.terms, PublishedTerms):
            raise ConfigError("MarketOffer.terms must be PublishedTerms")
        if not isinstance(self.provider, str):
            raise ConfigError(f"offer provider must be an address, not {self.provider!r}")
        object.__setattr__(self, "provider", self.provider.lower())
        meta = parse_offer_metadata(self.terms.metadata_uri)
        simulated = meta.get("simulated", "") in ("1", "true")
        claim = Claim(self.terms.gpu_model, self.terms.gpu_count, self.terms.vram_mb, simulated)
        object.__setattr__(self, "claim", claim)
        object.__setattr__(self, "gpu_class", claim.gpu_class)
        object.__setattr__(self, "simulated", simulated)
        object.__setattr__(self, "sandboxed", meta.get("isolation") == "sandboxed")
        object.__setattr__(self, "slice", SliceTerms.from_meta(meta) if claim.gpu_count else None)

    @classmethod
    def from_registry(cls, offer_id: int, raw: tuple[Any, ...] | list[Any]) -> MarketOffer | None:
        """From ``Registry.offers(id)``'s 11-tuple; None for an id nobody registered."""
        on_chain = OfferOnChain.from_registry(raw)
        if on_chain.terms is None:
            return None
        return cls(offer_id, on_chain.provider, on_chain.terms, on_chain.active)

    @property
    def price_per_hour(self) -> int:
        return self.terms.price_per_hour

    @property
    def vram_mib(self) -> int:
        """The VRAM a kernel gets: its slice's on a shared GPU (never more than the GPU's)."""
        if self.slice is not None:
            return min(self.slice.vram_mib, self.terms.vram_mb)
        return self.terms.vram_mb

    @property
    def cpu_only(self) -> bool:
        return self.claim.cpu_only


def _opt_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ProtocolError(f"probe {name} must be an integer >= 0, not {value!r}")
    return value


@dataclass(frozen=True)
class ProbeResult:
    """One live probe of an offer's agent. ``reachable`` False carries the ``reason``."""

    offer_id: int
    reachable: bool
    latency_ms: float | None = None
    free_kernels: int | None = None  # None: the agent did not say
    free_gpus: int | None = None
    detected: Detected | None = None
    sandboxed: bool | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.offer_id, bool) or not isinstance(self.offer_id, int):
            raise ConfigError(f"probe offer_id must be an integer, not {self.offer_id!r}")
        if not isinstance(self.reachable, bool):
            raise ConfigError(f"probe reachable must be a bool, not {self.reachable!r}")
        lat = self.latency_ms
        if lat is not None and (
            isinstance(lat, bool) or not isinstance(lat, int | float) or not 0 <= lat < math.inf
        ):
            raise ConfigError(f"probe latency_ms must be a finite number >= 0, not {lat!r}")
        _opt_count("free_kernels", self.free_kernels)
        _opt_count("free_gpus", self.free_gpus)
        if not isinstance(self.reason, str):
            raise ConfigError("probe reason must be a string")
        object.__setattr__(self, "reason", self.reason[:MAX_PROBE_REASON])
        if not self.reachable and not self.reason:
            raise ConfigError("an unreachable probe result needs a reason")

    @classmethod
    def unreachable(cls, offer_id: int, reason: str) -> ProbeResult:
        return cls(offer_id, False, reason=reason or "unreachable")

    @classmethod
    def from_reply(cls, offer_id: int, reply: Any, latency_ms: float) -> ProbeResult:
        """From the agent's probe reply (an already size-limited, decoded JSON object)
        ``{"free_kernels": int, "free_gpus": int, "sandboxed": bool, "inventory": {"gpus": []}}``.
        Unknown keys are ignored; a malformed reply raises ProtocolError (report the offer as
        unreachable with that message)."""
        if not isinstance(reply, dict):
            raise ProtocolError(f"probe reply must be an object, not {type(reply).__name__}")
        sandboxed = reply.get("sandboxed")
        if sandboxed is not None and not isinstance(sandboxed, bool):
            raise ProtocolError(f"probe sandboxed must be a bool, not {sandboxed!r}")
        inventory = reply.get("inventory")
        return cls(
            offer_id,
            True,
            latency_ms=latency_ms,
            free_kernels=_opt_count("free_kernels", reply.get("free_kernels")),
            free_gpus=_opt_count("free_gpus", reply.get("free_gpus")),
            detected=None if inventory is None else Detected.from_json(inventory),
            sandboxed=sandboxed,
        )

    def full_for(self, offer: MarketOffer) -> bool:
        """No free kernel slot, or fewer free GPUs than the offer rents out."""
        if self.free_kernels == 0:
            return True
        need = 0 if offer.cpu_only else offer.terms.gpu_count
        return self.free_gpus is not None and self.free_gpus < need


class Policy(Enum):
    CHEAPEST = "cheapest"  # lowest price; then level, latency, reputation
    FASTEST = "fastest"  # most effective TFLOPS; then latency, price
    VALUE = "value"  # effective TFLOPS per price, scaled by reputation

    @classmethod
    def parse(cls, text: str) -> Policy:
        for p in cls:
            if p.value == text.strip().lower():
                return p
        raise ConfigError(f"unknown policy {text!r}: use cheapest, fastest or value")


@dataclass(frozen=True)
class Constraints:
    """Hard limits: an offer outside them is never chosen. ``gpu`` is a family (``H100``) or a
    class (``H100 PCIe``) or ``cpu``; ``min_level`` DETECTED is what ``verified=1`` means."""

    gpu: str | None = None
    min_vram_mib: int = 0
    max_price: int | None = None  # base units per hour
    region: str | None = None
    min_level: Level = Level.SELF_REPORTED
    provider: str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.min_vram_mib, bool)
            or not isinstance(self.min_vram_mib, int)
            or self.min_vram_mib < 0
        ):
            raise ConfigError(f"min_vram must be an integer MiB >= 0, not {self.min_vram_mib!r}")
        mp = self.max_price
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < 0):
            raise ConfigError(f"max_price must be an integer (base units) >= 0, not {mp!r}")
        if not isinstance(self.min_level, Level) or self.min_level is Level.MISMATCH:
            raise ConfigError(
                f"min_level must be a ladder level above mismatch, not {self.min_level!r}"
            )
        for name in ("gpu", "region", "provider"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS
            ):
                raise ConfigError(
                    f"{name} must be text of 1 to {MAX_NAME_CHARS} characters, not {value!r}"
                )
        if self.provider is not None:
            object.__setattr__(self, "provider", self.provider.lower())


@dataclass(frozen=True)
class OfferQuery:
    """A parsed ``GPUMARKET_OFFER`` filter: how to rank, and within which limits."""

    policy: Policy = Policy.CHEAPEST
    constraints: Constraints = field(default_factory=Constraints)
