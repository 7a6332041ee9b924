"""Make the renter's lease records say what the chain says (blocking: web3).

The renter's ledger knows what the renter signed; the escrow knows what was paid. Once a
channel is closed on chain, its record takes the chain's numbers (``spent`` = what the provider
got, ``refunded`` = the rest), the closing transaction (found in the Escrow's ``Settled`` /
``Withdrawn`` events for the channel id) and the state ``settled`` or ``withdrawn``; a channel in
its challenge period makes a stopped record ``closing``. Used by ``gpumarket leases`` and by the
server's ``GET /gpumarket/leases`` and deposit recovery, for the leases of the active network::

    key, profile = active_network()
    records, problem = reconcile_records(ledger, ledger.list(key), profile)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.chain.renter_ledger import (
    FINAL_STATES,
    LeaseRecord,
    NetworkKey,
    RenterLedger,
)
from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, LeaseStateChanged

if TYPE_CHECKING:
    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.profiles import NetworkProfile

__all__ = ["active_network", "closing_tx", "reconcile", "reconcile_records"]

log = logging.getLogger(__name__)

_CLOSED = ("closed", "closed-paid", "attested")
# the escrow event that closed a channel -> (the ledger's event, the tx kind recorded)
_CLOSERS = {
    "Settled": (RenterEvent.CHAIN_SETTLED, "settle"),
    "Withdrawn": (RenterEvent.CHAIN_WITHDRAWN, "withdraw"),
}


def active_network() -> tuple[NetworkKey | None, NetworkProfile | None]:
    """The active profile's deployment (chain id + escrow) and the profile; (None, None) when
    no profile loads or it has no escrow."""
    from jupyter_gpumarket.chain.profiles import active_profile

    try:
        profile = active_profile()
    except ConfigError:
        return None, None
    if profile.escrow is None:
        return None, profile
    return NetworkKey(profile.chain_id, profile.escrow), profile


def _first_block(chain: LeaseChain, record: LeaseRecord) -> int:
    """Where to start looking for the channel's events: the block of its open, else 0."""
    for tx in record.txs:
        if tx.get("kind") == "open" and isinstance(tx.get("tx_hash"), str):
            try:
                return int(chain.w3.eth.get_transaction_receipt(tx["tx_hash"])["blockNumber"])
            except Exception:  # pruned, or another chain's tx: search from genesis
                return 0
    return 0


def closing_tx(chain: LeaseChain, record: LeaseRecord) -> tuple[str, dict[str, Any]] | None:
    """(escrow event name, tx record) of the transaction that closed the channel, or None."""
    from jupyter_gpumarket.chain.errors import rpc_errors

    with rpc_errors("eth_getLogs (Escrow Settled/Withdrawn)"):
        return _closing_tx(chain, record)


def _closing_tx(chain: LeaseChain, record: LeaseRecord) -> tuple[str, dict[str, Any]] | None:
    start = _first_block(chain, record)
    for name in _CLOSERS:
        event = getattr(chain.c.escrow.events, name)
        logs = event.get_logs(
            argument_filters={"channel_id": record.channel_bytes}, from_block=start
        )
        if logs:
            tx_hash = "0x" + bytes(logs[-1]["transactionHash"]).hex()
            receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
            kind = _CLOSERS[name][1]
            return name, {"kind": kind, "tx_hash": tx_hash, "gas_used": int(receipt["gasUsed"])}
    return None


def reconcile(ledger: RenterLedger, record: LeaseRecord, chain: LeaseChain) -> LeaseRecord:
    """``record`` brought in line with its channel on ``chain`` (the lease as now written).
    A final record, or a channel the escrow does not know, is returned as it is."""
    if record.state in FINAL_STATES:
        return record
    info = chain.channel(record.channel_bytes)
    if info.state in _CLOSED:
        found = closing_tx(chain, record)
        event = _CLOSERS[found[0]][0] if found else RenterEvent.CHAIN_SETTLED
        updated = ledger.transition(
            record,
            event,
            deposit=info.deposit,
            spent=info.redeemed,
            refunded=info.deposit - info.redeemed,
        )
        if found and found[1]["tx_hash"] not in {t.get("tx_hash") for t in record.txs}:
            updated = ledger.add_tx(record.id, found[1])
        return updated
    if info.state == "closing" and record.state == "stopped":
        return ledger.transition(record, RenterEvent.CLOSE_REQUESTED, close_at=info.close_at)
    return record


def reconcile_records(
    ledger: RenterLedger, records: list[LeaseRecord], profile: NetworkProfile | None
) -> tuple[list[LeaseRecord], str | None]:
    """Every record of ``profile``'s deployment reconciled; (records, why some could not be:
    None when all were). Records of other networks are returned as they are."""
    from jupyter_gpumarket.chain.recovery import lease_chain

    if profile is None or profile.escrow is None:
        return records, None
    key = NetworkKey(profile.chain_id, profile.escrow)
    todo = [r for r in records if r.network_key == key and r.state not in FINAL_STATES]
    if not todo:
        return records, None
    try:
        chain, _ = lease_chain(profile)
    except GpuMarketError as exc:
        return records, f"not checked against the chain ({exc})"
    fresh: dict[str, LeaseRecord] = {}
    problem = None
    for record in todo:
        try:
            fresh[record.id] = reconcile(ledger, record, chain)
        except LeaseStateChanged:  # another writer moved it: take what it wrote
            fresh[record.id] = ledger.get(record.id)
        except GpuMarketError as exc:
            problem = f"not checked against the chain ({exc})"
            log.info("lease %s: %s", record.id, problem)
    return [fresh.get(r.id, r) for r in records], problem
