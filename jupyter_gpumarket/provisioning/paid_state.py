"""What a restarted Jupyter server needs to keep paying for a paid kernel it re-adopts.

One JSON file per kernel in ``<records dir>/paid/<kernel id>.json`` (mode 0600), written when
the lease opens and after every voucher: the offer, the channel, what was signed, the billed
seconds at that wall-clock time, and the lease's session key encrypted with the wallet password
(an eth-account keystore, so the file alone spends nothing). Removed when the lease ends.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError, WalletError
from jupyter_gpumarket.provisioning.record_store import RecordStore
from jupyter_gpumarket.provisioning.records import records_dir

__all__ = ["PaidState", "encrypt_session_key", "forget", "load", "save"]

KDF_N = 2**14  # scrypt cost: ~50 ms; the key is per lease and bounded by its deposit


@dataclass(frozen=True)
class PaidState:
    kernel_id: str
    network: str
    offer: dict[str, Any]  # provisioning.offers.OfferChoice as a dict
    channel_id: str
    chain_id: int
    escrow: str
    deposit: int
    budget: int
    auto_top_up: bool
    record_id: str
    renter: str
    session_key: dict[str, Any] = field(repr=False)  # encrypted keystore JSON
    signed: int = 0
    billed_seconds: float = 0.0
    billing: bool = False  # a kernel was running (billed) when this was saved
    saved_at: float = 0.0  # wall-clock time of billed_seconds

    def billed_now(self, now: float | None = None) -> float:
        """Billed seconds now, if the remote kernel kept running since the save (it does:
        the provider bills it while the renter's server is gone)."""
        if not self.billing:
            return self.billed_seconds
        return self.billed_seconds + max(0.0, (now or time.time()) - self.saved_at)


def encrypt_session_key(private_key: bytes, password: str) -> dict[str, Any]:
    from eth_account import Account

    return dict(Account.encrypt(private_key, password, kdf="scrypt", iterations=KDF_N))


def decrypt_session_key(state: PaidState, password: str) -> Any:
    from eth_account import Account

    try:
        return Account.from_key(Account.decrypt(state.session_key, password))
    except (ValueError, TypeError, KeyError) as exc:
        raise WalletError(
            f"cannot unlock the session key of kernel {state.kernel_id}'s lease ({exc}): is "
            "GPUMARKET_WALLET_PASSWORD the password it was opened with?"
        ) from None


_store = RecordStore(
    PaidState,
    lambda: records_dir() / "paid",
    "paid-lease state",
    lambda kernel_id: "the lease's deposit comes back with `gpumarket leases close`",
)
save = _store.save
load = _store.load


def forget(kernel_id: str) -> None:
    with contextlib.suppress(ConfigError):
        _store.forget(kernel_id)
