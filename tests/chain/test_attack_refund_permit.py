"""A renter cannot block the provider's settle by having its refund refused, and a front-run
permit does not block an opening (issue 17, items 7, 8).

Before: settle pushed the renter's refund in the provider's transaction, so a blacklisted (or
paused) renter made every settle revert, ran for free and later withdrew; and anyone who copied
a permit from the mempool and submitted it first made openWithPermit / openFor revert."""

from __future__ import annotations

import pytest
from chain_helpers import USD, balance, now, open_channel_sig, permit_sig, reverts, voucher_sig
from eth_account import Account
from hostile_tokens import deploy_hostile_token, escrow_holding
from web3.logs import DISCARD

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.escrow import EscrowClient
from jupyter_gpumarket.core import eip712


@pytest.fixture
def blacklisting(any_chain, accounts):
    """An escrow holding a token that can blacklist addresses; a 5 USD channel on it."""
    c, renter, provider = any_chain, accounts[1], accounts[2]
    token = deploy_hostile_token(c.w3, accounts[0])
    e = escrow_holding(c, accounts[0], token)
    send(c.w3, accounts[0], token.functions.mint(renter.address, 10 * USD))
    send(c.w3, renter, token.functions.approve(e.escrow.address, 5 * USD))
    session = Account.create()
    send(
        c.w3,
        renter,
        e.escrow.functions.open(provider.address, token.address, 5 * USD, session.address),
    )
    return e, token, eip712.channel_id_for(renter.address, session.address), session


@pytest.mark.parametrize("paid", [2 * USD, 0])
def test_a_blacklisted_renter_cannot_block_the_settle(blacklisting, accounts, paid):
    e, token, cid, session = blacklisting
    renter, provider, other_wallet = accounts[1], accounts[2], accounts[6]
    send(e.w3, accounts[0], token.functions.set_blocked(renter.address, True))
    sig = voucher_sig(e, session, cid, paid) if paid else b""
    receipt = send(e.w3, provider, e.escrow.functions.settle(cid, paid, sig))
    assert balance(e, provider) == paid
    assert e.escrow.functions.refund_owed(renter.address).call() == 5 * USD - paid
    (owed,) = e.escrow.events.RefundOwed().process_receipt(receipt, errors=DISCARD)
    assert owed["args"]["amount"] == 5 * USD - paid
    # the renter collects it to a wallet the token still serves, once
    client = EscrowClient(e)
    assert client.refund_owed(renter.address) == 5 * USD - paid
    client.claim_refund(renter, other_wallet.address)
    assert balance(e, other_wallet) == 5 * USD - paid
    assert client.refund_owed(renter.address) == 0
    with reverts("no refund owed"):
        client.claim_refund(renter, other_wallet.address)
    assert balance(e, e.escrow.address) == 0


def test_a_refund_the_token_delivers_is_not_owed(blacklisting, accounts):
    e, _, cid, session = blacklisting
    receipt = send(
        e.w3, accounts[2], e.escrow.functions.settle(cid, USD, voucher_sig(e, session, cid, USD))
    )
    assert not e.escrow.events.RefundOwed().process_receipt(receipt, errors=DISCARD)
    assert e.escrow.functions.refund_owed(accounts[1].address).call() == 0
    assert balance(e, accounts[1]) == 9 * USD


@pytest.mark.parametrize("how", ["openWithPermit", "openFor"])
def test_a_front_run_permit_does_not_block_the_opening(any_chain, accounts, how):
    c, renter, provider, front_runner = any_chain, accounts[1], accounts[2], accounts[3]
    session, deadline = Account.create(), now(c) + 600
    permit = permit_sig(c, renter, USD, deadline)
    v, r, s = permit[64], permit[:32], permit[32:64]
    # copied from the mempool and submitted to the token first
    send(
        c.w3,
        front_runner,
        c.token.functions.permit(renter.address, c.escrow.address, USD, deadline, v, r, s),
    )
    if how == "openWithPermit":
        fn = c.escrow.functions.openWithPermit(
            provider.address, c.token.address, USD, session.address, deadline, v, r, s
        )
        send(c.w3, renter, fn)
    else:
        sig = open_channel_sig(c, renter, provider, session, USD, 0, deadline)
        fn = c.escrow.functions.openFor(
            renter.address, provider.address, c.token.address, USD, session.address, 0,
            deadline, sig, v, r, s,
        )  # fmt: skip
        send(c.w3, provider, fn)
    cid = eip712.channel_id_for(renter.address, session.address)
    assert c.escrow.functions.channels(cid).call()[4] == USD
    # the permit's allowance is spent now: the same permit cannot open a second channel
    with reverts("permit failed and the allowance is below the deposit"):
        send(
            c.w3,
            renter,
            c.escrow.functions.openWithPermit(
                provider.address, c.token.address, USD, Account.create().address, deadline, v, r, s
            ),
        )
