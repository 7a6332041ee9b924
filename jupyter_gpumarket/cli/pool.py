"""`gpumarket pool create | fund | show | grant`: credit pools that pay students' leases.

The wallet (GPUMARKET_WALLET, GPUMARKET_WALLET_PASSWORD) is the pool admin's. A grant code is
signed off chain and handed to one student; it spends at most its cap, before its expiry, and
with ``--provider`` only on that provider's offers.
"""

from __future__ import annotations

import argparse
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    pool = sub.add_parser("pool", help="credit pools for courses: create, fund, grant codes")
    psub = pool.add_subparsers(dest="pool_command", metavar="COMMAND", required=True)
    c = psub.add_parser("create", help="create a pool with AMOUNT tokens from your wallet")
    c.add_argument("amount", type=argtypes.token_amount, help="in tokens, e.g. 100 or 12.5")
    f = psub.add_parser("fund", help="add AMOUNT tokens to a pool")
    f.add_argument("pool_id")
    f.add_argument("amount", type=argtypes.token_amount)
    s = psub.add_parser("show", help="a pool's admin, token and balance")
    s.add_argument("pool_id")
    g = psub.add_parser("grant", help="sign a grant code for one student's wallet")
    g.add_argument("pool_id")
    g.add_argument("student", help="the student's wallet address")
    g.add_argument(
        "--cap",
        required=True,
        type=argtypes.token_amount,
        help="most the grant spends in total, in tokens",
    )
    g.add_argument("--days", type=argtypes.days, default=30.0, help="valid for this many days (30)")
    g.add_argument("--provider", help="only this provider's offers (default: any)")
    for p in (c, f, s, g):
        p.add_argument("--network", help="profile name or JSON path (default: the active one)")
    c.set_defaults(func=_create)
    f.set_defaults(func=_fund)
    s.set_defaults(func=_show)
    g.set_defaults(func=_grant)


def _setup(args: argparse.Namespace, *, wallet: bool = True) -> tuple[Any, Any, Any]:
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.cli.wallet import read_password

    profile = load_profile(args.network) if args.network else active_profile()
    c = Contracts.bound(connect(profile.rpc_url), *profile.require_contracts())
    return profile, c, load_account(read_password()) if wallet else None


def _pool_id(text: str) -> bytes:
    raw = text.removeprefix("0x")
    if len(raw) != 64:
        raise ConfigError(f"{text!r} is not a pool id (0x + 64 hex digits, from `pool create`)")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ConfigError(f"{text!r} is not a pool id (0x + 64 hex digits)") from None


def _create(args: argparse.Namespace) -> int:
    from web3.logs import DISCARD

    from jupyter_gpumarket.chain.client import send
    from jupyter_gpumarket.core.money import format_amount

    profile, c, admin = _setup(args)
    amount = argtypes.base_units(args.amount, profile.token_decimals, "amount")
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, amount), what="approve")
    receipt = send(c.w3, admin, c.escrow.functions.createPool(c.token.address, amount))
    (event,) = c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
    pool_id = "0x" + bytes(event["args"]["pool_id"]).hex()
    print(f"pool {pool_id}: {format_amount(amount, profile.token_decimals, profile.token_symbol)}")
    print(f"grant codes: gpumarket pool grant {pool_id} STUDENT_ADDRESS --cap 5")
    return 0


def _fund(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.client import send

    profile, c, admin = _setup(args)
    pool_id = _pool_id(args.pool_id)
    amount = argtypes.base_units(args.amount, profile.token_decimals, "amount")
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, amount), what="approve")
    send(c.w3, admin, c.escrow.functions.fundPool(pool_id, amount))
    return _show(args)


def _show(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.client import call
    from jupyter_gpumarket.core.money import format_amount

    profile, c, _ = _setup(args, wallet=False)
    admin, token, balance = call(c.escrow.functions.pools(_pool_id(args.pool_id)))
    if int(admin, 16) == 0:
        raise ConfigError(f"no pool {args.pool_id} on {profile.name}")
    print(f"pool {args.pool_id} on {profile.name}")
    print(f"  admin    {admin}")
    print(f"  token    {token}")
    print(f"  balance  {format_amount(balance, profile.token_decimals, profile.token_symbol)}")
    return 0


def _grant(args: argparse.Namespace) -> int:
    from eth_utils import is_address, to_checksum_address

    from jupyter_gpumarket.chain.client import call
    from jupyter_gpumarket.core import eip712
    from jupyter_gpumarket.core.grant_code import ZERO_ADDRESS, issue_grant
    from jupyter_gpumarket.core.money import format_amount

    profile, c, admin = _setup(args)
    pool_id = _pool_id(args.pool_id)
    for name in ("student", "provider"):
        value = getattr(args, name)
        if value is not None and not is_address(value):
            raise ConfigError(f"{name} {value!r} is not an address (0x + 40 hex digits)")
    pool_admin, _token, _balance = call(c.escrow.functions.pools(pool_id))
    if pool_admin != admin.address:
        raise ConfigError(
            f"pool {args.pool_id} belongs to {pool_admin}, not to this wallet {admin.address}: "
            "only the pool's admin signs its grants"
        )
    cap = argtypes.base_units(args.cap, profile.token_decimals, "--cap")
    expiry = int(c.w3.eth.get_block("latest")["timestamp"] + args.days * 86400)
    code = issue_grant(
        admin.key,
        eip712.Domain(c.w3.eth.chain_id, c.escrow.address),
        pool_id=pool_id,
        student=to_checksum_address(args.student),
        cap=cap,
        expiry=expiry,
        provider=to_checksum_address(args.provider) if args.provider else ZERO_ADDRESS,
    )
    capped = format_amount(cap, profile.token_decimals, profile.token_symbol)
    print(f"# grant for {code.student}: up to {capped}, {args.days:g} days", flush=True)
    print(code.encode())
    return 0
