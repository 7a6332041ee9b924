"""The provider's acceptance rule for a voucher (pure: the caller passes what the chain says).

A voucher is ``(channel_id, cumulative_amount, signature)`` where the signature is the renter's
session key (or the renter) over the escrow's EIP-712 ``Voucher``. The rule,
checked in this order so the first broken rule is the reason given:

1. the voucher names this lease's channel;
2. the channel pays this provider, in the offer's token, and is open (a closing channel means
   the renter left) — ``channel_refusal``;
3. the signature recovers, under *this* escrow's domain (chain id + verifying contract), to a
   key the Escrow accepts for the channel (``eip712.voucher_signer_ok``): a voucher signed for
   another chain, another escrow or another channel recovers to some other address;
4. the amount is at most the channel's deposit (the Escrow would refuse more);
5. the amount is not below the last accepted one (equal: a harmless duplicate);
6. the amount covers ``amount_due(billed - interval)``: one voucher interval of credit (the
   renter signs in arrears); below that the voucher is still money (keep it) but the lease is
   short.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from eth_utils import is_address, to_checksum_address

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.metering import DEFAULT_INTERVAL, amount_due
from jupyter_gpumarket.exceptions import PaymentError

__all__ = [
    "ChannelView",
    "Collection",
    "Decision",
    "ProviderTerms",
    "SignedVoucher",
    "Verdict",
    "channel_change",
    "channel_refusal",
    "check_voucher",
    "plan_collection",
]


def _addr(field: str, value: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise PaymentError(f"{field} must be a 0x address, got {value!r}")
    return str(to_checksum_address(value))


def _amount(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PaymentError(f"{field} must be a non-negative int of base units, got {value!r}")
    return value


def _cid(value: bytes | str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise PaymentError(f"channel_id must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class ChannelView:
    """What the chain (or the provider's ledger) says about a channel."""

    channel_id: bytes
    renter: str
    provider: str
    deposit: int
    state: str = "open"
    token: str | None = None  # the token the deposit is held in (None: not known)
    redeemed: int = 0  # what the provider already collected on chain

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_id", _cid(self.channel_id))
        object.__setattr__(self, "renter", _addr("renter", self.renter))
        object.__setattr__(self, "provider", _addr("provider", self.provider))
        _amount("deposit", self.deposit)
        _amount("redeemed", self.redeemed)
        if self.token is not None:
            object.__setattr__(self, "token", _addr("token", self.token))

    @classmethod
    def from_info(cls, info: object) -> ChannelView:
        """From ``chain.escrow.ChannelInfo`` (duck-typed: core does not import chain)."""
        return cls(
            channel_id=info.channel_id,  # type: ignore[attr-defined]
            renter=info.renter,  # type: ignore[attr-defined]
            provider=info.provider,  # type: ignore[attr-defined]
            deposit=info.deposit,  # type: ignore[attr-defined]
            state=info.state,  # type: ignore[attr-defined]
            token=info.token,  # type: ignore[attr-defined]
            redeemed=info.redeemed,  # type: ignore[attr-defined]
        )


@dataclass(frozen=True)
class ProviderTerms:
    """This provider's side of the lease: its escrow domain, address, price and interval."""

    domain: eip712.Domain
    provider: str
    price_per_hour: int
    interval: int = DEFAULT_INTERVAL
    token: str | None = None  # the offer's token: a channel in any other is not money

    def __post_init__(self) -> None:
        if not isinstance(self.domain, eip712.Domain):
            raise PaymentError(f"domain must be an eip712.Domain, got {self.domain!r}")
        object.__setattr__(self, "provider", _addr("provider", self.provider))
        if self.token is not None:
            object.__setattr__(self, "token", _addr("token", self.token))
        _amount("price_per_hour", self.price_per_hour)
        if isinstance(self.interval, bool) or not isinstance(self.interval, int):
            raise PaymentError(f"interval must be whole seconds, got {self.interval!r}")
        if self.interval <= 0:
            raise PaymentError(f"interval must be positive, got {self.interval}")

    @property
    def credit(self) -> int:
        """One interval of price: how far behind the amount due a voucher may be."""
        return amount_due(self.price_per_hour, self.interval)


@dataclass(frozen=True)
class SignedVoucher:
    """A voucher as received on the agent channel."""

    channel_id: bytes
    amount: int
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_id", _cid(self.channel_id))
        _amount("amount", self.amount)
        if not isinstance(self.signature, bytes | bytearray) or len(self.signature) != 65:
            got = len(self.signature) if isinstance(self.signature, bytes | bytearray) else "?"
            raise PaymentError(f"voucher signature must be 65 bytes (r, s, v), got {got}")
        object.__setattr__(self, "signature", bytes(self.signature))


class Verdict(Enum):
    ACCEPT = "accept"  # new highest voucher, covers the time billed
    DUPLICATE = "duplicate"  # same amount as the last accepted one: nothing to do
    SHORTFALL = "shortfall"  # valid and higher (keep it) but below due - credit: lease is short
    REJECT = "reject"  # not money: never store, never count


@dataclass(frozen=True)
class Decision:
    """The verdict on one voucher; ``reason`` says what was wrong and what to do next."""

    verdict: Verdict
    amount: int = 0
    reason: str = ""
    missing: int = 0  # SHORTFALL: how much more the voucher should have been

    def __post_init__(self) -> None:
        if not isinstance(self.verdict, Verdict):
            raise PaymentError(f"verdict must be a Verdict, got {self.verdict!r}")
        _amount("amount", self.amount)
        _amount("missing", self.missing)
        if self.verdict in (Verdict.REJECT, Verdict.SHORTFALL) and not self.reason:
            raise PaymentError(f"a {self.verdict.value} decision needs a reason")

    @property
    def keep(self) -> bool:
        """Store this voucher as the channel's new highest (write it before acknowledging)."""
        return self.verdict in (Verdict.ACCEPT, Verdict.SHORTFALL)

    @property
    def covers(self) -> bool:
        """The renter is paid up (within the credit): the lease may keep running normally."""
        return self.verdict in (Verdict.ACCEPT, Verdict.DUPLICATE)


def channel_refusal(channel: ChannelView, *, provider: str, token: str | None) -> str | None:
    """Why ``channel`` cannot pay this provider (None: it can): it pays someone else, holds
    its deposit in a token other than the offer's (a worthless token's "deposit" settles to
    nothing), or is not open. Checked at the hello, on vouchers and before each redemption."""
    cid = "0x" + channel.channel_id.hex()
    if channel.provider != _addr("provider", provider):
        return (
            f"channel {cid} pays {channel.provider}, not this provider ({provider}): "
            "open a channel to this provider"
        )
    if token is not None and (channel.token is None or channel.token != _addr("token", token)):
        return (
            f"not the offer's token: channel {cid} holds its deposit in {channel.token}, this "
            f"provider is paid in {_addr('token', token)}; open a channel in the offer's token"
        )
    if channel.state != "open":
        return (
            f"channel {cid} is {channel.state}, not open: the lease cannot continue; "
            "open a new channel to rent again"
        )
    return None


def channel_change(before: ChannelView, now: ChannelView, terms: ProviderTerms) -> str:
    """Why a running lease's channel no longer backs it (empty: it still does). ``before``:
    the channel at the hello; ``now``: read again from the chain."""
    cid = "0x" + before.channel_id.hex()
    if now.channel_id != before.channel_id or now.renter != before.renter:
        return f"channel {cid} on chain is not the one this lease was opened on"
    if now.state == "closing":
        return (
            f"the renter asked to close channel {cid} (requestClose): the lease ends; open a "
            "new channel to rent again"
        )
    return channel_refusal(now, provider=terms.provider, token=terms.token) or ""


def _reject(reason: str) -> Decision:
    return Decision(Verdict.REJECT, reason=reason)


def check_voucher(
    voucher: SignedVoucher,
    *,
    channel: ChannelView,
    terms: ProviderTerms,
    last_accepted: int,
    billed_seconds: int,
) -> Decision:
    """Accept, flag as short, or reject ``voucher`` for ``channel`` (see the module docstring)."""
    _amount("last_accepted", last_accepted)
    _amount("billed_seconds", billed_seconds)
    cid = "0x" + channel.channel_id.hex()
    if voucher.channel_id != channel.channel_id:
        return _reject(
            f"voucher is for channel 0x{voucher.channel_id.hex()}, not this lease's {cid}: "
            "sign vouchers with this lease's channel id"
        )
    refusal = channel_refusal(channel, provider=terms.provider, token=terms.token)
    if refusal is not None:
        return _reject(refusal)
    typed = eip712.voucher(terms.domain, voucher.channel_id, voucher.amount)
    try:
        signer = eip712.recover_signer(typed, voucher.signature)
    except PaymentError as exc:
        return _reject(f"voucher signature unreadable: {exc}")
    if not eip712.voucher_signer_ok(channel.channel_id, channel.renter, signer):
        return _reject(
            f"voucher signature is not by channel {cid}'s session key for escrow "
            f"{terms.domain.verifying_contract} on chain {terms.domain.chain_id} (recovered "
            f"{signer}): sign with this lease's session key and this network's escrow domain"
        )
    if voucher.amount > channel.deposit:
        return _reject(
            f"voucher amount {voucher.amount} is above channel {cid}'s deposit "
            f"{channel.deposit}: top up the channel before signing more"
        )
    if voucher.amount < last_accepted:
        return _reject(
            f"stale voucher: amount {voucher.amount} is below the {last_accepted} already "
            "accepted (vouchers are cumulative): send the latest voucher"
        )
    if voucher.amount == last_accepted:
        return Decision(Verdict.DUPLICATE, amount=voucher.amount)
    # due(billed - interval) rather than due(billed) - credit: the same up to rounding, and
    # a renter whose clock is at most one interval behind (arrears) always passes.
    floor = amount_due(terms.price_per_hour, max(0, billed_seconds - terms.interval))
    if voucher.amount < floor:
        return Decision(
            Verdict.SHORTFALL,
            amount=voucher.amount,
            missing=floor - voucher.amount,
            reason=(
                f"voucher amount {voucher.amount} is {floor - voucher.amount} short of the "
                f"{billed_seconds} s billed at {terms.price_per_hour}/h (minus one interval of "
                "credit): send a voucher for the time used or the kernel pauses"
            ),
        )
    return Decision(Verdict.ACCEPT, amount=voucher.amount)


@dataclass(frozen=True)
class Collection:
    """What the provider can put on chain for a channel now (see :func:`plan_collection`).

    ``amount``: the cumulative amount to redeem or settle with (``== channel.redeemed`` needs
    no signature, ``signature`` is then b""); ``possible`` False: spend no gas on this channel
    (closed, not ours, or its deposit is not in the offer's token); ``reason``: why less than
    the best voucher, or nothing, can be collected."""

    amount: int
    signature: bytes = b""
    possible: bool = True
    reason: str = ""


def plan_collection(
    channel: ChannelView, best: tuple[int, bytes] | None, terms: ProviderTerms
) -> Collection:
    """Before each redeem/settle: check the channel as the chain has it *now* and the best
    stored voucher against it with the Escrow's rules (a closed channel makes a stored
    voucher worthless; sending it would only revert)."""
    if channel.state not in ("open", "closing"):
        return Collection(
            channel.redeemed, possible=False, reason=f"channel is {channel.state}: nothing to do"
        )
    refusal = channel_refusal(
        dataclasses.replace(channel, state="open"), provider=terms.provider, token=terms.token
    )
    if refusal is not None:
        return Collection(channel.redeemed, possible=False, reason=refusal)
    if best is None or best[0] <= channel.redeemed:
        return Collection(channel.redeemed)
    amount, signature = best
    if amount > channel.deposit:
        return Collection(channel.redeemed, reason=f"voucher {amount} is above the deposit")
    typed = eip712.voucher(terms.domain, channel.channel_id, amount)
    try:
        signer = eip712.recover_signer(typed, signature)
    except PaymentError as exc:
        return Collection(channel.redeemed, reason=f"voucher signature unreadable: {exc}")
    if not eip712.voucher_signer_ok(channel.channel_id, channel.renter, signer):
        return Collection(
            channel.redeemed,
            reason=f"voucher {amount} is signed by {signer}, a key the channel does not accept",
        )
    return Collection(amount, bytes(signature))
