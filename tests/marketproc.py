"""A devnet market on loopback for end-to-end tests: a chain, a paid provider (published
offer) and a renter's environment."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentproc import environ
from netfault import ThreadedProxy

PRICE = 3_600_000  # base units per hour: 1,000 per second
PASSWORD = "correct horse"


@dataclass
class Market:
    home: Path
    profile: Path
    devnet: Any
    provider_proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    renter_env: dict[str, str]

    def token_balance(self, address: str) -> int:
        from jupyter_gpumarket.chain.client import Contracts, connect

        p = self.devnet.profile
        c = Contracts.at(connect(p.rpc_url), *p.require_contracts())
        return int(c.token.functions.balanceOf(address).call())

    def channel(self, channel_id: str) -> Any:
        from jupyter_gpumarket.chain.client import Contracts, connect
        from jupyter_gpumarket.chain.escrow import EscrowClient

        p = self.devnet.profile
        c = Contracts.at(connect(p.rpc_url), *p.require_contracts())
        return EscrowClient(c).channel(bytes.fromhex(channel_id[2:]))


@contextlib.contextmanager
def running_market(
    tmp_path: Path, *provider_args: str, provider_rpc: ThreadedProxy | None = None
) -> Iterator[Market]:
    """Devnet + a paid provider (published offer) + a renter's env, all on loopback.

    ``provider_rpc``: a fault proxy (not started) the provider's RPC traffic goes through."""
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore

    home = tmp_path / "home"
    with (
        environ({"GPUMARKET_HOME": str(home)}),
        start_devnet(profile_path=tmp_path / "devnet.json", close_delay=60) as devnet,
    ):
        provider_ks, renter_ks = tmp_path / "provider.json", tmp_path / "renter.json"
        create_keystore(PASSWORD, private_key=dev_account(1).key, path=provider_ks)
        create_keystore(PASSWORD, private_key=dev_account(2).key, path=renter_ks)
        ready = tmp_path / "ready.json"
        env = {**os.environ, "GPUMARKET_HOME": str(home), "GPUMARKET_WALLET_PASSWORD": PASSWORD}
        provider_profile = tmp_path / "devnet.json"
        if provider_rpc is not None:
            rpc_port = int(devnet.profile.rpc_url.rsplit(":", 1)[1].strip("/"))
            provider_rpc.set_target(rpc_port)
            proxied = json.loads(provider_profile.read_text())
            proxied["rpc_url"] = f"http://127.0.0.1:{provider_rpc.start()}"
            provider_profile = tmp_path / "provider-devnet.json"
            provider_profile.write_text(json.dumps(proxied))
        cmd = [
            sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
            "--network", str(provider_profile), "--wallet", str(provider_ks),
            "--price-per-hour", str(PRICE), "--region", "eu", "--state-dir",
            str(tmp_path / "provider"), "--ready-file", str(ready), "--voucher-interval", "2",
            "--payment-grace", "8", "--redeem-every", "2", "--sandbox", "off",
            "--unsafe-no-sandbox", *provider_args,
        ]  # fmt: skip
        with (tmp_path / "provider.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert proc.poll() is None, (tmp_path / "provider.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            info = json.loads(ready.read_text())
            renter_env = {
                "GPUMARKET_HOME": str(home),
                "GPUMARKET_NETWORK": str(tmp_path / "devnet.json"),
                "GPUMARKET_OFFER": "region=eu,max_price=4000000",
                "GPUMARKET_BUDGET": "10000000",
                "GPUMARKET_WALLET": str(renter_ks),
                "GPUMARKET_WALLET_PASSWORD": PASSWORD,
            }
            yield Market(home, tmp_path / "devnet.json", devnet, proc, info, renter_env)
        finally:
            proc.terminate()
            proc.wait(30)


def leases_json(env: dict[str, str]) -> list[dict[str, Any]]:
    """`gpumarket leases --json` run as the renter of ``env``."""
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_gpumarket.cli", "leases", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def stream_text_until_dead(km: Any, kc: Any, timeout: float = 40) -> str:
    """The kernel's stream output (where provisioner notices land) until it dies."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while km.is_alive() and time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Exception:  # queue.Empty
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
    return "".join(texts)
