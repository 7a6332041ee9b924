"""The provider's course limits against real contracts: a pool lease whose grant expired is
stopped; an offer outside the course's published terms (GPU class, price ceiling, providers)
is refused at the hello and at the relayed opening; a settled pool lease is not rated from the
student's gasless wallet."""

from __future__ import annotations

import json

import pytest
from chain_helpers import USD, escrow_domain, now, voucher_sig
from eth_account import Account
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.agent.course_guard import CourseGuard
from jupyter_gpumarket.chain.claims import channel_grant_expiry
from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.escrow import EscrowClient
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import relay_request, submit_relay_request
from jupyter_gpumarket.core.claim_code import issue_claim_code
from jupyter_gpumarket.market.attest import Rating, attest_when_settled

PRICE = 3_600_000


def _pool_lease(c, admin, provider, terms: dict | None = None, ttl: int = 3600):
    pool_id = create_pool(c, admin, 5 * USD)
    if terms is not None:
        send(c.w3, admin, c.escrow.functions.setPoolTerms(pool_id, json.dumps(terms)))
    expiry = now(c) + ttl
    code = issue_claim_code(
        admin.key, escrow_domain(c), pool_id=pool_id, cap=USD, expiry=expiry, provider=ZERO
    )
    student, key = Account.create(), Account.create()
    ticket = code.ticket_for(student.address)
    chain = LeaseChain(c)
    req = relay_request(
        chain, student, provider=provider.address, deposit=USD, relay_fee=1000,
        session_key=key, grant=ticket,
    )  # fmt: skip
    cid, _ = submit_relay_request(chain, provider, req)
    return expiry, ticket, EscrowClient(c).channel(cid), student, key


def _guard(c, provider, gpu_model: str = "NVIDIA A100-SXM4-80GB") -> CourseGuard:
    return CourseGuard(
        LeaseChain(c), provider=provider.address, price_per_hour=PRICE, gpu_model=gpu_model
    )


def test_an_expired_grant_stops_its_lease(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    expiry, _ticket, info, _s, _k = _pool_lease(c, admin, provider)
    assert channel_grant_expiry(LeaseChain(c), info.channel_id) == expiry
    guard = _guard(c, provider)
    assert guard.refusal(info, now=expiry) == ""
    reason = guard.refusal(info, now=expiry + 1)
    assert "the course credit expired" in reason
    assert "ask your course's educator" in reason


@pytest.mark.parametrize(
    ("terms", "refused"),
    [
        ({"gpu": "H100"}, "not the course's class H100"),
        ({"max_price": PRICE - 1}, "above the course's ceiling"),
        ({"providers": ["0x" + "11" * 20]}, "not one of the course's providers"),
        ({"gpu": "a100", "max_price": PRICE, "providers": []}, ""),
    ],
)
def test_an_offer_outside_the_course_terms_is_refused(contracts, accounts, terms, refused):
    c, provider, admin = contracts, accounts[2], accounts[4]
    _e, ticket, info, _s, _k = _pool_lease(c, admin, provider, terms)
    guard = _guard(c, provider)
    at_hello, at_relay = guard.refusal(info), guard.relay_refusal(ticket.encode())
    if refused:
        assert refused in at_hello
        assert refused in (at_relay or "")
        assert "the course does not pay for this offer" in at_hello
    else:
        assert at_hello == ""
        assert at_relay is None


def test_a_listed_provider_passes_and_a_cpu_offer_fails_a_gpu_class(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    terms = {"gpu": "A100", "providers": [provider.address.lower()]}
    _e, _ticket, info, _s, _k = _pool_lease(c, admin, provider, terms)
    assert _guard(c, provider).refusal(info) == ""
    assert "not the course's class A100" in _guard(c, provider, "CPU").refusal(info)


def test_a_settled_pool_lease_is_not_rated_from_the_students_wallet(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    _e, _t, info, student, key = _pool_lease(c, admin, provider)
    escrow = EscrowClient(c)
    cid = info.channel_id
    escrow.settle(provider, cid, 5000, voucher_sig(c, key, cid, 5000))
    assert escrow.channel(cid).state == "closed-paid"
    assert c.w3.eth.get_balance(student.address) == 0
    what = attest_when_settled(escrow, student, cid, Rating(100, 0), wait_s=5, poll_s=0.1)
    assert what.startswith("not rated: a course pool paid it"), what
    assert c.w3.eth.get_transaction_count(student.address) == 0
