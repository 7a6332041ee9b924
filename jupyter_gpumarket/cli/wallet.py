"""`gpumarket wallet create | import | show | balance | fund`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import WalletError

__all__ = ["read_password", "register"]

PASSWORD_ENV = "GPUMARKET_WALLET_PASSWORD"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `wallet` command group."""
    p = sub.add_parser("wallet", help="your encrypted wallet key (~/.gpumarket/wallet.json)")
    wsub = p.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)
    c = wsub.add_parser("create", help="create a new encrypted wallet")
    c.set_defaults(func=create)
    i = wsub.add_parser("import", help="encrypt an existing private key into the wallet")
    i.add_argument("--key-file", type=Path, help="file holding the hex private key")
    i.set_defaults(func=import_key)
    s = wsub.add_parser("show", help="print the wallet address")
    s.add_argument("--verify", action="store_true", help="also check the password unlocks it")
    s.set_defaults(func=show)
    b = wsub.add_parser("balance", help="gas and token balance on a network")
    b.add_argument("--network", help="profile name or JSON path (default: the active one)")
    b.add_argument("--address", help="another address to look at")
    b.set_defaults(func=balance)
    f = wsub.add_parser("fund", help="devnet faucet: mint TestUSD and send gas to the wallet")
    f.add_argument("--network", help="devnet profile name or JSON path (default: active)")
    f.add_argument(
        "--amount",
        type=argtypes.token_amount,
        default="1000",
        help="TestUSD to mint (default 1000)",
    )
    f.add_argument("--address", help="fund this address instead of the wallet")
    f.set_defaults(func=fund)


def read_password(confirm: bool = False) -> str:
    """$GPUMARKET_WALLET_PASSWORD, else a hidden prompt (twice when ``confirm``)."""
    if (env := os.environ.get(PASSWORD_ENV)) is not None:
        return env
    if not sys.stdin.isatty():
        raise WalletError(f"no terminal to ask for the wallet password: set {PASSWORD_ENV}")
    password = getpass.getpass("wallet password: ")
    if confirm and getpass.getpass("repeat password: ") != password:
        raise WalletError("the two passwords differ; run the command again")
    return password


def create(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.keystore import create_keystore, keystore_path

    address = create_keystore(read_password(confirm=True))
    print(f"created wallet {address} at {keystore_path()} (mode 0600)")
    return 0


def import_key(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.keystore import create_keystore, keystore_path

    if args.key_file is not None:
        try:
            key = args.key_file.read_text().strip()
        except OSError as exc:
            raise WalletError(f"cannot read {args.key_file} ({exc}); check the path") from None
    elif sys.stdin.isatty():
        key = getpass.getpass("private key (hex): ").strip()
    else:
        key = sys.stdin.readline().strip()
    address = create_keystore(read_password(confirm=True), private_key=key)
    print(f"imported wallet {address} into {keystore_path()} (mode 0600)")
    return 0


def show(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.keystore import keystore_address, keystore_path, load_account

    address = keystore_address()
    if args.verify and load_account(read_password()).address != address:
        raise WalletError(f"{keystore_path()} decrypts to another address; restore a backup")
    print(f"{address}  ({keystore_path()})" + ("  password ok" if args.verify else ""))
    return 0


def _profile(name: str | None):
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile

    return load_profile(name) if name else active_profile()


def _target(address: str | None) -> str:
    from eth_utils import is_address, to_checksum_address

    from jupyter_gpumarket.chain.keystore import keystore_address

    if address is None:
        return keystore_address()
    if not is_address(address):
        raise WalletError(f"{address!r} is not an address; pass a 0x… address")
    return str(to_checksum_address(address))


def balance(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.client import call, connect, contract_at
    from jupyter_gpumarket.chain.errors import rpc_errors
    from jupyter_gpumarket.core.money import format_amount

    profile = _profile(args.network)
    address = _target(args.address)
    w3 = connect(profile.rpc_url)
    with rpc_errors("eth_getBalance", profile.rpc_url):
        wei = w3.eth.get_balance(address)
    token = call(contract_at(w3, "TestUSD", profile.token).functions.balanceOf(address))
    print(f"{address} on {profile.name}")
    print(f"  gas    {format_amount(wei, 18, 'ETH')}")
    print(f"  token  {format_amount(token, profile.token_decimals, profile.token_symbol)}")
    return 0


def fund(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.client import connect, send_value
    from jupyter_gpumarket.chain.deploy import mint
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.errors import rpc_errors
    from jupyter_gpumarket.core.money import format_amount

    profile = _profile(args.network)
    if not profile.devnet:
        raise WalletError(
            f"`wallet fund` is a devnet faucet and {profile.name} is not a devnet; "
            f"buy {profile.token_symbol} and gas on that network instead"
        )
    amount = argtypes.base_units(args.amount, profile.token_decimals, "--amount")
    address = _target(args.address)
    w3 = connect(profile.rpc_url)
    faucet = dev_account(0)
    mint(w3, faucet, profile.token, address, amount)
    with rpc_errors("send gas", profile.rpc_url):
        gas_needed = w3.eth.get_balance(address) < 10**18
    if gas_needed:
        send_value(w3, faucet, address, 10**18)
    minted = format_amount(amount, profile.token_decimals, profile.token_symbol)
    print(f"funded {address} with {minted}" + (" and 1 ETH for gas" if gas_needed else ""))
    return 0
