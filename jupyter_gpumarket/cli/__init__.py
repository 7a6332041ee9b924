"""The `gpumarket` command.

Each command group lives in its own module with a ``register(subparsers)`` function; heavy
imports (web3, jupyter_server) stay inside the command functions so `gpumarket --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from jupyter_gpumarket._version import __version__
from jupyter_gpumarket.exceptions import GpuMarketError

__all__ = ["build_parser", "main"]

COMMAND_MODULES = (
    "demo",
    "provider",
    "kernels",
    "devnet",
    "network",
    "wallet",
    "leases",
    "pool",
    "offers",
    "kernelspec",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpumarket",
        description="Run Jupyter kernels on GPUs rented from a decentralized market.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from jupyter_gpumarket.cli.provider_config import parse_with_config

    parser = build_parser()
    try:
        args = parse_with_config(parser, argv)  # `provider serve --config FILE`
    except GpuMarketError as exc:
        print(f"gpumarket: error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except GpuMarketError as exc:
        print(f"gpumarket: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
