"""The on-chain operations of one paid lease (renter and provider side).

Renter::

    chain = LeaseChain(Contracts.at(w3, profile.token, profile.escrow, profile.registry))
    opened = chain.open_for_offer(wallet, offer_id, budget=5_000_000)      # permit: 1 tx
    sig = chain.sign_voucher(opened.session_key, opened.channel_id, amount)  # off chain
    ...
    step = chain.recover_deposit(wallet, opened.channel_id)   # provider gone: requestClose,
    step = chain.recover_deposit(wallet, opened.channel_id)   # ...close_delay later: withdraw

Provider::

    chain.redeem_highest(provider, channel_id, (amount, sig))   # periodically
    chain.settle_highest(provider, channel_id, (amount, sig))   # at the end (None: pays 0)

Normal lease = two transactions: ``openWithPermit`` by the renter and ``settle`` by the provider
(with a token without EIP-2612 permit, an ``approve`` comes first; it is reported apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jupyter_gpumarket.chain.client import Contracts, call, send
from jupyter_gpumarket.chain.escrow import ChannelInfo, EscrowClient
from jupyter_gpumarket.chain.session_keys import new_session_key
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.metering import initial_deposit
from jupyter_gpumarket.exceptions import (
    ChainError,
    ConfigError,
    PaymentError,
    TransactionReverted,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "CloseResult",
    "LeaseChain",
    "OfferTerms",
    "OpenedChannel",
    "RecoveryStep",
    "TxInfo",
]

PERMIT_WINDOW = 3600
OpenMethod = Literal["auto", "permit", "approve"]


@dataclass(frozen=True)
class TxInfo:
    """One mined transaction: what it was, its hash and gas used."""

    kind: str
    tx_hash: str
    gas_used: int

    @classmethod
    def of(cls, kind: str, receipt: Any) -> TxInfo:
        return cls(kind, "0x" + bytes(receipt["transactionHash"]).hex(), int(receipt["gasUsed"]))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tx_hash": self.tx_hash, "gas_used": self.gas_used}


@dataclass(frozen=True)
class OfferTerms:
    """What a Registry offer says about payment."""

    offer_id: int
    provider: str
    price_per_hour: int
    token: str
    active: bool


@dataclass(frozen=True)
class OpenedChannel:
    """A channel the renter opened; ``session_key`` signs its vouchers: never give it to the
    provider or the kernel (provisioning.paid_state keeps it only encrypted)."""

    channel_id: bytes
    renter: str
    provider: str
    token: str
    deposit: int
    price_per_hour: int
    session_key: LocalAccount = field(repr=False)
    txs: tuple[TxInfo, ...]  # the lease's own transactions (the open)
    approvals: tuple[TxInfo, ...] = ()  # token approvals, counted apart


@dataclass(frozen=True)
class CloseResult:
    """A settle or redeem: what the provider got in this tx, what went back to the renter."""

    channel_id: bytes
    cumulative_amount: int
    paid: int
    refunded: int
    tx: TxInfo


@dataclass(frozen=True)
class RecoveryStep:
    """Where the renter's recovery of a deposit stands.

    ``state``: "closing" (requestClose sent or pending; withdraw at ``close_at``), "withdrawn"
    (the rest came back in ``tx``), "closed" (the provider settled already: nothing to do).
    """

    state: Literal["closing", "withdrawn", "closed"]
    close_at: int
    refunded: int
    paid: int
    tx: TxInfo | None = None


def _events(contract: Any, name: str, receipt: Any) -> list[Any]:
    from web3.logs import DISCARD

    return list(getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD))


def _best(best: tuple[int, bytes] | None) -> tuple[int, bytes] | None:
    if best is None:
        return None
    amount, sig = best
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise PaymentError(f"voucher amount must be a non-negative int, got {amount!r}")
    return amount, bytes(sig)


class LeaseChain:
    """Chain calls for paid leases over one deployment (one token, one escrow, one registry)."""

    def __init__(self, contracts: Contracts) -> None:
        self.c = contracts
        self.w3 = contracts.w3
        self.escrow = EscrowClient(contracts)

    # ---------------------------------------------------------------- reading

    def offer(self, offer_id: int) -> OfferTerms:
        raw = call(self.c.registry.functions.offers(offer_id), what="Registry.offers")
        provider, price, token, active = raw[0], raw[6], raw[7], raw[10]
        if int(provider, 16) == 0:
            raise ConfigError(
                f"no offer {offer_id} in this network's registry: check the offer id its "
                "provider printed (`offer N`) and the network (`gpumarket network list`)"
            )
        return OfferTerms(offer_id, provider, int(price), token, bool(active))

    def channel(self, channel_id: bytes) -> ChannelInfo:
        return self.escrow.channel(channel_id)

    def now(self) -> int:
        """The latest block's timestamp (the escrow's clock)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # ---------------------------------------------------------------- renter: open

    def open_for_offer(
        self,
        renter: LocalAccount,
        offer_id: int,
        *,
        budget: int,
        initial_hours: float = 1.0,
        method: OpenMethod = "auto",
    ) -> OpenedChannel:
        """Open a channel paying the offer's provider, deposit ``min(budget, price * hours)``."""
        offer = self.offer(offer_id)
        if not offer.active:
            raise ConfigError(f"offer {offer_id} is no longer active; pick another offer")
        if offer.token != self.c.token.address:
            raise ConfigError(
                f"offer {offer_id} is paid in {offer.token}, not this network's token "
                f"{self.c.token.address}; pick an offer in this network's token"
            )
        return self.open(
            renter,
            provider=offer.provider,
            price_per_hour=offer.price_per_hour,
            deposit=initial_deposit(budget, offer.price_per_hour, initial_hours),
            method=method,
        )

    def open(
        self,
        renter: LocalAccount,
        *,
        provider: str,
        price_per_hour: int,
        deposit: int,
        method: OpenMethod = "auto",
        session_key: LocalAccount | None = None,
    ) -> OpenedChannel:
        """Open a channel with a fresh session key: ``permit`` (1 tx), or ``approve`` + open
        (the approval is skipped when the allowance already covers the deposit)."""
        if isinstance(deposit, bool) or not isinstance(deposit, int) or deposit <= 0:
            raise PaymentError(f"deposit must be a positive int of base units, got {deposit!r}")
        self.check_balance(renter.address, deposit)
        key = session_key or new_session_key()
        token, escrow = self.c.token, self.c.escrow
        approvals: tuple[TxInfo, ...] = ()
        permit_args = self.permit_args(renter, deposit) if method in ("auto", "permit") else None
        if permit_args is None and method == "permit":
            raise ChainError(
                f"token {token.address} does not support EIP-2612 permit: use method='approve'"
            )
        if permit_args is not None:
            fn = escrow.functions.openWithPermit(
                provider, token.address, deposit, key.address, *permit_args
            )
            receipt = send(self.w3, renter, fn, what="Escrow.openWithPermit")
        else:
            allowance = call(token.functions.allowance(renter.address, escrow.address))
            if allowance < deposit:
                r = send(
                    self.w3,
                    renter,
                    token.functions.approve(escrow.address, deposit),
                    what="approve",
                )
                approvals = (TxInfo.of("approve", r),)
            fn = escrow.functions.open(provider, token.address, deposit, key.address)
            receipt = send(self.w3, renter, fn, what="Escrow.open")
        return OpenedChannel(
            channel_id=eip712.channel_id_for(renter.address, key.address),
            renter=renter.address,
            provider=provider,
            token=token.address,
            deposit=deposit,
            price_per_hour=price_per_hour,
            session_key=key,
            txs=(TxInfo.of("open", receipt),),
            approvals=approvals,
        )

    def check_balance(self, address: str, amount: int) -> None:
        have = call(self.c.token.functions.balanceOf(address), what="token.balanceOf")
        if have < amount:
            raise PaymentError(
                f"the wallet {address} holds {have} token base units, less than the deposit "
                f"{amount}: fund it (devnet: `gpumarket wallet fund`) or lower the budget"
            )

    def permit_args(
        self, owner: LocalAccount, value: int, deadline: int | None = None
    ) -> tuple[int, int, bytes, bytes] | None:
        """(deadline, v, r, s) of an EIP-2612 permit for the escrow, or None without permit."""
        token = self.c.token
        try:
            info = call(token.functions.eip712Domain(), what="token.eip712Domain")
            nonce = call(token.functions.nonces(owner.address), what="token.nonces")
        except (TransactionReverted, ChainError):
            return None  # no EIP-5267/2612 on this token: approve + open
        _fields, name, version, chain_id, verifying = info[:5]
        deadline = deadline or self.now() + PERMIT_WINDOW
        domain = eip712.Domain(chain_id, verifying, name=name, version=version)
        typed = eip712.permit(
            domain,
            owner=owner.address,
            spender=self.c.escrow.address,
            value=value,
            nonce=nonce,
            deadline=deadline,
        )
        sig = eip712.sign_typed_data(owner.key, typed)
        return deadline, sig[64], sig[:32], sig[32:64]

    def top_up(self, renter: LocalAccount, channel_id: bytes, amount: int) -> tuple[TxInfo, ...]:
        """approve + topUp (auto top-up); the transactions."""
        self.check_balance(renter.address, amount)
        token, escrow = self.c.token, self.c.escrow
        r1 = send(self.w3, renter, token.functions.approve(escrow.address, amount), what="approve")
        r2 = send(self.w3, renter, escrow.functions.topUp(channel_id, amount), what="Escrow.topUp")
        return TxInfo.of("approve", r1), TxInfo.of("top_up", r2)

    def sign_voucher(self, session_key: LocalAccount, channel_id: bytes, amount: int) -> bytes:
        """The session key's signature of ``Voucher(channel_id, amount)`` (no RPC needed)."""
        return self.escrow.sign_voucher(session_key, channel_id, amount)

    # ---------------------------------------------------------------- provider: get paid

    def redeem_highest(
        self, provider: LocalAccount, channel_id: bytes, best: tuple[int, bytes] | None
    ) -> CloseResult | None:
        """Redeem ``best`` = (amount, signature) if it is above what was redeemed; else None."""
        voucher = _best(best)
        info = self.channel(channel_id)
        if voucher is None or voucher[0] <= info.redeemed:
            return None
        receipt = self.escrow.redeem(provider, channel_id, *voucher)
        (event,) = _events(self.c.escrow, "Redeemed", receipt)
        return CloseResult(
            channel_id, voucher[0], int(event["args"]["paid"]), 0, TxInfo.of("redeem", receipt)
        )

    def settle_highest(
        self, provider: LocalAccount, channel_id: bytes, best: tuple[int, bytes] | None
    ) -> CloseResult:
        """Close the channel with ``best`` (or with what was already redeemed when ``best`` is
        None or not higher: no signature needed; a launch failure settles at 0)."""
        voucher = _best(best)
        info = self.channel(channel_id)
        if voucher is None or voucher[0] <= info.redeemed:
            voucher = (info.redeemed, b"")
        receipt = self.escrow.settle(provider, channel_id, *voucher)
        (event,) = _events(self.c.escrow, "Settled", receipt)
        return CloseResult(
            channel_id,
            voucher[0],
            voucher[0] - info.redeemed,
            int(event["args"]["refunded"]),
            TxInfo.of("settle", receipt),
        )

    # ---------------------------------------------------------------- renter: provider gone

    def recover_deposit(self, renter: LocalAccount, channel_id: bytes) -> RecoveryStep:
        """One step of getting the unspent deposit back when the provider does not settle:
        ``requestClose`` when the channel is open, ``withdraw`` once ``close_at`` has passed.
        Call again until ``state`` is "withdrawn" or "closed" (idempotent)."""
        info = self.channel(channel_id)
        if info.state == "none":
            raise ConfigError(f"no channel 0x{channel_id.hex()} on this network's escrow")
        if info.renter != renter.address:
            raise ConfigError(
                f"channel 0x{channel_id.hex()} belongs to {info.renter}, not to wallet "
                f"{renter.address}: use the wallet that opened it"
            )
        if info.state not in ("open", "closing"):
            return RecoveryStep(
                "closed", info.close_at, info.deposit - info.redeemed, info.redeemed
            )
        if info.state == "open":
            receipt = self.escrow.request_close(renter, channel_id)
            (event,) = _events(self.c.escrow, "CloseRequested", receipt)
            close_at = int(event["args"]["close_at"])
            return RecoveryStep("closing", close_at, 0, info.redeemed, TxInfo.of("close", receipt))
        try:  # the next block's time decides (a devnet's latest block may be old): just try
            receipt = self.escrow.withdraw(renter, channel_id)
        except TransactionReverted as exc:
            if "close delay not over" not in str(exc):
                raise
            return RecoveryStep("closing", info.close_at, 0, info.redeemed)
        (event,) = _events(self.c.escrow, "Withdrawn", receipt)
        return RecoveryStep(
            "withdrawn",
            info.close_at,
            int(event["args"]["refunded"]),
            int(event["args"]["cumulative_amount"]),
            TxInfo.of("withdraw", receipt),
        )
