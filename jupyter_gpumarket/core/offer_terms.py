"""What a provider's Registry offer says, what it remembers of it, and what to do at start.

A provider agent remembers the id of the offer it published (``<state_dir>/offer.json``), so a
restart does not litter the Registry with a new offer each time. At start it compares the
terms it would publish now with the remembered offer as the chain has it:

.. code-block:: text

    remembered offer                      on chain                       -> action
    none, or unreadable                   -                              -> REGISTER
    for another chain, registry or wallet -                              -> REGISTER
    ours                                  gone or another provider's     -> REGISTER (chain reset)
    ours                                  other terms                    -> UPDATE   (one tx)
    ours                                  same terms, inactive           -> UPDATE   (reactivates)
    ours                                  same terms, active             -> KEEP     (no tx)

``Registry.update`` replaces every field of an offer its provider owns and sets ``active``
again, so a deactivated offer (the agent's normal stop deactivates it) is brought back with
one update, never replaced by a new one. Only the chain's copy is compared: the terms kept in
the file are a record for people, not a cache that could go stale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "OfferAction",
    "OfferHome",
    "OfferOnChain",
    "OfferPlan",
    "PublishedTerms",
    "RememberedOffer",
    "plan_offer",
]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_UINT32 = 2**32

# How a changed field is named in the log ("updated offer 3: price 1000 -> 2000").
LABELS = {
    "endpoint": "endpoint",
    "tls_fingerprint": "fingerprint",
    "gpu_model": "model",
    "gpu_count": "count",
    "vram_mb": "vram",
    "price_per_hour": "price",
    "token": "token",
    "region": "region",
    "metadata_uri": "metadata",
}


def _address(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"offer {name} is not a 0x address: {value!r}")
    return value.lower()  # compared case-insensitively; web3 checksums it when sending


@dataclass(frozen=True)
class PublishedTerms:
    """The fields of ``Registry.register`` / ``update``, in the contract's order."""

    endpoint: str
    tls_fingerprint: str  # "sha256:<64 hex>", the agent's certificate
    gpu_model: str
    gpu_count: int
    vram_mb: int
    price_per_hour: int  # token base units
    token: str
    region: str
    metadata_uri: str

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise ConfigError(f"offer endpoint must be a non-empty string, not {self.endpoint!r}")
        fp = self.tls_fingerprint.lower() if isinstance(self.tls_fingerprint, str) else None
        if fp is None or not _FINGERPRINT.fullmatch(fp):
            raise ConfigError(
                f"offer tls_fingerprint must be sha256:<64 hex>, not {self.tls_fingerprint!r}"
            )
        object.__setattr__(self, "tls_fingerprint", fp)
        for name in ("gpu_count", "vram_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT32:
                raise ConfigError(f"offer {name} must be a uint32, not {value!r}")
        price = self.price_per_hour
        if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
            raise ConfigError(
                f"offer price_per_hour must be a positive integer (base units), not {price!r}"
            )
        object.__setattr__(self, "token", _address("token", self.token))
        for name in ("gpu_model", "region", "metadata_uri"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"offer {name} must be a string, not {getattr(self, name)!r}")

    def changes(self, old: PublishedTerms) -> tuple[tuple[str, Any, Any], ...]:
        """``(label, old value, new value)`` of every field that differs from ``old``."""
        return tuple(
            (LABELS[f.name], getattr(old, f.name), getattr(self, f.name))
            for f in fields(self)
            if getattr(old, f.name) != getattr(self, f.name)
        )

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Any) -> PublishedTerms:
        if not isinstance(data, dict):
            raise ConfigError(f"offer terms must be an object, not {type(data).__name__}")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ConfigError(f"offer terms lack {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class OfferHome:
    """Where an offer lives and whose it is: one wallet on one Registry of one chain."""

    chain_id: int
    registry: str
    provider: str

    def __post_init__(self) -> None:
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int):
            raise ConfigError(f"offer chain_id must be an integer, not {self.chain_id!r}")
        object.__setattr__(self, "registry", _address("registry", self.registry))
        object.__setattr__(self, "provider", _address("provider", self.provider))


@dataclass(frozen=True)
class RememberedOffer:
    """The content of ``<state_dir>/offer.json``: the offer this agent published last."""

    offer_id: int
    home: OfferHome
    terms: PublishedTerms

    def __post_init__(self) -> None:
        oid = self.offer_id
        if isinstance(oid, bool) or not isinstance(oid, int) or oid < 1:
            raise ConfigError(f"offer_id must be an integer >= 1 (Registry ids), not {oid!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "chain_id": self.home.chain_id,
            "registry": self.home.registry,
            "provider": self.home.provider,
            "terms": self.terms.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> RememberedOffer:
        if not isinstance(data, dict):
            raise ConfigError(f"a remembered offer must be an object, not {type(data).__name__}")
        keys = ("offer_id", "chain_id", "registry", "provider", "terms")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ConfigError(f"the remembered offer lacks {', '.join(missing)}")
        home = OfferHome(data["chain_id"], data["registry"], data["provider"])
        return cls(data["offer_id"], home, PublishedTerms.from_json(data["terms"]))


@dataclass(frozen=True)
class OfferOnChain:
    """``Registry.offers(id)`` as read back; ``terms`` is None for an id nobody registered."""

    provider: str
    terms: PublishedTerms | None
    active: bool

    @classmethod
    def from_registry(cls, raw: tuple[Any, ...] | list[Any]) -> OfferOnChain:
        """From the 11-tuple the ``offers`` getter returns (fields in the struct's order)."""
        if len(raw) != 11:
            raise ConfigError(f"Registry.offers returned {len(raw)} fields, expected 11")
        provider = _address("provider", raw[0])
        if int(provider, 16) == 0:  # an unset slot: every field is zero
            return cls(provider, None, False)
        terms = PublishedTerms(
            endpoint=raw[1],
            tls_fingerprint="sha256:" + bytes(raw[2]).hex(),
            gpu_model=raw[3],
            gpu_count=int(raw[4]),
            vram_mb=int(raw[5]),
            price_per_hour=int(raw[6]),
            token=raw[7],
            region=raw[8],
            metadata_uri=raw[9],
        )
        return cls(provider, terms, bool(raw[10]))


class OfferAction(Enum):
    REGISTER = "register"
    UPDATE = "update"
    KEEP = "keep"


@dataclass(frozen=True)
class OfferPlan:
    """What to send at start: ``action`` on ``offer_id`` (None for REGISTER), and why."""

    action: OfferAction
    offer_id: int | None
    reason: str
    changes: tuple[tuple[str, Any, Any], ...] = ()
    reactivate: bool = False

    def __post_init__(self) -> None:
        if (self.action is OfferAction.REGISTER) != (self.offer_id is None):
            raise ConfigError(f"{self.action.value} plan with offer_id {self.offer_id!r}")

    def summary(self, offer_id: int) -> str:
        """The log line once the plan has been carried out (``offer_id``: the offer's id)."""
        if self.action is OfferAction.REGISTER:
            return f"published offer {offer_id} ({self.reason})"
        if self.action is OfferAction.KEEP:
            return f"offer {offer_id} unchanged"
        diff = ", ".join(f"{label} {old} -> {new}" for label, old, new in self.changes)
        if self.reactivate:
            return f"reactivated offer {offer_id}" + (f": {diff}" if diff else "")
        return f"updated offer {offer_id}: {diff}"


def plan_offer(
    wanted: PublishedTerms,
    home: OfferHome,
    remembered: RememberedOffer | None,
    on_chain: OfferOnChain | None,
) -> OfferPlan:
    """The table in the module docstring. ``on_chain``: the remembered id as the chain has it
    (None when it was not read, i.e. nothing applicable is remembered)."""
    if remembered is None:
        return OfferPlan(OfferAction.REGISTER, None, "no offer remembered")
    rid = remembered.offer_id
    if remembered.home != home:
        return OfferPlan(
            OfferAction.REGISTER, None, f"remembered offer {rid} is on another registry or wallet"
        )
    if on_chain is None or on_chain.terms is None or on_chain.provider != home.provider:
        return OfferPlan(
            OfferAction.REGISTER, None, f"remembered offer {rid} is not this wallet's on chain"
        )
    changes = wanted.changes(on_chain.terms)
    if changes or not on_chain.active:
        reason = "terms changed" if changes else "inactive"
        return OfferPlan(OfferAction.UPDATE, rid, reason, changes, reactivate=not on_chain.active)
    return OfferPlan(OfferAction.KEEP, rid, "same terms, active")
