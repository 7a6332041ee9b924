"""A devnet market with several paid provider agents on loopback (one per dev account), plus
offers registered straight on the Registry, for the market path's end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentproc import environ
from marketproc import PASSWORD

RENTER = 2  # dev account of the renter


@dataclass
class Agent:
    account: int
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    price: int
    region: str

    @property
    def offer_id(self) -> int:
        return int(self.ready["offer_id"])


@dataclass
class Fleet:
    tmp: Path
    home: Path
    profile_path: Path
    devnet: Any
    agents: dict[str, Agent] = field(default_factory=dict)
    renter_env: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)  # offer ids by name (tests fill it)

    def contracts(self) -> Any:
        from jupyter_gpumarket.chain.client import Contracts, connect

        p = self.devnet.profile
        return Contracts.at(connect(p.rpc_url), *p.require_contracts())

    def balance(self, account: int) -> int:
        from jupyter_gpumarket.chain.dev_accounts import dev_account

        addr = dev_account(account).address
        return int(self.contracts().token.functions.balanceOf(addr).call())

    def register(self, account: int, **terms: Any) -> int:
        """Register an offer from dev account ``account`` (fields default to a CPU offer)."""
        from jupyter_gpumarket.chain.client import send
        from jupyter_gpumarket.chain.dev_accounts import dev_account

        c = self.contracts()
        t = {
            "endpoint": "wss://127.0.0.1:9/",
            "tls_fingerprint": b"\x11" * 32,
            "gpu_model": "CPU",
            "gpu_count": 0,
            "vram_mb": 0,
            "price_per_hour": 1_000_000,
            "token": c.token.address,
            "region": "eu",
            "metadata_uri": "",
            **terms,
        }
        fn = c.registry.functions.register(
            t["endpoint"], t["tls_fingerprint"], t["gpu_model"], t["gpu_count"], t["vram_mb"],
            t["price_per_hour"], t["token"], t["region"], t["metadata_uri"],
        )  # fmt: skip
        receipt = send(c.w3, dev_account(account), fn, what="register")
        events = c.registry.events.OfferRegistered().process_receipt(receipt)
        return int(events[0]["args"]["offer_id"])

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jupyter_gpumarket.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.renter_env},
            timeout=timeout,
        )


def _start_agent(fleet: Fleet, name: str, account: int, price: int, region: str, *extra: str):
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.keystore import create_keystore

    ks = fleet.tmp / f"{name}.keystore.json"
    create_keystore(PASSWORD, private_key=dev_account(account).key, path=ks)
    ready = fleet.tmp / f"{name}.ready.json"
    env = {**os.environ, "GPUMARKET_HOME": str(fleet.home), "GPUMARKET_WALLET_PASSWORD": PASSWORD}
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
        "--network", str(fleet.profile_path), "--wallet", str(ks),
        "--price-per-hour", str(price), "--region", region, "--state-dir",
        str(fleet.tmp / name), "--ready-file", str(ready), "--voucher-interval", "2",
        "--payment-grace", "8", "--redeem-every", "2", "--sandbox", "off",
        "--unsafe-no-sandbox", *extra,
    ]  # fmt: skip
    with (fleet.tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, ready


@contextlib.contextmanager
def running_fleet(tmp: Path, specs: dict[str, tuple[int, int, str, tuple[str, ...]]]):
    """Devnet + one paid agent per ``specs`` entry: name -> (dev account, price, region,
    extra `provider serve` args). The renter is dev account 2."""
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore

    home = tmp / "home"
    profile = tmp / "devnet.json"
    with (
        environ({"GPUMARKET_HOME": str(home)}),
        start_devnet(profile_path=profile, close_delay=60) as devnet,
    ):
        fleet = Fleet(tmp, home, profile, devnet)
        renter_ks = tmp / "renter.json"
        create_keystore(PASSWORD, private_key=dev_account(RENTER).key, path=renter_ks)
        fleet.renter_env = {
            "GPUMARKET_HOME": str(home),
            "GPUMARKET_NETWORK": str(profile),
            "GPUMARKET_BUDGET": "10000000",
            "GPUMARKET_WALLET": str(renter_ks),
            "GPUMARKET_WALLET_PASSWORD": PASSWORD,
        }
        started = {
            name: (_start_agent(fleet, name, acct, price, region, *extra), acct, price, region)
            for name, (acct, price, region, extra) in specs.items()
        }
        try:
            deadline = time.monotonic() + 90
            for name, ((proc, ready), acct, price, region) in started.items():
                while not ready.exists():
                    log = (tmp / f"{name}.log").read_text()
                    assert proc.poll() is None, log
                    assert time.monotonic() < deadline, log
                    time.sleep(0.1)
                info = json.loads(ready.read_text())
                fleet.agents[name] = Agent(acct, proc, info, price, region)
            yield fleet
        finally:
            for (proc, _), *_ in started.values():
                if proc.poll() is None:
                    proc.terminate()
            for (proc, _), *_ in started.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung agent)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
