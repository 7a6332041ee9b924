"""`gpumarket leases [--json] [--all]` and `gpumarket leases close ID [--wait]`.

The list shows the leases of the active network (chain id + escrow of the active profile),
each first reconciled with the chain: a channel the provider settled shows ``settled``, the
chain's amounts and the settle tx. ``--all`` adds the leases of every other network (old
devnets, leases recorded before networks were: "unknown network")."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from jupyter_gpumarket.cli import refunds

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `leases` command group."""
    p = sub.add_parser("leases", help="your paid leases: list them, get unspent deposits back")
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.add_argument(
        "--all",
        action="store_true",
        help="also the leases of other networks (old devnets, unknown network)",
    )
    p.set_defaults(func=list_leases)
    lsub = p.add_subparsers(dest="leases_command", metavar="ACTION")
    c = lsub.add_parser(
        "close",
        help="get a lease's unspent deposit back when its provider did not settle "
        "(requestClose, then withdraw after the challenge period)",
    )
    c.add_argument("lease_id", help="lease id (or a unique prefix, or the channel id)")
    c.add_argument("--network", help="profile name or JSON path (default: the lease's network)")
    c.add_argument(
        "--wait", action="store_true", help="wait out the challenge period, then withdraw"
    )
    c.set_defaults(func=close_lease)
    refunds.register_claim(lsub)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _units(network: str) -> tuple[int, str]:
    from jupyter_gpumarket.chain.profiles import load_profile
    from jupyter_gpumarket.exceptions import ConfigError

    try:
        profile = load_profile(network)
    except ConfigError:
        return 0, ""
    return profile.token_decimals, profile.token_symbol


def _closing_tx(txs: list[dict[str, Any]]) -> str | None:
    for tx in reversed(txs):
        if tx.get("kind") in ("settle", "withdraw"):
            return str(tx.get("tx_hash"))
    return None


def list_leases(args: argparse.Namespace) -> int:
    import sys

    from jupyter_gpumarket.chain.reconcile import active_network, reconcile_records
    from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES, RenterLedger
    from jupyter_gpumarket.core.money import format_amount

    ledger = RenterLedger()
    key, profile = active_network()
    records = ledger.list() if args.all or key is None else ledger.list(key)
    records, problem = reconcile_records(ledger, records, profile)
    if key is None and not args.all:
        print("no active network profile: listing the leases of every network", file=sys.stderr)
    if problem:
        print(f"some leases were {problem}: amounts are the renter's estimate", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
    if not records:
        hidden = "" if args.all else " on this network (`gpumarket leases --all`: every network)"
        print(f"no leases yet{hidden}: pick an offer with the GPU picker or set GPUMARKET_OFFER")
        return 0
    print(
        f"{'ID':<12}  {'STATE':<9}  {'OFFER':>5}  {'PROVIDER':<12}  {'STARTED':<16}  "
        f"{'BILLED':>8}  {'PRICE/H':>10}  {'SPENT':>11}  {'LEFT':>10}  {'REFUNDED':>10}  TXS"
    )
    for r in records:
        decimals, _symbol = _units(r.network)
        row = r.to_json()
        money = [
            format_amount(v, decimals)
            for v in (r.price_per_hour, r.spent, row["deposit_left"], r.refunded)
        ]
        if r.state in FINAL_STATES:
            money[2] = "-"
        spent = money[1] + ("~" if r.spent_source == "estimate" else " ")
        print(
            f"{r.id:<12}  {r.state:<9}  {r.offer_id if r.offer_id is not None else '-':>5}  "
            f"{r.provider[:12]:<12}  {_when(r.started_at):<16}  {r.billed_seconds:>7}s  "
            f"{money[0]:>10}  {spent:>11}  {money[2]:>10}  {money[3]:>10}  {len(r.txs)}"
        )
        if r.state == "closing" and r.close_at:
            print(f"{'':<14}withdraw after {_when(r.close_at)} UTC: gpumarket leases close {r.id}")
        if (tx := _closing_tx(r.txs)) and r.state in ("settled", "withdrawn"):
            print(f"{'':<14}{r.state} on chain in tx {tx}")
        if args.all and (key is None or r.network_key != key):
            print(f"{'':<14}{row['network_label']} (not the active network)")
    for line in refunds.owed_lines(records):
        print(line)
    print("~ the renter's estimate (what it signed); the chain's amount once settled")
    return 0


def close_lease(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.recovery import chain_now, lease_chain, recovery_step
    from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES, RenterLedger
    from jupyter_gpumarket.cli.wallet import read_password
    from jupyter_gpumarket.core.money import format_amount

    ledger = RenterLedger()
    record = ledger.get(args.lease_id)
    if record.state in FINAL_STATES:
        print(f"lease {record.id} is already {record.state}: refunded {record.refunded}")
        return refunds.after_final(record, args.network)
    chain, profile = lease_chain(args.network or record.network)
    account = load_account(read_password())

    def amount(value: int) -> str:
        return format_amount(value, profile.token_decimals, profile.token_symbol)

    while True:
        step, record = recovery_step(ledger, record, chain, account)
        if step.state == "closing":
            if not args.wait:
                print(
                    f"close requested for lease {record.id}: the provider may still settle "
                    f"until {_when(step.close_at)} UTC; then run `gpumarket leases close "
                    f"{record.id}` again to withdraw the rest (or pass --wait)"
                )
                return 0
            time.sleep(max(1.0, min(30.0, step.close_at - chain_now(chain))))
            continue
        print(
            f"lease {record.id} {record.state}: provider paid {amount(step.paid)}, "
            f"{amount(step.refunded)} back to {account.address}"
        )
        refunds.after_close(chain, profile, account)
        return 0
