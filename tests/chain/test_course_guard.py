"""The provider's course rules against real contracts: a pool lease outside the course's
window, after revocation, or at a provider private to another course is refused."""

from __future__ import annotations

from chain_helpers import USD, escrow_domain, now, open_channel
from eth_account import Account
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.agent.course_guard import CourseGuard
from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.escrow import EscrowClient
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import relay_request, submit_relay_request
from jupyter_gpumarket.core.claim_code import issue_claim_code

# 2026-11-30 is a Monday: 09:30 UTC is inside "Mon 10:00-12:00 Europe/Berlin" (UTC+1)
MONDAY_1030_BERLIN = 1_796_031_000
TUESDAY = MONDAY_1030_BERLIN + 86_400


def _pool_lease(c, admin, provider, window: str):
    pool_id = create_pool(c, admin, 5 * USD)
    send(c.w3, admin, c.escrow.functions.setPoolTerms(pool_id, '{"window":"' + window + '"}'))
    code = issue_claim_code(
        admin.key, escrow_domain(c), pool_id=pool_id, cap=USD, expiry=now(c) + 3600, provider=ZERO
    )
    student = Account.create()
    ticket = code.ticket_for(student.address)
    chain = LeaseChain(c)
    req = relay_request(
        chain, student, provider=provider.address, deposit=USD, relay_fee=1000,
        session_key=Account.create(), grant=ticket,
    )  # fmt: skip
    cid, _ = submit_relay_request(chain, provider, req)
    return pool_id, code, ticket, EscrowClient(c).channel(cid)


def test_window_revocation_and_private_pool(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    pool_id, code, ticket, info = _pool_lease(c, admin, provider, "Mon 10:00-12:00 Europe/Berlin")
    guard = CourseGuard(LeaseChain(c))
    assert guard.refusal(info, now=MONDAY_1030_BERLIN) == ""
    assert "outside the course's time window" in guard.refusal(info, now=TUESDAY)
    # a wallet-paid lease has no course rules ...
    cid, _ = open_channel(c, accounts[1], provider, USD)
    wallet_paid = EscrowClient(c).channel(cid)
    assert guard.refusal(wallet_paid, now=TUESDAY) == ""
    # ... except at a provider private to a course
    private = CourseGuard(LeaseChain(c), course_pool=b"\x01" * 32)
    assert "serves only course pool" in private.refusal(wallet_paid)
    assert "serves only course pool" in private.refusal(info)
    assert "serves only course pool" in (private.relay_refusal(ticket.encode()) or "")
    assert "serves only course pool" in (private.relay_refusal("") or "")
    own = CourseGuard(LeaseChain(c), course_pool=pool_id)
    assert own.refusal(info, now=MONDAY_1030_BERLIN) == ""
    # revoked: refused even inside the window
    send(c.w3, admin, c.escrow.functions.revokeGrant(pool_id, code.grant_hash))
    assert "revoked" in guard.refusal(info, now=MONDAY_1030_BERLIN)


def test_relay_refusal_outside_the_window(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    _pool_id, _code, ticket, _info = _pool_lease(c, admin, provider, "")
    guard = CourseGuard(LeaseChain(c))
    assert guard.relay_refusal(ticket.encode()) is None
    assert guard.relay_refusal("") is None
    closed = "Mon 00:00-00:01 UTC"
    _p, _c, late, _i = _pool_lease(c, admin, provider, closed)
    reason = guard.relay_refusal(late.encode())
    if reason is not None:  # None only in the one minute a week this window is open
        assert "outside the course's time window" in reason
