"""Small helpers shared by the escrow tests (signing, opening channels)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from eth_account import Account

from jupyter_gpumarket.chain.client import Contracts, send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import TransactionReverted

USD = 10**6


def escrow_domain(c: Contracts) -> eip712.Domain:
    return eip712.Domain(chain_id=c.w3.eth.chain_id, verifying_contract=c.escrow.address)


def token_domain(c: Contracts) -> eip712.Domain:
    return eip712.Domain(
        chain_id=c.w3.eth.chain_id, verifying_contract=c.token.address, name="TestUSD"
    )


def voucher_sig(c: Contracts, key, channel_id: bytes, amount: int) -> bytes:
    return eip712.sign_typed_data(key.key, eip712.voucher(escrow_domain(c), channel_id, amount))


def open_channel_sig(
    c: Contracts,
    renter,
    provider,
    session,
    deposit: int,
    fee: int,
    deadline: int,
    pool_id: bytes = bytes(32),
) -> bytes:
    """The renter's OpenChannel signature in this token: for openFor (``pool_id`` zero) or
    openFromPoolFor (``pool_id``: the pool that pays)."""
    typed = eip712.open_channel(
        escrow_domain(c),
        renter=renter.address,
        provider=provider.address,
        token=c.token.address,
        deposit=deposit,
        session_key=session.address,
        relay_fee=fee,
        deadline=deadline,
        pool_id=pool_id,
    )
    return eip712.sign_typed_data(renter.key, typed)


def permit_sig(c: Contracts, owner, value: int, deadline: int) -> bytes:
    """An EIP-2612 permit of ``value`` for the escrow, with the owner's current token nonce."""
    typed = eip712.permit(
        token_domain(c),
        owner=owner.address,
        spender=c.escrow.address,
        value=value,
        nonce=c.token.functions.nonces(owner.address).call(),
        deadline=deadline,
    )
    return eip712.sign_typed_data(owner.key, typed)


def open_channel(c: Contracts, renter, provider, deposit: int = 5 * USD):
    """approve + open; returns (channel_id, session key account)."""
    session = Account.create()
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, deposit))
    send(
        c.w3,
        renter,
        c.escrow.functions.open(provider.address, c.token.address, deposit, session.address),
    )
    return eip712.channel_id_for(renter.address, session.address), session


def balance(c: Contracts, who) -> int:
    address = who if isinstance(who, str) else who.address
    return c.token.functions.balanceOf(address).call()


def now(c: Contracts) -> int:
    return c.w3.eth.get_block("latest")["timestamp"]


def advance(c: Contracts, seconds: int) -> None:
    c.w3.provider.make_request("evm_increaseTime", [seconds])
    c.w3.provider.make_request("evm_mine", [])


@contextlib.contextmanager
def reverts(reason: str) -> Iterator[None]:
    """The call must revert with a message containing ``reason``."""
    with pytest.raises(TransactionReverted) as info:
        yield
    assert reason in str(info.value), str(info.value)


def raw_send(c: Contracts, sender, signature: str, types: list[str], args: list) -> None:
    """Call ``signature`` (e.g. "addToken(address)") on the escrow by selector: for entry
    points an attacker may try that the ABI no longer lists."""
    from eth_abi import encode
    from eth_utils import keccak

    from jupyter_gpumarket.chain.client import _finish

    data = keccak(text=signature)[:4] + encode(types, args)
    _finish(c.w3, sender, {"to": c.escrow.address, "data": "0x" + data.hex()}, signature)
