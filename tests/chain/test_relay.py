"""Gasless and pool-paid openings through chain.relay on a real anvil."""

from __future__ import annotations

import dataclasses

import pytest
from chain_helpers import USD, balance, escrow_domain, now
from eth_account import Account
from pool_helpers import create_pool

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import (
    grant_room,
    has_gas_for_open,
    open_from_pool,
    relay_request,
    submit_relay_request,
)
from jupyter_gpumarket.core.grant_code import issue_grant
from jupyter_gpumarket.exceptions import ConfigError, TransactionReverted


def _tokens_no_gas(c, faucet, amount: int):
    renter = Account.create()
    send(c.w3, faucet, c.token.functions.mint(renter.address, amount))
    return renter


def test_a_renter_without_gas_gets_a_channel_and_the_provider_the_fee(contracts, accounts):
    c, relayer, provider = contracts, accounts[3], accounts[2]
    chain = LeaseChain(c)
    renter = _tokens_no_gas(c, accounts[0], 10 * USD)
    assert not has_gas_for_open(chain, renter.address)
    assert has_gas_for_open(chain, relayer.address)
    session = Account.create()
    req = relay_request(
        chain,
        renter,
        provider=provider.address,
        deposit=2 * USD,
        relay_fee=10_000,
        session_key=session,
    )
    fee_before, relayer_before = balance(c, provider), balance(c, relayer)
    cid, tx = submit_relay_request(chain, relayer, req)
    info = chain.channel(cid)
    assert (info.state, info.renter, info.provider) == ("open", renter.address, provider.address)
    assert info.deposit == 2 * USD - 10_000
    assert balance(c, provider) == fee_before + 10_000  # the fee is the provider's
    assert balance(c, relayer) == relayer_before
    assert balance(c, renter) == 8 * USD
    assert c.w3.eth.get_balance(renter.address) == 0
    assert tx.gas_used > 0
    # the same request again: refused (its permit is used up) before any gas is spent
    nonce = c.w3.eth.get_transaction_count(relayer.address)
    with pytest.raises(TransactionReverted, match="permit failed"):
        submit_relay_request(chain, relayer, req)
    assert c.w3.eth.get_transaction_count(relayer.address) == nonce


def test_a_tampered_request_reverts_without_costing_the_relayer(contracts, accounts):
    c, relayer, provider = contracts, accounts[3], accounts[2]
    chain = LeaseChain(c)
    renter = _tokens_no_gas(c, accounts[0], 10 * USD)
    req = relay_request(
        chain,
        renter,
        provider=provider.address,
        deposit=2 * USD,
        relay_fee=10_000,
        session_key=Account.create(),
    )
    eth_before = c.w3.eth.get_balance(relayer.address)
    for change in ({"relay_fee": 20_000}, {"provider": relayer.address}):
        with pytest.raises(TransactionReverted, match="not signed by the renter"):
            submit_relay_request(chain, relayer, dataclasses.replace(req, **change))
    assert c.w3.eth.get_balance(relayer.address) == eth_before
    assert balance(c, renter) == 10 * USD


def test_a_student_with_nothing_opens_from_the_pool_through_a_relayer(contracts, accounts):
    c, admin, provider, relayer = contracts, accounts[4], accounts[2], accounts[3]
    chain = LeaseChain(c)
    pool_id = create_pool(c, admin, 20 * USD)
    student = Account.create()
    grant = issue_grant(
        admin.key, escrow_domain(c), pool_id=pool_id, student=student.address, cap=3 * USD,
        expiry=now(c) + 3600,
    )  # fmt: skip
    assert grant_room(chain, grant) == 3 * USD
    req = relay_request(
        chain,
        student,
        provider=provider.address,
        deposit=2 * USD,
        relay_fee=5_000,
        session_key=Account.create(),
        grant=grant,
    )
    assert req.permit == ""
    assert req.token == c.token.address
    cid, _ = submit_relay_request(chain, relayer, req)
    assert chain.channel(cid).deposit == 2 * USD - 5_000
    assert grant_room(chain, grant) == 1 * USD
    assert (balance(c, student), c.w3.eth.get_balance(student.address)) == (0, 0)
    # a student holding gas opens from the pool itself; over the cap is refused on chain
    c.w3.provider.make_request("anvil_setBalance", [student.address, hex(10**18)])
    open_from_pool(
        chain, student, grant=grant, provider=provider.address, deposit=USD,
        session_key=Account.create(),
    )  # fmt: skip
    assert grant_room(chain, grant) == 0
    with pytest.raises(TransactionReverted, match="cap"):
        open_from_pool(
            chain, student, grant=grant, provider=provider.address, deposit=1,
            session_key=Account.create(),
        )  # fmt: skip


def test_a_grant_for_someone_else_fails_before_any_signature(contracts, accounts):
    c, admin = contracts, accounts[4]
    chain = LeaseChain(c)
    pool_id = create_pool(c, admin, 5 * USD)
    grant = issue_grant(
        admin.key, escrow_domain(c), pool_id=pool_id, student=Account.create().address,
        cap=USD, expiry=now(c) + 3600,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="for wallet"):
        relay_request(
            chain, Account.create(), provider=accounts[2].address, deposit=USD, relay_fee=1,
            session_key=Account.create(), grant=grant,
        )  # fmt: skip
