"""What a restarted Jupyter server needs to keep paying for a paid kernel it re-adopts.

One JSON file per kernel in ``<records dir>/paid/<kernel id>.json`` (mode 0600), written when
the lease opens and after every voucher: the offer, the channel, what was signed, the billed
seconds at that wall-clock time, and the lease's session key encrypted with the wallet password
(an eth-account keystore, so the file alone spends nothing). Removed when the lease ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError, WalletError
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


def _path(kernel_id: str) -> Path:
    if not kernel_id or "/" in kernel_id or kernel_id.startswith("."):
        raise ConfigError(f"{kernel_id!r} is not a kernel id")
    return records_dir() / "paid" / f"{kernel_id}.json"


def save(state: PaidState) -> None:
    path = _path(state.kernel_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{state.kernel_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600, a name no other writer uses
            json.dump(asdict(state), f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(kernel_id: str) -> PaidState | None:
    path = _path(kernel_id)
    try:
        data = json.loads(path.read_text())
        names = {f.name for f in fields(PaidState)}
        return PaidState(**{k: v for k, v in data.items() if k in names})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"paid-lease state {path} is unreadable ({exc}); the lease's deposit comes back "
            "with `gpumarket leases close`"
        ) from None


def forget(kernel_id: str) -> None:
    with contextlib.suppress(FileNotFoundError, ConfigError):
        _path(kernel_id).unlink()
