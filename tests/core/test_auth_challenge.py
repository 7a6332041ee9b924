"""core.auth_challenge: the session-key hello; replayed nonce, wrong channel, wrong key refused."""

from __future__ import annotations

import itertools

import pytest
from eth_account import Account

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.auth_challenge import (
    Challenge,
    ChallengeIssuer,
    hello_typed_data,
    sign_hello,
)
from jupyter_gpumarket.core.voucher_check import ChannelView
from jupyter_gpumarket.exceptions import AuthenticationFailed

ESCROW = "0x" + "e5" * 20
DOMAIN = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
RENTER = Account.from_key(b"\x11" * 32)
SESSION = Account.from_key(b"\x12" * 32)
PROVIDER = Account.from_key(b"\x13" * 32).address
CID = eip712.channel_id_for(RENTER.address, SESSION.address)
PRICE = 3600 * 100  # 100 per second: one 15 s interval = 1500
CHANNEL = ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=10**6)


def counter_random():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


@pytest.fixture
def issuer() -> ChallengeIssuer:
    return ChallengeIssuer(DOMAIN, PROVIDER, price_per_hour=PRICE, random=counter_random())


def answer(issuer, key=SESSION, cid=CID, now=0.0):
    ch = issuer.issue(now)
    return ch, sign_hello(key.key, ch, cid)


def test_session_key_answer_is_accepted(issuer):
    ch, sig = answer(issuer)
    assert ch.provider == PROVIDER
    assert (ch.chain_id, ch.escrow) == (31337, DOMAIN.verifying_contract)
    assert issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1.0) == SESSION.address


def test_nonces_are_fresh_and_32_bytes():
    issuer = ChallengeIssuer(DOMAIN, PROVIDER, price_per_hour=PRICE)
    nonces = {issuer.issue(0).nonce for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 for n in nonces)


def test_replayed_nonce_is_refused(issuer):
    ch, sig = answer(issuer)
    issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1.0)
    with pytest.raises(AuthenticationFailed, match="already used challenge nonce"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=2.0)


def test_a_nonce_never_issued_is_refused(issuer):
    fake = Challenge(
        nonce=b"\x99" * 32, provider=PROVIDER, chain_id=31337, escrow=ESCROW, expires_at=99
    )
    sig = sign_hello(SESSION.key, fake, CID)
    with pytest.raises(AuthenticationFailed, match="unknown or already used"):
        issuer.verify(nonce=fake.nonce, channel=CHANNEL, signature=sig, now=1.0)


def test_failed_answer_burns_the_nonce(issuer):
    ch, _ = answer(issuer)
    wrong = sign_hello(Account.create().key, ch, CID)
    with pytest.raises(AuthenticationFailed, match="not signed by channel"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=wrong, now=1.0)
    good = sign_hello(SESSION.key, ch, CID)
    with pytest.raises(AuthenticationFailed, match="already used"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=good, now=1.0)


def test_expired_challenge_is_refused(issuer):
    ch, sig = answer(issuer)
    with pytest.raises(AuthenticationFailed, match="challenge expired"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=31.0)


def test_wrong_channel_is_refused(issuer):
    """An answer signed for channel A does not open channel B (even of the same renter)."""
    other_key = Account.create()
    other = ChannelView(
        channel_id=eip712.channel_id_for(RENTER.address, other_key.address),
        renter=RENTER.address,
        provider=PROVIDER,
        deposit=10**6,
    )
    ch, sig = answer(issuer)  # signed over CID
    with pytest.raises(AuthenticationFailed, match="not signed by channel"):
        issuer.verify(nonce=ch.nonce, channel=other, signature=sig, now=1.0)


def test_wrong_key_is_refused(issuer):
    ch, sig = answer(issuer, key=Account.create())
    with pytest.raises(AuthenticationFailed, match="session key"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1.0)


def test_answer_for_another_provider_or_escrow_is_refused(issuer):
    ch = issuer.issue(0)
    for typed in (
        hello_typed_data(DOMAIN, ch.nonce, CID, RENTER.address),
        hello_typed_data(eip712.Domain(1, ESCROW), ch.nonce, CID, PROVIDER),
    ):
        ch = issuer.issue(0)
        typed["message"]["nonce"] = ch.nonce
        sig = eip712.sign_typed_data(SESSION.key, typed)
        with pytest.raises(AuthenticationFailed, match="not signed by channel"):
            issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1.0)


def test_a_voucher_signature_is_not_a_hello(issuer):
    ch = issuer.issue(0)
    # a voucher whose fields line up byte for byte still has another type hash
    voucher_sig = eip712.sign_typed_data(
        SESSION.key, eip712.voucher(DOMAIN, CID, int.from_bytes(ch.nonce, "big"))
    )
    with pytest.raises(AuthenticationFailed):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=voucher_sig, now=1.0)


def test_channel_rules_are_checked(issuer):
    cases = [
        (ChannelView(channel_id=CID, renter=RENTER.address, provider=RENTER.address, deposit=10**6),
         "not this provider"),
        (ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=10**6,
                     state="closing"), "is closing, not open"),
        (ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=1499),
         "less than one voucher interval"),
    ]  # fmt: skip
    for channel, message in cases:
        ch, sig = answer(issuer)
        with pytest.raises(AuthenticationFailed, match=message):
            issuer.verify(nonce=ch.nonce, channel=channel, signature=sig, now=1.0)


def test_renter_key_itself_may_answer(issuer):
    ch, sig = answer(issuer, key=RENTER)
    assert issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1) == RENTER.address


def test_garbage_is_refused_cleanly(issuer):
    ch = issuer.issue(0)
    with pytest.raises(AuthenticationFailed, match="unreadable"):
        issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=b"\x00" * 65, now=1)
    with pytest.raises(AuthenticationFailed, match="nonce must be 32 bytes"):
        issuer.verify(nonce=b"short", channel=CHANNEL, signature=b"\x00" * 65, now=1)


def _wire(ch: Challenge, interval: int = 15):
    from jupyter_gpumarket.core import paymsgs

    return paymsgs.AuthChallenge(
        nonce="0x" + ch.nonce.hex(),
        provider=ch.provider,
        chain_id=ch.chain_id,
        escrow=ch.escrow,
        ttl=30.0,
        interval=interval,
    )


def test_answer_challenge_is_accepted_and_refuses_another_payee(issuer):
    from jupyter_gpumarket.core.auth_challenge import answer_challenge

    expected = (PROVIDER, DOMAIN.chain_id, ESCROW)
    ch = issuer.issue(0.0)
    reply = answer_challenge(_wire(ch), session_key=SESSION.key, channel_id=CID, expected=expected)
    sig = bytes.fromhex(reply.signature[2:])
    assert issuer.verify(nonce=ch.nonce, channel=CHANNEL, signature=sig, now=1.0) == SESSION.address
    other = Account.from_key(b"\x14" * 32).address
    for wrong in (
        (other, DOMAIN.chain_id, ESCROW),  # an offer that copied another provider's endpoint
        (PROVIDER, 1, ESCROW),  # another chain
        (PROVIDER, DOMAIN.chain_id, "0x" + "e6" * 20),  # another escrow
    ):
        with pytest.raises(AuthenticationFailed, match="refused to sign"):
            answer_challenge(
                _wire(issuer.issue(0.0)), session_key=SESSION.key, channel_id=CID, expected=wrong
            )
