"""The normal lease stays below µRaiden's open + cooperative close (189,177 gas)."""

from __future__ import annotations

from chain_helpers import USD, open_channel, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import relay_request, submit_relay_request
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
    """A gasless open (permit + signed OpenChannel, relayed); returns (receipt gas, cid, key)."""
    session = Account.create()
    chain = LeaseChain(c)
    req = relay_request(
        chain, renter, provider=provider.address, deposit=2 * USD, relay_fee=fee,
        session_key=session,
    )  # fmt: skip
    cid, tx = submit_relay_request(chain, relayer, req)
    return tx.gas_used, cid, session


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
        totals.append(opened + settled["gasUsed"])
    assert totals[1] < URAIDEN_OPEN_PLUS_CLOSE, totals


def test_permit_open_plus_settle_below_uraiden(contracts, accounts):
    """openWithPermit + settle, a renter's first and next lease (the permit tolerates being
    front-run and the refund cannot block the settle, without an extra storage write)."""
    c, renter, provider = contracts, accounts[1], accounts[2]
    open_channel(c, accounts[4], accounts[5], USD)  # a live escrow holds other deposits
    chain = LeaseChain(c)
    totals = []
    for _ in range(2):
        opened = chain.open(renter, provider=provider.address, price_per_hour=1, deposit=2 * USD)
        cid, session = opened.channel_id, opened.session_key
        settled = send(
            c.w3, provider, c.escrow.functions.settle(cid, 7, voucher_sig(c, session, cid, 7))
        )
        totals.append(opened.txs[0].gas_used + settled["gasUsed"])
    assert max(totals) < URAIDEN_OPEN_PLUS_CLOSE, totals
