"""Per-lease session keys: a fresh key signs the lease's vouchers, so the wallet key never
leaves the user's machine (it only signs the channel open, which binds the session key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_gpumarket.core.eip712 import channel_id_for

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["new_session_key", "session_channel_id"]


def new_session_key() -> LocalAccount:
    """A fresh random key for one lease (keep it in memory; never give it to a kernel)."""
    from eth_account import Account

    return Account.create()


def session_channel_id(renter: str, session_key: LocalAccount) -> bytes:
    """The channel id the Escrow will give ``renter``'s channel bound to ``session_key``."""
    return channel_id_for(renter, session_key.address)
