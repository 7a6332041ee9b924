"""`gpumarket offers`: the market's offers, probed live and ranked (table or --json), and
`gpumarket offers verify ID` (the seeded hardware challenge, cli/offers_verify.py).

    gpumarket offers [--network PROFILE] [--gpu CLASS] [--min-vram MIB]
                     [--max-price BASE_UNITS] [--region R] [--verified]
                     [--sort cheapest|fastest|value] [--json]

``--json`` prints a list of objects with (at least) the keys of
:meth:`jupyter_gpumarket.core.ranking.Ranked.to_json`; other tools rely on them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.cli.offers_verify import add_verify_parser

__all__ = ["register", "run_offers"]

_MAX_TEXT = 64


def _text(what: str) -> Any:
    def check(value: str) -> str:
        text = value.strip()
        if not 0 < len(text) <= _MAX_TEXT or not text.isprintable():
            raise argparse.ArgumentTypeError(
                f"{value[:40]!r}: a {what} is 1 to {_MAX_TEXT} printable characters"
            )
        return text

    return check


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `offers` command and its `offers verify`."""
    p = sub.add_parser(
        "offers",
        help="the market's offers, probed live and ranked (what GPUMARKET_OFFER would pick)",
    )
    p.add_argument("--network", help="profile name or JSON path (default: the active one)")
    p.add_argument("--gpu", type=_text("GPU class"), help="family or class: H100, H100 PCIe, cpu")
    p.add_argument(
        "--min-vram",
        type=argtypes.int_in(0, 10**9, "MiB of memory per GPU, 0 to 10**9"),
        default=0,
        metavar="MIB",
        help="least memory per GPU (MiB)",
    )
    p.add_argument(
        "--max-price",
        type=argtypes.int_in(0, argtypes.UINT256_MAX, "token base units per hour"),
        metavar="BASE_UNITS",
        help="highest price per hour, token base units",
    )
    p.add_argument("--region", type=_text("region"), help="region or its prefix: eu, eu-west")
    p.add_argument(
        "--verified", action="store_true", help="only offers whose hardware was at least detected"
    )
    p.add_argument(
        "--sort",
        choices=("cheapest", "fastest", "value"),
        default="cheapest",
        help="ranking policy (default cheapest)",
    )
    p.add_argument(
        "--timeout",
        type=argtypes.seconds(high=60.0),
        default=3.0,
        help="seconds each probe may take (default 3)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable list")
    p.set_defaults(func=run_offers)
    osub = p.add_subparsers(dest="offers_command", metavar="ACTION")
    add_verify_parser(osub)


def run_offers(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.core.market_offer import Constraints, OfferQuery, Policy
    from jupyter_gpumarket.core.verification import Level
    from jupyter_gpumarket.market.index import OfferIndex
    from jupyter_gpumarket.market.routing import candidates

    profile = load_profile(args.network) if args.network else active_profile()
    query = OfferQuery(
        Policy.parse(args.sort),
        Constraints(
            gpu=args.gpu,
            min_vram_mib=args.min_vram,
            max_price=args.max_price,
            region=args.region,
            min_level=Level.DETECTED if args.verified else Level.SELF_REPORTED,
        ),
    )
    index = OfferIndex(profile)
    ranked = candidates(profile, query, index=index, probe_timeout=args.timeout)
    if args.json:
        print(json.dumps([r.to_json() for r in ranked], indent=2))
        return 0
    print(_table(ranked, profile.token_decimals, profile.token_symbol))
    stats = index.last_stats
    skipped = len(index.malformed)
    tail = f"; {skipped} malformed offers skipped" if skipped else ""
    if stats is not None:
        print(
            f"{len(ranked)} offers ({sum(r.usable for r in ranked)} usable) on {profile.name}, "
            f"index at block {stats.to_block}{tail}"
        )
    return 0


def _price(amount: int, decimals: int, symbol: str) -> str:
    from jupyter_gpumarket.core.money import format_amount

    return format_amount(amount, decimals, symbol)


def _table(ranked: list[Any], decimals: int, symbol: str) -> str:
    if not ranked:
        return "no active offer matches: widen the filter"
    head = ("#", "ID", "GPU", "PRICE/H", "REGION", "LATENCY", "FREE", "LEVEL", "REP", "REASON")
    rows = [head]
    for r in ranked:
        j = r.to_json()
        gpu = j["gpu_class"] or j["gpu_model"]
        if j["gpu_count"] > 1:
            gpu = f"{j['gpu_count']}x {gpu}"
        if j.get("slice"):  # a shared GPU: "1/4 of an A100 80GB, 20 GB"
            gpu = j["slice"]["label"]
        if j["simulated"]:
            gpu += " (simulated)"
        lat = "-" if j["latency_ms"] is None else f"{j['latency_ms']:.0f} ms"
        free = "?" if j["free_kernels"] is None else str(j["free_kernels"])
        rows.append(
            (
                str(r.position or "-"),
                str(j["id"]),
                _clean(gpu, 44),
                _price(j["price_per_hour"], decimals, symbol),
                _clean(j["region"], 12),
                lat,
                free,
                j["verification"],
                f"{j['reputation']:.2f}",
                _clean(j["reason"], 70),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _clean(text: str, width: int) -> str:
    """Chain data shown in a terminal: printable characters only, cut to ``width``."""
    out = "".join(c if c.isprintable() else "?" for c in str(text))
    return out if len(out) <= width else out[: width - 1] + "…"
