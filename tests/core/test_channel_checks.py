"""core.voucher_check: the channel checks at the hello, on every voucher, while a lease runs
(channel_change) and before each redemption (plan_collection)."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from paidclient import MALLEATIONS, malleate

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.voucher_check import (
    ChannelView,
    ProviderTerms,
    SignedVoucher,
    Verdict,
    channel_change,
    check_voucher,
    plan_collection,
)

ESCROW = "0x" + "e5" * 20
TOKEN, OTHER_TOKEN = "0x" + "70" * 20, "0x" + "71" * 20
DOMAIN = eip712.Domain(chain_id=31337, verifying_contract=ESCROW)
RENTER, SESSION = Account.from_key(b"\x11" * 32), Account.from_key(b"\x12" * 32)
PROVIDER = Account.from_key(b"\x13" * 32).address
CID = eip712.channel_id_for(RENTER.address, SESSION.address)
TERMS = ProviderTerms(DOMAIN, PROVIDER, 3_600_000, 2, token=TOKEN)
CHANNEL = ChannelView(
    channel_id=CID, renter=RENTER.address, provider=PROVIDER, deposit=10**6, token=TOKEN
)


def _sig(amount: int, key=SESSION) -> bytes:
    return eip712.sign_typed_data(key.key, eip712.voucher(DOMAIN, CID, amount))


def _check(channel: ChannelView, amount: int = 500, sig: bytes | None = None):
    voucher = SignedVoucher(CID, amount, sig if sig is not None else _sig(amount))
    return check_voucher(voucher, channel=channel, terms=TERMS, last_accepted=0, billed_seconds=0)


@pytest.mark.parametrize("token", [OTHER_TOKEN, None])
def test_a_channel_in_another_or_an_unknown_token_is_not_money(token):
    decision = _check(dataclasses.replace(CHANNEL, token=token))
    assert decision.verdict is Verdict.REJECT
    assert "not the offer's token" in decision.reason
    assert _check(CHANNEL).verdict is Verdict.ACCEPT


@pytest.mark.parametrize("how", [h for h in MALLEATIONS if h not in ("truncated", "extra-byte")])
def test_a_malleated_voucher_is_rejected(how):
    decision = _check(CHANNEL, sig=malleate(_sig(500), how))
    assert decision.verdict is Verdict.REJECT
    assert "unreadable" in decision.reason or "not by channel" in decision.reason


def test_channel_change_names_close_and_token():
    assert "asked to close" in channel_change(
        CHANNEL, dataclasses.replace(CHANNEL, state="closing"), TERMS
    )
    assert "closed" in channel_change(CHANNEL, dataclasses.replace(CHANNEL, state="closed"), TERMS)
    assert "not the offer's token" in channel_change(
        CHANNEL, dataclasses.replace(CHANNEL, token=OTHER_TOKEN), TERMS
    )
    assert channel_change(CHANNEL, dataclasses.replace(CHANNEL, deposit=2 * 10**6), TERMS) == ""


def test_plan_collection_sends_only_what_the_escrow_accepts_now():
    best = (700, _sig(700))
    assert plan_collection(CHANNEL, best, TERMS).amount == 700
    assert plan_collection(CHANNEL, best, TERMS).signature == best[1]
    # a closing channel still pays the vouchers of its key
    assert plan_collection(dataclasses.replace(CHANNEL, state="closing"), best, TERMS).amount == 700
    # a stranger's voucher would revert; settle at what was redeemed
    stranger = Account.create()
    typed = eip712.voucher(DOMAIN, CHANNEL.channel_id, 700)
    foreign = (700, eip712.sign_typed_data(stranger.key, typed))
    plan = plan_collection(dataclasses.replace(CHANNEL, redeemed=300), foreign, TERMS)
    assert (plan.amount, plan.signature, plan.possible) == (300, b"", True)
    assert "does not accept" in plan.reason
    # nothing better than what was redeemed: no signature needed
    plan = plan_collection(dataclasses.replace(CHANNEL, redeemed=700), best, TERMS)
    assert (plan.amount, plan.signature) == (700, b"")
    # a malleated stored voucher (never stored by a fixed agent, maybe by an old one)
    plan = plan_collection(CHANNEL, (700, malleate(best[1], "high-s")), TERMS)
    assert (plan.amount, plan.signature) == (0, b"")


@pytest.mark.parametrize(
    ("change", "why"),
    [({"token": OTHER_TOKEN}, "not the offer's token"), ({"state": "closed-paid"}, "closed-paid"),
     ({"provider": RENTER.address}, "not this provider")],
)  # fmt: skip
def test_plan_collection_spends_no_gas_on_a_channel_that_cannot_pay(change, why):
    plan = plan_collection(dataclasses.replace(CHANNEL, **change), (700, _sig(700)), TERMS)
    assert not plan.possible
    assert why in plan.reason
