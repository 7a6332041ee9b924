"""Publish the provider's offer in the on-chain Registry, keep it across restarts, take it down.

The offer's id is remembered in ``<state_dir>/offer.json``; what to send at start (register,
update or nothing) is decided by ``core.offer_terms.plan_offer``. This module is its I/O.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.agent.gpu import GpuInventory
from jupyter_gpumarket.core.offer_terms import (
    OfferAction,
    OfferHome,
    OfferOnChain,
    OfferPlan,
    PublishedTerms,
    RememberedOffer,
    plan_offer,
)
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["OFFER_FILE", "OfferPublisher", "load_remembered", "unpublish_remembered"]

log = logging.getLogger(__name__)

OFFER_FILE = "offer.json"


@dataclass
class OfferPublisher:
    contracts: Any  # chain.client.Contracts
    account: Any  # the provider's LocalAccount
    price_per_hour: int
    region: str
    inventory: GpuInventory
    gpus_per_kernel: int
    metadata_uri: str = ""
    state_dir: Path | None = None  # where offer.json is kept; None: remember nothing
    offer_id: int | None = None
    plan: OfferPlan | None = None  # what the last publish() did

    def terms(self, url: str, fingerprint: str) -> PublishedTerms:
        """The offer this agent would publish for ``url`` now."""
        gpus = self.inventory.gpus
        return PublishedTerms(
            endpoint=url,
            tls_fingerprint=fingerprint,
            gpu_model=gpus[0].model if gpus else "CPU",
            gpu_count=min(self.gpus_per_kernel, len(gpus)) if gpus else 0,
            vram_mb=gpus[0].memory_total_mib if gpus else 0,
            price_per_hour=self.price_per_hour,
            token=self.contracts.token.address,
            region=self.region,
            metadata_uri=self.metadata_uri,
        )

    def publish(self, url: str, fingerprint: str) -> int:
        """Register, update or keep the offer for ``url`` (see core.offer_terms); its id."""
        from jupyter_gpumarket.chain.client import send

        wanted = self.terms(url, fingerprint)
        home = _home(self.contracts, self.account)
        remembered = load_remembered(self.state_dir) if self.state_dir is not None else None
        on_chain = None
        if remembered is not None and remembered.home == home:
            on_chain = read_offer(self.contracts, remembered.offer_id)
        plan = plan_offer(wanted, home, remembered, on_chain)
        registry = self.contracts.registry
        w3 = self.contracts.w3
        if plan.action is OfferAction.REGISTER:
            fn = registry.functions.register(*_args(wanted))
            receipt = send(w3, self.account, fn, what="register")
            events = registry.events.OfferRegistered().process_receipt(receipt)
            offer_id = int(events[0]["args"]["offer_id"])
        else:
            assert plan.offer_id is not None  # REGISTER is the only plan without one
            offer_id = plan.offer_id
            if plan.action is OfferAction.UPDATE:
                fn = registry.functions.update(offer_id, *_args(wanted))
                send(w3, self.account, fn, what="update")
        self.offer_id, self.plan = offer_id, plan
        log.info("%s; %s at %s/h in %s", plan.summary(offer_id), *_brief(wanted))
        if self.state_dir is not None:
            _remember(self.state_dir, RememberedOffer(offer_id, home, wanted))
        return offer_id

    def unpublish(self) -> bool:
        """Deactivate the published offer; False when there was nothing to deactivate."""
        if self.offer_id is None:
            return False
        return deactivate(self.contracts, self.account, self.offer_id)


def read_offer(contracts: Any, offer_id: int) -> OfferOnChain:
    from jupyter_gpumarket.chain.client import call

    raw = call(contracts.registry.functions.offers(offer_id), what="Registry.offers")
    return OfferOnChain.from_registry(raw)


def deactivate(contracts: Any, account: Any, offer_id: int) -> bool:
    """Deactivate ``offer_id`` unless the chain already has it inactive (no tx then)."""
    from jupyter_gpumarket.chain.client import send

    if not read_offer(contracts, offer_id).active:
        log.info("offer %s is already inactive", offer_id)
        return False
    fn = contracts.registry.functions.deactivate(offer_id)
    send(contracts.w3, account, fn, what="deactivate")
    log.info("offer %s deactivated", offer_id)
    return True


def unpublish_remembered(contracts: Any, account: Any, state_dir: Path) -> str:
    """``provider serve --unpublish``: deactivate the offer ``state_dir`` remembers; what
    happened, in a sentence."""
    path = state_dir / OFFER_FILE
    remembered = load_remembered(state_dir)
    if remembered is None:
        return f"no offer remembered in {path}: nothing to unpublish"
    offer_id, home = remembered.offer_id, _home(contracts, account)
    if remembered.home != home:
        raise ConfigError(
            f"{path} remembers offer {offer_id} of {remembered.home.provider} on registry "
            f"{remembered.home.registry} (chain {remembered.home.chain_id}), not this wallet "
            f"{home.provider} on {home.registry} (chain {home.chain_id}): pass the --network "
            "and --wallet that published it"
        )
    on_chain = read_offer(contracts, offer_id)
    if on_chain.terms is None or on_chain.provider != home.provider:
        return f"offer {offer_id} is not this wallet's on this chain (was it reset?): nothing to do"
    if not deactivate(contracts, account, offer_id):
        return f"offer {offer_id} is already inactive: nothing to do"
    return f"offer {offer_id} deactivated"


def load_remembered(state_dir: Path) -> RememberedOffer | None:
    """The offer ``state_dir/offer.json`` remembers; None when absent or unreadable (logged:
    the agent then registers a new offer, which is safe)."""
    path = state_dir / OFFER_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s, unreadable: %s", path, exc)
        return None
    try:
        return RememberedOffer.from_json(data)
    except ConfigError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def _remember(state_dir: Path, offer: RememberedOffer) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / OFFER_FILE
    statefile.write_json(path, offer.to_json(), mode=0o644, indent=2)


def _home(contracts: Any, account: Any) -> OfferHome:
    from jupyter_gpumarket.chain.errors import rpc_errors

    with rpc_errors("eth_chainId"):
        chain_id = int(contracts.w3.eth.chain_id)
    return OfferHome(chain_id, contracts.registry.address, account.address)


def _args(terms: PublishedTerms) -> tuple[Any, ...]:
    from eth_utils import to_checksum_address

    return (
        terms.endpoint,
        bytes.fromhex(terms.tls_fingerprint.split(":", 1)[1]),
        terms.gpu_model,
        terms.gpu_count,
        terms.vram_mb,
        terms.price_per_hour,
        to_checksum_address(terms.token),
        terms.region,
        terms.metadata_uri,
    )


def _brief(terms: PublishedTerms) -> tuple[str, int, str]:
    return terms.gpu_model, terms.price_per_hour, terms.region
