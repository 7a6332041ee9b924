"""The normal lease stays below µRaiden's open + cooperative close (189,177 gas)."""

from __future__ import annotations

from chain_helpers import USD, escrow_domain, open_channel, token_domain, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712

URAIDEN_OPEN_PLUS_CLOSE = 189_177


def test_open_plus_settle_below_uraiden(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, 2 * USD))
    session = Account.create()
    opened = send(
        c.w3,
        renter,
        c.escrow.functions.open(provider.address, c.token.address, 2 * USD, session.address),
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    settled = send(
        c.w3, provider, c.escrow.functions.settle(cid, 12_345, voucher_sig(c, session, cid, 12_345))
    )
    total = opened["gasUsed"] + settled["gasUsed"]
    assert total < URAIDEN_OPEN_PLUS_CLOSE, total


def _relayed_open(c, renter, provider, relayer, fee: int = 10_000):
    """A gasless open (permit + signed OpenChannel, relayed); returns (receipt, cid, session)."""
    session, deposit = Account.create(), 2 * USD
    deadline = c.w3.eth.get_block("latest")["timestamp"] + 600
    open_sig = eip712.sign_typed_data(
        renter.key,
        eip712.open_channel(
            escrow_domain(c),
            renter=renter.address,
            provider=provider.address,
            token=c.token.address,
            deposit=deposit,
            session_key=session.address,
            relay_fee=fee,
            deadline=deadline,
        ),
    )
    permit = eip712.sign_typed_data(
        renter.key,
        eip712.permit(
            token_domain(c),
            owner=renter.address,
            spender=c.escrow.address,
            value=deposit,
            nonce=c.token.functions.nonces(renter.address).call(),
            deadline=deadline,
        ),
    )
    fn = c.escrow.functions.openFor(
        renter.address,
        provider.address,
        c.token.address,
        deposit,
        session.address,
        fee,
        deadline,
        open_sig,
        permit[64],
        permit[:32],
        permit[32:64],
    )
    return send(c.w3, relayer, fn), eip712.channel_id_for(renter.address, session.address), session


def test_relayed_open_plus_settle_of_a_returning_renter_below_uraiden(contracts, accounts):
    """openFor keeps no per-renter counter: after a renter's first permit on the token, a relayed
    lease costs no more than the target (the first one also pays the token's permit-nonce slot)."""
    c, renter, provider, relayer = contracts, accounts[1], accounts[2], accounts[3]
    open_channel(c, accounts[4], accounts[5], USD)  # a live escrow holds other deposits
    totals = []
    for _ in range(2):
        opened, cid, session = _relayed_open(c, renter, provider, relayer)
        settled = send(
            c.w3,
            provider,
            c.escrow.functions.settle(cid, 1_000, voucher_sig(c, session, cid, 1_000)),
        )
        totals.append(opened["gasUsed"] + settled["gasUsed"])
    assert totals[1] < URAIDEN_OPEN_PLUS_CLOSE, totals
