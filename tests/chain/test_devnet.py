"""`gpumarket devnet` end to end (anvil and embedded), and the fallback to embedded."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chain_helpers import USD, voucher_sig
from eth_account import Account

from jupyter_gpumarket.chain import devnet as devnet_mod
from jupyter_gpumarket.chain.anvil import find_anvil
from jupyter_gpumarket.chain.client import Contracts, connect, send
from jupyter_gpumarket.chain.dev_accounts import dev_account
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.exceptions import ChainError


def _run_devnet(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ, GPUMARKET_HOME=str(tmp_path / "home"))
    anvil = find_anvil()  # the session fixture installed it; do not install again under tmp
    if anvil is not None:
        env["GPUMARKET_ANVIL"] = str(anvil)
    profile = tmp_path / "devnet.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_gpumarket.cli",
            "devnet",
            "--port",
            "0",
            "--close-delay",
            "60",
            "--profile",
            str(profile),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready"):
            return proc, json.loads(profile.read_text())
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"devnet did not get ready: {''.join(lines)}{out}{err}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "devnet stopped" in out


def _lease(profile: dict) -> int:
    """One open + settle on the devnet described by ``profile``; the provider's gain."""
    w3 = connect(profile["rpc_url"])
    addrs = profile["contracts"]
    c = Contracts.at(w3, addrs["token"], addrs["escrow"], addrs["registry"])
    renter, provider, session = dev_account(8), dev_account(9), Account.create()
    assert c.token.functions.balanceOf(renter.address).call() == 10_000 * USD
    send(w3, renter, c.token.functions.approve(c.escrow.address, USD))
    send(
        w3, renter, c.escrow.functions.open(provider.address, c.token.address, USD, session.address)
    )
    cid = eip712.channel_id_for(renter.address, session.address)
    before = c.token.functions.balanceOf(provider.address).call()
    send(w3, provider, c.escrow.functions.settle(cid, 1234, voucher_sig(c, session, cid, 1234)))
    (opened,) = c.escrow.events.ChannelOpened().get_logs(from_block=0)  # eth_getLogs works too
    assert bytes(opened["args"]["channel_id"]) == cid
    return c.token.functions.balanceOf(provider.address).call() - before


@pytest.mark.slow
def test_devnet_cli_with_anvil(tmp_path, anvil):
    proc, profile = _run_devnet(tmp_path)
    try:
        assert profile["chain"] == "anvil"
        assert profile["chain_id"] == 31337
        assert profile["close_delay"] == 60
        assert _lease(profile) == 1234
    finally:
        _stop(proc)


@pytest.mark.slow
def test_devnet_cli_embedded(tmp_path):
    proc, profile = _run_devnet(tmp_path, "--embedded")
    try:
        assert profile["chain"] == "embedded"
        assert profile["chain_id"] == 31337
        assert _lease(profile) == 1234
    finally:
        _stop(proc)


def test_falls_back_to_embedded_when_anvil_is_unavailable(monkeypatch, caplog):
    def no_npm() -> Path:
        raise ChainError("npm is missing")

    monkeypatch.setattr(devnet_mod, "find_anvil", lambda: None)
    monkeypatch.setattr(devnet_mod, "install_anvil", no_npm)
    with caplog.at_level(logging.WARNING):
        chain, kind = devnet_mod.start_chain(0)
    try:
        assert kind == "embedded"
        assert connect(chain.rpc_url).eth.chain_id == 31337
        assert "falling back to the embedded py-evm chain" in caplog.text
    finally:
        chain.stop()
