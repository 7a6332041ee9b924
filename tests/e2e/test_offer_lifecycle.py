"""A paid provider's offer across restarts, `provider stop` and `--unpublish`, on a devnet.

The agent remembers its offer in ``<state_dir>/offer.json``: a restart with the same terms
sends nothing, other terms update the same offer, a normal stop deactivates it and the next
start reactivates it (one ``update``), never a new offer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from agentproc import environ

pytestmark = pytest.mark.slow

PASSWORD = "correct horse"
_starts = count()


@dataclass
class Chain:
    devnet: Any
    profile: Path
    wallet: Path
    env: dict[str, str]
    tmp: Path

    def contracts(self) -> Any:
        from jupyter_gpumarket.chain.client import Contracts, connect

        p = self.devnet.profile
        return Contracts.at(connect(p.rpc_url), *p.require_contracts())

    def offer(self, offer_id: int) -> Any:
        from jupyter_gpumarket.core.offer_terms import OfferOnChain

        raw = self.contracts().registry.functions.offers(offer_id).call()
        return OfferOnChain.from_registry(raw)

    def offer_count(self) -> int:
        return int(self.contracts().registry.functions.offer_count().call())

    def nonce(self) -> int:
        """Transactions the provider's wallet has sent so far."""
        from jupyter_gpumarket.chain.dev_accounts import dev_account

        return int(self.contracts().w3.eth.get_transaction_count(dev_account(1).address))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jupyter_gpumarket.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )

    def unpublish(self, state: Path) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "provider", "serve", "--unpublish", "--network", str(self.profile),
            "--wallet", str(self.wallet), "--state-dir", str(state),
        )  # fmt: skip


@dataclass
class Provider:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path

    @property
    def offer_id(self) -> int:
        return int(self.ready["offer_id"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore

    tmp = tmp_path_factory.mktemp("offers")
    home = tmp / "home"
    with (
        environ({"GPUMARKET_HOME": str(home)}),
        start_devnet(profile_path=tmp / "devnet.json") as devnet,
    ):
        wallet = tmp / "provider.json"
        create_keystore(PASSWORD, private_key=dev_account(1).key, path=wallet)
        env = {**os.environ, "GPUMARKET_HOME": str(home), "GPUMARKET_WALLET_PASSWORD": PASSWORD}
        yield Chain(devnet, tmp / "devnet.json", wallet, env, tmp)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(chain: Chain, state: Path, port: int, price: int = 1000) -> Provider:
    n = next(_starts)
    ready, log_path = chain.tmp / f"ready-{n}.json", chain.tmp / f"provider-{n}.log"
    cmd = [
        sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve",
        "--network", str(chain.profile), "--wallet", str(chain.wallet),
        "--price-per-hour", str(price), "--region", "eu", "--state-dir", str(state),
        "--ready-file", str(ready), "--port", str(port), "--sandbox", "off",
        "--unsafe-no-sandbox",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=chain.env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"provider did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return Provider(proc, json.loads(ready.read_text()), log_path)


def test_a_restart_with_the_same_terms_sends_nothing(chain: Chain, tmp_path: Path) -> None:
    state, port = tmp_path / "state", _free_port()
    first = serve(chain, state, port)
    assert first.ready["offer_action"] == "register"
    remembered = json.loads((state / "offer.json").read_text())
    assert remembered["offer_id"] == first.offer_id
    assert remembered["terms"]["price_per_hour"] == 1000
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # a crash: the offer stays active
    assert chain.offer(first.offer_id).active
    offers, nonce = chain.offer_count(), chain.nonce()

    second = serve(chain, state, port)
    try:
        assert second.offer_id == first.offer_id
        assert second.ready["offer_action"] == "keep"
        assert f"offer {first.offer_id} unchanged" in second.log()
        assert chain.nonce() == nonce  # no transaction at all
        assert chain.offer_count() == offers
    finally:
        assert second.stop() == 0
    assert not chain.offer(first.offer_id).active  # a normal stop deactivates
    nonce = chain.nonce()

    third = serve(chain, state, port)  # same terms, inactive: one update reactivates it
    try:
        assert third.offer_id == first.offer_id
        assert third.ready["offer_action"] == "update"
        assert f"reactivated offer {first.offer_id}" in third.log()
        assert chain.nonce() == nonce + 1
        assert chain.offer_count() == offers
        assert chain.offer(first.offer_id).active
    finally:
        assert third.stop() == 0


def test_a_restart_with_another_price_updates_the_same_offer(chain: Chain, tmp_path: Path) -> None:
    state, port = tmp_path / "state", _free_port()
    first = serve(chain, state, port, price=1000)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    offers, nonce = chain.offer_count(), chain.nonce()

    second = serve(chain, state, port, price=2000)
    try:
        assert second.offer_id == first.offer_id
        assert second.ready["offer_action"] == "update"
        assert f"updated offer {first.offer_id}: price 1000 -> 2000" in second.log()
        offer = chain.offer(first.offer_id)
        assert offer.terms.price_per_hour == 2000
        assert offer.active
        assert chain.offer_count() == offers
        assert chain.nonce() == nonce + 1
        assert json.loads((state / "offer.json").read_text())["terms"]["price_per_hour"] == 2000
    finally:
        assert second.stop() == 0

    # Another port is another endpoint: updated too (after the normal stop, so reactivated).
    third = serve(chain, state, _free_port(), price=2000)
    try:
        assert third.offer_id == first.offer_id
        assert f"reactivated offer {first.offer_id}: endpoint wss://127.0.0.1:{port}" in (
            third.log()
        )
        assert chain.offer(first.offer_id).terms.endpoint == third.ready["url"]
    finally:
        assert third.stop() == 0


def test_provider_stop_ends_the_agent_and_its_offer(chain: Chain, tmp_path: Path) -> None:
    state = tmp_path / "state"
    provider = serve(chain, state, _free_port())
    assert (state / "agent.pid").read_text().strip() == str(provider.proc.pid)
    assert chain.offer(provider.offer_id).active

    out = chain.cli("provider", "stop", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert f"provider agent (pid {provider.proc.pid}) stopped" in out.stdout
    assert provider.proc.poll() == 0  # it had exited when `stop` returned
    assert not (state / "agent.pid").exists()
    assert not chain.offer(provider.offer_id).active

    again = chain.cli("provider", "stop", "--state-dir", str(state))
    assert again.returncode == 1
    assert "no provider agent is running from" in again.stderr


def test_unpublish_deactivates_the_remembered_offer(chain: Chain, tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = chain.unpublish(state)
    assert out.returncode == 0, out.stderr
    assert "no offer remembered" in out.stdout

    provider = serve(chain, state, _free_port())
    try:
        out = chain.unpublish(state)  # while it serves: renters stop seeing it, leases go on
        assert out.returncode == 0, out.stderr
        assert f"offer {provider.offer_id} deactivated" in out.stdout
        assert f"the agent (pid {provider.proc.pid}) still serves" in out.stdout
        assert not chain.offer(provider.offer_id).active
    finally:
        assert provider.stop() == 0
    assert f"offer {provider.offer_id} is already inactive" in provider.log()
    assert "could not deactivate" not in provider.log()  # no reverted deactivate at stop

    nonce = chain.nonce()
    out = chain.unpublish(state)
    assert out.returncode == 0, out.stderr
    assert f"offer {provider.offer_id} is already inactive: nothing to do" in out.stdout
    assert chain.nonce() == nonce


def test_unpublish_after_a_crash(chain: Chain, tmp_path: Path) -> None:
    state = tmp_path / "state"
    provider = serve(chain, state, _free_port())
    assert provider.stop(signal.SIGKILL) == -signal.SIGKILL
    assert chain.offer(provider.offer_id).active  # a crashed agent leaves its offer up

    stop = chain.cli("provider", "stop", "--state-dir", str(state))
    assert stop.returncode == 1
    assert "removed the stale" in stop.stderr
    assert "--unpublish" in stop.stderr  # says how to take the offer down
    assert not (state / "agent.pid").exists()

    out = chain.unpublish(state)
    assert out.returncode == 0, out.stderr
    assert f"offer {provider.offer_id} deactivated" in out.stdout
    assert "still serves" not in out.stdout
    assert not chain.offer(provider.offer_id).active
