"""The notebook's directory travels to the remote working dir, and results come back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager
from traitlets.config import Config

from jupyter_gpumarket.exceptions import SyncTooLarge

from agentproc import AgentProcess, environ

pytestmark = pytest.mark.slow


def _notebook_dir(root: Path) -> Path:
    root.mkdir()
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "sub").mkdir()
    (root / "sub" / "weights.bin").write_bytes(os.urandom(300_000))
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".gpumarketignore").write_text("secret.txt\n")
    (root / "secret.txt").write_text("not for the provider")
    (root / "notes.txt").write_text("original")
    return root


def _start(agent: AgentProcess, cwd: Path, config: Config | None = None) -> KernelManager:
    km = KernelManager(kernel_name="gpumarket", config=config or Config())
    with environ(agent.env()):
        km.start_kernel(cwd=str(cwd))
    return km


def _run(km: KernelManager, code: str) -> str:
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive(
            code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", ""))
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)
    finally:
        kc.stop_channels()


def test_sync_at_launch_and_pull_at_shutdown(tmp_path: Path, agent: AgentProcess) -> None:
    nb = _notebook_dir(tmp_path / "nb")
    km = _start(agent, nb)
    try:
        assert km.provisioner.last_push.sent_bytes > 300_000
        out = _run(
            km,
            "import os, hashlib\n"
            "files = (os.path.join(d, f)[2:] for d, _, fs in os.walk('.') for f in fs)\n"
            "print(sorted(f for f in files if not f.startswith('.gpumarket/')))\n"
            "print(open('data.csv').read().splitlines()[1])\n"
            "open('result.txt', 'w').write('computed remotely')\n"
            "open('notes.txt', 'w').write('changed remotely')\n",
        )
        listing, row = out.strip().splitlines()
        assert listing == "['.gpumarketignore', 'data.csv', 'notes.txt', 'sub/weights.bin']"
        assert row == "1,2"
        time.sleep(0.05)
        (nb / "notes.txt").write_text("edited locally meanwhile")
    finally:
        km.shutdown_kernel()
    assert (nb / "result.txt").read_text() == "computed remotely"
    assert (nb / "notes.txt").read_text() == "edited locally meanwhile"  # never overwritten
    (remote_copy,) = nb.glob("notes.remote-*.txt")
    assert remote_copy.read_text() == "changed remotely"


def test_second_launch_of_an_unchanged_dir_sends_no_bytes(
    tmp_path: Path, agent: AgentProcess
) -> None:
    nb = _notebook_dir(tmp_path / "nb")
    for expect_sent in (True, False):
        km = _start(agent, nb, Config({"GpuMarketProvisioner": {"pull_on_shutdown": False}}))
        try:
            push = km.provisioner.last_push
            assert (push.sent_bytes > 0) is expect_sent
            if not expect_sent:
                assert push.reused_bytes == push.manifest.total_bytes
        finally:
            km.shutdown_kernel(now=True)


def test_over_the_cap_fails_with_the_biggest_files_named(
    tmp_path: Path, agent: AgentProcess
) -> None:
    nb = _notebook_dir(tmp_path / "nb")
    leases = set(os.listdir(agent.state_dir / "leases"))
    config = Config({"GpuMarketProvisioner": {"sync_cap_bytes": 100_000}})
    km = KernelManager(kernel_name="gpumarket", config=config)
    with environ(agent.env()), pytest.raises(SyncTooLarge, match=r"weights\.bin") as info:
        km.start_kernel(cwd=str(nb))
    assert ".gpumarketignore" in str(info.value)
    assert not km.has_kernel
    deadline = time.monotonic() + 10
    # Earlier tests' leases may still be ending: only a lease of this launch must not remain.
    while set(os.listdir(agent.state_dir / "leases")) - leases and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(os.listdir(agent.state_dir / "leases")) - leases  # nothing left running
