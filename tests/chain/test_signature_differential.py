"""Off-chain signature checks accept exactly what the contracts accept (differential, on anvil).

The provider trusts a voucher it checked off chain; if the Escrow's ECDSA (snekmate: low s,
v in {27, 28}) refuses it later, the renter ran for free. For vouchers the contract's verdict
is an ``eth_call`` of ``redeem`` by the provider; for OpenChannel, of ``openFor`` and
``openFromPoolFor`` by a relayer; for Grant, of ``openFromPoolFor``; for permits, of
``TestUSD.permit``. Inputs: every malleation of a valid signature (the 64-byte EIP-2098 compact
form included: snekmate's ECDSA takes it, so the Escrow checks the length first), and random
bytes (hypothesis, few examples: each is one RPC call).
"""

from __future__ import annotations

from typing import Any

import pytest
from chain_helpers import (
    USD,
    escrow_domain,
    open_channel,
    open_channel_sig,
    permit_sig,
    token_domain,
    voucher_sig,
)
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paidclient import MALLEATIONS, malleate
from pool_helpers import create_pool, grant_args

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import PaymentError

AMOUNT = 1_000
# every malleation, and the EIP-2098 compact form (r, yParity << 255 | s) of the same signature
FORMS = (*MALLEATIONS, "compact")


def _form(sig: bytes, how: str) -> bytes:
    if how != "compact":
        return malleate(sig, how)
    vs = int.from_bytes(sig[32:64], "big") | (sig[64] - 27) << 255
    return sig[:32] + vs.to_bytes(32, "big")


def _offchain_voucher(c: Any, cid: bytes, renter: str, sig: bytes) -> bool:
    typed = eip712.voucher(eip712.Domain(c.w3.eth.chain_id, c.escrow.address), cid, AMOUNT)
    try:
        signer = eip712.recover_signer(typed, sig)
    except PaymentError:
        return False
    return eip712.voucher_signer_ok(cid, renter, signer)


def _onchain_voucher(c: Any, cid: bytes, provider: str, sig: bytes) -> bool:
    try:
        c.escrow.functions.redeem(cid, AMOUNT, sig).call({"from": provider})
    except Exception:  # a revert (web3 raises several types for it)
        return False
    return True


@pytest.fixture
def channel(contracts, accounts):
    renter, provider = accounts[1], accounts[2]
    cid, session = open_channel(contracts, renter, provider)
    return contracts, cid, session, renter, provider


def test_valid_voucher_is_accepted_by_both(channel):
    c, cid, session, renter, provider = channel
    sig = voucher_sig(c, session, cid, AMOUNT)
    assert _offchain_voucher(c, cid, renter.address, sig)
    assert _onchain_voucher(c, cid, provider.address, sig)


@pytest.mark.parametrize("how", FORMS)
@pytest.mark.parametrize("signer", ["session", "renter"])
def test_malleated_voucher_verdicts_agree(channel, how, signer):
    c, cid, session, renter, provider = channel
    sig = _form(voucher_sig(c, session if signer == "session" else renter, cid, AMOUNT), how)
    onchain = _onchain_voucher(c, cid, provider.address, sig)
    offchain = _offchain_voucher(c, cid, renter.address, sig)
    assert not offchain, f"the agent accepts a {how} voucher signature"
    assert onchain == offchain, f"{how}: off chain {offchain}, contract {onchain}"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(min_size=65, max_size=65),
        st.tuples(
            st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 27, 28])
        ).map(lambda t: t[0].to_bytes(32, "big") + t[1].to_bytes(32, "big") + bytes([t[2]])),
        st.binary(max_size=70),
    )
)
def test_random_signatures_get_the_same_verdict(channel, data):
    c, cid, _session, renter, provider = channel
    onchain = _onchain_voucher(c, cid, provider.address, data)
    offchain = _offchain_voucher(c, cid, renter.address, data)
    assert offchain == onchain


def _permit_verdicts(c: Any, owner: Any, sig: bytes) -> tuple[bool, bool]:
    deadline = 2**40
    nonce = c.token.functions.nonces(owner.address).call()
    typed = eip712.permit(
        token_domain(c),
        owner=owner.address,
        spender=c.escrow.address,
        value=AMOUNT,
        nonce=nonce,
        deadline=deadline,
    )
    try:
        offchain = eip712.recover_signer(typed, sig) == owner.address
    except PaymentError:
        offchain = False
    r, s, v = sig[:32], sig[32:64], sig[64]
    try:
        c.token.functions.permit(owner.address, c.escrow.address, AMOUNT, deadline, v, r, s).call(
            {"from": owner.address}
        )
        onchain = True
    except Exception:
        onchain = False
    return offchain, onchain


@pytest.mark.parametrize("how", ["none", "high-s", "v-27", "v+4", "zero-r", "zero-s"])
def test_permit_verdicts_agree(contracts, accounts, how):
    owner = accounts[1]
    sig = permit_sig(contracts, owner, AMOUNT, 2**40)
    if how != "none":
        sig = malleate(sig, how)
    offchain, onchain = _permit_verdicts(contracts, owner, sig)
    assert offchain == onchain, f"{how}: off chain {offchain}, contract {onchain}"
    assert onchain == (how == "none")


def _offchain(typed: Any, sig: bytes, expected: str) -> bool:
    try:
        return eip712.recover_signer(typed, sig) == expected
    except PaymentError:
        return False


def _onchain(fn: Any, sender: str) -> bool:
    try:
        fn.call({"from": sender})
    except Exception:  # a revert (web3 raises several types for it)
        return False
    return True


DEPOSIT, FEE, DEADLINE = 2 * USD, 10_000, 2**40


def _open_typed(c: Any, renter: Any, provider: Any, session: Any, pool_id: bytes) -> Any:
    return eip712.open_channel(
        escrow_domain(c),
        renter=renter.address,
        provider=provider.address,
        token=c.token.address,
        deposit=DEPOSIT,
        session_key=session.address,
        relay_fee=FEE,
        deadline=DEADLINE,
        pool_id=pool_id,
    )


@pytest.mark.parametrize("how", ["none", *FORMS])
def test_open_channel_verdicts_agree_on_open_for(any_chain, accounts, how):
    c, renter, provider = any_chain, accounts[1], accounts[2]
    session = Account.create()
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, DEPOSIT))
    sig = open_channel_sig(c, renter, provider, session, DEPOSIT, FEE, DEADLINE)
    sig = sig if how == "none" else _form(sig, how)
    fn = c.escrow.functions.openFor(
        renter.address, provider.address, c.token.address, DEPOSIT, session.address, FEE,
        DEADLINE, sig, 0, bytes(32), bytes(32),
    )  # fmt: skip
    onchain = _onchain(fn, provider.address)
    offchain = _offchain(_open_typed(c, renter, provider, session, bytes(32)), sig, renter.address)
    assert offchain == onchain, f"{how}: off chain {offchain}, contract {onchain}"
    assert onchain == (how == "none")


@pytest.mark.parametrize("how", ["none", *FORMS])
@pytest.mark.parametrize("which", ["open", "grant"])
def test_open_channel_and_grant_verdicts_agree_on_open_from_pool_for(
    any_chain, accounts, how, which
):
    c, admin, student, provider = any_chain, accounts[3], accounts[1], accounts[2]
    session = Account.create()
    pool_id = create_pool(c, admin)
    pool, who, cap, expiry, grant_provider, admin_sig = grant_args(
        c, admin, pool_id, student.address, DEPOSIT, DEADLINE
    )
    open_sig = open_channel_sig(c, student, provider, session, DEPOSIT, FEE, DEADLINE, pool_id)
    if how != "none":
        if which == "open":
            open_sig = _form(open_sig, how)
        else:
            admin_sig = _form(admin_sig, how)
    fn = c.escrow.functions.openFromPoolFor(
        pool, who, cap, expiry, grant_provider, admin_sig, provider.address, DEPOSIT,
        session.address, FEE, DEADLINE, open_sig,
    )  # fmt: skip
    onchain = _onchain(fn, provider.address)
    if which == "open":
        typed = _open_typed(c, student, provider, session, pool_id)
        offchain = _offchain(typed, open_sig, student.address)
    else:
        typed = eip712.grant(
            escrow_domain(c),
            pool_id=pool_id,
            student=student.address,
            cap=cap,
            expiry=expiry,
            provider=grant_provider,
        )
        offchain = _offchain(typed, admin_sig, admin.address)
    assert offchain == onchain, f"{which} {how}: off chain {offchain}, contract {onchain}"
    assert onchain == (how == "none")


def test_our_signers_make_only_low_s_and_v_27_28():
    domain = eip712.Domain(31337, "0x" + "e5" * 20)
    for _ in range(200):
        key = Account.create()
        sig = eip712.sign_typed_data(key.key, eip712.voucher(domain, b"\x01" * 32, 7))
        assert eip712.signature_problem(sig) is None
