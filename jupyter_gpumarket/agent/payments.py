"""Paid leases on the provider: channel authentication, voucher checks, settlement.

``Payments`` is agent-wide (chain handles, the challenge issuer, the SQLite ledger);
``LeasePayment`` follows one lease: its billing clock, the voucher state machine
(core.lease_state) and the highest voucher, written to the ledger before it is acknowledged.
Chain calls run in worker threads; the RPC being down never stops a running kernel: vouchers
are checked off-chain and redemption is retried from the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent.ledger import ProviderLedger
from jupyter_gpumarket.core import eip712, paymsgs
from jupyter_gpumarket.core.auth_challenge import ChallengeIssuer
from jupyter_gpumarket.core.lease_state import (
    DEFAULT_SLACK,
    Event,
    EventType,
    LeaseMachine,
    LeasePolicy,
)
from jupyter_gpumarket.core.metering import BillingClock
from jupyter_gpumarket.core.offer_meta import DEFAULT_RELAY_FEE
from jupyter_gpumarket.core.voucher_check import (
    ChannelView,
    Collection,
    ProviderTerms,
    SignedVoucher,
    Verdict,
    channel_change,
    check_voucher,
    plan_collection,
)
from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    ChainError,
    GpuMarketError,
    PaymentError,
)

__all__ = ["LeasePayment", "PaidTerms", "Payments"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaidTerms:
    """What a paid provider sells and how it is paid."""

    rpc_url: str
    chain_id: int
    token: str
    escrow: str
    registry: str
    account: Any  # the provider's LocalAccount (receives the payments)
    price_per_hour: int
    interval: int = 15
    grace: float = 60.0
    redeem_every: float = 600.0
    relay_fee: int = DEFAULT_RELAY_FEE  # what relaying a renter's gasless openFor costs it
    course_pool: bytes | None = None  # a course-private provider: only this pool pays it
    gpu_model: str = ""  # the offer's GPU class (checked against a course's published terms)
    # a lease that never starts a kernel ends after this, file transfers or not (None: ten
    # payment graces, at least 600 s)
    kernel_deadline: float | None = None


class Payments:
    def __init__(self, terms: PaidTerms, state_dir: Path) -> None:
        from jupyter_gpumarket.chain.client import Contracts, connect
        from jupyter_gpumarket.chain.leases import LeaseChain

        self.terms = terms
        self.provider = terms.account.address
        self.domain = eip712.Domain(terms.chain_id, terms.escrow)
        self.issuer = ChallengeIssuer(
            self.domain,
            self.provider,
            price_per_hour=terms.price_per_hour,
            interval=terms.interval,
            token=terms.token,
        )
        self.provider_terms = ProviderTerms(
            self.domain, self.provider, terms.price_per_hour, terms.interval, token=terms.token
        )
        self.ledger = ProviderLedger(state_dir)
        w3 = connect(terms.rpc_url)
        self.chain = LeaseChain(Contracts.at(w3, terms.token, terms.escrow, terms.registry))
        self.live: dict[bytes, LeasePayment] = {}  # channel -> its lease's payment (one each)
        from jupyter_gpumarket.agent.course_guard import CourseGuard

        self.course = CourseGuard(
            self.chain,
            terms.course_pool,
            provider=self.provider,
            price_per_hour=terms.price_per_hour,
            gpu_model=terms.gpu_model,
        )
        self._tx_lock = asyncio.Lock()  # one provider transaction at a time (account nonce)

    # -- the hello ---------------------------------------------------------------------------
    def challenge(self, client: str = "") -> paymsgs.AuthChallenge:
        """A challenge for ``client`` (its IP address: each address has a challenge budget)."""
        c = self.issuer.issue(time.monotonic(), client)
        return paymsgs.AuthChallenge(
            nonce="0x" + c.nonce.hex(),
            provider=c.provider,
            chain_id=c.chain_id,
            escrow=c.escrow,
            ttl=self.issuer.ttl,
            interval=self.terms.interval,
        )

    async def authenticate(
        self,
        channel_hex: str,
        challenge: paymsgs.AuthChallenge,
        answer: paymsgs.AuthAnswer,
        client: str = "",
    ) -> ChannelView:
        """The channel (read from the chain) when the answer proves its session key."""
        channel_id = bytes.fromhex(channel_hex[2:])
        nonce = bytes.fromhex(challenge.nonce[2:])
        self.issuer.consume(nonce, time.monotonic(), client)  # before any chain read
        try:
            info = await asyncio.to_thread(self.chain.channel, channel_id)
        except ChainError as exc:
            raise AuthenticationFailed(f"cannot check channel {channel_hex}: {exc}") from exc
        view = ChannelView.from_info(info)
        self.issuer.check_answer(
            nonce=nonce, channel=view, signature=bytes.fromhex(answer.signature[2:])
        )
        refused = await asyncio.to_thread(self.course.refusal, info)
        if refused:
            raise AuthenticationFailed(f"not served now: {refused}")
        self.ledger.upsert_channel(
            channel_id,
            renter=view.renter,
            provider=view.provider,
            token=info.token,
            deposit=view.deposit,
            price_per_hour=self.terms.price_per_hour,
        )
        return view

    # -- relaying gasless openings ----------------------------------------------------------
    async def relay_open(self, req: paymsgs.RelayOpen) -> paymsgs.RelayResult:
        """Open the channel a renter without gas signed (the escrow checks the signatures;
        a forged or replayed one reverts in gas estimation, so nothing is spent on it)."""
        from jupyter_gpumarket.chain.relay import submit_relay_request
        from jupyter_gpumarket.core.relay_check import relay_refusal

        t = self.terms
        now = await asyncio.to_thread(self.chain.now)
        reason = relay_refusal(
            req,
            provider=self.provider,
            token=t.token,
            relay_fee=t.relay_fee,
            price_per_hour=t.price_per_hour,
            interval=t.interval,
            now=now,
        )
        if reason is None and req.grant:  # a pool opening is in the pool's token: check it
            reason = await asyncio.to_thread(self._pool_token_refusal, req.grant)
        if reason is None:
            reason = await asyncio.to_thread(self.course.relay_refusal, req.grant)
        if reason is not None:
            raise PaymentError(f"relay refused: {reason}")
        async with self._tx_lock:
            channel_id, tx = await asyncio.to_thread(
                submit_relay_request, self.chain, t.account, req
            )
        log.info(
            "relayed channel 0x%s for %s: deposit %s, fee %s (tx %s, gas %s)",
            channel_id.hex(),
            req.renter,
            req.deposit - req.relay_fee,
            req.relay_fee,
            tx.tx_hash,
            tx.gas_used,
        )
        return paymsgs.RelayResult(channel="0x" + channel_id.hex(), tx_hash=tx.tx_hash)

    def _pool_token_refusal(self, grant: str) -> str | None:
        """Why a pool opening would not pay in this offer's token (None: it would)."""
        from jupyter_gpumarket.chain.claims import decode_grant
        from jupyter_gpumarket.chain.relay import pool_token

        try:
            token = pool_token(self.chain, decode_grant(grant))
        except (GpuMarketError, ValueError) as exc:
            return f"cannot read the grant's pool: {exc}"
        if token.lower() != self.terms.token.lower():
            return f"the grant's pool pays in {token}, this provider is paid in {self.terms.token}"
        return None

    # -- settlement --------------------------------------------------------------------------
    async def _plan(self, channel_id: bytes) -> Collection | None:
        """What can be collected on ``channel_id`` now (the channel re-read from the chain and
        the best voucher checked against it); None when the chain cannot be read (retry)."""
        try:
            info = await asyncio.to_thread(self.chain.channel, channel_id)
        except GpuMarketError as exc:
            log.warning("cannot read channel 0x%s (will retry): %s", channel_id.hex(), exc)
            return None
        best = self.ledger.highest_voucher(channel_id)
        plan = plan_collection(
            ChannelView.from_info(info),
            (best.amount, bytes(best.signature)) if best else None,
            self.provider_terms,
        )
        if not plan.possible:
            log.warning("channel 0x%s: nothing to collect: %s", channel_id.hex(), plan.reason)
            self.ledger.set_channel_state(channel_id, "closed")
        elif plan.reason:
            cid = channel_id.hex()
            log.warning("channel 0x%s: collecting %s only: %s", cid, plan.amount, plan.reason)
        return plan

    async def settle(self, channel_id: bytes) -> None:
        """Close the channel with the highest voucher it still accepts (0 if none); retried
        if it fails. Nothing is sent for a channel that cannot pay (closed, foreign token)."""
        plan = await self._plan(channel_id)
        if plan is None or not plan.possible:
            return
        tx_id = self.ledger.begin_tx(channel_id, "settle", plan.amount)
        try:
            async with self._tx_lock:
                result = await asyncio.to_thread(
                    self.chain.settle_highest,
                    self.terms.account,
                    channel_id,
                    (plan.amount, plan.signature) if plan.signature else None,
                )
        except GpuMarketError as exc:
            self.ledger.tx_failed(tx_id, str(exc))
            log.warning("settling channel 0x%s failed (will retry): %s", channel_id.hex(), exc)
            return
        self.ledger.tx_confirmed(tx_id, result.tx.tx_hash)
        self.ledger.set_channel_state(channel_id, "settled")
        log.info(
            "settled channel 0x%s: paid %s, refunded %s (tx %s)",
            channel_id.hex(),
            result.paid,
            result.refunded,
            result.tx.tx_hash,
        )

    async def catch_up(self, active: set[bytes]) -> None:
        """Redeem earned vouchers of running leases; settle those of leases that are over (a
        settle that failed, or an agent that crashed). Failures stay in the ledger for later.
        Each redemption first re-reads the channel (``_plan``)."""
        for voucher in self.ledger.to_redeem():
            channel_id = bytes(voucher.channel_id)
            if channel_id not in active:
                await self.settle(channel_id)
                continue
            plan = await self._plan(channel_id)
            if plan is None or not plan.possible or not plan.signature:
                continue
            tx_id = self.ledger.begin_tx(channel_id, "redeem", plan.amount)
            try:
                async with self._tx_lock:
                    result = await asyncio.to_thread(
                        self.chain.redeem_highest,
                        self.terms.account,
                        channel_id,
                        (plan.amount, plan.signature),
                    )
            except GpuMarketError as exc:
                self.ledger.tx_failed(tx_id, str(exc))
                log.warning("redeem of 0x%s failed (will retry): %s", channel_id.hex(), exc)
                continue
            if result is None:
                self.ledger.tx_confirmed(tx_id)
            else:
                self.ledger.tx_confirmed(tx_id, result.tx.tx_hash)

    async def redeem_loop(self, active: Any) -> None:
        """Every ``redeem_every`` seconds (and once at start): :meth:`catch_up`."""
        while True:
            try:
                await self.catch_up(active())
            except GpuMarketError as exc:  # the RPC is down: vouchers wait in the ledger
                log.warning("redemption deferred: %s", exc)
            await asyncio.sleep(self.terms.redeem_every)

    def lease(self, channel: ChannelView, *, resuming: bool = False) -> LeasePayment:
        """The payment of a new lease on ``channel``; AuthenticationFailed when the channel
        already pays for a live lease (one lease per channel: a hello without a lease id on
        it would take another kernel slot). ``resuming``: the hello names a lease."""
        held = self.live.get(channel.channel_id)
        if not resuming and held is not None:
            raise AuthenticationFailed(
                f"channel 0x{channel.channel_id.hex()} already pays for a lease on this "
                "provider: resume that lease (its id in the hello) or open a new channel"
            )
        return LeasePayment(self, channel)


class LeasePayment:
    """One paid lease: billing clock, voucher state machine, highest voucher."""

    def __init__(self, payments: Payments, channel: ChannelView) -> None:
        self.payments = payments
        self.channel = channel
        self.clock = BillingClock()
        interval = payments.terms.interval
        self.machine = LeaseMachine(
            LeasePolicy(
                interval=interval,
                grace=payments.terms.grace,
                slack=min(DEFAULT_SLACK, interval / 2),  # short intervals keep some slack
            )
        )
        self.accepted = 0
        self.settled = False
        self.stop_reason = ""  # set when the channel on chain stops backing this lease
        self._recheck_at = time.monotonic() + interval
        self._rechecking = False

    def claim(self) -> None:
        """This payment's lease exists: its channel pays for no other (see Payments.lease)."""
        self.payments.live[self.channel.channel_id] = self

    def release(self) -> None:
        if self.payments.live.get(self.channel.channel_id) is self:
            del self.payments.live[self.channel.channel_id]

    def recheck_due(self, now: float) -> bool:
        """Time to read the channel again (every voucher interval; one eth_call)."""
        return not self._rechecking and not self.stop_reason and now >= self._recheck_at

    async def recheck(self) -> None:
        """Read the channel again: the renter may have asked to close it, or it may not be in
        the offer's token. Either sets ``stop_reason``: no voucher is accepted after it, and
        the lease's watcher stops the kernel and settles with the best voucher still valid.
        An RPC that is down changes nothing (checked again next interval)."""
        self._rechecking = True
        cid = self.channel.channel_id
        try:
            info = await asyncio.to_thread(self.payments.chain.channel, cid)
        except GpuMarketError as exc:
            log.warning("cannot re-read channel 0x%s: %s", cid.hex(), exc)
            return
        finally:
            self._rechecking = False
            self._recheck_at = time.monotonic() + self.payments.terms.interval
        now_view = ChannelView.from_info(info)
        self.stop_reason = channel_change(self.channel, now_view, self.payments.provider_terms)
        if not self.stop_reason:  # a course pays: revoked? outside its window?
            self.stop_reason = await asyncio.to_thread(self.payments.course.refusal, info)
        if self.stop_reason:
            log.warning("channel 0x%s: %s", cid.hex(), self.stop_reason)
        elif now_view.deposit > self.channel.deposit:  # a top-up the renter did not announce
            self.channel = dataclasses.replace(self.channel, deposit=now_view.deposit)

    async def refresh_deposit(self) -> None:
        """The renter topped up: read the channel again (the chain is the truth, not the
        message); a deposit never shrinks here, so a stale read cannot undo a top-up."""
        cid = self.channel.channel_id
        try:
            info = await asyncio.to_thread(self.payments.chain.channel, cid)
        except ChainError as exc:
            log.warning("cannot re-read channel 0x%s after a top-up: %s", cid.hex(), exc)
            return
        if info.deposit > self.channel.deposit and info.renter == self.channel.renter:
            log.info("channel 0x%s topped up: deposit %s", cid.hex(), info.deposit)
            self.channel = dataclasses.replace(self.channel, deposit=info.deposit)
            self.payments.ledger.upsert_channel(
                cid,
                renter=self.channel.renter,
                provider=self.channel.provider,
                token=info.token,
                deposit=info.deposit,
                price_per_hour=self.payments.terms.price_per_hour,
            )

    def kernel_ready(self) -> None:
        now = time.monotonic()
        self.clock.kernel_ready(now)
        self.machine.handle(Event(EventType.KERNEL_READY), now)

    def kernel_stopped(self) -> None:
        self.clock.kernel_stopped(time.monotonic())

    def on_voucher(self, msg: paymsgs.Voucher) -> list[Any]:
        """Check a voucher; the messages to send back."""
        now = time.monotonic()
        if self.stop_reason:
            return [
                paymsgs.PaymentNotice(level="warn", message=f"voucher refused: {self.stop_reason}")
            ]
        billed = self.clock.billed_seconds(now)
        decision = check_voucher(
            SignedVoucher(self.channel.channel_id, msg.amount, bytes.fromhex(msg.signature[2:])),
            channel=self.channel,
            terms=self.payments.provider_terms,
            last_accepted=self.accepted,
            billed_seconds=billed,
        )
        if decision.verdict is Verdict.REJECT:
            return [
                paymsgs.PaymentNotice(level="warn", message=f"voucher refused: {decision.reason}")
            ]
        if decision.keep:
            self.payments.ledger.save_voucher(  # durable before we acknowledge it
                self.channel.channel_id, decision.amount, bytes.fromhex(msg.signature[2:])
            )
            self.accepted = max(self.accepted, decision.amount)
        replies: list[Any] = [paymsgs.VoucherAck(amount=self.accepted, billed_seconds=billed)]
        if decision.covers:
            was_paused = not self.machine.executions_allowed
            self.machine.handle(Event(EventType.VOUCHER_OK), now)
            if was_paused and self.machine.executions_allowed:
                replies.append(paymsgs.PaymentNotice(level="resume", message="vouchers caught up"))
        elif decision.reason:
            replies.append(paymsgs.PaymentNotice(level="warn", message=decision.reason))
        return replies

    def poll(self) -> tuple[str, str] | None:
        """Advance the clock: ("warn"|"pause"|"stop", message) when something changed."""
        if self.stop_reason:
            return "stop", f"the provider stops this kernel: {self.stop_reason}"
        now = time.monotonic()
        event = self.machine.poll(now)
        if event is None:
            return None
        self.machine.handle(event, now)
        if event.type is EventType.GRACE_EXPIRED:
            return "stop", (
                f"no covering voucher for {self.payments.terms.grace:.0f} s: the provider "
                "stops this kernel and settles the channel"
            )
        if self.machine.executions_allowed:
            return "warn", f"voucher {event.late_by:.0f} s late: the renter's wallet must sign"
        return "pause", "vouchers are overdue: new executions wait until one arrives"

    @property
    def executions_allowed(self) -> bool:
        return self.machine.executions_allowed
