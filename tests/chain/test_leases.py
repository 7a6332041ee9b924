"""chain.leases on anvil: a whole paid lease (open, vouchers, settle), a provider that vanished,
periodic redemption; with the pure metering, voucher check and provider ledger in the loop."""

from __future__ import annotations

from fractions import Fraction

import pytest
from chain_helpers import USD, advance, balance, reverts

from jupyter_gpumarket.agent.ledger import ProviderLedger
from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.chain.leases import LeaseChain
from jupyter_gpumarket.core.metering import BillingClock, VoucherSchedule
from jupyter_gpumarket.core.voucher_check import (
    ChannelView,
    ProviderTerms,
    SignedVoucher,
    Verdict,
    check_voucher,
)
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

PRICE = 2_500_000  # 2.50 TUSD per hour
URAIDEN_OPEN_PLUS_CLOSE = 189_177


def publish(c, provider, price=PRICE) -> int:
    receipt = send(
        c.w3,
        provider,
        c.registry.functions.register(
            "wss://gpu.example:8443",
            b"\x11" * 32,
            "CPU",
            0,
            0,
            price,
            c.token.address,
            "eu",
            "",
        ),
    )
    (event,) = c.registry.events.OfferRegistered().process_receipt(receipt)
    return int(event["args"]["offer_id"])


def run_lease(chain, opened, provider_address, ledger, *, seconds: float, ready_at: float = 7.0):
    """Renter's schedule and provider's check + ledger for a kernel ready ``seconds``; the
    billed seconds. The renter signs every 15 s and a final voucher at shutdown."""
    clock = BillingClock()
    schedule = VoucherSchedule(price_per_hour=PRICE, deposit=opened.deposit, budget=10 * USD)
    terms = ProviderTerms(chain.escrow.domain, provider_address, PRICE)
    view = ChannelView.from_info(chain.channel(opened.channel_id))
    ledger.upsert_channel(
        opened.channel_id,
        renter=opened.renter,
        provider=provider_address,
        token=opened.token,
        deposit=opened.deposit,
        price_per_hour=PRICE,
    )
    last = 0

    def deliver(amount: int, billed: int) -> None:
        nonlocal last
        sig = chain.sign_voucher(opened.session_key, opened.channel_id, amount)
        v = SignedVoucher(opened.channel_id, amount, sig)
        decision = check_voucher(
            v, channel=view, terms=terms, last_accepted=last, billed_seconds=billed
        )
        assert decision.verdict is Verdict.ACCEPT, decision.reason
        assert ledger.save_voucher(opened.channel_id, amount, sig)
        last = amount

    clock.kernel_ready(ready_at)  # launch + file sync before this are free
    end = ready_at + seconds
    now = ready_at
    while now + 15 <= end:
        now += 15
        billed = clock.billed_seconds(now)
        tick = schedule.tick(billed)
        assert tick.stop is None
        if tick.amount is not None:
            deliver(tick.amount, billed)
    clock.kernel_stopped(end)
    clock.end(end + 2.0)  # file pull after the stop: free
    billed = clock.billed_seconds(end + 100)
    final = schedule.final(billed)
    if final > last:
        deliver(final, billed)
    return billed


def test_normal_lease_settles_price_times_seconds(contracts, accounts, tmp_path):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    offer_id = publish(c, provider)
    before = {who: balance(c, who) for who in (renter.address, provider.address, c.escrow.address)}

    opened = chain.open_for_offer(renter, offer_id, budget=10 * USD, initial_hours=1)
    assert opened.deposit == PRICE  # min(budget, 1 h of price)
    assert opened.approvals == ()  # permit: no approval transaction
    assert balance(c, c.escrow.address) == before[c.escrow.address] + PRICE

    seconds = 1234.567
    with ProviderLedger(tmp_path) as ledger:
        billed = run_lease(chain, opened, provider.address, ledger, seconds=seconds)
        best = ledger.highest_voucher(opened.channel_id)
        assert best is not None
        tx_id = ledger.begin_tx(opened.channel_id, "settle", best.amount)
        result = chain.settle_highest(provider, opened.channel_id, (best.amount, best.signature))
        ledger.tx_confirmed(tx_id, result.tx.tx_hash)

    assert billed == 1234
    paid = balance(c, provider.address) - before[provider.address]
    assert paid == result.paid == result.cumulative_amount
    exact = Fraction(PRICE) * Fraction(str(seconds)) / 3600
    error = exact - paid
    assert 0 <= error < Fraction(PRICE, 3600) + 1, float(error)  # within 1 s of price
    assert balance(c, renter.address) == before[renter.address] - paid
    assert result.refunded == PRICE - paid
    assert balance(c, c.escrow.address) == before[c.escrow.address]
    assert chain.channel(opened.channel_id).state == "closed-paid"

    txs = [*opened.txs, result.tx]
    assert [t.kind for t in txs] == ["open", "settle"]  # two transactions per lease
    gas = sum(t.gas_used for t in txs)
    print(f"\nlease of {seconds} s: paid {paid}, error {float(error):.1f} base units "
          f"(1 s = {PRICE / 3600:.1f}); open {txs[0].gas_used} + settle {txs[1].gas_used} "
          f"= {gas} gas (permit)")  # fmt: skip
    assert txs[1].gas_used < 80_000


def test_approve_path_counts_the_approval_apart(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    opened = chain.open(
        renter, provider=provider.address, price_per_hour=PRICE, deposit=USD, method="approve"
    )
    assert [t.kind for t in opened.approvals] == ["approve"]
    assert [t.kind for t in opened.txs] == ["open"]
    sig = chain.sign_voucher(opened.session_key, opened.channel_id, 1000)
    settled = chain.settle_highest(provider, opened.channel_id, (1000, sig))
    assert opened.txs[0].gas_used + settled.tx.gas_used < URAIDEN_OPEN_PLUS_CLOSE
    # allowance already there: no second approval
    send(c.w3, renter, c.token.functions.approve(c.escrow.address, USD))
    again = chain.open(
        renter, provider=provider.address, price_per_hour=PRICE, deposit=USD, method="approve"
    )
    assert again.approvals == ()


def test_launch_failure_settles_at_zero(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    before = balance(c, renter.address)
    opened = chain.open(renter, provider=provider.address, price_per_hour=PRICE, deposit=USD)
    result = chain.settle_highest(provider, opened.channel_id, None)
    assert (result.paid, result.refunded) == (0, USD)
    assert balance(c, renter.address) == before
    assert chain.channel(opened.channel_id).state == "closed"


def test_provider_redeems_the_highest_voucher_then_settles(contracts, accounts, tmp_path):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    opened = chain.open(renter, provider=provider.address, price_per_hour=PRICE, deposit=USD)
    cid, key = opened.channel_id, opened.session_key
    start = balance(c, provider.address)
    with ProviderLedger(tmp_path) as ledger:
        ledger.upsert_channel(
            cid,
            renter=renter.address,
            provider=provider.address,
            token=c.token.address,
            deposit=USD,
            price_per_hour=PRICE,
        )
        for amount in (100, 300, 200):  # 200 arrives late: stale, not kept
            ledger.save_voucher(cid, amount, chain.sign_voucher(key, cid, amount))
        best = ledger.highest_voucher(cid)
        assert best is not None
        r = chain.redeem_highest(provider, cid, (best.amount, best.signature))
        assert r is not None
        assert (r.paid, r.cumulative_amount) == (300, 300)
        assert chain.redeem_highest(provider, cid, (best.amount, best.signature)) is None
        assert chain.redeem_highest(provider, cid, None) is None
        # nothing new since the redemption: settle without a signature
        s = chain.settle_highest(provider, cid, (best.amount, best.signature))
        assert (s.paid, s.cumulative_amount, s.refunded) == (0, 300, USD - 300)
    assert balance(c, provider.address) - start == 300


def test_renter_recovers_the_deposit_when_the_provider_vanished(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    before = balance(c, renter.address)
    escrow_before = balance(c, c.escrow.address)
    opened = chain.open(renter, provider=provider.address, price_per_hour=PRICE, deposit=2 * USD)
    cid = opened.channel_id
    # the provider redeemed one voucher, then disappeared
    chain.redeem_highest(provider, cid, (5000, chain.sign_voucher(opened.session_key, cid, 5000)))

    step = chain.recover_deposit(renter, cid)
    assert step.state == "closing"
    assert step.tx is not None
    assert step.close_at >= chain.now() + 600 - 1
    again = chain.recover_deposit(renter, cid)  # too early: nothing sent
    assert (again.state, again.tx) == ("closing", None)
    with reverts("close delay not over"):
        chain.escrow.withdraw(renter, cid)

    advance(c, 601)
    done = chain.recover_deposit(renter, cid)
    assert done.state == "withdrawn"
    assert (done.refunded, done.paid) == (2 * USD - 5000, 5000)
    assert balance(c, renter.address) == before - 5000
    assert balance(c, c.escrow.address) == escrow_before
    txs = [opened.txs[0], step.tx, done.tx]
    assert [t.kind for t in txs] == ["open", "close", "withdraw"]
    final = chain.recover_deposit(renter, cid)
    assert (final.state, final.refunded, final.tx) == ("closed", 2 * USD - 5000, None)


def test_recover_refuses_other_wallets_and_unknown_channels(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    opened = chain.open(renter, provider=provider.address, price_per_hour=PRICE, deposit=USD)
    with pytest.raises(ConfigError, match="use the wallet that opened it"):
        chain.recover_deposit(accounts[3], opened.channel_id)
    with pytest.raises(ConfigError, match="no channel"):
        chain.recover_deposit(renter, b"\x07" * 32)


def test_offer_checks_and_insufficient_funds(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    offer_id = publish(c, provider)
    assert chain.offer(offer_id).price_per_hour == PRICE
    with pytest.raises(ConfigError, match="no offer 99"):
        chain.open_for_offer(renter, 99, budget=USD)
    send(c.w3, provider, c.registry.functions.deactivate(offer_id))
    with pytest.raises(ConfigError, match="no longer active"):
        chain.open_for_offer(renter, offer_id, budget=USD)
    poor = accounts[7]
    with pytest.raises(PaymentError, match="fund it"):
        chain.open(poor, provider=provider.address, price_per_hour=PRICE, deposit=USD)


def test_auto_top_up_raises_the_deposit(contracts, accounts):
    c, renter, provider = contracts, accounts[1], accounts[2]
    chain = LeaseChain(c)
    opened = chain.open(renter, provider=provider.address, price_per_hour=PRICE, deposit=USD)
    txs = chain.top_up(renter, opened.channel_id, USD // 2)
    assert [t.kind for t in txs] == ["approve", "top_up"]
    assert chain.channel(opened.channel_id).deposit == USD + USD // 2
