"""A flood of unanswered challenges costs the agent nothing per stranger and locks nobody out
(the issuer on main kept a 10,000-entry table: 10,050 hellos locked every renter out)."""

from __future__ import annotations

import pytest
from eth_account import Account

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.auth_challenge import PER_CLIENT_BURST, ChallengeIssuer, sign_hello
from jupyter_gpumarket.core.voucher_check import ChannelView
from jupyter_gpumarket.exceptions import AuthenticationFailed

ESCROW = "0x" + "e5" * 20
DOMAIN = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
RENTER, SESSION = Account.from_key(b"\x11" * 32), Account.from_key(b"\x12" * 32)
PROVIDER = Account.from_key(b"\x13" * 32).address
CID = eip712.channel_id_for(RENTER.address, SESSION.address)
CHANNEL = ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=10**6)


def _issuer() -> ChallengeIssuer:
    return ChallengeIssuer(DOMAIN, PROVIDER, price_per_hour=3_600_000, interval=2)


def test_ten_thousand_strangers_do_not_lock_a_renter_out():
    issuer = _issuer()
    for i in range(10_050):  # one unanswered hello each, from as many addresses
        issuer.issue(1.0, f"10.0.{i // 250}.{i % 250}")
    ch = issuer.issue(2.0, "192.0.2.7")
    signer = issuer.verify(
        nonce=ch.nonce, channel=CHANNEL, signature=sign_hello(SESSION.key, ch, CID), now=3.0,
        client="192.0.2.7",
    )  # fmt: skip
    assert signer == SESSION.address


def test_one_address_runs_out_of_budget_and_others_do_not():
    issuer = _issuer()
    for _ in range(PER_CLIENT_BURST):
        issuer.issue(1.0, "203.0.113.9")
    for _ in range(10_000):
        with pytest.raises(AuthenticationFailed, match="too many connection challenges"):
            issuer.issue(1.0, "203.0.113.9")
    issuer.issue(1.0, "192.0.2.7")  # another address is unaffected
    issuer.issue(30.0, "203.0.113.9")  # and the flooder's budget refills with time


def test_a_nonce_works_only_for_the_address_it_was_issued_to():
    issuer = _issuer()
    ch = issuer.issue(1.0, "192.0.2.7")
    sig = sign_hello(SESSION.key, ch, CID)
    with pytest.raises(AuthenticationFailed, match="unknown or already used"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=2.0, client="192.0.2.8")


def test_a_forged_nonce_is_refused_before_anything_else():
    issuer = _issuer()
    ch = issuer.issue(1.0, "192.0.2.7")
    forged = ch.nonce[:8] + (10**9).to_bytes(8, "big") + ch.nonce[16:]  # later expiry
    with pytest.raises(AuthenticationFailed, match="unknown or already used"):
        issuer.consume(forged, 2.0, "192.0.2.7")
