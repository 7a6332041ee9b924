"""core.voucher_check: every rejection of issue 5's failure list, and the accept paths."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.metering import VoucherSchedule, amount_due
from jupyter_gpumarket.core.voucher_check import (
    ChannelView,
    Decision,
    ProviderTerms,
    SignedVoucher,
    Verdict,
    check_voucher,
)
from jupyter_gpumarket.exceptions import PaymentError

ESCROW = "0x" + "e5" * 20
PRICE = 3600 * 1000  # 1000 base units per second: credit for 15 s = 15000
DOMAIN = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
RENTER = Account.from_key(b"\x01" * 32)
SESSION = Account.from_key(b"\x02" * 32)
PROVIDER = Account.from_key(b"\x03" * 32).address
CID = eip712.channel_id_for(RENTER.address, SESSION.address)
CHANNEL = ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=1_000_000)
TERMS = ProviderTerms(domain=DOMAIN, provider=PROVIDER, price_per_hour=PRICE)


def signed(amount, *, key=SESSION, cid=CID, domain=DOMAIN) -> SignedVoucher:
    sig = eip712.sign_typed_data(key.key, eip712.voucher(domain, cid, amount))
    return SignedVoucher(channel_id=cid, amount=amount, signature=sig)


def check(voucher, *, channel=CHANNEL, last=0, billed=0) -> Decision:
    return check_voucher(
        voucher, channel=channel, terms=TERMS, last_accepted=last, billed_seconds=billed
    )


def test_accepts_a_voucher_covering_the_billed_time():
    d = check(signed(30_000), billed=30)
    assert d == Decision(Verdict.ACCEPT, amount=30_000)
    assert d.keep
    assert d.covers


def test_accepts_within_one_interval_of_credit():
    assert check(signed(15_000), billed=30).verdict is Verdict.ACCEPT  # due 30000 - 15000
    assert TERMS.credit == 15_000


def test_the_renter_and_the_bound_session_key_sign_nobody_else():
    """The Escrow's rule: the renter, or the key with keccak256(renter, key) == channel id."""
    assert check(signed(10, key=RENTER)).verdict is Verdict.ACCEPT
    assert check(signed(10)).verdict is Verdict.ACCEPT
    stranger = Account.from_key(b"\x04" * 32)
    assert check(signed(10, key=stranger)).verdict is Verdict.REJECT


def test_a_channel_read_with_a_session_key_word_keeps_the_escrow_s_rule():
    """``channels().session_key`` (always zero since keys no longer rotate) is not part of
    the rule: a view read with any value there accepts what the Escrow accepts."""
    info = SimpleNamespace(
        channel_id=CID,
        renter=RENTER.address,
        provider=PROVIDER,
        deposit=10**6,
        state="open",
        session_key=Account.from_key(b"\x05" * 32).address,
        token=None,
        redeemed=0,
    )
    channel = ChannelView.from_info(info)
    assert check(signed(10), channel=channel).verdict is Verdict.ACCEPT
    assert check(signed(10, key=RENTER), channel=channel).verdict is Verdict.ACCEPT


def test_duplicate_is_harmless():
    d = check(signed(500), last=500, billed=0)
    assert d.verdict is Verdict.DUPLICATE
    assert not d.keep
    assert d.covers


def test_stale_voucher_is_rejected():
    d = check(signed(400), last=500)
    assert d.verdict is Verdict.REJECT
    assert "stale voucher" in d.reason
    assert "send the latest voucher" in d.reason
    assert not d.keep


def test_voucher_for_another_channel_is_rejected():
    other = eip712.channel_id_for(RENTER.address, RENTER.address)
    d = check(signed(100, cid=other))
    assert d.verdict is Verdict.REJECT
    assert "not this lease's" in d.reason


def test_signature_for_another_channel_under_our_id_is_rejected():
    other = eip712.channel_id_for(RENTER.address, RENTER.address)
    sig = signed(100, cid=other).signature
    d = check(SignedVoucher(channel_id=CID, amount=100, signature=sig))
    assert d.verdict is Verdict.REJECT
    assert "not by channel" in d.reason


@pytest.mark.parametrize(
    "domain",
    [
        eip712.Domain(chain_id=1, verifying_contract=ESCROW),
        eip712.Domain(chain_id=31337, verifying_contract="0x" + "ab" * 20),
        eip712.Domain(chain_id=31337, verifying_contract=ESCROW, version="2"),
    ],
    ids=["other-chain", "other-escrow", "other-version"],
)
def test_voucher_for_another_domain_is_rejected(domain):
    d = check(signed(100, domain=domain))
    assert d.verdict is Verdict.REJECT
    assert f"on chain {DOMAIN.chain_id}" in d.reason
    assert "escrow domain" in d.reason


def test_forged_signature_is_rejected():
    forger = Account.create()
    d = check(signed(100, key=forger))
    assert d.verdict is Verdict.REJECT
    assert forger.address in d.reason
    garbage = SignedVoucher(channel_id=CID, amount=100, signature=b"\x00" * 65)
    d = check(garbage)
    assert d.verdict is Verdict.REJECT
    assert "unreadable" in d.reason


def test_tampered_amount_is_rejected():
    sig = signed(100).signature
    d = check(SignedVoucher(channel_id=CID, amount=10_000, signature=sig))
    assert d.verdict is Verdict.REJECT


def test_decreasing_amount_is_rejected():
    assert check(signed(999), last=1000, billed=1).verdict is Verdict.REJECT


def test_amount_above_deposit_is_rejected():
    d = check(signed(CHANNEL.deposit + 1))
    assert d.verdict is Verdict.REJECT
    assert "above channel" in d.reason
    assert "top up" in d.reason
    assert check(signed(CHANNEL.deposit), billed=0).verdict is Verdict.ACCEPT


def test_short_amount_is_kept_but_flagged():
    d = check(signed(14_999), billed=30)
    assert d.verdict is Verdict.SHORTFALL
    assert d.missing == 1
    assert d.keep  # valid money: store it
    assert not d.covers  # but the lease is short
    assert "short" in d.reason


def test_channel_of_another_provider_or_not_open_is_rejected():
    elsewhere = ChannelView(
        channel_id=CID, renter=RENTER.address, provider=RENTER.address, deposit=10**6
    )
    assert "not this provider" in check(signed(1), channel=elsewhere).reason
    closing = ChannelView(
        channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=10**6, state="closing"
    )
    d = check(signed(1), channel=closing)
    assert d.verdict is Verdict.REJECT
    assert "is closing, not open" in d.reason


def test_values_are_validated_where_made():
    with pytest.raises(PaymentError, match="65 bytes"):
        SignedVoucher(channel_id=CID, amount=1, signature=b"\x00")
    with pytest.raises(PaymentError, match="channel_id must be 32 bytes"):
        SignedVoucher(channel_id=b"\x00", amount=1, signature=b"\x00" * 65)
    with pytest.raises(PaymentError, match="amount"):
        SignedVoucher(channel_id=CID, amount=-1, signature=b"\x00" * 65)
    with pytest.raises(PaymentError, match="renter must be a 0x address"):
        ChannelView(channel_id=CID, renter="nope", provider=PROVIDER, deposit=1)
    with pytest.raises(PaymentError, match="interval must be positive"):
        ProviderTerms(domain=DOMAIN, provider=PROVIDER, price_per_hour=1, interval=0)
    with pytest.raises(PaymentError, match="needs a reason"):
        Decision(Verdict.REJECT)


def test_channel_view_from_chain_info():
    from jupyter_gpumarket.chain.escrow import ChannelInfo

    info = ChannelInfo(
        channel_id=CID,
        renter=RENTER.address,
        provider=PROVIDER,
        token=ESCROW,
        session_key=None,
        deposit=5,
        redeemed=2,
        close_at=0,
        state="open",
        pool_id=None,
    )
    assert ChannelView.from_info(info) == ChannelView(
        channel_id=CID,
        renter=RENTER.address,
        provider=PROVIDER,
        deposit=5,
        token=ESCROW,
        redeemed=2,
    )


@settings(max_examples=30, deadline=None)  # each example signs and recovers (~10 ms each)
@given(
    price=st.integers(1, 10**10),
    interval=st.integers(1, 60),
    ticks=st.lists(st.tuples(st.integers(1, 600), st.integers(0, 60)), min_size=1, max_size=4),
)
def test_renter_schedule_always_passes_the_provider_check(price, interval, ticks):
    """Arrears vouchers from the renter's clock pass the provider's rule while the renter's
    billed time is at most one interval behind the provider's (latency, ready skew)."""
    terms = ProviderTerms(domain=DOMAIN, provider=PROVIDER, price_per_hour=price, interval=interval)
    deposit = amount_due(price, 10_000) + 1
    channel = ChannelView(channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=deposit)
    schedule = VoucherSchedule(
        price_per_hour=price, deposit=deposit, budget=deposit, interval=interval
    )
    renter_billed, last = 0, 0
    for step, lag in ticks:
        renter_billed += step
        amount = schedule.tick(renter_billed).amount
        if amount is None:
            continue
        provider_billed = renter_billed + min(lag, interval)
        d = check_voucher(
            signed(amount),
            channel=channel,
            terms=terms,
            last_accepted=last,
            billed_seconds=provider_billed,
        )
        assert d.verdict is Verdict.ACCEPT, d.reason
        last = amount
