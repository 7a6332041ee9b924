"""The Jupyter server gets stuck deposits back by itself: a real anvil, a real server process.

Each test leaves channels open on a devnet as a vanished provider would (the renter's ledger
says the lease is over, nobody settles), starts `jupyter server` with the renter's wallet in
its environment and watches the chain, the ledger and GET /gpumarket/leases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyterproc import JupyterServer, start_jupyter
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow

CLOSE_DELAY = 5  # seconds: the server waits this out for real before it withdraws
PASSWORD = "correct horse"
DEPOSIT = 5_000_000
PRICE = 3_600_000


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from jupyter_gpumarket.chain.devnet import start_devnet

    path = tmp_path_factory.mktemp("devnet") / "devnet.json"
    with start_devnet(profile_path=path, close_delay=CLOSE_DELAY) as net:
        yield net


@dataclass
class Renter:
    """A renter's home (ledger), wallet and chain handle, for one test."""

    home: Path
    wallet: Path
    network: str  # what the ledger records: the profile's path
    account: Any
    provider: Any
    chain: Any

    def env(self, *, password: bool = True) -> dict[str, str]:
        env = {"GPUMARKET_HOME": str(self.home), "GPUMARKET_WALLET": str(self.wallet)}
        return {**env, "GPUMARKET_WALLET_PASSWORD": PASSWORD} if password else env

    def balance(self) -> int:
        return int(self.chain.c.token.functions.balanceOf(self.account.address).call())

    def stuck_lease(self, *, state: str = "stopped", paid: int = 0, **kw: Any) -> Any:
        """A channel the provider redeemed ``paid`` of and then abandoned, in the ledger."""
        from jupyter_gpumarket.chain.renter_ledger import RenterLedger
        from jupyter_gpumarket.core.renter_lease_state import RenterEvent

        opened = self.chain.open(
            self.account, provider=self.provider.address, price_per_hour=PRICE, deposit=DEPOSIT
        )
        if paid:
            sig = self.chain.sign_voucher(opened.session_key, opened.channel_id, paid)
            self.chain.redeem_highest(self.provider, opened.channel_id, (paid, sig))
        record = RenterLedger().create(
            provider=self.provider.address,
            channel_id=opened.channel_id,
            network=self.network,
            renter=self.account.address,
            price_per_hour=PRICE,
            deposit=DEPOSIT,
            provider_url="wss://127.0.0.1:1",
            txs=[t.to_json() for t in opened.txs],
            **kw,
        )
        if state == "stopped":  # over for a while: past the settle grace
            record = RenterLedger().transition(
                record, RenterEvent.LEASE_ENDED, at=time.time() - 3600, spent=paid
            )
        return record

    def channel_state(self, record: Any) -> str:
        return str(self.chain.channel(record.channel_bytes).state)

    def end_challenge(self) -> None:
        """Move the chain past close_at: an idle anvil mines no blocks, and the escrow checks
        withdraw against the latest block's time."""
        w3 = self.chain.w3
        w3.provider.make_request("evm_increaseTime", [CLOSE_DELAY])
        w3.provider.make_request("evm_mine", [])


def make_renter(
    tmp_path: Path,
    devnet: Any,
    monkeypatch: pytest.MonkeyPatch,
    index: int,
    rpc_url: str | None = None,
) -> Renter:
    import json

    from jupyter_gpumarket.chain import keystore
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.leases import LeaseChain

    home = tmp_path / "home"
    monkeypatch.setenv("GPUMARKET_HOME", str(home))
    monkeypatch.delenv("GPUMARKET_WALLET_PASSWORD", raising=False)
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    wallet = tmp_path / "renter.json"
    keystore.create_keystore(PASSWORD, private_key=dev_account(index).key, path=wallet)
    network = devnet.profile_path
    if rpc_url is not None:  # the server reaches the chain through this URL (a fault proxy)
        data = json.loads(network.read_text())
        network = tmp_path / "proxied-devnet.json"
        network.write_text(json.dumps({**data, "rpc_url": rpc_url}))
    p = devnet.profile
    chain = LeaseChain(Contracts.at(connect(p.rpc_url), *p.require_contracts()))
    return Renter(home, wallet, str(network), dev_account(index), dev_account(1), chain)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def leases(server: JupyterServer) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in server.request("GET", "/gpumarket/leases")["leases"]}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def kernel_of_another_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lease: Any) -> None:
    """Records as a live Jupyter server (this process) leaves them for a paid kernel it
    re-adopted: the kernel record, and the lease state naming the channel it pays from."""
    from jupyter_gpumarket.provisioning import paid_state, records

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # the server's too
    records.save(
        records.KernelRecord(
            kernel_id="k-readopted",
            kernel_name="gpumarket",
            provider_url=lease.provider_url,
            tls_fingerprint="sha256:" + "00" * 32,
            token="",
            lease="L1",
            key="k",
            cwd=None,
            connection_file=None,
            server_pid=os.getpid(),
            created=time.time(),
        )
    )
    paid_state.save(
        paid_state.PaidState(
            kernel_id="k-readopted",
            network=lease.network,
            offer={},
            channel_id=lease.channel_id,
            chain_id=31337,
            escrow="0x" + "00" * 20,
            deposit=lease.deposit,
            budget=lease.deposit,
            auto_top_up=False,
            record_id=lease.id,
            renter=lease.renter,
            session_key={},
        )
    )


def test_the_server_withdraws_stuck_deposits_without_the_cli(
    tmp_path: Path, devnet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger

    renter = make_renter(tmp_path, devnet, monkeypatch, index=5)
    stopped = renter.stuck_lease(paid=777)  # the provider redeemed once, then vanished
    crashed = renter.stuck_lease(state="open", owner_pid=dead_pid())  # its server crashed
    running = renter.stuck_lease(state="open")  # this process "runs" its kernel: hands off
    readopted = renter.stuck_lease(state="open", owner_pid=dead_pid())  # another server's now
    kernel_of_another_server(tmp_path, monkeypatch, readopted)
    before = renter.balance()
    server = start_jupyter(tmp_path, renter.env())
    try:
        closing = wait_for(
            "the close request",
            lambda: (r := leases(server)[stopped.id])["state"] == "closing" and r,
        )
        assert closing["close_at"] > 0
        assert closing["expected_refund"] == DEPOSIT - 777
        assert (closing["token_symbol"], closing["token_decimals"]) == ("TUSD", 6)
        assert closing["recovery"]["status"] in ("closing", "due")
        wait_for("both close requests", lambda: f"lease {crashed.id}: close req" in server.log())
        renter.end_challenge()
        done = wait_for(
            "both withdrawals",
            lambda: (
                all(leases(server)[r.id]["state"] == "withdrawn" for r in (stopped, crashed))
                and leases(server)
            ),
        )
        log = server.log()
    finally:
        assert server.stop() == 0
    assert renter.channel_state(stopped).startswith("closed")
    assert renter.channel_state(crashed).startswith("closed")
    rec = RenterLedger().get(stopped.id)
    assert (rec.state, rec.spent, rec.refunded) == ("withdrawn", 777, DEPOSIT - 777)
    assert [t["kind"] for t in rec.txs][-2:] == ["close", "withdraw"]
    assert done[stopped.id]["recovery"]["status"] == "final"
    assert done[stopped.id]["recovery"]["command"] is None
    # leases whose kernel may run (owner alive, or re-adopted elsewhere) are never touched,
    # and a kernel of another lease on the same provider does not hold up `crashed`
    for lease in (running, readopted):
        assert renter.channel_state(lease) == "open"
        assert RenterLedger().get(lease.id).state == "open"
        assert done[lease.id]["recovery"]["status"] == "in_use"
        assert lease.id not in log
    assert renter.balance() - before == (DEPOSIT - 777) + DEPOSIT  # everything unspent is back
    assert f"lease {stopped.id} withdrawn: 4.999223 TUSD back" in log
    assert "k-readopted belongs to running server" in log


@pytest.mark.parametrize("why", ["no_password", "off"])
def test_without_auto_recovery_nothing_is_sent_and_the_log_says_what_to_run(
    tmp_path: Path, devnet: Any, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger

    renter = make_renter(tmp_path, devnet, monkeypatch, index=6)
    stuck = renter.stuck_lease()
    if why == "no_password":
        server = start_jupyter(tmp_path, renter.env(password=False))
        expected = f"run `gpumarket leases close {stuck.id}`"
    else:
        server = start_jupyter(tmp_path, renter.env(), "--GpuMarketExtension.auto_recover=False")
        expected = "automatic deposit recovery is off"
    try:
        wait_for("the log line", lambda: expected in server.log(), timeout=30)
        wait_for("the command", lambda: f"`gpumarket leases close {stuck.id}`" in server.log())
        report = server.request("GET", "/gpumarket/leases")
        assert server.request("GET", "/gpumarket/health")["kernels"] == 0
    finally:
        assert server.stop() == 0
    assert report["mode"] == why
    (lease,) = report["leases"]
    assert lease["recovery"]["status"] == "manual"
    assert lease["recovery"]["command"] == f"gpumarket leases close {stuck.id}"
    assert renter.channel_state(stuck) == "open"
    record = RenterLedger().get(stuck.id)
    assert record.state == "stopped"
    assert not {"close", "withdraw"} & {t["kind"] for t in record.txs}


def test_an_rpc_down_at_start_is_retried_and_the_server_stays_healthy(
    tmp_path: Path, devnet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rpc_port = int(devnet.profile.rpc_url.rsplit(":", 1)[1].strip("/"))
    with ThreadedProxy("127.0.0.1", rpc_port) as proxy:
        proxy.refuse()
        renter = make_renter(
            tmp_path, devnet, monkeypatch, index=7, rpc_url=f"http://127.0.0.1:{proxy.port}"
        )
        stuck = renter.stuck_lease()
        before = renter.balance()
        server = start_jupyter(tmp_path, renter.env())
        try:
            wait_for("a failed try", lambda: f"recovery of lease {stuck.id} failed" in server.log())
            assert server.request("GET", "/gpumarket/health")["kernels"] == 0
            recovery = leases(server)[stuck.id]["recovery"]
            assert recovery["status"] == "retrying"
            assert "does not answer" in recovery["error"]
            assert recovery["next_at"] > time.time()
            assert renter.channel_state(stuck) == "open"
            proxy.restore()
            wait_for("the close request", lambda: leases(server)[stuck.id]["state"] == "closing")
            renter.end_challenge()
            wait_for("the withdrawal", lambda: leases(server)[stuck.id]["state"] == "withdrawn")
            log = server.log()
        finally:
            assert server.stop() == 0
    assert renter.balance() - before == DEPOSIT
    assert "Traceback" not in log
    assert log.count(f"recovery of lease {stuck.id} failed") <= 2  # backoff, no spinning
