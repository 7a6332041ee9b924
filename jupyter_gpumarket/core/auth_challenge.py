"""Session-key challenge-response for the tunnel hello (pure; the agent keeps one issuer).

1. The provider sends a fresh 32-byte nonce (``ChallengeIssuer.issue``).
2. The renter signs ``TunnelHello(nonce, channelId, provider)`` under the escrow's EIP-712
   domain (chain id + escrow address) with the lease's session key (``sign_hello``).
3. The provider checks (``ChallengeIssuer.verify``): the nonce is one it issued to this
   client address, unused and not expired (each nonce works once, success or not); the
   channel pays this provider in its offer's token, is open and holds at least one voucher
   interval of unredeemed deposit; the signer is a key the Escrow accepts for that channel
   (``eip712.voucher_signer_ok``: the session key the channel id binds, or the renter).

The challenge names the provider: the renter compares it with the offer's provider before
any money moves (an offer that copied another provider's endpoint is caught there).

**Why EIP-712 and not EIP-191.** The hello is signed by the same key, under the same domain,
as the vouchers, so: the chain id and the escrow are bound by the domain exactly as for
vouchers (a hello for another network or escrow recovers to another address); the primary
type ``TunnelHello`` has its own type hash, so a hello signature can never be replayed as a
``Voucher`` and no voucher can pass as a hello; and there is no ad-hoc string format to get
wrong (EIP-191 ``personal_sign`` would need our own canonical text, and a wallet would show
it as an opaque string). Browser wallets display the typed fields.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core import eip712, paymsgs
from jupyter_gpumarket.core.metering import DEFAULT_INTERVAL, amount_due
from jupyter_gpumarket.core.voucher_check import ChannelView, channel_refusal
from jupyter_gpumarket.exceptions import AuthenticationFailed, PaymentError

__all__ = [
    "HELLO_TYPE",
    "PER_CLIENT_BURST",
    "PER_CLIENT_RATE",
    "Challenge",
    "ChallengeIssuer",
    "ClientBuckets",
    "answer_challenge",
    "challenge_mismatch",
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
PER_CLIENT_BURST = 128  # challenges one address may hold at once (a class behind one NAT)
PER_CLIENT_RATE = 4.0  # ... refilled per second
MAX_CLIENTS = 4096  # addresses whose budget is remembered
MAX_USED = 200_000  # answered nonces remembered until they expire (then the oldest go)


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


def challenge_mismatch(
    *, provider: str, chain_id: int, escrow: str, expected: tuple[str, int, str]
) -> str | None:
    """The renter's check of a provider's challenge (``provider, chain_id, escrow`` as the
    agent sent them) against ``expected`` = the offer's provider, the network's chain id and
    escrow; None when it matches. An agent that names another provider is not the one the
    offer pays: a copied registry entry (same endpoint and certificate, another payee)."""
    want_provider, want_chain, want_escrow = expected
    if provider.lower() != want_provider.lower():
        return (
            f"the agent at this endpoint is provider {provider}, not the offer's provider "
            f"{want_provider}: the offer copies another provider's endpoint; nothing was paid, "
            "pick another offer"
        )
    if chain_id != want_chain or escrow.lower() != want_escrow.lower():
        return (
            f"the provider is paid through escrow {escrow} on chain {chain_id}, not this "
            f"network's {want_escrow} on chain {want_chain}: pick an offer of this network"
        )
    return None


def answer_challenge(
    challenge: paymsgs.AuthChallenge,
    *,
    session_key: bytes | str,
    channel_id: bytes,
    expected: tuple[str, int, str],
) -> paymsgs.AuthAnswer:
    """The renter's answer to a paid provider's hello ``challenge``: checked against
    ``expected`` (the offer's provider, the network's chain id and escrow; see
    :func:`challenge_mismatch`), then signed with the lease's ``session_key`` for
    ``channel_id``. AuthenticationFailed, signing nothing, when the challenge names another
    provider, chain or escrow. The one answer both the Jupyter server's link and a tunnel
    process give."""
    c = Challenge(
        nonce=bytes.fromhex(challenge.nonce[2:]),
        provider=challenge.provider,
        chain_id=challenge.chain_id,
        escrow=challenge.escrow,
        expires_at=0.0,
    )
    mismatch = challenge_mismatch(
        provider=c.provider, chain_id=c.chain_id, escrow=c.escrow, expected=expected
    )
    if mismatch is not None:
        raise AuthenticationFailed(f"refused to sign the provider's challenge: {mismatch}")
    return paymsgs.AuthAnswer("0x" + sign_hello(session_key, c, channel_id).hex())


class ChallengeIssuer:
    """The provider's nonces: issue, then verify each answer once.

    Nonces are stateless: ``salt(8) || expires_ms(8) || HMAC(key, salt, expires, client)[:16]``
    with a key only this issuer knows, so issuing keeps no entry per stranger (a flood of
    hellos fills no table and locks nobody out) and a nonce only works for the client address
    it was issued to. What is kept: the nonces already answered (until they expire: each works
    once) and a small token bucket per client address (``per_client`` challenges at once,
    refilled at ``per_client_rate`` per second; the least recently seen addresses are
    forgotten first, which only gives them a fresh bucket).

    Times are monotonic seconds passed in by the caller. ``random`` makes salts and the key
    (tests may pass a deterministic one); it defaults to ``os.urandom``.
    """

    def __init__(
        self,
        domain: eip712.Domain,
        provider: str,
        *,
        price_per_hour: int,
        interval: int = DEFAULT_INTERVAL,
        ttl: float = DEFAULT_TTL,
        token: str | None = None,
        random: Any = os.urandom,
        per_client: int = PER_CLIENT_BURST,
        per_client_rate: float = PER_CLIENT_RATE,
    ) -> None:
        from eth_utils import is_address, to_checksum_address

        if not isinstance(domain, eip712.Domain):
            raise PaymentError(f"domain must be an eip712.Domain, got {domain!r}")
        if not isinstance(provider, str) or not is_address(provider):
            raise PaymentError(f"provider must be a 0x address, got {provider!r}")
        if token is not None and (not isinstance(token, str) or not is_address(token)):
            raise PaymentError(f"token must be a 0x address, got {token!r}")
        self.domain = domain
        self.provider = str(to_checksum_address(provider))
        self.token = None if token is None else str(to_checksum_address(token))
        self.min_deposit = max(1, amount_due(price_per_hour, interval))
        self.ttl = ttl
        self._random = random
        self._key = bytes(random(32))
        self._used: OrderedDict[bytes, float] = OrderedDict()  # answered nonce -> expiry
        self._buckets = ClientBuckets(per_client, per_client_rate)

    def _mac(self, salt: bytes, expires: bytes, client: str) -> bytes:
        msg = salt + expires + client.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:16]

    def issue(self, now: float, client: str = "") -> Challenge:
        """A fresh challenge for ``client`` (its IP address); AuthenticationFailed when that
        address asked for too many too fast."""
        if not self._buckets.take(client, now):
            raise AuthenticationFailed(
                "too many connection challenges from this address; try again in a few seconds"
            )
        salt = bytes(self._random(8))
        expires = now + self.ttl
        stamp = max(0, int(expires * 1000)).to_bytes(8, "big")
        nonce = salt + stamp + self._mac(salt, stamp, client)
        return Challenge(
            nonce=_b32("nonce", nonce),
            provider=self.provider,
            chain_id=self.domain.chain_id,
            escrow=self.domain.verifying_contract,
            expires_at=expires,
        )

    def consume(self, nonce: bytes, now: float, client: str = "") -> None:
        """Spend ``nonce``: AuthenticationFailed unless this issuer made it for ``client``, it
        has not expired and it was never answered. Cheap: call it before any chain read."""
        nonce = _b32("nonce", nonce)
        salt, stamp, mac = nonce[:8], nonce[8:16], nonce[16:]
        if not hmac.compare_digest(mac, self._mac(salt, stamp, client)):
            raise AuthenticationFailed(
                "unknown or already used challenge nonce (not issued by this provider to this "
                "address): reconnect to get a new one"
            )
        expires = int.from_bytes(stamp, "big") / 1000
        while self._used and next(iter(self._used.values())) < now:
            self._used.popitem(last=False)  # expiries arrive in order: the oldest go first
        if nonce in self._used:
            raise AuthenticationFailed(
                "unknown or already used challenge nonce (a replay?): reconnect to get a new one"
            )
        if now > expires:
            raise AuthenticationFailed(
                f"challenge expired {now - expires:.1f} s ago: reconnect and answer within "
                f"{self.ttl:.0f} s"
            )
        if len(self._used) >= MAX_USED:
            self._used.popitem(last=False)
        self._used[nonce] = expires

    def check_answer(self, *, nonce: bytes, channel: ChannelView, signature: bytes) -> str:
        """The signer's address when ``signature`` answers ``nonce`` for ``channel`` (what the
        chain says about the channel the renter named); AuthenticationFailed saying why not."""
        cid = "0x" + channel.channel_id.hex()
        refusal = channel_refusal(channel, provider=self.provider, token=self.token)
        if refusal is not None:
            raise AuthenticationFailed(refusal)
        left = channel.deposit - channel.redeemed
        if left < self.min_deposit:
            raise AuthenticationFailed(
                f"less than one voucher interval ({self.min_deposit}) left in channel {cid} "
                f"({left} base units): top it up or open one with a larger deposit"
            )
        typed = hello_typed_data(self.domain, nonce, channel.channel_id, self.provider)
        try:
            signer = eip712.recover_signer(typed, bytes(signature))
        except PaymentError as exc:
            raise AuthenticationFailed(f"challenge answer unreadable: {exc}") from None
        if not eip712.voucher_signer_ok(channel.channel_id, channel.renter, signer):
            raise AuthenticationFailed(
                f"challenge not signed by channel {cid}'s session key (recovered {signer}): "
                "sign with the lease's session key for this provider, escrow and chain"
            )
        return signer

    def verify(
        self,
        *,
        nonce: bytes,
        channel: ChannelView,
        signature: bytes,
        now: float,
        client: str = "",
    ) -> str:
        """:meth:`consume` then :meth:`check_answer`: the nonce is spent whatever the outcome."""
        self.consume(nonce, now, client)
        return self.check_answer(nonce=nonce, channel=channel, signature=signature)


class ClientBuckets:
    """A token bucket per client address, at most ``max_clients`` of them (least recently
    seen forgotten first)."""

    def __init__(self, burst: int, rate: float, max_clients: int = MAX_CLIENTS) -> None:
        if burst < 1 or rate <= 0 or max_clients < 1:
            raise PaymentError(f"bad challenge budget: burst {burst}, rate {rate}")
        self.burst, self.rate, self.max_clients = burst, rate, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok
