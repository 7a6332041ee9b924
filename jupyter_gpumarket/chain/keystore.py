"""The user's wallet key, encrypted on disk (eth-account V3 keystore, scrypt), mode 0600.

A wrong password raises WrongPassword, an unreadable file KeystoreCorrupt; nothing here ever
overwrites an existing keystore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.exceptions import KeystoreCorrupt, WalletError, WrongPassword

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["SCRYPT_N", "create_keystore", "keystore_address", "keystore_path", "load_account"]

# eth-account's default scrypt work factor (about a second per unlock); tests lower it.
SCRYPT_N = 2**18


def keystore_path() -> Path:
    """``$GPUMARKET_WALLET``, else ``$GPUMARKET_HOME/wallet.json``."""
    wallet = os.environ.get("GPUMARKET_WALLET")
    return Path(wallet).expanduser() if wallet else gpumarket_home() / "wallet.json"


def create_keystore(
    password: str, *, private_key: bytes | str | None = None, path: Path | None = None
) -> str:
    """Encrypt ``private_key`` (or a fresh one) into ``path``; the address. Refuses to
    overwrite an existing file."""
    from eth_account import Account

    if not password:
        raise WalletError("the wallet password is empty; choose a non-empty password")
    path = path or keystore_path()
    if path.exists():
        raise WalletError(
            f"a wallet already exists at {path}; `gpumarket wallet show` prints its address "
            "(move the file away first to replace it)"
        )
    try:
        account = Account.from_key(private_key) if private_key is not None else Account.create()
    except (ValueError, TypeError) as exc:
        raise WalletError(f"that is not a valid private key ({exc}); paste 64 hex digits") from None
    data = Account.encrypt(account.key, password, kdf="scrypt", iterations=SCRYPT_N)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # exclusive: fails if someone created the wallet meanwhile, never overwrites
        statefile.write_json(path, dict(data), exclusive=True)
    except FileExistsError:
        raise WalletError(f"a wallet appeared at {path} meanwhile; not overwriting it") from None
    return str(account.address)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(
            f"no wallet at {path}: run `gpumarket wallet create` or `gpumarket wallet import`"
        ) from None
    except (OSError, ValueError) as exc:
        raise KeystoreCorrupt(
            f"the wallet file {path} is not valid JSON ({exc}); restore it from a backup or "
            "import your key again into a new file"
        ) from None
    if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
        raise KeystoreCorrupt(f"{path} is not an encrypted keystore; restore it from a backup")
    return data


def keystore_address(path: Path | None = None) -> str:
    """The wallet's address (no password needed)."""
    from eth_utils import is_address, to_checksum_address

    path = path or keystore_path()
    address = _read(path).get("address", "")
    candidate = address if str(address).startswith("0x") else f"0x{address}"
    if not is_address(candidate):
        raise KeystoreCorrupt(f"{path} has no valid address field; restore it from a backup")
    return str(to_checksum_address(candidate))


def load_account(password: str, path: Path | None = None) -> LocalAccount:
    """Decrypt the wallet; WrongPassword / KeystoreCorrupt / WalletError on failure."""
    from eth_account import Account

    path = path or keystore_path()
    data = _read(path)
    try:
        key = Account.decrypt(data, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(
                f"wrong password for {path}; try again (GPUMARKET_WALLET_PASSWORD may be stale)"
            ) from None
        raise KeystoreCorrupt(
            f"{path} cannot be decrypted ({exc}); restore it from a backup"
        ) from None
    except (KeyError, TypeError) as exc:
        raise KeystoreCorrupt(
            f"{path} is missing keystore field {exc}; restore it from a backup"
        ) from None
    return Account.from_key(key)
