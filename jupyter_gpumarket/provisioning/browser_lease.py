"""A paid lease whose channel a browser wallet opens (``wallet: "browser"`` in the notebook's
selection): the provisioner publishes what to sign (a ``sign`` warning event, see
:mod:`jupyter_gpumarket.core.browser_open`) and waits, cancellable and with a timeout, for
``POST launches/ID/signed``; each answer is checked here against the chain before the
launch goes on, and a bad one leaves the launch waiting.

No keystore is unlocked: the browser's address is the lease's renter (in the lease ledger);
the server only holds the lease's fresh session key, which signs the vouchers. Such a lease
has no auto top-up and is not re-adopted after a Jupyter server restart (its session key is
not saved).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.browser_open import (
    OpeningRequest,
    SignedOpening,
    check_channel,
    check_signatures,
    parse_signed,
)
from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    LaunchCancelled,
    LaunchStateConflict,
    PaymentError,
)

__all__ = ["Pending", "build_request", "open_browser_lease", "pending"]

log = logging.getLogger(__name__)

SIGN_TIMEOUT_S = 600.0  # the user has this long to sign in the wallet
RECEIPT_TIMEOUT_S = 60.0  # a posted tx hash is waited for this long (a block or a few)
MAX_RELAY_FEE_PERCENT = 10

_PENDING: dict[str, Pending] = {}
_LOCK = threading.Lock()


@dataclass
class Pending:
    """One launch waiting for its browser-signed opening."""

    kernel_id: str
    request: OpeningRequest
    chain: Any  # chain.leases.LeaseChain
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[SignedOpening, Any]]
    _busy: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, body: Any) -> dict[str, Any]:
        """Check what the browser sent (blocking: chain reads); PaymentError (the launch
        keeps waiting), LaunchStateConflict when nothing waits any more."""
        signed = parse_signed(body)
        if not self._busy.acquire(blocking=False):
            raise LaunchStateConflict("another answer for this opening is being checked")
        try:
            if self.future.done():
                raise LaunchStateConflict(
                    f"kernel {self.kernel_id} is not waiting for a signed opening"
                )
            detail = self._verify(signed)
            self.loop.call_soon_threadsafe(_resolve, self.future, (signed, detail))
        finally:
            self._busy.release()
        return {"channel_id": "0x" + self.request.channel_id.hex(), "accepted": True}

    def _verify(self, signed: SignedOpening) -> Any:
        req, chain = self.request, self.chain
        if signed.tx_hash is None:
            allowance = int(chain.c.token.functions.allowance(req.renter, req.escrow).call())
            return check_signatures(req, signed, chain.now(), allowance)
        try:
            chain.w3.eth.get_transaction(signed.tx_hash)
        except Exception:  # web3's TransactionNotFound: the node never saw it
            raise PaymentError(
                f"transaction 0x{signed.tx_hash.hex()} is unknown to the chain: post the hash "
                "of the Escrow.open transaction the wallet sent, on this network"
            ) from None
        try:
            receipt = chain.w3.eth.wait_for_transaction_receipt(
                signed.tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.2
            )
        except Exception as exc:  # web3's TimeExhausted / TransactionNotFound
            raise PaymentError(
                f"transaction 0x{signed.tx_hash.hex()} was not mined ({type(exc).__name__}): "
                "post its hash again once the wallet shows it confirmed"
            ) from None
        sender = str(receipt.get("from", ""))
        to = str(receipt.get("to") or "")
        if receipt.get("status") != 1 or to.lower() != req.escrow.lower():
            raise PaymentError(
                f"transaction 0x{signed.tx_hash.hex()} is not a successful call of the escrow "
                f"{req.escrow}: post the hash of the Escrow.open transaction"
            )
        if sender.lower() != req.renter.lower():
            raise PaymentError(
                f"transaction 0x{signed.tx_hash.hex()} was sent by {sender}, not by the "
                f"connected wallet {req.renter}"
            )
        check_channel(req, chain.channel(req.channel_id))
        return receipt


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def pending(kernel_id: str) -> Pending | None:
    """The launch of ``kernel_id`` waiting for a signed opening, if any."""
    with _LOCK:
        return _PENDING.get(kernel_id)


def build_request(
    chain: Any, renter: str, offer: Any, deposit: int, session_key: str
) -> OpeningRequest:
    """What ``renter`` signs to open ``deposit`` to ``offer``'s provider (blocking: reads the
    token's permit domain and nonce and the chain's time)."""
    from jupyter_gpumarket.chain.client import call
    from jupyter_gpumarket.chain.leases import PERMIT_WINDOW
    from jupyter_gpumarket.core.offer_meta import relay_fee_of
    from jupyter_gpumarket.exceptions import TransactionReverted

    token = chain.c.token
    permit_domain: eip712.Domain | None = None
    nonce: int | None = None
    try:
        info = call(token.functions.eip712Domain(), what="token.eip712Domain")
        nonce = int(call(token.functions.nonces(renter), what="token.nonces"))
        _f, name, version, chain_id, verifying = info[:5]
        permit_domain = eip712.Domain(chain_id, verifying, name=name, version=version)
    except (TransactionReverted, ChainError):
        permit_domain, nonce = None, None
    fee = relay_fee_of(offer.metadata)
    if fee is not None and fee * 100 > deposit * MAX_RELAY_FEE_PERCENT:
        fee = None  # too dear to relay: only the wallet's own transactions then
    if fee is not None and permit_domain is None:
        fee = None  # a relayed opening without a permit needs an approval tx anyway
    return OpeningRequest(
        renter=renter,
        chain_id=int(chain.w3.eth.chain_id),
        escrow=chain.c.escrow.address,
        token=token.address,
        provider=offer.provider,
        deposit=deposit,
        session_key=session_key,
        deadline=chain.now() + PERMIT_WINDOW,
        relay_fee=fee,
        permit_domain=permit_domain,
        permit_nonce=nonce,
    )


async def _wait(tracker: Any, future: asyncio.Future[Any], timeout: float) -> Any:
    """The browser's checked answer; LaunchCancelled on cancel, ConfigError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if tracker.cancel_requested:
            raise LaunchCancelled("the launch was cancelled while waiting for the wallet")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConfigError(
                f"the browser wallet did not sign the opening within {timeout:.0f} s: nothing "
                "was paid; start the kernel again and approve the request in the wallet"
            )
        done, _ = await asyncio.wait({future}, timeout=min(0.5, left))
        if done:
            return future.result()


async def open_browser_lease(
    prov: Any,
    *,
    network: str,
    offer_spec: str,
    renter: str,
    budget: int,
    initial_hours: float,
    offer: Any = None,
    timeout: float = SIGN_TIMEOUT_S,
) -> Any:
    """Open the lease's channel with the browser wallet ``renter``; a paid.PaidLease."""
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.leases import LeaseChain, TxInfo
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.chain.session_keys import new_session_key
    from jupyter_gpumarket.core.metering import initial_deposit
    from jupyter_gpumarket.core.pinning import normalize_fingerprint
    from jupyter_gpumarket.provisioning import launch_flow
    from jupyter_gpumarket.provisioning.offers import pick_offer
    from jupyter_gpumarket.provisioning.relay_client import probe_provider, request_relay

    try:
        renter = eip712._address("browser wallet address", renter)
    except (ValueError, PaymentError, ConfigError):
        raise ConfigError(
            f"the browser wallet address {renter[:60]!r} is not an address: connect the "
            "browser wallet again"
        ) from None
    profile = load_profile(network) if network else active_profile()
    token, escrow, registry = profile.require_contracts()

    def prepare() -> tuple[Any, Any, OpeningRequest, Any]:
        contracts = Contracts.bound(connect(profile.rpc_url), token, escrow, registry)
        chosen = offer or pick_offer(contracts.registry, offer_spec)
        normalize_fingerprint(chosen.tls_fingerprint)
        chain = LeaseChain(contracts)
        deposit = initial_deposit(budget, chosen.price_per_hour, initial_hours)
        chain.check_balance(renter, deposit)
        key = new_session_key()
        return chain, chosen, build_request(chain, renter, chosen, deposit, key.address), key

    chain, chosen, req, key = await asyncio.to_thread(prepare)
    await probe_provider(
        chosen.endpoint,
        chosen.tls_fingerprint,
        expected=(chosen.provider, profile.chain_id, escrow),
    )
    tracker = launch_flow.tracker(prov)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[SignedOpening, Any]] = loop.create_future()
    waiting = Pending(str(prov.kernel_id), req, chain, loop, future)
    with _LOCK:
        _PENDING[waiting.kernel_id] = waiting
    tracker.warn(
        "sign",
        f"sign the channel opening in the browser wallet {req.renter}: deposit {req.deposit} "
        f"to provider {req.provider}",
        opening=req.to_json(),
    )
    try:
        signed, detail = await _wait(tracker, future, timeout)
    finally:
        with _LOCK:
            if _PENDING.get(waiting.kernel_id) is waiting:
                del _PENDING[waiting.kernel_id]
        if not future.done():
            future.cancel()
    if signed.tx_hash is not None:
        txs: tuple[Any, ...] = (TxInfo.of("open", detail),)
        deposit = req.deposit
        how = "browser"
    else:
        from jupyter_gpumarket.core import paymsgs
        from jupyter_gpumarket.provisioning.paid_open import _opened

        assert req.relay_fee is not None
        assert signed.open_sig is not None
        permit = "0x" + signed.permit_sig.hex() if detail and signed.permit_sig else ""
        relay = paymsgs.RelayOpen(
            renter=req.renter,
            provider=req.provider,
            token=req.token,
            deposit=req.deposit,
            session_key=req.session_key,
            relay_fee=req.relay_fee,
            deadline=req.deadline,
            open_sig="0x" + signed.open_sig.hex(),
            permit=permit,
        )
        result = await request_relay(chosen.endpoint, chosen.tls_fingerprint, relay)
        receipt = await asyncio.to_thread(chain.w3.eth.get_transaction_receipt, result.tx_hash)
        opened = await asyncio.to_thread(
            _opened,
            chain,
            SimpleNamespace(address=req.renter),
            chosen,
            key,
            req.deposit - req.relay_fee,
            TxInfo.of("open", receipt),
            relayed_fee=req.relay_fee,
        )
        txs, deposit, how = opened.txs, opened.deposit, "browser-relayed"
    return await asyncio.to_thread(
        _lease, chain, profile, network, chosen, req, key, deposit, txs, budget, how
    )


def _lease(
    chain: Any,
    profile: Any,
    network: str,
    offer: Any,
    req: OpeningRequest,
    key: Any,
    deposit: int,
    txs: tuple[Any, ...],
    budget: int,
    how: str,
) -> Any:
    """The PaidLease of the opened channel (its ledger record names the browser's address)."""
    from jupyter_gpumarket.chain.renter_ledger import NetworkKey, RenterLedger
    from jupyter_gpumarket.core.metering import VoucherSchedule
    from jupyter_gpumarket.provisioning.paid import PaidLease

    escrow = req.escrow
    ledger = RenterLedger()
    record = ledger.create(
        provider=offer.provider,
        channel_id=req.channel_id,
        network=network or profile.name,
        renter=req.renter,
        price_per_hour=offer.price_per_hour,
        deposit=deposit,
        offer_id=offer.offer_id,
        provider_url=offer.endpoint,
        txs=[t.to_json() for t in txs],
        network_key=NetworkKey(profile.chain_id, escrow),
    )
    log.info(
        "browser wallet %s opened channel 0x%s to %s (%s): deposit %s",
        req.renter,
        req.channel_id.hex(),
        offer.provider,
        how,
        deposit,
    )
    return PaidLease(
        offer=offer,
        channel_id=req.channel_id,
        deposit=deposit,
        session_key=key,
        domain=eip712.Domain(profile.chain_id, escrow),
        schedule=VoucherSchedule(
            price_per_hour=offer.price_per_hour, deposit=deposit, budget=budget
        ),
        chain=chain,
        renter=SimpleNamespace(address=req.renter),
        ledger=ledger,
        record_id=record.id,
        network=network or profile.name,
    )
