"""A renter's refund the token refused to deliver: ``Escrow.refund_owed`` / ``claimRefund``.

When the token refuses the renter's refund at settle or withdraw (a blacklisted or paused
address), the Escrow keeps it as ``refund_owed(renter)`` instead of reverting the provider's
settle. The renter collects it with ``claimRefund(to)``: to itself once the token serves it
again, or to another of its wallets::

    owed = refund_owed(chain, renter.address)
    claimed = claim_refund(chain, renter)                 # to the renter; None: nothing owed
    claimed = claim_refund(chain, renter, to=other)       # to another wallet
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jupyter_gpumarket.chain.leases import TxInfo
from jupyter_gpumarket.exceptions import TransactionReverted

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from jupyter_gpumarket.chain.leases import LeaseChain

__all__ = ["ClaimedRefund", "claim_refund", "refund_owed", "try_claim_refund"]


@dataclass(frozen=True)
class ClaimedRefund:
    """A ``claimRefund``: ``amount`` sent to ``to`` in ``tx``."""

    amount: int
    to: str
    tx: TxInfo


def refund_owed(chain: LeaseChain, renter: str) -> int:
    """What the escrow holds for ``renter`` after refunds the token refused (one eth_call)."""
    return chain.escrow.refund_owed(renter)


def claim_refund(
    chain: LeaseChain, renter: LocalAccount, to: str | None = None
) -> ClaimedRefund | None:
    """Send everything owed to ``renter`` to ``to`` (default: the renter); None when nothing is
    owed. TransactionReverted when the token refuses ``to`` too."""
    from eth_utils import to_checksum_address

    amount = refund_owed(chain, renter.address)
    if amount == 0:
        return None
    dest = to_checksum_address(to or renter.address)
    receipt = chain.escrow.claim_refund(renter, dest)
    return ClaimedRefund(amount, dest, TxInfo.of("claim_refund", receipt))


def try_claim_refund(chain: LeaseChain, renter: LocalAccount) -> tuple[ClaimedRefund | None, int]:
    """``claim_refund`` to the renter, kept owed when the token still refuses it: (the claim or
    None, what is still owed). For the recovery step, which must not fail on it."""
    try:
        claimed = claim_refund(chain, renter)
    except TransactionReverted:
        return None, refund_owed(chain, renter.address)
    return claimed, 0
