"""Everything a dishonest renter, provider, student or stranger might try is refused on chain
with a clear revert reason."""

from __future__ import annotations

import pytest
from chain_helpers import (
    USD,
    advance,
    escrow_domain,
    now,
    open_channel,
    open_channel_sig,
    permit_sig,
    reverts,
    voucher_sig,
)
from eth_account import Account
from pool_helpers import create_pool, grant_args

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.deploy import deploy_all
from jupyter_gpumarket.core import eip712

NOT_SIGNED = "voucher not signed by the channel's session key or renter"


@pytest.fixture
def channel(contracts, accounts):
    cid, session = open_channel(contracts, accounts[1], accounts[2], 5 * USD)
    return contracts, cid, session, accounts[1], accounts[2]


def _redeem(c, provider, cid, amount, sig):
    send(c.w3, provider, c.escrow.functions.redeem(cid, amount, sig))


def test_forged_signature(channel):
    c, cid, _, _, provider = channel
    with reverts(NOT_SIGNED):
        _redeem(c, provider, cid, 100, voucher_sig(c, Account.create(), cid, 100))


def test_garbage_signature(channel):
    c, cid, _, _, provider = channel
    with reverts("ecdsa: invalid signature"):
        _redeem(c, provider, cid, 100, b"\x01" * 32 + b"\xff" * 32 + b"\x1b")


def test_voucher_for_another_channel(channel, accounts):
    c, cid, session, renter, provider = channel
    other, _ = open_channel(c, renter, provider, 1 * USD)
    with reverts(NOT_SIGNED):
        _redeem(c, provider, cid, 100, voucher_sig(c, session, other, 100))


@pytest.mark.parametrize("field", ["verifying_contract", "chain_id"])
def test_voucher_for_another_escrow_or_chain(channel, field):
    c, cid, session, _, provider = channel
    domain = escrow_domain(c)
    wrong = eip712.Domain(
        chain_id=domain.chain_id + 1 if field == "chain_id" else domain.chain_id,
        verifying_contract=c.token.address
        if field == "verifying_contract"
        else domain.verifying_contract,
    )
    sig = eip712.sign_typed_data(session.key, eip712.voucher(wrong, cid, 100))
    with reverts(NOT_SIGNED):
        _redeem(c, provider, cid, 100, sig)


def test_voucher_valid_on_one_escrow_is_refused_by_a_second_deployment(channel, accounts):
    c, cid, session, _, provider = channel
    second = deploy_all(c.w3, accounts[0], 60)
    sig = eip712.sign_typed_data(
        session.key, eip712.voucher(eip712.Domain(c.w3.eth.chain_id, second.escrow), cid, 100)
    )
    with reverts(NOT_SIGNED):
        _redeem(c, provider, cid, 100, sig)


def test_amount_above_deposit(channel):
    c, cid, session, _, provider = channel
    with reverts("voucher amount above the deposit"):
        _redeem(c, provider, cid, 5 * USD + 1, voucher_sig(c, session, cid, 5 * USD + 1))


def test_decreasing_amount(channel):
    c, cid, session, _, provider = channel
    _redeem(c, provider, cid, 300, voucher_sig(c, session, cid, 300))
    with reverts("not above what was already redeemed"):
        _redeem(c, provider, cid, 200, voucher_sig(c, session, cid, 200))
    with reverts("not above what was already redeemed"):
        _redeem(c, provider, cid, 300, voucher_sig(c, session, cid, 300))
    with reverts("below what was already redeemed"):
        send(c.w3, provider, c.escrow.functions.settle(cid, 200, voucher_sig(c, session, cid, 200)))


@pytest.mark.parametrize("who", [1, 3])
def test_redeem_or_settle_by_non_provider(channel, accounts, who):
    c, cid, session, _, _ = channel
    sig = voucher_sig(c, session, cid, 100)
    with reverts("only the channel's provider can redeem"):
        _redeem(c, accounts[who], cid, 100, sig)
    with reverts("only the channel's provider can settle"):
        send(c.w3, accounts[who], c.escrow.functions.settle(cid, 100, sig))


def test_withdraw_before_request_and_before_delay(channel, deployment):
    c, cid, _, renter, _ = channel
    with reverts("call requestClose first"):
        send(c.w3, renter, c.escrow.functions.withdraw(cid))
    send(c.w3, renter, c.escrow.functions.requestClose(cid))
    advance(c, deployment.close_delay - 30)
    with reverts("close delay not over"):
        send(c.w3, renter, c.escrow.functions.withdraw(cid))


def test_renter_only_operations_refuse_strangers(channel, accounts):
    c, cid, _, _, provider = channel
    stranger = accounts[3]
    for fn, reason in [
        (c.escrow.functions.requestClose(cid), "only the channel's renter can request close"),
        (c.escrow.functions.topUp(cid, 1), "only the channel's renter can top up"),
    ]:
        with reverts(reason):
            send(c.w3, stranger, fn)
    with reverts("only the channel's renter can request close"):
        send(c.w3, provider, c.escrow.functions.requestClose(cid))


def test_double_withdraw(channel, deployment):
    c, cid, _, renter, _ = channel
    send(c.w3, renter, c.escrow.functions.requestClose(cid))
    advance(c, deployment.close_delay)
    send(c.w3, renter, c.escrow.functions.withdraw(cid))
    with reverts("channel is closed"):
        send(c.w3, renter, c.escrow.functions.withdraw(cid))


def test_operations_on_a_settled_channel(channel):
    c, cid, session, renter, provider = channel
    sig = voucher_sig(c, session, cid, 100)
    send(c.w3, provider, c.escrow.functions.settle(cid, 100, sig))
    with reverts("channel is closed"):
        send(c.w3, provider, c.escrow.functions.settle(cid, 100, sig))
    with reverts("channel is closed"):
        _redeem(c, provider, cid, 200, voucher_sig(c, session, cid, 200))
    for fn in (
        c.escrow.functions.topUp(cid, 1),
        c.escrow.functions.requestClose(cid),
        c.escrow.functions.withdraw(cid),
    ):
        with reverts("channel is closed"):
            send(c.w3, renter, fn)


def test_reopening_a_closed_channel_id_is_refused(channel):
    c, cid, session, renter, provider = channel
    send(c.w3, provider, c.escrow.functions.settle(cid, 0, b""))
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, 1))
    with reverts("use a fresh session key"):
        send(
            c.w3,
            renter,
            c.escrow.functions.open(provider.address, c.token.address, 1, session.address),
        )


def test_attest_rules(channel, accounts):
    c, cid, session, renter, provider = channel
    with reverts("attest needs a closed channel with a payment"):
        send(c.w3, renter, c.escrow.functions.attest(cid, 50, 0))
    send(c.w3, provider, c.escrow.functions.settle(cid, 100, voucher_sig(c, session, cid, 100)))
    with reverts("only the channel's renter can attest"):
        send(c.w3, provider, c.escrow.functions.attest(cid, 100, 0))
    send(c.w3, renter, c.escrow.functions.attest(cid, 50, 0))
    with reverts("attest needs a closed channel with a payment, once"):
        send(c.w3, renter, c.escrow.functions.attest(cid, 50, 0))
    unpaid, _ = open_channel(c, renter, provider, 1)
    send(c.w3, provider, c.escrow.functions.settle(unpaid, 0, b""))
    with reverts("attest needs a closed channel with a payment"):
        send(c.w3, renter, c.escrow.functions.attest(unpaid, 50, 0))


def _open_for_args(c, renter, provider, session, deposit, deadline, fee=1000):
    sig = open_channel_sig(c, renter, provider, session, deposit, fee, deadline)
    return (
        renter.address,
        provider.address,
        c.token.address,
        deposit,
        session.address,
        fee,
        deadline,
        sig,
        0,
        b"\x00" * 32,
        b"\x00" * 32,
    )


def test_replayed_open_channel_signature(contracts, accounts):
    c, renter, provider, relayer = contracts, accounts[1], accounts[2], accounts[3]
    session = Account.create()
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, 10 * USD))
    args = _open_for_args(c, renter, provider, session, 2 * USD, now(c) + 600)
    send(c.w3, relayer, c.escrow.functions.openFor(*args))
    with reverts("OpenChannel signatures are single-use"):
        send(c.w3, relayer, c.escrow.functions.openFor(*args))
    # The same signature replayed after the channel closed: still refused.
    cid = eip712.channel_id_for(renter.address, session.address)
    send(c.w3, provider, c.escrow.functions.settle(cid, 0, b""))
    with reverts("OpenChannel signatures are single-use"):
        send(c.w3, relayer, c.escrow.functions.openFor(*args))
    # A signature over another nonce than the session key's is not the renter's OpenChannel.
    other = Account.create()
    forged = list(_open_for_args(c, renter, provider, other, 2 * USD, now(c) + 600))
    typed = eip712.open_channel(
        escrow_domain(c),
        renter=renter.address,
        provider=provider.address,
        token=c.token.address,
        deposit=2 * USD,
        session_key=other.address,
        relay_fee=1000,
        deadline=forged[6],
    )
    typed["message"]["nonce"] = 7
    forged[7] = eip712.sign_typed_data(renter.key, typed)
    with reverts("OpenChannel not signed by the renter"):
        send(c.w3, relayer, c.escrow.functions.openFor(*forged))
    expired = _open_for_args(c, renter, provider, Account.create(), 2 * USD, now(c) - 1)
    with reverts("OpenChannel signature expired"):
        send(c.w3, relayer, c.escrow.functions.openFor(*expired))


def test_permit_with_wrong_or_expired_deadline(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    deadline = now(c) + 600
    sig = permit_sig(c, renter, USD, deadline)
    session = Account.create().address
    with reverts("permit failed and the allowance is below the deposit"):
        send(
            c.w3,
            renter,
            c.escrow.functions.openWithPermit(
                provider.address,
                c.token.address,
                USD,
                session,
                deadline + 1,
                sig[64],
                sig[:32],
                sig[32:64],
            ),
        )
    advance(c, 601)
    with reverts("permit failed and the allowance is below the deposit"):
        send(
            c.w3,
            renter,
            c.escrow.functions.openWithPermit(
                provider.address,
                c.token.address,
                USD,
                session,
                deadline,
                sig[64],
                sig[:32],
                sig[32:64],
            ),
        )


def _pool_open(c, caller, grant, provider, deposit):
    send(
        c.w3,
        caller,
        c.escrow.functions.openFromPool(
            *grant, provider.address, deposit, Account.create().address
        ),
    )


def test_grant_over_cap_expired_other_student_other_provider(contracts, accounts):
    c, provider, admin, student, other = (
        contracts,
        accounts[2],
        accounts[4],
        accounts[5],
        accounts[6],
    )
    pool_id = create_pool(c, admin, 20 * USD)
    expiry = now(c) + 3600
    grant = grant_args(c, admin, pool_id, student.address, 3 * USD, expiry, provider.address)
    _pool_open(c, student, grant, provider, 2 * USD)
    with reverts("grant cap exceeded"):
        _pool_open(c, student, grant, provider, 1 * USD + 1)
    with reverts("grant is for another student"):  # replay by someone else
        _pool_open(c, other, grant, provider, 1 * USD)
    stolen = (grant[0], other.address, *grant[2:])  # claim the student's grant as one's own
    with reverts("grant not signed by the pool admin"):
        _pool_open(c, other, stolen, provider, 1 * USD)
    with reverts("grant is for another provider"):
        _pool_open(c, student, grant, accounts[3], 1 * USD)
    forged = grant_args(c, other, pool_id, other.address, 3 * USD, expiry)
    with reverts("grant not signed by the pool admin"):
        _pool_open(c, other, forged, provider, 1 * USD)
    advance(c, 3601)
    with reverts("grant expired"):
        _pool_open(c, student, grant, provider, 1 * USD)


def test_pool_withdraw_by_non_admin_and_above_balance(contracts, accounts):
    c, admin = contracts, accounts[4]
    pool_id = create_pool(c, admin, 2 * USD)
    with reverts("only the pool admin can withdraw"):
        send(c.w3, accounts[1], c.escrow.functions.withdrawPool(pool_id, 1))
    with reverts("above the pool's free balance"):
        send(c.w3, admin, c.escrow.functions.withdrawPool(pool_id, 2 * USD + 1))
