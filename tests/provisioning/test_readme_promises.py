"""What the README promises about the renter side that no other test checked: `gpumarket
kernels list/forget`, `gpumarket provider info`, provisioner traits vs the environment,
``env_allow``, and no re-adoption of a paid kernel without the wallet password."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from jupyter_client.manager import KernelManager
from traitlets.config import Config

from jupyter_gpumarket.cli import main
from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.provisioning import paid_state, records

from agentproc import AgentProcess, environ


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    with environ({"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}):
        yield tmp_path / "runtime"


def _record(kernel_id: str, url: str = "wss://127.0.0.1:1") -> records.KernelRecord:
    return records.KernelRecord(
        kernel_id=kernel_id,
        kernel_name="gpumarket",
        provider_url=url,
        tls_fingerprint="sha256:" + "ab" * 32,
        token="dev-token-secret",
        lease="lease-1",
        key="hmac-key-secret",
        cwd=None,
        connection_file=None,
        server_pid=999_999_999,
        created=time.time(),
    )


def test_kernels_list_hides_secrets_and_forget_drops_the_record(
    runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records.save(_record("k-1"))
    assert main(["kernels", "list", "--json"]) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out)
    assert row["kernel_id"] == "k-1"
    assert "dev-token-secret" not in out
    assert "hmac-key-secret" not in out
    assert main(["kernels", "forget", "k-1"]) == 0
    assert capsys.readouterr().out.strip() == "forgotten"
    assert records.load("k-1") is None
    assert main(["kernels", "forget", "k-1"]) == 0
    assert capsys.readouterr().out.strip() == "no such record"
    assert main(["kernels", "forget", "../k-1"]) == 1  # not a kernel id: nothing outside
    assert "is not a kernel id" in capsys.readouterr().err


def test_provider_info_prints_what_nvml_detects() -> None:
    from jupyter_gpumarket.agent.gpu import detect_gpus, format_inventory

    cli = [sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "info"]
    as_json = subprocess.run([*cli, "--json"], capture_output=True, text=True, check=True)
    here = detect_gpus()
    shown = json.loads(as_json.stdout)
    assert shown["cpu_only"] == here.cpu_only
    assert [g["uuid"] for g in shown["gpus"]] == [g.uuid for g in here.gpus]
    text = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    assert text.strip() == format_inventory(here).strip()
    if here.cpu_only:
        assert text.startswith("CPU only")  # never a made-up GPU


def test_no_readoption_of_a_paid_kernel_without_the_wallet_password(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUMARKET_WALLET_PASSWORD", raising=False)
    records.save(_record("k-paid"))
    key = Account.create()
    paid_state.save(
        paid_state.PaidState(
            kernel_id="k-paid",
            network="devnet",
            offer={"offer_id": 1},
            channel_id="0x" + "11" * 32,
            chain_id=31337,
            escrow="0x" + "22" * 20,
            deposit=1000,
            budget=5000,
            auto_top_up=False,
            record_id="r1",
            renter="0x" + "33" * 20,
            session_key=paid_state.encrypt_session_key(bytes(key.key), "pw"),
            signed=40,
            billed_seconds=12.5,
            billing=True,
            saved_at=time.time(),
        )
    )
    km = KernelManager(kernel_name="gpumarket")
    with pytest.raises(ConfigError, match="GPUMARKET_WALLET_PASSWORD"):
        km.start_kernel(kernel_id="k-paid")  # what a restarted server does to re-adopt
    assert not km.has_kernel
    assert records.load("k-paid") is None  # not re-adopted later either
    assert paid_state.load("k-paid") is None


def _kernel_env(km: KernelManager) -> dict[str, Any]:
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        kc.execute_interactive(
            "import os, json; print(json.dumps({**os.environ, 'cwd': os.getcwd()}))",
            output_hook=lambda m: out.append(m["content"].get("text", "")),
            timeout=60,
        )
        return dict(json.loads("".join(out).strip().splitlines()[-1]))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.slow
def test_env_allow_and_the_environment_winning_over_traits(remote_env: AgentProcess) -> None:
    """``env_allow`` names what of the server's environment reaches the remote kernel; the
    GPUMARKET_* environment wins over the provisioner's traits (a wrong trait URL is ignored)."""
    config = Config()
    config.GpuMarketProvisioner.env_allow = ["LANG", "EXTRA_ALLOWED"]
    config.GpuMarketProvisioner.provider_url = "wss://127.0.0.1:1"  # the env's URL wins
    km = KernelManager(kernel_name="gpumarket", config=config)
    server_env = {
        "LANG": "C.UTF-8",
        "EXTRA_ALLOWED": "yes",
        "TZ": "Pacific/Chatham",  # allowed by default, but not by this env_allow
        "AWS_SECRET_ACCESS_KEY": "server-secret",
        "GPUMARKET_WALLET_PASSWORD": "wallet-secret",
    }
    km.start_kernel(env=server_env)
    seen = _kernel_env(km)
    assert seen.get("EXTRA_ALLOWED") == "yes"
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert "GPUMARKET_WALLET_PASSWORD" not in seen
    assert "server-secret" not in json.dumps(seen)
    assert "wallet-secret" not in json.dumps(seen)
    assert seen.get("TZ") != "Pacific/Chatham"


@pytest.mark.slow
def test_the_traits_apply_when_the_environment_is_silent(
    remote_env: AgentProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = remote_env.env()
    for name in env:
        monkeypatch.delenv(name, raising=False)
    config = Config()
    config.GpuMarketProvisioner.provider_url = env["GPUMARKET_PROVIDER_URL"]
    config.GpuMarketProvisioner.tls_fingerprint = env["GPUMARKET_TLS_FINGERPRINT"]
    config.GpuMarketProvisioner.dev_token = env["GPUMARKET_DEV_TOKEN"]
    km = KernelManager(kernel_name="gpumarket", config=config)
    km.start_kernel()
    cwd = Path(_kernel_env(km)["cwd"])
    assert cwd.is_relative_to(remote_env.state_dir / "leases")  # it ran on the provider
