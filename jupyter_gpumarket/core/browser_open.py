"""A channel opening signed in the browser (an EIP-1193 wallet such as MetaMask) instead of
the server keystore: what the browser is asked to sign, and the checks of what it sends back.

The server makes the lease's session key and publishes an :class:`OpeningRequest` (the
``sign`` warning event). The browser answers ``POST launches/ID/signed`` with either

- ``{"tx_hash": "0x…"}``: it sent ``approve`` + ``Escrow.open`` itself (MetaMask has no
  ``eth_signTransaction``); the server then reads the channel on chain, or
- ``{"open_sig": "0x…", "permit_sig": "0x…"}``: ``OpenChannel`` and the EIP-2612 ``Permit``
  signed with ``eth_signTypedData_v4``; the offer's provider relays ``Escrow.openFor``.

The channel id binds the session key (keccak256(renter, key)): opening the channel IS the
session key's authorization, so the vouchers every few seconds are signed by the session key
and the browser is asked once. Everything the browser signs is rebuilt here from the
server's own request (never from the browser's copy), so a signature over another chain,
contract, amount, provider, key or deadline recovers to another address and is refused.

Pure: no I/O (the chain reads are the caller's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import PaymentError

__all__ = [
    "OpeningRequest",
    "SignedOpening",
    "check_channel",
    "check_signatures",
    "parse_signed",
]

_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX65 = re.compile(r"0x[0-9a-fA-F]{130}")
_SIGNED_FIELDS = {"tx_hash", "open_sig", "permit_sig"}


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def _word_address(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def _word_uint(value: int) -> bytes:
    return value.to_bytes(32, "big")


@dataclass(frozen=True)
class OpeningRequest:
    """What the browser's wallet ``renter`` is asked to sign for one launch.

    ``relay_fee`` None: the offer's provider does not relay, only the transaction path works.
    ``permit_domain``/``permit_nonce`` None: the token has no EIP-2612 permit."""

    renter: str
    chain_id: int
    escrow: str
    token: str
    provider: str
    deposit: int
    session_key: str
    deadline: int
    relay_fee: int | None = None
    permit_domain: eip712.Domain | None = None
    permit_nonce: int | None = None

    @property
    def channel_id(self) -> bytes:
        return eip712.channel_id_for(self.renter, self.session_key)

    def open_channel_typed(self) -> dict[str, Any] | None:
        """``OpenChannel`` for a relayed ``openFor`` (None: the provider does not relay)."""
        if self.relay_fee is None:
            return None
        return eip712.open_channel(
            eip712.Domain(self.chain_id, self.escrow),
            renter=self.renter,
            provider=self.provider,
            token=self.token,
            deposit=self.deposit,
            session_key=self.session_key,
            relay_fee=self.relay_fee,
            deadline=self.deadline,
        )

    def permit_typed(self) -> dict[str, Any] | None:
        """The EIP-2612 ``Permit`` of ``deposit`` for the escrow (None: no permit)."""
        if self.permit_domain is None or self.permit_nonce is None:
            return None
        return eip712.permit(
            self.permit_domain,
            owner=self.renter,
            spender=self.escrow,
            value=self.deposit,
            nonce=self.permit_nonce,
            deadline=self.deadline,
        )

    def transactions(self) -> list[dict[str, str]]:
        """``approve(escrow, deposit)`` then ``open(provider, token, deposit, session_key)``
        for ``eth_sendTransaction`` from ``renter``."""
        approve = _selector("approve(address,uint256)") + b"".join(
            (_word_address(self.escrow), _word_uint(self.deposit))
        )
        opening = _selector("open(address,address,uint256,address)") + b"".join(
            (
                _word_address(self.provider),
                _word_address(self.token),
                _word_uint(self.deposit),
                _word_address(self.session_key),
            )
        )
        r = self.renter
        return [
            {"from": r, "to": self.token, "data": "0x" + approve.hex(), "kind": "approve"},
            {"from": r, "to": self.escrow, "data": "0x" + opening.hex(), "kind": "open"},
        ]

    def to_json(self) -> dict[str, Any]:
        """The ``sign`` event's ``opening``: the typed data to sign and the transactions."""
        methods = ["tx_hash"] + (["typed_data"] if self.relay_fee is not None else [])
        return {
            "renter": self.renter,
            "chain_id": self.chain_id,
            "chain_id_hex": hex(self.chain_id),
            "escrow": self.escrow,
            "token": self.token,
            "provider": self.provider,
            "deposit": str(self.deposit),
            "session_key": self.session_key,
            "channel_id": "0x" + self.channel_id.hex(),
            "deadline": self.deadline,
            "relay_fee": None if self.relay_fee is None else str(self.relay_fee),
            "methods": methods,
            "open_channel": _jsonable(self.open_channel_typed()),
            "permit": _jsonable(self.permit_typed()),
            "transactions": self.transactions(),
        }


def _jsonable(typed: dict[str, Any] | None) -> dict[str, Any] | None:
    """Typed data as eth_signTypedData_v4 takes it (bytes as 0x hex, big numbers as text)."""
    if typed is None:
        return None

    def conv(v: Any) -> Any:
        if isinstance(v, bytes):
            return "0x" + v.hex()
        if isinstance(v, int) and not isinstance(v, bool) and v > 2**53:
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return dict(conv(typed))


@dataclass(frozen=True)
class SignedOpening:
    """What the browser sent: a transaction hash, or the two signatures."""

    tx_hash: bytes | None = None
    open_sig: bytes | None = None
    permit_sig: bytes | None = None


def parse_signed(body: Any) -> SignedOpening:
    """The body of ``POST launches/ID/signed``; PaymentError for anything else."""
    if not isinstance(body, dict):
        raise PaymentError("the body must be a JSON object: {tx_hash} or {open_sig, permit_sig}")
    unknown = sorted(str(k)[:40] for k in body if k not in _SIGNED_FIELDS)
    if unknown:
        raise PaymentError(
            f"unknown field(s) {unknown[:4]}: send {{'tx_hash'}} or {{'open_sig', 'permit_sig'}}"
        )
    tx = body.get("tx_hash")
    if tx is not None:
        if len(body) != 1:
            raise PaymentError("send either tx_hash or the signatures, not both")
        if not isinstance(tx, str) or not _HEX32.fullmatch(tx):
            raise PaymentError("tx_hash must be a 0x-prefixed 32-byte hex transaction hash")
        return SignedOpening(tx_hash=bytes.fromhex(tx[2:]))
    open_sig = body.get("open_sig")
    if not isinstance(open_sig, str) or not _HEX65.fullmatch(open_sig):
        raise PaymentError("open_sig must be a 0x-prefixed 65-byte hex signature (r, s, v)")
    permit = body.get("permit_sig")
    if permit is not None and (not isinstance(permit, str) or not _HEX65.fullmatch(permit)):
        raise PaymentError("permit_sig must be a 0x-prefixed 65-byte hex signature or null")
    return SignedOpening(
        open_sig=bytes.fromhex(open_sig[2:]),
        permit_sig=bytes.fromhex(permit[2:]) if permit else None,
    )


def check_signatures(req: OpeningRequest, signed: SignedOpening, now: int, allowance: int) -> bool:
    """Exactly what ``Escrow.openFor`` accepts: ``OpenChannel`` signed by the renter, not
    expired at the chain's ``now``; a permit the token takes, or else an ``allowance`` that
    covers the deposit. True when the permit is good (send it), False when the allowance
    covers it. PaymentError, saying why, otherwise."""
    typed = req.open_channel_typed()
    if typed is None or signed.open_sig is None:
        raise PaymentError(
            "this offer's provider does not relay openings: send the opening transaction from "
            "the wallet and post its tx_hash"
        )
    if now > req.deadline:
        raise PaymentError(
            f"the opening's deadline {req.deadline} has passed (chain time {now}); cancel and "
            "start the kernel again"
        )
    signer = eip712.recover_signer(typed, signed.open_sig)
    if signer.lower() != req.renter.lower():
        raise PaymentError(
            f"OpenChannel is signed by {signer}, not by the connected wallet {req.renter}: sign "
            "the opening shown, with that wallet, on this network"
        )
    permit = req.permit_typed()
    if signed.permit_sig is not None and permit is not None:
        try:
            owner = eip712.recover_signer(permit, signed.permit_sig)
        except PaymentError:
            owner = ""
        if owner.lower() == req.renter.lower():
            return True
    if allowance >= req.deposit:
        return False
    raise PaymentError(
        f"the permit is not signed by {req.renter} for {req.deposit} to the escrow (and the "
        "allowance does not cover the deposit): sign the permit shown, or approve first"
    )


def check_channel(req: OpeningRequest, channel: Any) -> None:
    """The channel the browser says it opened (chain.escrow.ChannelInfo of
    ``req.channel_id``): open, the renter's, to the offer's provider, in the token, with the
    deposit asked for. PaymentError otherwise (nothing is streamed to it)."""
    problems = []
    if channel.state != "open":
        problems.append(f"state {channel.state}")
    if channel.renter.lower() != req.renter.lower():
        problems.append(f"renter {channel.renter}")
    if channel.provider.lower() != req.provider.lower():
        problems.append(f"provider {channel.provider}")
    if channel.token.lower() != req.token.lower():
        problems.append(f"token {channel.token}")
    if channel.deposit != req.deposit:
        problems.append(f"deposit {channel.deposit}")
    if problems:
        raise PaymentError(
            f"channel 0x{req.channel_id.hex()} on chain is not the one asked for "
            f"({', '.join(problems)}; wanted open, renter {req.renter}, provider {req.provider}, "
            f"deposit {req.deposit}): send the opening transactions shown from {req.renter}"
        )
