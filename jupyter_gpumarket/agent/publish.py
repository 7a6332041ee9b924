"""Publish the provider's offer in the on-chain Registry, and take it down again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.agent.gpu import GpuInventory

__all__ = ["OfferPublisher"]

log = logging.getLogger(__name__)


@dataclass
class OfferPublisher:
    contracts: Any  # chain.client.Contracts
    account: Any  # the provider's LocalAccount
    price_per_hour: int
    region: str
    inventory: GpuInventory
    gpus_per_kernel: int
    metadata_uri: str = ""
    offer_id: int | None = None

    def publish(self, url: str, fingerprint: str) -> int:
        """Register (or update) the offer for ``url``; returns its id."""
        from jupyter_gpumarket.chain.client import send

        gpus = self.inventory.gpus
        model = gpus[0].model if gpus else "CPU"
        count = min(self.gpus_per_kernel, len(gpus)) if gpus else 0
        vram = gpus[0].memory_total_mib if gpus else 0
        args = (
            url,
            bytes.fromhex(fingerprint.split(":", 1)[1]),
            model,
            count,
            vram,
            self.price_per_hour,
            self.contracts.token.address,
            self.region,
            self.metadata_uri,
        )
        registry = self.contracts.registry
        receipt = send(
            self.contracts.w3, self.account, registry.functions.register(*args), what="register"
        )
        events = registry.events.OfferRegistered().process_receipt(receipt)
        self.offer_id = int(events[0]["args"]["offer_id"])
        log.info(
            "published offer %s: %s at %s/h (%s)",
            self.offer_id,
            model,
            self.price_per_hour,
            self.region,
        )
        return self.offer_id

    def unpublish(self) -> None:
        from jupyter_gpumarket.chain.client import send

        if self.offer_id is None:
            return
        fn = self.contracts.registry.functions.deactivate(self.offer_id)
        send(self.contracts.w3, self.account, fn, what="deactivate")
        log.info("offer %s deactivated", self.offer_id)
