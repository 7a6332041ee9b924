"""Control messages of paid leases: the session-key challenge and the voucher stream.

Same rules as core.control: frozen dataclasses validated where they are made; the hello
challenge and its answer are websocket text messages before the welcome; vouchers, their acks
and payment notices travel on the AGENT channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "AuthAnswer",
    "AuthChallenge",
    "DepositChanged",
    "PaymentNotice",
    "RelayOpen",
    "RelayResult",
    "Voucher",
    "VoucherAck",
    "is_b32_hex",
]

_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}$")
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")


def is_b32_hex(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX32.match(value))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ProtocolError(msg)


def _amount(value: object, what: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, what)


@dataclass(frozen=True)
class AuthChallenge:
    """Agent -> renter (text, paid providers): sign this nonce with the lease's session key."""

    nonce: str
    provider: str
    chain_id: int
    escrow: str
    ttl: float
    interval: int = 15  # seconds between vouchers this provider expects
    op: str = field(default="challenge", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.interval, int) and 1 <= self.interval <= 3600, "interval")
        _check(is_b32_hex(self.nonce), "challenge.nonce must be 32 bytes of hex")
        _check(isinstance(self.provider, str) and bool(_ADDR.match(self.provider)), "provider")
        _check(isinstance(self.escrow, str) and bool(_ADDR.match(self.escrow)), "escrow")
        _amount(self.chain_id, "challenge.chain_id")


@dataclass(frozen=True)
class AuthAnswer:
    """Renter -> agent (text): the EIP-712 TunnelHello signature."""

    signature: str
    op: str = field(default="answer", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.signature, str) and bool(_SIG.match(self.signature)), "signature")


@dataclass(frozen=True)
class Voucher:
    """Renter -> agent: cumulative amount for the lease's channel, signed by the session key."""

    amount: int
    signature: str
    op: str = field(default="voucher", init=False, repr=False)

    def __post_init__(self) -> None:
        _amount(self.amount, "voucher.amount must be a non-negative integer")
        _check(isinstance(self.signature, str) and bool(_SIG.match(self.signature)), "signature")


@dataclass(frozen=True)
class DepositChanged:
    """Renter -> agent: a top-up of the lease's channel was mined; read its deposit again."""

    tx_hash: str
    op: str = field(default="deposit_changed", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(is_b32_hex(self.tx_hash), "deposit_changed.tx_hash")


@dataclass(frozen=True)
class VoucherAck:
    """Agent -> renter: the highest voucher it holds and the seconds it has billed."""

    amount: int
    billed_seconds: int
    op: str = field(default="voucher_ack", init=False, repr=False)

    def __post_init__(self) -> None:
        _amount(self.amount, "voucher_ack.amount")
        _amount(self.billed_seconds, "voucher_ack.billed_seconds")


@dataclass(frozen=True)
class PaymentNotice:
    """Agent -> renter: vouchers late or refused; ``level`` is warn, pause or stop."""

    level: str
    message: str
    op: str = field(default="payment_notice", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(self.level in ("warn", "pause", "stop", "resume"), "payment_notice.level")
        _check(isinstance(self.message, str), "payment_notice.message")


def _addr(value: object, what: str) -> None:
    _check(isinstance(value, str) and bool(_ADDR.match(value)), f"{what} must be an address")


@dataclass(frozen=True)
class RelayOpen:
    """Renter -> agent (text, instead of a hello, on its own connection): open this channel
    for me, I have no gas. ``open_sig`` signs OpenChannel (its nonce is the session key);
    ``permit`` is an EIP-2612 permit of ``deposit`` for the escrow ("" = none: the renter
    approved before); ``grant`` is a credit-pool grant code ("" = pay from the renter's own
    tokens) — then the pool pays the deposit and ``token`` is the pool's token."""

    renter: str
    provider: str
    token: str
    deposit: int
    session_key: str
    relay_fee: int
    deadline: int
    open_sig: str
    permit: str = ""
    grant: str = ""
    op: str = field(default="relay_open", init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("renter", "provider", "token", "session_key"):
            _addr(getattr(self, name), f"relay_open.{name}")
        for name in ("deposit", "relay_fee", "deadline"):
            _amount(getattr(self, name), f"relay_open.{name} must be a non-negative integer")
        _check(self.deposit > self.relay_fee, "relay_open.relay_fee must be below the deposit")
        _check(isinstance(self.open_sig, str) and bool(_SIG.match(self.open_sig)), "open_sig")
        _check(
            self.permit == "" or (isinstance(self.permit, str) and bool(_SIG.match(self.permit))),
            "relay_open.permit must be a 65-byte signature or empty",
        )
        _check(isinstance(self.grant, str) and len(self.grant) <= 2048, "relay_open.grant")
        _check(not (self.permit and self.grant), "relay_open: a pool grant needs no permit")


@dataclass(frozen=True)
class RelayResult:
    """Agent -> renter: the relayed channel is open (mined)."""

    channel: str
    tx_hash: str
    op: str = field(default="relay_result", init=False, repr=False)

    def __post_init__(self) -> None:
        _check(is_b32_hex(self.channel), "relay_result.channel")
        _check(is_b32_hex(self.tx_hash), "relay_result.tx_hash")
