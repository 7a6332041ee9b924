"""`gpumarket offers …`: the market's offers (``verify``: the seeded challenge)."""

from __future__ import annotations

import argparse
from typing import Any

from jupyter_gpumarket.cli.offers_verify import add_verify_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    offers = sub.add_parser("offers", help="the market's offers: verify one")
    osub = offers.add_subparsers(dest="offers_command", metavar="COMMAND", required=True)
    add_verify_parser(osub)
