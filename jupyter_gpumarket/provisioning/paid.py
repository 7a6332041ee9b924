"""Renter side of paid leases: pick an offer, open (or resume) the channel, and the lease's
state: its metering, vouchers, record. Streaming the vouchers while the kernel runs:
:mod:`.paid_run`.

Selection comes from provisioner traits or env: GPUMARKET_NETWORK (profile), GPUMARKET_OFFER
(an offer id, or a filter such as ``gpu=H100,max_price=2500000,region=eu``), GPUMARKET_BUDGET
(base units), GPUMARKET_WALLET (keystore) + GPUMARKET_WALLET_PASSWORD. Chain calls are
blocking (web3): callers run them in a worker thread. The wallet key never leaves this process;
the provider only ever sees the lease's session key signatures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_gpumarket.core import eip712, paymsgs
from jupyter_gpumarket.core.auth_challenge import answer_challenge
from jupyter_gpumarket.core.course import course_kernel_budget
from jupyter_gpumarket.core.metering import (
    WARN_PERCENT,
    BillingClock,
    ClockState,
    VoucherSchedule,
)
from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.exceptions import PaymentError
from jupyter_gpumarket.provisioning import lease_record
from jupyter_gpumarket.provisioning.offers import OfferChoice, parse_offer_spec, pick_offer
from jupyter_gpumarket.provisioning.paid_state import PaidState, encrypt_session_key

__all__ = [
    "OfferChoice",
    "PaidLease",
    "open_paid_lease",
    "parse_offer_spec",
    "pick_offer",
    "resume_paid_lease",
]

log = logging.getLogger(__name__)


@dataclass
class PaidLease:
    """One paid lease in progress, renter side."""

    offer: OfferChoice
    channel_id: bytes
    deposit: int
    session_key: Any = field(repr=False)
    domain: eip712.Domain
    schedule: VoucherSchedule
    chain: Any  # chain.leases.LeaseChain
    renter: Any = field(repr=False)
    ledger: Any  # chain.renter_ledger.RenterLedger
    record_id: str
    clock: BillingClock = field(default_factory=BillingClock)
    acked: int = 0
    stopped_for_budget: str | None = None
    ack_event: asyncio.Event = field(default_factory=asyncio.Event)  # set on each VoucherAck
    network: str = ""
    sealed_key: dict[str, Any] | None = field(default=None, repr=False)  # encrypted session key
    persist: Any = None  # called after each tick / top-up (a re-adoptable kernel's state)
    resumed: bool = False  # re-adopted after a Jupyter server restart
    progress: Any = None  # lease_record.ProgressWriter: live billed seconds/spend in the ledger
    vouchers_sent: int = 0  # shown in the launch's spend events

    def on_ack(self, amount: int) -> None:
        self.acked = max(self.acked, amount)
        self.ack_event.set()

    @property
    def channel_hex(self) -> str:
        return "0x" + self.channel_id.hex()

    @property
    def expected(self) -> tuple[str, int, str]:
        """(provider, chain id, escrow) a provider's hello challenge must name."""
        return (self.offer.provider, self.domain.chain_id, self.domain.verifying_contract)

    def answer(self, challenge: paymsgs.AuthChallenge) -> paymsgs.AuthAnswer:
        """Sign the provider's hello challenge with the session key."""
        reply = answer_challenge(
            challenge,
            session_key=self.session_key.key,
            channel_id=self.channel_id,
            expected=self.expected,
        )
        self.schedule.interval = challenge.interval  # vouchers as often as this provider wants
        return reply

    def voucher(self, amount: int) -> paymsgs.Voucher:
        sig = eip712.sign_typed_data(
            self.session_key.key, eip712.voucher(self.domain, self.channel_id, amount)
        )
        return paymsgs.Voucher(amount=amount, signature="0x" + sig.hex())

    def tick(self) -> tuple[paymsgs.Voucher | None, str | None, str | None, int]:
        """(voucher to send, warning, stop message, amount to top up) for now."""
        t = self.schedule.tick(self.clock.billed_seconds(time.monotonic()))
        # Nothing new to sign still sends the last voucher again: it tells the provider the
        # renter is alive and paid up (a duplicate is harmless).
        voucher = self.voucher(t.amount if t.amount else self.schedule.signed)
        if t.stop:
            self.stopped_for_budget = t.stop
        self.persist_now()
        return voucher, t.warn, t.stop, t.top_up

    def persist_now(self) -> None:
        """Save the state a re-adopting server resumes from. The tunnel loop (clock events,
        ticks) and the provisioner's thread both call this: the lock makes each snapshot and
        its write one step, so the file always ends with the latest snapshot."""
        if self.persist is not None:
            with _PERSIST_LOCK:
                try:
                    self.persist()
                except OSError as exc:  # a full disk must not stop the payments
                    log.warning("could not save the lease's state for re-adoption: %s", exc)

    def snapshot(self, kernel_id: str) -> Any:
        """This lease as a provisioning.paid_state.PaidState (for re-adoption)."""

        assert self.sealed_key is not None
        now = time.monotonic()
        return PaidState(
            kernel_id=kernel_id,
            network=self.network,
            offer=dataclasses.asdict(self.offer),
            channel_id=self.channel_hex,
            chain_id=self.domain.chain_id,
            escrow=self.domain.verifying_contract,
            deposit=self.deposit,
            budget=self.schedule.budget,
            auto_top_up=self.schedule.auto_top_up,
            record_id=self.record_id,
            renter=self.renter.address if self.renter is not None else "",
            session_key=self.sealed_key,
            signed=self.schedule.signed,
            billed_seconds=self.clock.running_seconds(now),
            billing=self.clock.state is ClockState.BILLING,
            saved_at=time.time(),
        )

    def top_up(self, amount: int) -> str:
        """Add ``amount`` to the channel (blocking: approve + topUp); the topUp tx hash."""
        try:
            txs = self.chain.top_up(self.renter, self.channel_id, amount)
        except Exception:
            self.schedule.top_up_failed()
            raise
        self.schedule.deposit_added(amount)
        self.deposit += amount
        self.ledger.update(self.record_id, deposit=self.deposit)
        for tx in txs:
            self.ledger.add_tx(self.record_id, tx.to_json())
        self.persist_now()
        return txs[-1].tx_hash

    def final_voucher(self) -> paymsgs.Voucher | None:
        now = time.monotonic()
        self.clock.end(now)
        amount = self.schedule.final(self.clock.billed_seconds(now))
        return self.voucher(amount) if amount > self.acked else None

    def record_launch_failure(self, reason: str) -> None:
        lease_record.record_ended(self.ledger, self.record_id, error=reason[:500])

    def record_started(self, at: float) -> None:
        try:
            lease_record.record_started(self.ledger, self.record_id, at)
        except Exception as exc:  # the ledger must not stop the payments
            log.warning("could not record lease %s as running: %s", self.record_id, exc)

    def record_progress(self) -> None:
        """The ledger's live billed seconds, spend and deposit (throttled; at a voucher)."""
        if self.progress is None:
            self.progress = lease_record.ProgressWriter(self.ledger, self.record_id)
        billed = self.clock.billed_seconds(time.monotonic())
        self.progress.write(billed, self.schedule.signed, self.deposit)

    def record_end(self) -> None:
        billed = self.clock.billed_seconds(time.monotonic())
        spent = self.schedule.signed
        lease_record.record_ended(
            self.ledger,
            self.record_id,
            billed_seconds=billed,
            spent=spent,
            refunded=max(0, self.deposit - spent),
        )


_UNLOCKED: dict[tuple[str, str], Any] = {}
_PERSIST_LOCK = threading.Lock()


def _unlocked(wallet: str | None, password: str, load_account: Any) -> Any:
    """The wallet's account, decrypted once per process: scrypt takes about a second, and a
    Jupyter server starts many kernels (the key already lives in this process either way)."""
    import hashlib

    path = Path(wallet).expanduser() if wallet else None
    key = (str(path), hashlib.sha256(password.encode()).hexdigest())
    if key not in _UNLOCKED:
        _UNLOCKED[key] = load_account(password, path)
    return _UNLOCKED[key]


def open_paid_lease(
    *,
    network: str,
    offer_spec: str,
    budget: int,
    wallet: str | None,
    password: str,
    grant: str = "",
    auto_top_up: bool = False,
    initial_hours: float = 1.0,
    offer: OfferChoice | None = None,
) -> PaidLease:
    """Pick the offer, open a channel to its provider with a fresh session key (blocking):
    from the wallet, relayed by the provider when the wallet has no gas, or from a credit pool
    when ``grant`` (a grant code) is given (see provisioning.paid_open). ``offer``: the one
    the provisioner's routing chose (else picked from ``offer_spec`` by its terms)."""
    from jupyter_gpumarket.chain.claims import decode_grant
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.chain.renter_ledger import NetworkKey, RenterLedger
    from jupyter_gpumarket.provisioning.paid_open import open_channel_for_offer
    from jupyter_gpumarket.provisioning.relay_client import probe_provider

    profile = load_profile(network) if network else active_profile()
    token, escrow, registry = profile.require_contracts()
    renter = _unlocked(wallet, password, load_account)
    contracts = Contracts.bound(connect(profile.rpc_url), token, escrow, registry)
    offer = offer or pick_offer(contracts.registry, offer_spec)
    normalize_fingerprint(offer.tls_fingerprint)
    if offer.unsandboxed:
        log.warning("%s", offer.unsandboxed_warning)
    grant_code = decode_grant(grant, renter.address) if grant else None
    # no channel to a provider that is down (a kernel restarter would open one per attempt)
    # ... and whose agent is the offer's provider (a copied endpoint would take the deposit)
    asyncio.run(
        probe_provider(
            offer.endpoint,
            offer.tls_fingerprint,
            expected=(offer.provider, profile.chain_id, escrow),
        )
    )
    chain = LeaseChain(contracts)
    course_left: int | None = None  # a course pays: its credit left beyond this lease
    if grant_code is not None:
        from jupyter_gpumarket.chain.relay import grant_room

        room = grant_room(chain, grant_code)
        if room <= 0:
            raise PaymentError("your course credit is spent: ask your course admin for more")
        if budget <= 0:  # the course pays one kernel's slice of what is left of the cap
            budget = course_kernel_budget(room, offer.price_per_hour)
            initial_hours = max(initial_hours, budget / max(1, offer.price_per_hour) + 1)
        course_left = max(0, room - budget)
    opened, how = open_channel_for_offer(
        chain, renter, offer, budget=budget, grant=grant_code, initial_hours=initial_hours
    )
    if auto_top_up and how != "own":
        log.warning(
            "auto top-up needs a wallet with gas and a channel it funded itself (this one: %s): "
            "the lease stops cleanly when its deposit is spent",
            how,
        )
        auto_top_up = False
    ledger = RenterLedger()
    record = ledger.create(
        provider=offer.provider,
        channel_id=opened.channel_id,
        network=network or profile.name,  # what finds the profile again (name or path)
        renter=renter.address,
        price_per_hour=offer.price_per_hour,
        deposit=opened.deposit,
        offer_id=offer.offer_id,
        provider_url=offer.endpoint,
        txs=[t.to_json() for t in opened.txs],
        network_key=NetworkKey(profile.chain_id, escrow),
    )
    log.info(
        "opened channel %s to %s for offer %s (%s): deposit %s",
        "0x" + opened.channel_id.hex(),
        offer.provider,
        offer.offer_id,
        how,
        opened.deposit,
    )
    return PaidLease(
        offer=offer,
        channel_id=opened.channel_id,
        deposit=opened.deposit,
        session_key=opened.session_key,
        domain=eip712.Domain(profile.chain_id, escrow),
        schedule=VoucherSchedule(
            price_per_hour=offer.price_per_hour,
            deposit=opened.deposit,
            budget=budget,
            auto_top_up=auto_top_up,
            course_left=course_left,
        ),
        chain=chain,
        renter=renter,
        ledger=ledger,
        record_id=record.id,
        network=network or profile.name,
        sealed_key=encrypt_session_key(bytes(opened.session_key.key), password),
    )


def resume_paid_lease(state: PaidState, password: str) -> PaidLease:
    """A lease from its saved state (a restarted Jupyter server re-adopting its kernel): same
    channel and session key; billing carries on from the seconds billed so far. Needs no RPC:
    it only signs vouchers (no top-ups)."""
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger
    from jupyter_gpumarket.provisioning.paid_state import decrypt_session_key

    key = decrypt_session_key(state, password)
    if state.auto_top_up:  # top-ups need the wallet, which stays locked after a re-adoption
        log.warning("re-adopted lease %s: auto top-up is off until a new lease", state.channel_id)
    schedule = VoucherSchedule(
        price_per_hour=state.offer["price_per_hour"],
        deposit=state.deposit,
        budget=state.budget,
    )
    schedule.signed = state.signed
    schedule.warned = state.signed * 100 >= schedule.limit * WARN_PERCENT
    return PaidLease(
        offer=OfferChoice(**state.offer),
        channel_id=bytes.fromhex(state.channel_id[2:]),
        deposit=state.deposit,
        session_key=key,
        domain=eip712.Domain(state.chain_id, state.escrow),
        schedule=schedule,
        chain=None,  # no top-ups, so no chain: vouchers need no RPC
        renter=None,  # the wallet stays locked: a re-adopted lease only signs vouchers
        ledger=RenterLedger(),
        record_id=state.record_id,
        clock=BillingClock(carried=state.billed_now()),
        acked=state.signed,
        network=state.network,
        sealed_key=state.session_key,
        resumed=True,
    )
