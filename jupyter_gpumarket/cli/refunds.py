"""`gpumarket leases claim-refund [--to ADDRESS]`, and the owed-refund lines of `gpumarket
leases` and `gpumarket leases close` (a refund the token refused at settle or withdraw)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.profiles import NetworkProfile
    from jupyter_gpumarket.chain.renter_ledger import LeaseRecord

__all__ = ["after_close", "after_final", "owed_lines", "register_claim"]


def _address(value: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an address (0x and 40 hex digits)")
    return str(to_checksum_address(value))


def register_claim(lsub: argparse._SubParsersAction[Any]) -> None:
    """Add `leases claim-refund`."""
    c = lsub.add_parser(
        "claim-refund",
        help="collect the refunds the token refused to send you at settle or withdraw",
    )
    c.add_argument("--to", type=_address, help="send them to this address (default: your wallet)")
    c.add_argument("--network", help="profile name or JSON path (default: the active one)")
    c.set_defaults(func=claim_refund_cmd)


def _amount(profile: NetworkProfile, value: int) -> str:
    from jupyter_gpumarket.core.money import format_amount

    return format_amount(value, profile.token_decimals, profile.token_symbol)


def claim_refund_cmd(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.profiles import active_name
    from jupyter_gpumarket.chain.recovery import lease_chain
    from jupyter_gpumarket.chain.refunds import claim_refund
    from jupyter_gpumarket.cli.wallet import read_password

    network = args.network or active_name()
    chain, profile = lease_chain(network)
    account = load_account(read_password())
    claimed = claim_refund(chain, account, args.to)
    if claimed is None:
        print(f"no refund owed to {account.address} on {profile.name}")
        return 0
    amount = _amount(profile, claimed.amount)
    print(f"claimed {amount} owed to {account.address}: sent to {claimed.to}")
    return 0


def _still_owed(profile: NetworkProfile, address: str, owed: int) -> str:
    return (
        f"{_amount(profile, owed)} refund owed to {address} on {profile.name}: the token "
        f"refused to send it; run `gpumarket leases claim-refund --to ADDRESS` (another "
        "wallet of yours) or again once the token serves this address"
    )


def after_close(chain: LeaseChain, profile: NetworkProfile, account: LocalAccount) -> None:
    """After a lease closed (the recovery step claimed what it could): say what is still owed."""
    from jupyter_gpumarket.chain.refunds import refund_owed

    if owed := refund_owed(chain, account.address):
        print(_still_owed(profile, account.address, owed))


def after_final(record: LeaseRecord, network: str | None) -> int:
    """``leases close`` on a lease already closed: claim a refund still owed to its renter."""
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.recovery import claim_owed_refund, lease_chain
    from jupyter_gpumarket.chain.refunds import refund_owed
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger
    from jupyter_gpumarket.cli.wallet import read_password

    chain, profile = lease_chain(network or record.network)
    owed = refund_owed(chain, record.renter)
    if owed == 0:
        return 0
    account = load_account(read_password())
    if account.address != record.renter:
        print(_still_owed(profile, record.renter, owed) + f" (with the wallet {record.renter})")
        return 0
    still = claim_owed_refund(RenterLedger(), record, chain, account)
    if still:
        print(_still_owed(profile, account.address, still))
    else:
        print(f"claimed the {_amount(profile, owed)} refund owed to {account.address}")
    return 0


def owed_lines(records: list[LeaseRecord]) -> list[str]:
    """One line per (network, renter) of closed leases the escrow owes a refund to. A network
    that cannot be read is skipped (the list itself is local)."""
    from jupyter_gpumarket.chain.recovery import lease_chain
    from jupyter_gpumarket.chain.refunds import refund_owed
    from jupyter_gpumarket.exceptions import GpuMarketError

    lines: list[str] = []
    for network, renter in sorted(
        {(r.network, r.renter) for r in records if r.state in ("settled", "withdrawn")}
    ):
        try:
            chain, profile = lease_chain(network)
            owed = refund_owed(chain, renter)
        except GpuMarketError:
            continue
        if owed:
            lines.append(_still_owed(profile, renter, owed))
    return lines
