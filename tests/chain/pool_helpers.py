"""Credit-pool helpers for the escrow tests."""

from __future__ import annotations

from chain_helpers import USD, escrow_domain
from web3.logs import DISCARD

from jupyter_gpumarket.chain.client import Contracts, send
from jupyter_gpumarket.core import eip712

ZERO = "0x" + "00" * 20


def create_pool(c: Contracts, admin, amount: int = 20 * USD) -> bytes:
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, amount))
    receipt = send(c.w3, admin, c.escrow.functions.createPool(c.token.address, amount))
    (event,) = c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
    return bytes(event["args"]["pool_id"])


def grant_args(
    c: Contracts,
    admin,
    pool_id: bytes,
    student: str,
    cap: int,
    expiry: int,
    provider: str = ZERO,
    domain: eip712.Domain | None = None,
) -> tuple:
    """openFromPool's grant arguments: (pool_id, student, cap, expiry, provider, sig)."""
    typed = eip712.grant(
        domain or escrow_domain(c),
        pool_id=pool_id,
        student=student,
        cap=cap,
        expiry=expiry,
        provider=provider,
    )
    return (pool_id, student, cap, expiry, provider, eip712.sign_typed_data(admin.key, typed))
