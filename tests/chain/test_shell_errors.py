"""Lower layers never leak: dead RPC, stale/missing artifacts, import-time weight."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jupyter_gpumarket.chain import artifact_loader
from jupyter_gpumarket.chain.anvil import free_port
from jupyter_gpumarket.chain.client import connect
from jupyter_gpumarket.exceptions import ArtifactStale, RpcUnavailable


def test_dead_rpc_is_rpc_unavailable():
    with pytest.raises(RpcUnavailable, match=r"does not answer.*gpumarket devnet"):
        connect(f"http://127.0.0.1:{free_port()}", timeout=2)


def test_unreadable_artifact_is_artifact_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_loader, "ARTIFACTS_DIR", tmp_path)
    artifact_loader.load_artifact.cache_clear()
    (tmp_path / "Escrow.json").write_text("{broken")
    try:
        with pytest.raises(ArtifactStale, match=r"compile_contracts\.py"):
            artifact_loader.load_artifact("Escrow")
    finally:
        artifact_loader.load_artifact.cache_clear()


def test_cli_import_does_not_load_web3():
    code = (
        "import sys, jupyter_gpumarket, jupyter_gpumarket.cli as c; c.build_parser(); "
        "heavy = ('web3', 'eth_account', 'vyper', 'eth_tester'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
