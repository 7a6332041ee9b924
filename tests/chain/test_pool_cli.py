"""`gpumarket pool create | fund | show | grant` on a devnet, through the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from jupyter_gpumarket.core.grant_code import GrantCode

PASSWORD = "pool admin"


def _cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_gpumarket.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert (out.returncode == 0) == ok, out.stderr
    return out


@pytest.mark.slow
def test_a_course_admin_makes_a_pool_and_a_grant_code(tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.devnet import start_devnet
    from jupyter_gpumarket.chain.keystore import create_keystore

    with start_devnet(profile_path=tmp_path / "devnet.json") as devnet:
        admin = dev_account(3)
        create_keystore(PASSWORD, private_key=admin.key, path=tmp_path / "admin.json")
        env = {
            "GPUMARKET_HOME": str(tmp_path / "home"),
            "GPUMARKET_WALLET": str(tmp_path / "admin.json"),
            "GPUMARKET_WALLET_PASSWORD": PASSWORD,
        }
        net = ("--network", str(tmp_path / "devnet.json"))
        created = _cli(env, "pool", "create", "50", *net).stdout
        pool_id = created.split()[1].rstrip(":")
        assert "50.00 TUSD" in created
        shown = _cli(env, "pool", "fund", pool_id, "2.5", *net).stdout
        assert "52.50 TUSD" in shown
        student = Account.create().address
        out = _cli(env, "pool", "grant", pool_id, student, "--cap", "5", "--days", "7", *net)
        code = GrantCode.decode(out.stdout.strip().splitlines()[-1])
        assert (code.student, code.cap, code.pool_id) == (student, 5_000_000, pool_id)
        assert code.chain_id == devnet.profile.chain_id
        assert code.any_provider
        # someone else's wallet cannot sign this pool's grants; bad input is named
        create_keystore(PASSWORD, private_key=dev_account(4).key, path=tmp_path / "other.json")
        other = {**env, "GPUMARKET_WALLET": str(tmp_path / "other.json")}
        err = _cli(other, "pool", "grant", pool_id, student, "--cap", "5", *net, ok=False)
        assert "only the pool's admin" in err.stderr
        err = _cli(env, "pool", "grant", "0x12", student, "--cap", "5", *net, ok=False)
        assert "not a pool id" in err.stderr
