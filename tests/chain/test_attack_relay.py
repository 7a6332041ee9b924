"""Relayed openings: the fee is bounded and goes to the provider; the signed OpenChannel names
who pays; a zero renter or student is refused (issue 17, items 5, 6, 11).

Before: openFromPoolFor paid any signed relay fee below the deposit to msg.sender, so a student
signed a fee of cap - 1, relayed it from a second wallet and cashed the grant; a relayer could
submit a pool opening as a wallet-paid openFor (draining the renter's allowance) or on another
pool; and openFor(renter=0x0, open_sig=b"") passed the signature check."""

from __future__ import annotations

import pytest
from chain_helpers import USD, balance, now, open_channel_sig, reverts
from eth_account import Account
from pool_helpers import ZERO, create_pool, grant_args

from jupyter_gpumarket.chain.client import send, send_value
from jupyter_gpumarket.core import eip712

NO_PERMIT = (0, b"\0" * 32, b"\0" * 32)


def greedy_sig(c, renter, provider, session, deposit, fee, deadline, pool_id=bytes(32)) -> bytes:
    """An OpenChannel with a fee the Python builder refuses (an attacker signs it anyway)."""
    typed = eip712.open_channel(
        eip712.Domain(c.w3.eth.chain_id, c.escrow.address),
        renter=renter.address,
        provider=provider.address,
        token=c.token.address,
        deposit=deposit,
        session_key=session.address,
        relay_fee=0,
        deadline=deadline,
        pool_id=pool_id,
    )
    typed["message"]["relayFee"] = fee
    return eip712.sign_typed_data(renter.key, typed)


NOT_SIGNED = "OpenChannel not signed by the renter"


def _pool_for(c, sender, grant, provider, deposit, session, fee, deadline, sig):
    send(
        c.w3,
        sender,
        c.escrow.functions.openFromPoolFor(*grant, provider, deposit, session, fee, deadline, sig),
    )


def _open_for(c, sender, renter, provider, deposit, session, fee, deadline, sig):
    send(
        c.w3,
        sender,
        c.escrow.functions.openFor(
            renter, provider, c.token.address, deposit, session, fee, deadline, sig, *NO_PERMIT
        ),
    )


@pytest.fixture
def course(any_chain, accounts):
    """A pool of 10 USD and a 5 USD grant for a student without tokens or gas, for provider 2."""
    c, admin, provider = any_chain, accounts[4], accounts[2]
    student = Account.create()
    pool_id = create_pool(c, admin, 10 * USD)
    grant = grant_args(c, admin, pool_id, student.address, 5 * USD, now(c) + 3600, provider.address)
    return c, pool_id, grant, student, provider


def test_a_student_cannot_take_the_grant_as_a_relay_fee(course, accounts):
    c, pool_id, grant, student, provider = course
    accomplice = accounts[3]  # the student's second wallet, with gas
    cap, deadline = 5 * USD, now(c) + 600
    for fee in (cap - 1, cap // 10 + 1):
        session = Account.create()
        sig = greedy_sig(c, student, provider, session, cap, fee, deadline, pool_id)
        with reverts("relay fee above a tenth of the deposit"):
            _pool_for(
                c, accomplice, grant, provider.address, cap, session.address, fee, deadline, sig
            )
    # the largest fee the escrow takes goes to the provider, whoever relays
    session, fee = Account.create(), cap // 10
    sig = open_channel_sig(c, student, provider, session, cap, fee, deadline, pool_id)
    accomplice_before, provider_before = balance(c, accomplice), balance(c, provider)
    _pool_for(c, accomplice, grant, provider.address, cap, session.address, fee, deadline, sig)
    assert balance(c, accomplice) == accomplice_before
    assert balance(c, provider) == provider_before + fee


def test_a_front_run_relayed_opening_still_pays_the_provider(any_chain, accounts):
    c, renter, provider, front_runner = any_chain, accounts[1], accounts[2], accounts[3]
    session, deposit, fee, deadline = Account.create(), 2 * USD, 20_000, now(c) + 600
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, deposit))
    sig = open_channel_sig(c, renter, provider, session, deposit, fee, deadline)
    # seen in the mempool, submitted first by someone else than the provider
    runner_before, provider_before = balance(c, front_runner), balance(c, provider)
    _open_for(
        c,
        front_runner,
        renter.address,
        provider.address,
        deposit,
        session.address,
        fee,
        deadline,
        sig,
    )
    assert balance(c, front_runner) == runner_before
    assert balance(c, provider) == provider_before + fee
    for too_much in (deposit - 1, deposit // 10 + 1):  # and a renter's fee is bounded too
        session = Account.create()
        sig = greedy_sig(c, renter, provider, session, deposit, too_much, deadline)
        with reverts("relay fee above a tenth of the deposit"):
            _open_for(
                c,
                provider,
                renter.address,
                provider.address,
                deposit,
                session.address,
                too_much,
                deadline,
                sig,
            )


def test_a_pool_opening_cannot_be_paid_by_the_wallet_or_another_pool(course, accounts):
    c, pool_id, grant, student, provider = course
    relayer, admin2 = accounts[3], accounts[1]
    # the student also holds tokens and once approved the escrow (an allowance to drain) ...
    send(c.w3, accounts[0], c.token.functions.mint(student.address, 5 * USD))
    send_value(c.w3, accounts[0], student.address, 10**17)
    send(c.w3, student, c.token.functions.approve(c.escrow.address, 5 * USD))
    # ... and has a grant in a second course whose pool holds the same token
    pool2 = create_pool(c, admin2, 10 * USD)
    grant2 = grant_args(c, admin2, pool2, student.address, 5 * USD, now(c) + 3600, provider.address)
    session, deposit, fee, deadline = Account.create(), 2 * USD, 0, now(c) + 600
    sig = open_channel_sig(c, student, provider, session, deposit, fee, deadline, pool_id)
    with reverts(NOT_SIGNED):  # as a wallet-paid opening
        _open_for(
            c,
            relayer,
            student.address,
            provider.address,
            deposit,
            session.address,
            fee,
            deadline,
            sig,
        )
    with reverts(NOT_SIGNED):  # paid by the other course's pool
        _pool_for(
            c, relayer, grant2, provider.address, deposit, session.address, fee, deadline, sig
        )
    # a wallet-paid opening cannot be charged to a pool either
    wallet_sig = open_channel_sig(c, student, provider, session, deposit, fee, deadline)
    with reverts(NOT_SIGNED):
        _pool_for(
            c, relayer, grant, provider.address, deposit, session.address, fee, deadline, wallet_sig
        )
    # the opening as signed works, paid by the pool it names
    _pool_for(c, relayer, grant, provider.address, deposit, session.address, fee, deadline, sig)
    assert c.escrow.functions.pools(pool_id).call()[2] == 8 * USD
    assert c.escrow.functions.pools(pool2).call()[2] == 10 * USD
    assert balance(c, student) == 5 * USD


def test_a_zero_renter_or_student_is_refused(any_chain, accounts):
    c, relayer, provider, admin = any_chain, accounts[3], accounts[2], accounts[4]
    session, deadline = Account.create(), now(c) + 600
    with reverts("renter is the zero address"):
        _open_for(c, relayer, ZERO, provider.address, USD, session.address, 0, deadline, b"")
    # an admin's grant to the zero address (a mistake) cannot be opened by anyone with b""
    pool_id = create_pool(c, admin, 10 * USD)
    grant = grant_args(c, admin, pool_id, ZERO, 5 * USD, now(c) + 3600)
    with reverts("renter is the zero address"):
        _pool_for(c, relayer, grant, relayer.address, 5 * USD, session.address, 0, deadline, b"")
    cid = eip712.channel_id_for(ZERO, session.address)
    assert c.escrow.functions.channels(cid).call()[7] == 0
