"""The normal lease paths of Escrow: open (approve, permit, relayed), redeem, settle, close."""

from __future__ import annotations

from chain_helpers import (
    USD,
    advance,
    balance,
    escrow_domain,
    now,
    open_channel,
    open_channel_sig,
    permit_sig,
    voucher_sig,
)
from eth_account import Account

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712

OPEN, CLOSING, CLOSED, CLOSED_PAID, ATTESTED = 1, 2, 3, 4, 5


def test_open_then_settle_pays_provider_and_refunds_renter(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    before = balance(c, renter), balance(c, provider)
    cid, session = open_channel(c, renter, provider, 5 * USD)
    ch = c.escrow.functions.channels(cid).call()
    assert ch[:2] == [renter.address, provider.address] or ch[:2] == (
        renter.address,
        provider.address,
    )
    assert ch[4] == 5 * USD
    assert ch[7] == OPEN
    send(
        c.w3,
        provider,
        c.escrow.functions.settle(cid, 1_234_567, voucher_sig(c, session, cid, 1_234_567)),
    )
    assert balance(c, renter) == before[0] - 1_234_567
    assert balance(c, provider) == before[1] + 1_234_567
    assert balance(c, c.escrow.address) == 0
    assert c.escrow.functions.channels(cid).call()[7] == CLOSED_PAID


def test_redeem_twice_then_settle_pays_each_increase(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    start = balance(c, provider)
    cid, session = open_channel(c, renter, provider, 3 * USD)
    send(c.w3, provider, c.escrow.functions.redeem(cid, 100, voucher_sig(c, session, cid, 100)))
    send(c.w3, provider, c.escrow.functions.redeem(cid, 250, voucher_sig(c, session, cid, 250)))
    assert balance(c, provider) == start + 250
    send(c.w3, provider, c.escrow.functions.settle(cid, 250, b""))  # no new voucher: no signature
    assert balance(c, provider) == start + 250
    assert balance(c, c.escrow.address) == 0


def test_renter_signed_voucher_is_accepted(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    cid, _ = open_channel(c, renter, provider)
    send(c.w3, provider, c.escrow.functions.redeem(cid, 7, voucher_sig(c, renter, cid, 7)))
    assert c.escrow.functions.channels(cid).call()[5] == 7


def test_top_up_raises_the_deposit(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    cid, session = open_channel(c, renter, provider, 1 * USD)
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, 2 * USD))
    send(c.w3, renter, c.escrow.functions.topUp(cid, 2 * USD))
    assert c.escrow.functions.channels(cid).call()[4] == 3 * USD
    amount = 3 * USD
    send(
        c.w3, provider, c.escrow.functions.settle(cid, amount, voucher_sig(c, session, cid, amount))
    )


def test_request_close_then_withdraw_after_delay(contracts, accounts, deployment):
    c, renter, provider = contracts, accounts[1], accounts[2]
    start = balance(c, renter)
    cid, session = open_channel(c, renter, provider, 2 * USD)
    send(c.w3, renter, c.escrow.functions.requestClose(cid))
    ch = c.escrow.functions.channels(cid).call()
    assert ch[7] == CLOSING
    assert ch[6] >= now(c) + deployment.close_delay - 1
    # the provider may still redeem during the challenge period
    send(c.w3, provider, c.escrow.functions.redeem(cid, 500, voucher_sig(c, session, cid, 500)))
    advance(c, deployment.close_delay)
    send(c.w3, renter, c.escrow.functions.withdraw(cid))
    assert balance(c, renter) == start - 500
    assert c.escrow.functions.channels(cid).call()[7] == CLOSED_PAID


def test_open_with_permit_in_one_transaction(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    session, deposit, deadline = Account.create(), 4 * USD, now(c) + 600
    sig = permit_sig(c, renter, deposit, deadline)
    r, s, v = sig[:32], sig[32:64], sig[64]
    send(
        c.w3,
        renter,
        c.escrow.functions.openWithPermit(
            provider.address, c.token.address, deposit, session.address, deadline, v, r, s
        ),
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    assert c.escrow.functions.channels(cid).call()[4] == deposit


def test_relayed_open_for_renter_without_gas(contracts, accounts):
    """A renter with tokens but no ETH signs OpenChannel + permit; a relayer opens it and the
    relay fee goes to the channel's provider (not to whoever sent the transaction)."""
    c, provider, relayer = contracts, accounts[2], accounts[3]
    renter, session = Account.create(), Account.create()
    send(c.w3, accounts[0], c.token.functions.mint(renter.address, 10 * USD))
    deposit, fee, deadline = 5 * USD, 10_000, now(c) + 600
    open_sig = open_channel_sig(c, renter, provider, session, deposit, fee, deadline)
    permit = permit_sig(c, renter, deposit, deadline)
    relayer_before, provider_before = balance(c, relayer), balance(c, provider)
    send(
        c.w3,
        relayer,
        c.escrow.functions.openFor(
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
        ),
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    assert c.escrow.functions.channels(cid).call()[4] == deposit - fee
    assert balance(c, relayer) == relayer_before
    assert balance(c, provider) == provider_before + fee
    assert c.w3.eth.get_balance(renter.address) == 0


def test_attest_once_after_paid_settle(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    cid, session = open_channel(c, renter, provider)
    send(c.w3, provider, c.escrow.functions.settle(cid, 10, voucher_sig(c, session, cid, 10)))
    receipt = send(c.w3, renter, c.escrow.functions.attest(cid, 90, 6_543_21))
    (event,) = c.escrow.events.Attested().process_receipt(receipt)
    assert event["args"]["provider"] == provider.address
    assert event["args"]["paid"] == 10
    assert event["args"]["score"] == 90
    assert c.escrow.functions.channels(cid).call()[7] == ATTESTED


def test_contract_digest_matches_python_builder(contracts, accounts):
    c = contracts
    cid = eip712.channel_id_for(accounts[1].address, accounts[2].address)
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    ours = _hash_eip191_message(
        encode_typed_data(full_message=eip712.voucher(escrow_domain(c), cid, 42))
    )
    assert c.escrow.functions.voucher_digest(cid, 42).call() == ours
