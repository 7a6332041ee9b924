"""The demo's market: four local paid providers with different prices, regions and GPUs.

Three CLAIM GPUs they do not have (``provider serve --simulate-gpu``: their offers, probes and the
picker say *simulated*, and the verification challenge catches them); one is this machine as it
is (CPU only, or its real GPUs). Each is a `gpumarket provider serve` with its own devnet account,
wallet and state dir; they start at once and the demo waits for all their ready files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli.demo_procs import Child, Children
from jupyter_gpumarket.exceptions import AgentError

__all__ = ["DEMO_PASSWORD", "DEMO_PROVIDERS", "RENTER_ACCOUNT", "DemoProvider", "start_fleet"]

# The demo's wallets are devnet dev accounts, whose keys are PUBLIC test keys: they hold devnet
# tokens only, and this password only keeps their keystores in the usual format.
DEMO_PASSWORD = "gpumarket-demo"
RENTER_ACCOUNT = 2  # dev account 0 deployed the contracts


@dataclass(frozen=True)
class DemoProvider:
    name: str
    account: int  # devnet dev account
    region: str
    simulate: str | None  # --simulate-gpu, None = this machine as it is
    price_per_hour: int | None  # base units; None = the demo's --price-per-hour

    @property
    def label(self) -> str:
        return f"{self.simulate} (SIMULATED)" if self.simulate else "this machine"


# prices in TUSD base units (6 decimals) per hour, in line with 2026 market prices
DEMO_PROVIDERS = (
    DemoProvider("local", 1, "local", None, None),  # the provider whose offer the demo pre-selects
    DemoProvider("h100-eu", 3, "eu-west", "H100 SXM", 2_490_000),
    DemoProvider("a100-us", 4, "us-east", "A100 SXM 80GB", 1_290_000),
    DemoProvider("rtx4090-ap", 5, "ap-south", "RTX 4090", 390_000),
)


@dataclass
class RunningProvider:
    spec: DemoProvider
    child: Child
    ready_file: Path
    price_per_hour: int
    ready: dict[str, Any] | None = None


def _paths(home: Path, spec: DemoProvider) -> tuple[Path, Path, Path, Path]:
    """(wallet, ready file, log, state dir); the "local" one keeps the demo's historic names."""
    if spec.name == "local":
        return (
            home / "provider-wallet.json",
            home / "provider-ready.json",
            home / "provider.log",
            home / "provider",
        )
    base = home / "providers" / spec.name
    return base / "wallet.json", base / "ready.json", base / "provider.log", base / "state"


# The demo's keys are public dev keys: scrypt's default work factor (seconds of CPU per wallet,
# once to write and once per unlock, in every provider and every kernel start) protects nothing.
DEMO_SCRYPT_N = 2**12


def ensure_wallet(path: Path, account: int) -> Path:
    """A keystore of dev account ``account`` at ``path`` (kept when it is already one)."""
    from jupyter_gpumarket.chain import keystore
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    if path.exists() and _scrypt_n(path) > DEMO_SCRYPT_N:
        path.unlink()  # an older demo's slow keystore of the same public key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        default, keystore.SCRYPT_N = keystore.SCRYPT_N, DEMO_SCRYPT_N
        try:
            keystore.create_keystore(DEMO_PASSWORD, private_key=dev_account(account).key, path=path)
        finally:
            keystore.SCRYPT_N = default
    return path


def _scrypt_n(path: Path) -> int:
    try:
        n = json.loads(path.read_text())["crypto"]["kdfparams"]["n"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return n if isinstance(n, int) else 0


def start_fleet(
    children: Children, home: Path, profile: Path, price: int, isolation: list[str]
) -> list[RunningProvider]:
    """Start every demo provider (not waiting): `wait_fleet` waits for their offers."""
    running = []
    for spec in DEMO_PROVIDERS:
        wallet, ready, log, state = _paths(home, spec)
        ensure_wallet(wallet, spec.account)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        ready.unlink(missing_ok=True)  # ours: the demo lock is held
        spec_price = spec.price_per_hour or price
        cmd = [
            sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
            "--network", str(profile), "--wallet", str(wallet),
            "--price-per-hour", str(spec_price), "--region", spec.region,
            "--state-dir", str(state), "--ready-file", str(ready),
            *(["--simulate-gpu", spec.simulate] if spec.simulate else []),
            *isolation,
        ]  # fmt: skip
        env = {
            **os.environ,
            "GPUMARKET_HOME": str(home),
            "GPUMARKET_WALLET_PASSWORD": DEMO_PASSWORD,
        }
        child = children.start(f"provider-{spec.name}", cmd, env=env, log=log)
        running.append(RunningProvider(spec, child, ready, spec_price))
    return running


def wait_fleet(running: list[RunningProvider], timeout: float = 120.0) -> None:
    """Until every provider has published its offer (its ready file names ``offer_id``)."""
    deadline = time.monotonic() + timeout
    for rp in running:
        while rp.ready is None:
            info = _read_ready(rp.ready_file)
            if info is not None and "offer_id" in info:
                rp.ready = info
                break
            if rp.child.proc.poll() is not None or time.monotonic() > deadline:
                raise AgentError(
                    f"the demo provider {rp.spec.name} did not start; see {rp.child.log}"
                )
            time.sleep(0.1)


def _read_ready(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
