"""One lease as the renter records it (the rows of ``chain/renter_ledger.py``); pure data.

Amounts are token base units (``int``); ``state`` is a ``core.renter_lease_state.RenterState``
value; ``chain_id`` + ``escrow`` name the deployment (None: recorded before networks were).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_gpumarket.core import renter_lease_state as rls
from jupyter_gpumarket.core.renter_lease_state import RenterState
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = ["AMOUNTS", "FINAL_STATES", "LEASE_STATES", "LeaseRecord", "NetworkKey"]

LEASE_STATES = tuple(s.value for s in RenterState)
FINAL_STATES = tuple(s.value for s in rls.FINAL_STATES)
AMOUNTS = ("price_per_hour", "deposit", "spent", "refunded")


@dataclass(frozen=True)
class NetworkKey:
    """Which deployment: chain id + escrow address (compared lowercase)."""

    chain_id: int
    escrow: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "escrow", self.escrow.lower())

    def label(self) -> str:
        return f"chain {self.chain_id} escrow {self.escrow}"


@dataclass(frozen=True)
class LeaseRecord:
    """One lease as the renter knows it; amounts in token base units."""

    id: str
    offer_id: int | None
    provider: str
    provider_url: str | None
    network: str
    renter: str
    channel_id: str  # 0x hex
    state: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    billed_seconds: int
    price_per_hour: int
    deposit: int
    spent: int
    refunded: int
    close_at: int | None
    txs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    owner_pid: int | None = None  # None: recorded before owners were (treated as gone)
    chain_id: int | None = None  # None (with escrow): recorded before networks were
    escrow: str | None = None

    def __post_init__(self) -> None:
        if self.state not in LEASE_STATES:
            raise ConfigError(f"lease state must be one of {LEASE_STATES}, got {self.state!r}")
        if self.escrow is not None:
            object.__setattr__(self, "escrow", self.escrow.lower())
        for name in (*AMOUNTS, "billed_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PaymentError(f"lease {name} must be a non-negative int, got {value!r}")

    @property
    def channel_bytes(self) -> bytes:
        return bytes.fromhex(self.channel_id[2:])

    @property
    def network_key(self) -> NetworkKey | None:
        """The deployment this lease is on; None for a lease recorded before networks were."""
        if self.chain_id is None or self.escrow is None:
            return None
        return NetworkKey(self.chain_id, self.escrow)

    @property
    def spent_source(self) -> str:
        """ "chain" once the channel closed on chain, else "estimate" (what the renter signed)."""
        return rls.spent_source(RenterState(self.state))

    def to_json(self) -> dict[str, Any]:
        """The stored fields plus ``deposit_left`` (still on the escrow for this lease: 0 once
        closed), ``spent_source`` and ``network_label``."""
        key = self.network_key
        final = self.state in FINAL_STATES
        return {
            **asdict(self),
            "deposit_left": 0 if final else max(0, self.deposit - self.spent),
            "spent_source": self.spent_source,
            "network_label": key.label() if key else "unknown network",
        }

    def columns(self) -> dict[str, Any]:
        """The stored fields only, as the ledger writes them (amounts as text)."""
        data = asdict(self)
        for name in AMOUNTS:
            data[name] = str(data[name])
        data["txs"] = json.dumps(data["txs"])
        return data
