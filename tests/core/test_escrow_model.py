"""core.escrow_model: the pure model the stateful chain test compares the contract with."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.escrow_model import ChannelState, EscrowModel
from jupyter_gpumarket.exceptions import PaymentError


@pytest.fixture
def model() -> EscrowModel:
    return EscrowModel(close_delay=60, balances={"r": 1000, "p": 0, "a": 500, "escrow": 0})


def test_open_redeem_settle_conserves(model):
    model.open("c", "r", "p", 300)
    model.redeem("p", "c", 100)
    assert model.escrow_holdings() == 200 == model.balances["escrow"]
    model.settle("p", "c", 150)
    assert model.balances == {"r": 850, "p": 150, "a": 500, "escrow": 0}
    assert model.channels["c"].state == ChannelState.CLOSED_PAID


def test_close_delay_and_withdraw(model):
    model.open("c", "r", "p", 300)
    model.request_close("r", "c", now=1000)
    with pytest.raises(PaymentError, match="close delay not over"):
        model.withdraw("r", "c", now=1059)
    model.withdraw("r", "c", now=1060)
    assert model.balances["r"] == 1000
    with pytest.raises(PaymentError, match="channel is closed"):
        model.withdraw("r", "c", now=2000)


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        (lambda m: m.redeem("r", "c", 1), "only the channel's provider"),
        (lambda m: m.redeem("p", "c", 301), "above the deposit"),
        (lambda m: m.redeem("p", "c", 0), "not above what was already redeemed"),
        (lambda m: m.top_up("p", "c", 1), "only the channel's renter"),
        (lambda m: m.withdraw("r", "c", 0), "call requestClose first"),
        (lambda m: m.redeem("p", "nope", 1), "no such channel"),
    ],
)
def test_refusals_carry_the_contract_reason(model, op, reason):
    model.open("c", "r", "p", 300)
    with pytest.raises(PaymentError, match=reason):
        op(model)


def test_pool_channel_refunds_to_pool_and_grant(model):
    model.create_pool("pool", "a", 400)
    model.open_from_pool("c", "s", "pool", "g", "s", 250, "p", 200)
    with pytest.raises(PaymentError, match="grant cap exceeded"):
        model.open_from_pool("d", "s", "pool", "g", "s", 250, "p", 51)
    model.settle("p", "c", 50)
    assert model.pools["pool"].balance == 350
    assert model.grant_spent["g"] == 50
    assert model.escrow_holdings() == model.balances["escrow"] == 350


def test_relayed_openings_pay_the_fee_to_the_provider_and_conserve(model):
    with pytest.raises(PaymentError, match="relay fee above a tenth"):
        model.open_for("c", "r", "p", 300, 31)
    model.open_for("c", "r", "p", 300, 30)
    assert model.channels["c"].deposit == 270
    assert model.balances == {"r": 700, "p": 30, "a": 500, "escrow": 270}
    model.create_pool("P", "a", 500)
    with pytest.raises(PaymentError, match="relay fee above a tenth"):
        model.open_from_pool_for("d", "P", "g", "s", 200, "p", 200, 21)
    model.open_from_pool_for("d", "P", "g", "s", 200, "p", 200, 20)
    model.settle("p", "d", 50)  # 130 goes back to the pool and to the grant
    assert (model.pools["P"].balance, model.grant_spent["g"]) == (430, 70)
    assert model.balances["p"] == 100
    assert model.balances["escrow"] == model.escrow_holdings() == 270 + 430
