"""Session-key challenge-response for the tunnel hello (pure; the agent keeps one issuer).

1. The provider sends a fresh 32-byte nonce (``ChallengeIssuer.issue``).
2. The renter signs ``TunnelHello(nonce, channelId, provider)`` under the escrow's EIP-712
   domain (chain id + escrow address) with the lease's session key (``sign_hello``).
3. The provider checks (``ChallengeIssuer.verify``): the nonce is one it issued, unused and
   not expired (each nonce works once, success or not); the channel pays this provider, is
   open and holds at least one voucher interval of deposit; the signer is a key the Escrow
   accepts for that channel (``eip712.voucher_signer_ok``: the bound session key, a rotated
   key, or the renter).

**Why EIP-712 and not EIP-191.** The hello is signed by the same key, under the same domain,
as the vouchers, so: the chain id and the escrow are bound by the domain exactly as for
vouchers (a hello for another network or escrow recovers to another address); the primary
type ``TunnelHello`` has its own type hash, so a hello signature can never be replayed as a
``Voucher`` and no voucher can pass as a hello; and there is no ad-hoc string format to get
wrong (EIP-191 ``personal_sign`` would need our own canonical text, and a wallet would show
it as an opaque string). Browser wallets display the typed fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.metering import DEFAULT_INTERVAL, amount_due
from jupyter_gpumarket.core.voucher_check import ChannelView
from jupyter_gpumarket.exceptions import AuthenticationFailed, PaymentError

__all__ = [
    "HELLO_TYPE",
    "Challenge",
    "ChallengeIssuer",
    "hello_typed_data",
    "sign_hello",
]

HELLO_TYPE = [
    {"name": "nonce", "type": "bytes32"},
    {"name": "channelId", "type": "bytes32"},
    {"name": "provider", "type": "address"},
]
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
DEFAULT_TTL = 30.0
MAX_OUTSTANDING = 10_000


def _b32(field: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise AuthenticationFailed(f"{field} must be 32 bytes; the peer sent something else")
    return bytes(value)


def hello_typed_data(
    domain: eip712.Domain, nonce: bytes, channel_id: bytes, provider: str
) -> dict[str, Any]:
    """``TunnelHello(bytes32 nonce,bytes32 channelId,address provider)`` under ``domain``."""
    from eth_utils import is_address, to_checksum_address

    if not is_address(provider):
        raise PaymentError(f"provider must be a 0x address, got {provider!r}")
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "TunnelHello": HELLO_TYPE},
        "primaryType": "TunnelHello",
        "domain": domain.as_dict(),
        "message": {
            "nonce": _b32("nonce", nonce),
            "channelId": _b32("channel_id", channel_id),
            "provider": to_checksum_address(provider),
        },
    }


@dataclass(frozen=True)
class Challenge:
    """What the provider sends in its hello: the nonce and what the renter must sign with it."""

    nonce: bytes
    provider: str
    chain_id: int
    escrow: str
    expires_at: float

    def __post_init__(self) -> None:
        _b32("nonce", self.nonce)

    @property
    def domain(self) -> eip712.Domain:
        return eip712.Domain(self.chain_id, self.escrow)


def sign_hello(session_key: bytes | str, challenge: Challenge, channel_id: bytes) -> bytes:
    """The renter's 65-byte answer to ``challenge`` for ``channel_id``."""
    typed = hello_typed_data(challenge.domain, challenge.nonce, channel_id, challenge.provider)
    return eip712.sign_typed_data(session_key, typed)


class ChallengeIssuer:
    """The provider's nonces: issue, then verify each answer once.

    Times are monotonic seconds passed in by the caller. ``random`` makes nonces (tests may
    pass a deterministic one); it defaults to ``os.urandom``.
    """

    def __init__(
        self,
        domain: eip712.Domain,
        provider: str,
        *,
        price_per_hour: int,
        interval: int = DEFAULT_INTERVAL,
        ttl: float = DEFAULT_TTL,
        random: Any = os.urandom,
    ) -> None:
        from eth_utils import is_address, to_checksum_address

        if not isinstance(domain, eip712.Domain):
            raise PaymentError(f"domain must be an eip712.Domain, got {domain!r}")
        if not isinstance(provider, str) or not is_address(provider):
            raise PaymentError(f"provider must be a 0x address, got {provider!r}")
        self.domain = domain
        self.provider = str(to_checksum_address(provider))
        self.min_deposit = max(1, amount_due(price_per_hour, interval))
        self.ttl = ttl
        self._random = random
        self._outstanding: dict[bytes, float] = {}

    def issue(self, now: float) -> Challenge:
        """A fresh challenge; expired ones are forgotten on the way."""
        self._outstanding = {n: t for n, t in self._outstanding.items() if t > now}
        if len(self._outstanding) >= MAX_OUTSTANDING:
            raise AuthenticationFailed(
                "too many unanswered connection challenges; try again in a few seconds"
            )
        nonce = bytes(self._random(32))
        expires = now + self.ttl
        self._outstanding[_b32("nonce", nonce)] = expires
        return Challenge(
            nonce=nonce,
            provider=self.provider,
            chain_id=self.domain.chain_id,
            escrow=self.domain.verifying_contract,
            expires_at=expires,
        )

    def verify(self, *, nonce: bytes, channel: ChannelView, signature: bytes, now: float) -> str:
        """The signer's address when the answer is good; AuthenticationFailed saying why not.

        ``channel`` is what the chain says about the channel the renter named (look it up with
        the id from the hello). The nonce is consumed whatever the outcome.
        """
        expires = self._outstanding.pop(_b32("nonce", nonce), None)
        if expires is None:
            raise AuthenticationFailed(
                "unknown or already used challenge nonce (a replay?): reconnect to get a new one"
            )
        if now > expires:
            raise AuthenticationFailed(
                f"challenge expired {now - expires:.1f} s ago: reconnect and answer within "
                f"{self.ttl:.0f} s"
            )
        cid = "0x" + channel.channel_id.hex()
        if channel.provider != self.provider:
            raise AuthenticationFailed(
                f"channel {cid} pays {channel.provider}, not this provider ({self.provider}): "
                "open a channel to this provider"
            )
        if channel.state != "open":
            raise AuthenticationFailed(
                f"channel {cid} is {channel.state}, not open: open a new channel to rent"
            )
        if channel.deposit < self.min_deposit:
            raise AuthenticationFailed(
                f"channel {cid} holds {channel.deposit} base units, less than one voucher "
                f"interval ({self.min_deposit}): top it up or open one with a larger deposit"
            )
        typed = hello_typed_data(self.domain, nonce, channel.channel_id, self.provider)
        try:
            signer = eip712.recover_signer(typed, bytes(signature))
        except PaymentError as exc:
            raise AuthenticationFailed(f"challenge answer unreadable: {exc}") from None
        if not eip712.voucher_signer_ok(
            channel.channel_id, channel.renter, signer, channel.rotated_key
        ):
            raise AuthenticationFailed(
                f"challenge not signed by channel {cid}'s session key (recovered {signer}): "
                "sign with the lease's session key for this provider, escrow and chain"
            )
        return signer
