"""`gpumarket demo`'s set-up decisions: the sandbox whenever the machine can, and the env file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from jupyter_gpumarket.cli.demo import isolation_flags, write_env_file


def test_the_demo_sandboxes_kernels_when_bubblewrap_works() -> None:
    flags, why = isolation_flags(probe_ok=True, probe_reason="", is_root=False, slots=0, nft=False)
    assert flags == ["--sandbox", "on", "--egress", "none"]  # no nft guard: own network
    assert "--unsafe-no-sandbox" not in flags
    assert "sandbox" in why
    flags, _ = isolation_flags(probe_ok=True, probe_reason="", is_root=True, slots=2, nft=True)
    assert flags == ["--sandbox", "on", "--egress", "full", "--max-kernels", "2"]


def test_the_demo_says_why_it_runs_unsandboxed() -> None:
    flags, why = isolation_flags(
        probe_ok=False, probe_reason="bubblewrap is not installed", is_root=False, slots=0, nft=True
    )
    assert "--unsafe-no-sandbox" in flags
    assert "UNSANDBOXED" in why
    assert "bubblewrap is not installed" in why
    flags, why = isolation_flags(probe_ok=True, probe_reason="", is_root=True, slots=0, nft=True)
    assert "--unsafe-no-sandbox" in flags
    assert "gpumarket provider setup" in why


def test_the_env_file_sets_the_demo_wallet_for_other_terminals(tmp_path: Path) -> None:
    env = {"GPUMARKET_HOME": str(tmp_path / "a b"), "GPUMARKET_WALLET_PASSWORD": "it's"}
    path = write_env_file(tmp_path, env)
    assert path.stat().st_mode & 0o777 == 0o600
    out = subprocess.run(
        ["bash", "-c", f"source {path} && printf '%s|%s' \"$GPUMARKET_HOME\" "
         "\"$GPUMARKET_WALLET_PASSWORD\""],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    ).stdout  # fmt: skip
    assert out == f"{tmp_path / 'a b'}|it's"


def test_the_lab_token_is_the_callers_or_a_fresh_one() -> None:
    from jupyter_gpumarket.cli.demo import _lab_token

    assert _lab_token(["--IdentityProvider.token=abc", "--x=1"]) == ("abc", [])
    assert _lab_token(["--ServerApp.token=t"]) == ("t", [])
    token, args = _lab_token(["--x=1"])
    assert len(token) >= 32
    assert args == [f"--IdentityProvider.token={token}"]
    assert _lab_token([])[0] != token
