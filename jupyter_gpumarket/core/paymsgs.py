"""Control messages of paid leases: the session-key challenge and the voucher stream.

Same rules as core.control: frozen dataclasses validated where they are made; the hello
challenge and its answer are websocket text messages before the welcome; vouchers, their acks
and payment notices travel on the AGENT channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["AuthAnswer", "AuthChallenge", "PaymentNotice", "Voucher", "VoucherAck", "is_b32_hex"]

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
