"""Off-chain course-code checks accept exactly what the escrow accepts (differential, on
anvil): the claim key's Claim signature and the admin's ClaimableGrant signature, in every
malleated form and as random bytes. The contract's verdict is an ``eth_call`` of
``claimGrant``; the off-chain one is ``chain.claims.claim_refusal`` on the same ticket."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from chain_helpers import USD, escrow_domain, now
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paidclient import MALLEATIONS, malleate
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.chain.claims import claim_refusal, claim_state
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.core.claim_code import ClaimTicket, issue_claim_code
from jupyter_gpumarket.exceptions import ConfigError

FORMS = ("none", *MALLEATIONS, "compact")


def _form(sig: bytes, how: str) -> bytes:
    if how == "none":
        return sig
    if how == "compact":
        vs = int.from_bytes(sig[32:64], "big") | (sig[64] - 27) << 255
        return sig[:32] + vs.to_bytes(32, "big")
    return malleate(sig, how)


@pytest.fixture
def setup(contracts, accounts):
    c, admin = contracts, accounts[4]
    pool_id = create_pool(c, admin, 5 * USD)
    code = issue_claim_code(
        admin.key, escrow_domain(c), pool_id=pool_id, cap=USD, expiry=now(c) + 3600, provider=ZERO
    )
    student = Account.create()
    return c, code.ticket_for(student.address), accounts[3]


def _verdicts(c: Any, ticket: ClaimTicket, relayer: Any, claim_sig: bytes, admin_sig: bytes):
    args = list(ticket.grant_args())
    args[5] = admin_sig
    try:
        c.escrow.functions.claimGrant(*args, ticket.student, claim_sig).call(
            {"from": relayer.address}
        )
        onchain = True
    except Exception:  # a revert (web3 raises several types for it)
        onchain = False
    try:
        forged = ClaimTicket(
            **{
                **asdict(ticket),
                "claim_sig": "0x" + claim_sig.hex(),
                "signature": "0x" + admin_sig.hex(),
            }
        )
    except ConfigError:  # not 65 bytes: not even a ticket
        return onchain, False
    state = claim_state(LeaseChain(c), forged)
    refusal = claim_refusal(forged, state, chain_id=c.w3.eth.chain_id, escrow=c.escrow.address)
    return onchain, refusal is None


@pytest.mark.parametrize("which", ["claim", "admin"])
@pytest.mark.parametrize("how", FORMS)
def test_malleated_signatures_get_the_same_verdict(setup, how, which):
    c, ticket, relayer = setup
    claim_sig, admin_sig = bytes.fromhex(ticket.claim_sig[2:]), bytes.fromhex(ticket.signature[2:])
    if which == "claim":
        claim_sig = _form(claim_sig, how)
    else:
        admin_sig = _form(admin_sig, how)
    onchain, offchain = _verdicts(c, ticket, relayer, claim_sig, admin_sig)
    assert onchain == offchain, f"{which} {how}: contract {onchain}, off chain {offchain}"
    assert onchain is (how == "none")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(min_size=65, max_size=65),
        st.tuples(
            st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 27, 28])
        ).map(lambda t: t[0].to_bytes(32, "big") + t[1].to_bytes(32, "big") + bytes([t[2]])),
    )
)
def test_random_claim_signatures_get_the_same_verdict(setup, data):
    c, ticket, relayer = setup
    onchain, offchain = _verdicts(c, ticket, relayer, data, bytes.fromhex(ticket.signature[2:]))
    assert onchain == offchain
