"""`gpumarket devnet`: a local chain with the contracts deployed and funded dev accounts."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `devnet` command."""
    p = sub.add_parser(
        "devnet",
        help="start a local chain with the contracts (anvil, or the embedded py-evm chain)",
        description="Start a local EVM chain, deploy TestUSD + Escrow + Registry, mint 10,000 "
        "TestUSD to each of the 10 dev accounts, write a network profile, run until Ctrl-C.",
    )
    p.add_argument("--port", type=argtypes.port, default=8545, help="RPC port (0 = any free port)")
    p.add_argument("--embedded", action="store_true", help="use the in-process py-evm chain")
    p.add_argument(
        "--close-delay",
        type=argtypes.close_delay,
        default=3600,
        metavar="S",
        help="Escrow challenge period in seconds (default 3600)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to write the profile (default ~/.gpumarket/networks/devnet.json)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.dev_accounts import DEV_PRIVATE_KEYS, dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    net = start_devnet(
        port=args.port,
        embedded=args.embedded,
        close_delay=args.close_delay,
        profile_path=args.profile,
    )
    with net:
        p = net.profile
        print(f"devnet ({net.kind}) at {p.rpc_url}, chain id {p.chain_id}")
        print(f"  TestUSD  {p.token}\n  Escrow   {p.escrow}  (close delay {p.close_delay}s)")
        print(f"  Registry {p.registry}\n  profile  {net.profile_path}")
        print("  dev accounts (public test keys, 10,000 TUSD each):")
        for i, key in enumerate(DEV_PRIVATE_KEYS):
            print(f"    {i} {dev_account(i).address} {key}")
        print("ready; Ctrl-C stops the chain", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print("devnet stopped", flush=True)
    return 0
