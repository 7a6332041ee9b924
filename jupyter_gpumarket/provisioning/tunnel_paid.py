"""A paid kernel's lease across the tunnel process boundary (see :mod:`.tunnelproc`).

What crosses, and why:

- **The session key goes to the process, the wallet key never.** The lease's session key is
  lease-scoped already (registered in one channel, bounded by its deposit). The ``open``
  request hands it to the process over the 0600 control socket, with the channel and what a
  provider's challenge must name (provider, chain id, escrow), so the process answers the
  hello challenge itself on every reconnect (:class:`ProcessPayer`, with the same
  :func:`~jupyter_gpumarket.core.auth_challenge.answer_challenge` the server's link uses): a
  reconnect needs no round trip to the server and works while the server is down.
- **Vouchers stay in the server.** Metering, signing, the state file, the ledger, the budget and
  top-ups stay with the server's PaidLease / PaidRun; the process forwards each payment
  message (a ``pay`` request, :func:`payment_line` / :func:`parse_payment`) to the provider.
- **What the provider says about payment comes back as events**: ``{"ev": "ack", "amount"}``
  (a VoucherAck) and ``{"ev": "interval", "seconds"}`` (the voucher interval a challenge asked
  for), checked by :func:`payment_event` and handed to the lease on the loop that runs its
  PaidRun (:class:`LeaseEvents`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.auth_challenge import answer_challenge
from jupyter_gpumarket.exceptions import LinkLost, ProtocolError

__all__ = [
    "MAX_INTERVAL",
    "LeaseEvents",
    "ProcessPayer",
    "announce_unsandboxed",
    "check_adopted",
    "paid_spec",
    "parse_payment",
    "pay_through",
    "payment_event",
    "payment_line",
]

log = logging.getLogger(__name__)

MAX_INTERVAL = 3600  # the most seconds between vouchers a challenge may ask for (AuthChallenge)
_MAX_AMOUNT = 2**256 - 1  # a uint256 of the escrow
_KEY = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")


def _field(spec: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ProtocolError(f"paid.{name} must be {what}")
    return value


def _int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


# -- the server's side -----------------------------------------------------------------------
def paid_spec(lease: Any) -> dict[str, Any]:
    """What the ``open`` request tells the process about the lease ``lease`` (a PaidLease):
    the session key and what a challenge must name. Never the wallet's key."""
    provider, chain_id, escrow = lease.expected
    return {
        "session_key": "0x" + bytes(lease.session_key.key).hex(),
        "channel": lease.channel_hex,
        "provider": provider,
        "chain_id": chain_id,
        "escrow": escrow,
    }


def payment_line(msg: paymsgs.Voucher | paymsgs.DepositChanged) -> str:
    """A payment message as the ``pay`` request carries it (its AGENT-channel JSON)."""
    return control.dump(msg).decode()


def payment_event(msg: dict[str, Any]) -> tuple[str, int] | None:
    """``("ack", amount)`` or ``("interval", seconds)`` from a process event, checked; None
    (logged) when a field is missing or out of range."""
    ev = msg.get("ev")
    if ev == "ack":
        amount = _int(msg.get("amount"), 0, _MAX_AMOUNT)
        if amount is not None:
            return "ack", amount
    elif ev == "interval":
        seconds = _int(msg.get("seconds"), 1, MAX_INTERVAL)
        if seconds is not None:
            return "interval", seconds
    log.error("the tunnel process sent a malformed %s event; ignored", str(ev)[:40])
    return None


class LeaseEvents:
    """Hands a tunnel process's payment events to ``lease`` (a PaidLease) on ``loop``, the loop
    that runs its PaidRun (where ``ack_event`` is awaited); called from any thread."""

    def __init__(self, lease: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.lease = lease
        self.loop = loop

    def on_ack(self, amount: int) -> None:
        self.loop.call_soon_threadsafe(self.lease.on_ack, amount)

    def on_interval(self, seconds: int) -> None:
        self.loop.call_soon_threadsafe(setattr, self.lease.schedule, "interval", seconds)


def pay_through(
    client: Any, paid_run: Any, loop: asyncio.AbstractEventLoop, observe: Callable[[str], None]
) -> dict[str, Any]:
    """Wire ``paid_run`` (a PaidRun, running on ``loop``) to the tunnel process of ``client``
    (a TunnelClient), before its open or hello: acks and the voucher interval reach the lease
    on ``loop``; the PaidRun pays through the client; its notices go to ``observe`` (the log,
    the launch events) and to the kernel's clients through the process's shim, as a thread
    link's do. Returns the ``paid`` field of the open request."""
    client.payer = LeaseEvents(paid_run.lease, loop)

    def notice(text: str) -> None:
        observe(text)
        client.notify(text)

    paid_run.bind(client, notice)
    return paid_spec(paid_run.lease)


def announce_unsandboxed(client: Any, lease: Any) -> None:
    """An unsandboxed offer's warning, now and at the next cell (as a thread link's shim)."""
    if lease.offer.unsandboxed:
        client.notify(lease.offer.unsandboxed_warning, announce=True)


def check_adopted(paid: object, lease: Any) -> None:
    """A re-adopted tunnel process must carry ``lease``'s channel (LinkLost otherwise: the
    caller leaves it alone and opens a link of its own); its last challenge's voucher
    interval becomes the lease's (no new challenge comes for a link that stayed up)."""
    channel = paid.get("channel") if isinstance(paid, dict) else None
    if not isinstance(channel, str) or channel.lower() != lease.channel_hex.lower():
        raise LinkLost("the tunnel process does not pay through this lease's channel")
    seconds = _int(paid.get("interval"), 1, MAX_INTERVAL) if isinstance(paid, dict) else None
    if seconds is not None:
        lease.schedule.interval = seconds


# -- the process's side ----------------------------------------------------------------------
def parse_payment(text: object) -> paymsgs.Voucher | paymsgs.DepositChanged:
    """The payment message of a ``pay`` request, parsed with the limits and checks of an
    AGENT-channel request; ProtocolError for anything else."""
    if not isinstance(text, str):
        raise ProtocolError("a pay request carries its message as a JSON string")
    data = text.encode("utf-8", "surrogateescape")
    msg = control.parse_request(data)
    if not isinstance(msg, paymsgs.Voucher | paymsgs.DepositChanged):
        raise ProtocolError(f"a pay request carries a voucher or deposit_changed, not {msg.op}")
    return msg


class ProcessPayer:
    """The lease's part of a paid link inside the tunnel process (``RemoteLink.paid``): answers
    the provider's challenge on every (re)connect, and reports acks and the voucher interval
    to the server through ``emit`` (the process's event writer)."""

    def __init__(
        self,
        session_key: bytes,
        channel_id: bytes,
        expected: tuple[str, int, str],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self._session_key = session_key
        self.channel_id = channel_id
        self.expected = expected
        self._emit = emit
        self.interval: int | None = None  # the last challenge's (told a re-adopting server)

    @classmethod
    def from_spec(cls, spec: object, emit: Callable[[dict[str, Any]], None]) -> ProcessPayer:
        """From the ``paid`` field of an ``open`` request (:func:`paid_spec`), checked."""
        if not isinstance(spec, dict):
            raise ProtocolError("the open request's paid field must be an object")
        key = _field(spec, "session_key", _KEY, "0x and 32 bytes of hex")
        channel = _field(spec, "channel", _KEY, "0x and 32 bytes of hex")
        provider = _field(spec, "provider", _ADDR, "a 0x address")
        escrow = _field(spec, "escrow", _ADDR, "a 0x address")
        chain_id = _int(spec.get("chain_id"), 0, _MAX_AMOUNT)
        if chain_id is None:
            raise ProtocolError("paid.chain_id must be a non-negative integer")
        return cls(
            bytes.fromhex(key[2:]), bytes.fromhex(channel[2:]), (provider, chain_id, escrow), emit
        )

    @property
    def channel_hex(self) -> str:
        return "0x" + self.channel_id.hex()

    def answer(self, challenge: paymsgs.AuthChallenge) -> paymsgs.AuthAnswer:
        reply = answer_challenge(
            challenge,
            session_key=self._session_key,
            channel_id=self.channel_id,
            expected=self.expected,
        )
        self.interval = challenge.interval
        self._emit({"ev": "interval", "seconds": challenge.interval})
        return reply

    def on_ack(self, amount: int) -> None:
        self._emit({"ev": "ack", "amount": amount})

    def __repr__(self) -> str:  # never the key
        return f"ProcessPayer(channel={self.channel_hex})"
