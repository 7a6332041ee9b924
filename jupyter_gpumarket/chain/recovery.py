"""One step of getting a lease's unspent deposit back, written to the renter's ledger.

Shared by ``gpumarket leases close ID`` and the Jupyter server extension's background
recovery (``server/recovery.py``), so both record the same states, amounts and transactions::

    chain, profile = lease_chain(record.network)
    step, record = recovery_step(ledger, record, chain, wallet)   # blocking (web3)

The step is ``LeaseChain.recover_deposit``: ``requestClose`` while the channel is open,
``withdraw`` once ``close_at`` has passed; a channel the provider settled needs nothing.
Once the channel is closed, a refund the token refused (``refund_owed``) is claimed to the
renter when the token serves it again (``claim_owed_refund``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_gpumarket.chain.renter_ledger import LeaseRecord, RenterLedger
from jupyter_gpumarket.core.renter_lease_state import RenterEvent

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from jupyter_gpumarket.chain.leases import LeaseChain, RecoveryStep
    from jupyter_gpumarket.chain.profiles import NetworkProfile

__all__ = ["chain_now", "claim_owed_refund", "lease_chain", "recovery_step"]

# RecoveryStep.state -> the ledger's event ("closed": see chain.reconcile)
_EVENTS = {"closing": RenterEvent.CLOSE_REQUESTED, "withdrawn": RenterEvent.CHAIN_WITHDRAWN}


def lease_chain(network: str | NetworkProfile) -> tuple[LeaseChain, NetworkProfile]:
    """The deployment of the profile ``network`` (name, JSON path or profile), connected."""
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.profiles import load_profile

    profile = load_profile(network) if isinstance(network, str) else network
    token, escrow, registry = profile.require_contracts()
    return LeaseChain(Contracts.bound(connect(profile.rpc_url), token, escrow, registry)), profile


def recovery_step(
    ledger: RenterLedger, record: LeaseRecord, chain: LeaseChain, renter: LocalAccount
) -> tuple[RecoveryStep, LeaseRecord]:
    """Take one ``recover_deposit`` step for ``record`` and record it: the transaction sent
    (if any), then "closing" with ``close_at``, or the final state with paid and refunded."""
    step = chain.recover_deposit(renter, record.channel_bytes)
    if step.tx is not None:
        ledger.add_tx(record.id, step.tx.to_json())
    current = ledger.get(record.id)
    if step.state == "closed":  # the provider settled (or a withdraw elsewhere): the chain says
        from jupyter_gpumarket.chain.reconcile import reconcile

        claim_owed_refund(ledger, record, chain, renter)
        return step, reconcile(ledger, ledger.get(record.id), chain)
    event = _EVENTS[step.state]
    if step.state == "closing":
        return step, ledger.transition(current, event, close_at=step.close_at)
    claim_owed_refund(ledger, record, chain, renter)
    current = ledger.get(record.id)
    return step, ledger.transition(current, event, spent=step.paid, refunded=step.refunded)


def claim_owed_refund(
    ledger: RenterLedger, record: LeaseRecord, chain: LeaseChain, renter: LocalAccount
) -> int:
    """A refund the token refused at settle/withdraw (``refund_owed``): claim it to the
    renter and record the transaction on ``record``. Returns what is still owed (the token
    still refuses the renter: ``gpumarket leases claim-refund --to ADDRESS``)."""
    from jupyter_gpumarket.chain.refunds import try_claim_refund

    claimed, still_owed = try_claim_refund(chain, renter)
    if claimed is not None:
        ledger.add_tx(record.id, claimed.tx.to_json())
    return still_owed


def chain_now(chain: LeaseChain) -> int:
    """The escrow's clock (latest block time), RPC failures mapped like every chain call."""
    from jupyter_gpumarket.chain.errors import rpc_errors

    with rpc_errors("eth_getBlockByNumber"):
        return chain.now()
