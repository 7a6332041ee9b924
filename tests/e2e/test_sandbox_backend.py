"""The sandboxed kernel backend beyond the attacks: egress full and the agent's port, the
unsandboxed label and the refusal to publish without a sandbox, no orphans after the agent is
SIGKILLed, and the kernel conformance suite inside the sandbox."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import test_conformance as conformance
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ, running_agent, start_agent
from sandboxkit import (
    attempt,
    descendants,
    ensure_sandbox,
    host_pids_of,
    run_code,
    skip_unless_root,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ensure_sandbox()
    args = ("--sandbox", "on", "--egress", "none", "--max-kernels", "2", "--kernel-pids", "64")
    with running_agent(tmp_path_factory.mktemp("backend"), *args) as agent, environ(agent.env()):
        yield agent


def test_egress_full_reaches_the_network_but_not_the_agent(tmp_path: Path) -> None:
    ensure_sandbox()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("the agent's port guard needs root and nftables")
    listener = socket.create_server(("127.0.0.1", 0))  # some other local service
    other = listener.getsockname()[1]
    with running_agent(tmp_path, "--sandbox", "on", "--max-kernels", "2") as agent:
        port = urlparse(agent.url).port
        with environ(agent.env()):
            km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
        try:
            connect = "__import__('socket').create_connection(('127.0.0.1', {}), 3)"
            res = run_code(kc, attempt(connect.format(other)))
            assert res.startswith("OK"), res  # egress full: the host's network
            res = run_code(kc, attempt(connect.format(port)))
            assert res.startswith("ConnectionRefusedError"), res
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            listener.close()
    assert "cannot connect to the agent's port" in agent.log()
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"gpumarket_agent_{port}" not in listed  # removed when the agent stopped


def test_unsandboxed_agent_says_so_and_refuses_to_publish(tmp_path: Path) -> None:
    with running_agent(tmp_path / "dev", "--sandbox", "off") as agent, environ(agent.env()):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
        try:
            info = km.provisioner._link.agent_info
            assert info["isolation"] == "unsandboxed"
            assert "--sandbox off" in info["isolation_detail"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    cli = [sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve", "--sandbox", "off"]
    cli += ["--state-dir", str(tmp_path / "pub")]
    res = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "refusing to publish an offer without a kernel sandbox" in res.stderr
    res = subprocess.run([*cli, "--unsafe-no-sandbox"], capture_output=True, text=True, timeout=60)
    assert "refusing to publish" not in res.stderr  # past the sandbox check (then needs a chain)


def test_sandboxed_kernels_die_with_a_killed_agent(tmp_path: Path) -> None:
    """A grandchild that left the kernel's process group still dies: the PID namespace goes."""
    ensure_sandbox()
    agent = start_agent(tmp_path, "--sandbox", "on", "--max-kernels", "2")
    try:  # the agent goes whatever happens: a kernel that fails to start must not leak it
        with environ(agent.env()):
            km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
            try:
                code = "import os, subprocess; subprocess.Popen(['setsid', 'sleep', '300']); "
                uid = run_code(kc, code + "print(os.getuid())")
            finally:
                kc.stop_channels()
        # the kernel, its setsid'ed sleep and bwrap's init, by host pid (others may share uids)
        pids = descendants(agent.proc.pid)
        in_slot = len([p for p in pids if p in host_pids_of(uid)])
    finally:
        agent.stop(signal.SIGKILL)
    km.cleanup_resources()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []
    skip_unless_root(
        "only a root agent runs kernels as slot users whose host pids can be told apart"
    )
    assert in_slot >= 2


# -- the sandboxed kernel is still a complete Jupyter kernel -----------------------------------
@pytest.fixture(scope="class")
def _remote_kernel(request: pytest.FixtureRequest, sandboxed: AgentProcess) -> Iterator[None]:
    """The conformance class's kernel, from the sandboxed agent (same name as its fixture)."""
    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    request.cls.km, request.cls.kc = km, kc
    yield
    kc.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()


class TestSandboxedConformance(conformance.TestGpuMarketKernel):
    """jupyter_kernel_test's suite against a sandboxed kernel (egress none, limits on)."""
