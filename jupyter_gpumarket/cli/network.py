"""`gpumarket network add | list | use`: network profiles (RPC, chain id, contracts)."""

from __future__ import annotations

import argparse
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `network` command group."""
    p = sub.add_parser("network", help="network profiles (devnet, L2 testnet, mainnet)")
    nsub = p.add_subparsers(dest="network_command", metavar="ACTION", required=True)
    a = nsub.add_parser("add", help="add or replace a profile")
    a.add_argument("name", help="profile name, e.g. base-sepolia")
    a.add_argument(
        "--preset",
        choices=["base-sepolia", "base"],
        help="fill chain id, public RPC and the USDC address of a known network",
    )
    a.add_argument("--rpc-url")
    a.add_argument("--chain-id", type=argtypes.chain_id)
    a.add_argument("--token", help="stablecoin address")
    a.add_argument("--escrow", help="Escrow address (once deployed there)")
    a.add_argument("--registry", help="Registry address (once deployed there)")
    a.add_argument("--close-delay", type=argtypes.close_delay)
    a.add_argument("--token-symbol")
    a.add_argument("--token-decimals", type=argtypes.token_decimals)
    a.add_argument(
        "--no-verify",
        action="store_true",
        help="save without asking the RPC whether the escrow holds --token (checked at first use)",
    )
    a.set_defaults(func=add)
    ls = nsub.add_parser("list", help="list profiles (* = active)")
    ls.set_defaults(func=list_)
    u = nsub.add_parser("use", help="make a profile the active one")
    u.add_argument("name")
    u.set_defaults(func=use)


def add(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.profiles import PRESETS, NetworkProfile, save_profile

    fields: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for key in (
        "rpc_url",
        "chain_id",
        "token",
        "escrow",
        "registry",
        "close_delay",
        "token_symbol",
        "token_decimals",
    ):
        if (value := getattr(args, key)) is not None:
            fields[key] = value
    missing = [k for k in ("rpc_url", "chain_id", "token") if k not in fields]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ConfigError(f"network add {args.name}: give {flags} (or --preset base-sepolia|base)")
    profile = NetworkProfile(name=args.name, **fields)
    if profile.escrow and profile.registry and not args.no_verify:
        from jupyter_gpumarket.chain.client import Contracts, connect

        Contracts.bound(connect(profile.rpc_url), *profile.require_contracts())
    path = save_profile(profile)
    print(f"saved network {args.name} to {path}")
    return 0


def list_(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.profiles import active_name, list_profiles

    active = active_name()
    profiles = list_profiles()
    if not profiles:
        print("no network profiles yet: run `gpumarket devnet` or `gpumarket network add`")
        return 0
    for p in profiles:
        mark = "*" if p.name == active else " "
        escrow = p.escrow or "(no escrow yet)"
        print(f"{mark} {p.name:<14} chain {p.chain_id:<8} {p.rpc_url}  escrow {escrow}")
    return 0


def use(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.profiles import use_profile

    profile = use_profile(args.name)
    print(f"active network: {profile.name} (chain {profile.chain_id}, {profile.rpc_url})")
    return 0
