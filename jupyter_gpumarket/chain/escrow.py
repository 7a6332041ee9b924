"""A thin typed wrapper over the Escrow contract for the lease code (renter and provider side).

client = EscrowClient(Contracts.at(w3, profile.token, profile.escrow, profile.registry))
cid = client.open(renter, provider_address, deposit, session.address)   # approve + open
sig = client.sign_voucher(session, cid, amount)                          # off chain
client.settle(provider, cid, amount, sig)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.chain.client import Contracts, call, send
from jupyter_gpumarket.core import eip712

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["MAX_TFLOPS_X100", "ChannelInfo", "EscrowClient", "check_attestation"]

STATES = {0: "none", 1: "open", 2: "closing", 3: "closed", 4: "closed-paid", 5: "attested"}


@dataclass(frozen=True)
class ChannelInfo:
    """``Escrow.channels(id)``; ``session_key`` is always None (the id binds the key, which
    cannot change); ``token`` is the escrow's one token."""

    channel_id: bytes
    renter: str
    provider: str
    token: str
    session_key: str | None
    deposit: int
    redeemed: int
    close_at: int
    state: str
    pool_id: bytes | None


MAX_TFLOPS_X100 = 2_000_000  # Escrow.MAX_TFLOPS_X100: 20,000 TFLOPS is not a measurement


def check_attestation(score: object, measured_tflops_x100: object) -> None:
    """Exactly the bounds Escrow.attest enforces (ConfigError otherwise)."""
    from jupyter_gpumarket.exceptions import ConfigError

    for name, value, high in (
        ("score", score, 100),
        ("measured_tflops_x100", measured_tflops_x100, MAX_TFLOPS_X100),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ConfigError(f"attestation {name} must be an integer 0..{high}, not {value!r}")


class EscrowClient:
    """Escrow calls with the project's error mapping (TransactionReverted carries the reason)."""

    def __init__(self, contracts: Contracts) -> None:
        self.c = contracts
        self.w3 = contracts.w3
        self.domain = eip712.Domain(self.w3.eth.chain_id, contracts.escrow.address)
        self._token: str | None = None

    def channel(self, channel_id: bytes) -> ChannelInfo:
        """The channel's state; ``state == "none"`` for an id that was never opened.

        Fields are read by their ABI names, and the token from the escrow's ``token()`` when
        the channel struct has none (an escrow of one token): the provider checks the token a
        deposit is held in, wherever the deployment keeps it."""
        raw = call(self.c.escrow.functions.channels(channel_id), what="Escrow.channels")
        f = dict(zip(self._channel_fields(), raw, strict=True))
        key = f.get("session_key")
        pool = f.get("pool_id")
        return ChannelInfo(
            channel_id=bytes(channel_id),
            renter=f["renter"],
            provider=f["provider"],
            token=f["token"] if "token" in f else self.token(),
            session_key=None if key is None or int(key, 16) == 0 else key,
            deposit=f["deposit"],
            redeemed=f["redeemed"],
            close_at=f.get("close_at", 0),
            state=STATES.get(f["state"], str(f["state"])),
            pool_id=None if pool is None or bytes(pool) == bytes(32) else bytes(pool),
        )

    def _channel_fields(self) -> list[str]:
        (fn,) = [
            e
            for e in self.c.escrow.abi
            if e.get("type") == "function" and e.get("name") == "channels"
        ]
        outs = fn["outputs"]
        if len(outs) == 1 and outs[0].get("components"):
            outs = outs[0]["components"]  # one struct: its fields
        return [o["name"] for o in outs]

    def token(self) -> str:
        """The escrow's one token (an escrow that holds a single token per deployment)."""
        if self._token is None:
            self._token = str(call(self.c.escrow.functions.token(), what="Escrow.token"))
        return self._token

    def open(self, renter: LocalAccount, provider: str, deposit: int, session_key: str) -> bytes:
        """approve + open (two transactions); the channel id."""
        send(
            self.w3,
            renter,
            self.c.token.functions.approve(self.c.escrow.address, deposit),
            what="approve",
        )
        send(
            self.w3,
            renter,
            self.c.escrow.functions.open(provider, self.c.token.address, deposit, session_key),
            what="Escrow.open",
        )
        return eip712.channel_id_for(renter.address, session_key)

    def sign_voucher(self, key: LocalAccount, channel_id: bytes, amount: int) -> bytes:
        return eip712.sign_typed_data(key.key, eip712.voucher(self.domain, channel_id, amount))

    def redeem(self, provider: LocalAccount, channel_id: bytes, amount: int, sig: bytes) -> Any:
        return send(
            self.w3,
            provider,
            self.c.escrow.functions.redeem(channel_id, amount, sig),
            what="Escrow.redeem",
        )

    def settle(self, provider: LocalAccount, channel_id: bytes, amount: int, sig: bytes) -> Any:
        return send(
            self.w3,
            provider,
            self.c.escrow.functions.settle(channel_id, amount, sig),
            what="Escrow.settle",
        )

    def request_close(self, renter: LocalAccount, channel_id: bytes) -> Any:
        return send(
            self.w3,
            renter,
            self.c.escrow.functions.requestClose(channel_id),
            what="Escrow.requestClose",
        )

    def refund_owed(self, renter: str) -> int:
        """Refunds the token refused to deliver to ``renter`` (blacklisted, paused) at settle
        or withdraw; :meth:`claim_refund` collects them."""
        return int(call(self.c.escrow.functions.refund_owed(renter), what="Escrow.refund_owed"))

    def claim_refund(self, renter: LocalAccount, to: str) -> Any:
        """Send everything owed to ``renter`` to ``to`` (e.g. another wallet of the renter)."""
        return send(
            self.w3, renter, self.c.escrow.functions.claimRefund(to), what="Escrow.claimRefund"
        )

    def attest(
        self, renter: LocalAccount, channel_id: bytes, score: int, measured_tflops_x100: int = 0
    ) -> Any:
        """Rate a closed, paid channel once (its renter only): what Escrow.attest accepts,
        checked here first (score 0..100, TFLOPS x100 up to :data:`MAX_TFLOPS_X100`)."""
        check_attestation(score, measured_tflops_x100)
        return send(
            self.w3,
            renter,
            self.c.escrow.functions.attest(channel_id, score, measured_tflops_x100),
            what="Escrow.attest",
        )

    def withdraw(self, renter: LocalAccount, channel_id: bytes) -> Any:
        return send(
            self.w3, renter, self.c.escrow.functions.withdraw(channel_id), what="Escrow.withdraw"
        )
