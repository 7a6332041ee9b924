"""Kernel start with a paid lease (channel opening on a devnet) vs a dev-mode start, one run.

    python benchmarks/lease_start.py [--starts 5]

Starts a devnet, one paid provider (published offer) and one dev provider on this machine,
then alternates kernel starts (until kernel_info_reply) on each. Reports the median extra time
the chain adds (target <= 0.3 s) and the lease's gas; a third series starts kernels for a renter
that holds tokens but no gas (the provider relays its channel opening). Writes
benchmarks/results/lease_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import environ, running_agent  # noqa: E402

PRICE = 3_600_000
PASSWORD = "bench"


def _start(env: dict[str, str]) -> tuple[KernelManager, float]:
    km = KernelManager(kernel_name="gpumarket")
    t0 = time.perf_counter()
    with environ(env):
        km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    elapsed = time.perf_counter() - t0
    kc.stop_channels()
    return km, elapsed


def _billing_error(env: dict[str, str], c: Any, *, seconds: float) -> dict[str, float]:
    """One lease of ``seconds`` (renter's clock, ready to shutdown) against what the provider
    was paid on chain for it."""
    from jupyter_gpumarket.chain.escrow import EscrowClient
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger

    km, _ = _start(env)
    ready = time.perf_counter()
    time.sleep(seconds)
    ran = time.perf_counter() - ready
    with environ(env):
        km.shutdown_kernel()
    record = RenterLedger().list()[-1]  # the newest
    cid = bytes.fromhex(record.channel_id[2:])
    deadline = time.monotonic() + 60
    while not (info := EscrowClient(c).channel(cid)).state.startswith("closed"):
        if time.monotonic() > deadline:
            raise RuntimeError("the provider did not settle the lease within 60 s")
        time.sleep(0.2)
    paid_seconds = info.redeemed / (PRICE / 3600)
    return {
        "ran_s": round(ran, 3),
        "billed_s": record.billed_seconds,
        "paid_s": round(paid_seconds, 3),
        "error_s": round(paid_seconds - ran, 3),
    }


def main() -> None:
    from jupyter_gpumarket.chain.client import Contracts, connect, send
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger

    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--lease-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        with (
            environ({"GPUMARKET_HOME": str(home)}),
            start_devnet(profile_path=tmp / "devnet.json") as devnet,
            running_agent(tmp / "dev") as dev_agent,
        ):
            create_keystore(PASSWORD, private_key=dev_account(1).key, path=tmp / "p.json")
            create_keystore(PASSWORD, private_key=dev_account(2).key, path=tmp / "r.json")
            gasless = Account.create()
            create_keystore(PASSWORD, private_key=gasless.key, path=tmp / "g.json")
            c = Contracts.at(connect(devnet.profile.rpc_url), *devnet.profile.require_contracts())
            send(c.w3, dev_account(0), c.token.functions.mint(gasless.address, 100 * 10**6))
            ready = tmp / "ready.json"
            env = {**os.environ, "GPUMARKET_WALLET_PASSWORD": PASSWORD}
            cmd = [
                sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
                "--network", str(tmp / "devnet.json"), "--wallet", str(tmp / "p.json"),
                "--price-per-hour", str(PRICE), "--state-dir", str(tmp / "paid"),
                "--ready-file", str(ready), "--sandbox", "off", "--unsafe-no-sandbox",
            ]  # fmt: skip
            with (tmp / "paid.log").open("wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                while "offer_id" not in (json.loads(ready.read_text()) if ready.exists() else {}):
                    time.sleep(0.1)
                offer = json.loads(ready.read_text())["offer_id"]
                paid_env = {
                    "GPUMARKET_NETWORK": str(tmp / "devnet.json"),
                    "GPUMARKET_OFFER": str(offer),
                    "GPUMARKET_BUDGET": "10000000",
                    "GPUMARKET_WALLET": str(tmp / "r.json"),
                    "GPUMARKET_WALLET_PASSWORD": PASSWORD,
                }
                relayed_env = {**paid_env, "GPUMARKET_WALLET": str(tmp / "g.json")}
                times: dict[str, list[float]] = {"dev": [], "paid": [], "relayed": []}
                for _ in range(args.starts):
                    series = (
                        ("dev", dev_agent.env()),
                        ("paid", paid_env),
                        ("relayed", relayed_env),
                    )
                    for key, e in series:
                        km, dt = _start(e)
                        times[key].append(dt)
                        with environ(e):
                            km.shutdown_kernel(now=True)
                billing = _billing_error(paid_env, c, seconds=args.lease_seconds)
                leases = RenterLedger().list()
                own = [r for r in leases if r.renter == dev_account(2).address]
                relayed = [r for r in leases if r.renter == gasless.address]
                gas = [sum(t["gas_used"] for t in r.to_json()["txs"]) for r in own]
                relay_gas = [sum(t["gas_used"] for t in r.to_json()["txs"]) for r in relayed]
            finally:
                proc.terminate()
                proc.wait(30)
        result: dict[str, Any] = {
            "starts": args.starts,
            "devnet": devnet.kind,
            "dev_start_s": statistics.median(times["dev"]),
            "paid_start_s": statistics.median(times["paid"]),
            "relayed_start_s": statistics.median(times["relayed"]),
            "renter_gas_per_lease": statistics.median(gas) if gas else None,
            "relayed_open_gas_paid_by_provider": statistics.median(relay_gas)
            if relay_gas
            else None,
        }
        result["billing"] = billing
        result["chain_extra_s"] = result["paid_start_s"] - result["dev_start_s"]
        result["relayed_extra_s"] = result["relayed_start_s"] - result["dev_start_s"]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "lease_start.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
