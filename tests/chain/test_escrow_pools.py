"""Credit pools: an educator funds a pool, students open channels under signed grants."""

from __future__ import annotations

from chain_helpers import USD, balance, now, open_channel_sig, voucher_sig
from eth_account import Account
from pool_helpers import create_pool, grant_args

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712


def test_student_opens_from_pool_and_refund_returns_to_pool(contracts, accounts):
    c, provider, admin, student = contracts, accounts[2], accounts[4], accounts[5]
    pool_id = create_pool(c, admin, 20 * USD)
    grant = grant_args(c, admin, pool_id, student.address, 8 * USD, now(c) + 3600)
    session = Account.create()
    send(
        c.w3,
        student,
        c.escrow.functions.openFromPool(*grant, provider.address, 5 * USD, session.address),
    )
    cid = eip712.channel_id_for(student.address, session.address)
    assert c.escrow.functions.channels(cid).call()[8] == pool_id
    assert c.escrow.functions.pools(pool_id).call()[2] == 15 * USD
    ghash = eip712.grant_hash(
        pool_id=pool_id, student=student.address, cap=8 * USD, expiry=grant[3], provider=grant[4]
    )
    assert c.escrow.functions.grant_spent(ghash).call() == 5 * USD
    before = balance(c, provider)
    send(
        c.w3,
        provider,
        c.escrow.functions.settle(cid, 2 * USD, voucher_sig(c, session, cid, 2 * USD)),
    )
    assert balance(c, provider) == before + 2 * USD
    assert c.escrow.functions.pools(pool_id).call()[2] == 18 * USD  # 3 USD refunded to the pool
    assert c.escrow.functions.grant_spent(ghash).call() == 2 * USD
    assert balance(c, student) == 0


def test_gasless_student_opens_through_a_relayer(contracts, accounts):
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    student, session = Account.create(), Account.create()  # no tokens, no gas
    pool_id = create_pool(c, admin, 10 * USD)
    grant = grant_args(c, admin, pool_id, student.address, 5 * USD, now(c) + 3600, provider.address)
    deposit, fee, deadline = 4 * USD, 5_000, now(c) + 600
    open_sig = open_channel_sig(c, student, provider, session, deposit, fee, deadline, pool_id)
    before, provider_before = balance(c, relayer), balance(c, provider)
    send(
        c.w3,
        relayer,
        c.escrow.functions.openFromPoolFor(
            *grant, provider.address, deposit, session.address, fee, deadline, open_sig
        ),
    )
    cid = eip712.channel_id_for(student.address, session.address)
    assert c.escrow.functions.channels(cid).call()[4] == deposit - fee
    assert balance(c, relayer) == before  # the fee goes to the provider, not the sender
    assert balance(c, provider) == provider_before + fee
    assert c.w3.eth.get_balance(student.address) == 0


def test_fund_and_withdraw_pool(contracts, accounts):
    c, admin, funder = contracts, accounts[4], accounts[1]
    pool_id = create_pool(c, admin, 1 * USD)
    send(c.w3, funder, c.token.functions.approve(c.escrow.address, 2 * USD))
    send(c.w3, funder, c.escrow.functions.fundPool(pool_id, 2 * USD))
    before = balance(c, admin)
    send(c.w3, admin, c.escrow.functions.withdrawPool(pool_id, 3 * USD))
    assert balance(c, admin) == before + 3 * USD
    assert c.escrow.functions.pools(pool_id).call() == [admin.address, c.token.address, 0] or tuple(
        c.escrow.functions.pools(pool_id).call()
    ) == (admin.address, c.token.address, 0)
