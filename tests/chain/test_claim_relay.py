"""Course codes through the relay path a provider runs, and the off-chain claim checks
against the escrow: each refusal off chain is a revert on chain, and vice versa."""

from __future__ import annotations

import pytest
from chain_helpers import USD, advance, escrow_domain, now
from eth_account import Account
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.chain.claims import (
    claim_grant,
    claim_refusal,
    claim_state,
    decode_grant,
    open_from_claim_tx,
    student_open_sig,
)
from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.chain.relay import grant_room, relay_request, submit_relay_request
from jupyter_gpumarket.core.claim_code import ClaimTicket, issue_claim_code
from jupyter_gpumarket.exceptions import ConfigError, PaymentError, TransactionReverted


def _code(c, admin, pool_id, cap=5 * USD, expiry=None):
    return issue_claim_code(
        admin.key,
        escrow_domain(c),
        pool_id=pool_id,
        cap=cap,
        expiry=expiry or now(c) + 3600,
        provider=ZERO,
    )


def _relay(chain, relayer, student, provider, ticket, deposit=2 * USD, fee=1000):
    req = relay_request(
        chain,
        student,
        provider=provider.address,
        deposit=deposit,
        relay_fee=fee,
        session_key=Account.create(),
        grant=ticket,
    )
    return submit_relay_request(chain, relayer, req)


def test_a_course_code_opens_through_the_relay_path_of_a_wallet_with_nothing(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    chain = LeaseChain(c)
    pool_id = create_pool(c, admin, 10 * USD)
    code = _code(c, admin, pool_id)
    student = Account.create()
    ticket = decode_grant(code.encode(), student.address)
    assert isinstance(ticket, ClaimTicket)
    assert "claim_secret" not in ticket.encode()
    assert code.claim_secret[2:] not in ticket.encode()
    assert grant_room(chain, ticket) == 5 * USD
    cid, _tx = _relay(chain, provider, student, provider, ticket)
    assert c.escrow.functions.channels(cid).call()[0] == student.address
    assert grant_room(chain, ticket) == 3 * USD
    # the code, forwarded to a second wallet: refused before any gas is spent ...
    other = Account.create()
    with pytest.raises(PaymentError, match="already redeemed by another wallet"):
        _relay(chain, provider, other, provider, decode_grant(code.encode(), other.address))
    # ... and a provider that relays it anyway is reverted
    forged = decode_grant(code.encode(), other.address)
    assert isinstance(forged, ClaimTicket)
    session, deadline = Account.create().address, now(c) + 600
    sig = student_open_sig(
        chain, other, forged, provider=provider.address, deposit=USD, session_key=session,
        relay_fee=0, deadline=deadline,
    )  # fmt: skip
    with pytest.raises(TransactionReverted, match="already redeemed"):
        send(
            c.w3,
            provider,
            c.escrow.functions.openFromClaimFor(
                *forged.grant_args(),
                bytes.fromhex(forged.claim_sig[2:]),
                other.address,
                provider.address,
                USD,
                session,
                0,
                deadline,
                sig,
            ),
        )


def test_a_ticket_for_one_wallet_cannot_be_relayed_for_another(contracts, accounts):
    """A provider holds the ticket of the first opening: it must not claim for itself."""
    c, provider, admin = contracts, accounts[2], accounts[4]
    chain = LeaseChain(c)
    code = _code(c, admin, create_pool(c, admin, 10 * USD))
    student, thief = Account.create(), Account.create()
    ticket = code.ticket_for(student.address)
    stolen = ClaimTicket(**{**ticket.__dict__, "student": thief.address})
    with pytest.raises(PaymentError, match="not signed by the code's claim key"):
        claim_grant(chain, provider, stolen)
    with pytest.raises(PaymentError, match="claim key"):
        _relay(chain, provider, thief, provider, stolen)
    with pytest.raises(TransactionReverted, match="claim not signed by the code's claim key"):
        send(
            c.w3,
            provider,
            c.escrow.functions.claimGrant(
                *stolen.grant_args(), thief.address, bytes.fromhex(stolen.claim_sig[2:])
            ),
        )
    claim_grant(chain, provider, ticket)  # the student's own ticket still claims


def _state_cases(c, admin, accounts):
    """(name, ticket, setup) for the off-chain / on-chain differential."""
    pool_id = create_pool(c, admin, 10 * USD)
    student = Account.create()
    yield "fresh", _code(c, admin, pool_id).ticket_for(student.address), None
    bound = _code(c, admin, pool_id)
    yield "bound to another", bound.ticket_for(student.address), bound
    yield "wrong admin", _code(c, accounts[1], pool_id).ticket_for(student.address), None
    yield "no such pool", _code(c, admin, b"\x09" * 32).ticket_for(student.address), None
    revoked = _code(c, admin, pool_id)
    send(c.w3, admin, c.escrow.functions.revokeGrant(pool_id, revoked.grant_hash))
    yield "revoked", revoked.ticket_for(student.address), None
    yield "expiring", _code(c, admin, pool_id, expiry=now(c) + 30).ticket_for(student.address), None


def test_off_chain_refusals_match_the_escrow(contracts, accounts):
    c, provider, admin = contracts, accounts[2], accounts[4]
    chain = LeaseChain(c)
    cases = list(_state_cases(c, admin, accounts))
    for _name, _ticket, bound in cases:
        if bound is not None:
            claim_grant(chain, provider, bound.ticket_for(Account.create().address))
    advance(c, 60)  # "expiring" is past its expiry now
    verdicts = {}
    for name, ticket, _ in cases:
        state = claim_state(chain, ticket)
        refusal = claim_refusal(ticket, state, chain_id=c.w3.eth.chain_id, escrow=c.escrow.address)
        try:
            c.escrow.functions.claimGrant(
                *ticket.grant_args(), ticket.student, bytes.fromhex(ticket.claim_sig[2:])
            ).estimate_gas({"from": provider.address})
            claims_ok = True
        except Exception:
            claims_ok = False
        verdicts[name] = (refusal, claims_ok)
    assert verdicts["fresh"] == (None, True)
    assert verdicts["bound to another"][0]
    assert not verdicts["bound to another"][1]
    assert verdicts["wrong admin"][0]
    assert not verdicts["wrong admin"][1]
    assert verdicts["no such pool"][0]
    assert not verdicts["no such pool"][1]
    # claiming binds a wallet even to a revoked or expired grant (it pays nothing then); the
    # opening is what the escrow refuses, so off chain both are refused up front
    assert "revoked" in verdicts["revoked"][0]
    assert "expired" in verdicts["expiring"][0]
    with pytest.raises(PaymentError, match="revoked"):
        open_from_claim_tx(
            chain,
            cases[4][1],
            provider=provider.address,
            deposit=USD,
            session_key=Account.create().address,
            relay_fee=0,
            deadline=now(c) + 600,
            open_sig=b"",
        )


def test_a_course_code_without_a_wallet_is_not_a_ticket():
    with pytest.raises(ConfigError, match="wallet"):
        decode_grant("gpmcode1.e30")
