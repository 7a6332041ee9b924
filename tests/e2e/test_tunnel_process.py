"""A remote kernel's tunnel process (the default; GPUMARKET_TUNNEL_PROCESS=1) leaves no orphan.

It exits when its kernel is shut down, when the link grace expires, and when its Jupyter
server is killed and nothing re-adopts it within the grace; a real agent on loopback, a TCP
fault proxy in between where the link must fail.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager
from traitlets.config import Config

from agentproc import AgentProcess, environ
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie counts as gone
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _start(env: dict[str, str], grace: float = 120.0) -> KernelManager:
    config = Config({"GpuMarketProvisioner": {"link_grace_seconds": grace}})
    km = KernelManager(kernel_name="gpumarket", config=config)
    with environ({**env, "GPUMARKET_TUNNEL_PROCESS": "1"}):
        km.start_kernel()
    return km


def _tunnel_pid(km: KernelManager) -> tuple[int, Path]:
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

    link = km.provisioner._link  # type: ignore[union-attr]
    assert isinstance(link, TunnelClient), "the kernel's link is not a tunnel process"
    return link.pid, link.socket_path


@pytest.fixture
def proxied(agent: AgentProcess) -> Iterator[tuple[ThreadedProxy, dict[str, str]]]:
    proxy = ThreadedProxy("127.0.0.1", int(agent.url.rsplit(":", 1)[1]))
    port = proxy.start()
    yield proxy, {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}
    proxy.stop()


def test_kernel_shutdown_ends_its_tunnel_process(remote_env: AgentProcess) -> None:
    km = _start(remote_env.env())
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        out: list[str] = []
        kc.execute_interactive(
            "print(6 * 7)",
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        assert "".join(out).strip() == "42"
        pid, sock = _tunnel_pid(km)
        assert pid != os.getpid()
        assert _alive(pid)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # only this user drives it
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert not km.is_alive()
    assert _wait_gone(pid, 15)
    assert not sock.exists()


def test_grace_expiry_ends_the_tunnel_process(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    km = _start(env, grace=2.0)
    try:
        pid, _ = _tunnel_pid(km)
        proxy.refuse()
        proxy.reset()
        deadline = time.monotonic() + 20
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not km.is_alive()  # poll() honest: dead once the grace is over
        assert _wait_gone(pid, 15)
    finally:
        proxy.restore()
        km.shutdown_kernel(now=True)


_SERVER = textwrap.dedent(
    """
    import sys, time
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    km = KernelManager(
        kernel_name="gpumarket",
        config=Config({"GpuMarketProvisioner": {"link_grace_seconds": float(sys.argv[1])}}),
    )
    km.start_kernel()
    from jupyter_gpumarket.provisioning import tunnel_spare

    for _ in range(400):  # the spare tunnel process the kernel's start put in its place
        if tunnel_spare._spare is not None:
            break
        time.sleep(0.05)
    spare = tunnel_spare._spare[1].pid if tunnel_spare._spare is not None else 0
    print(km.provisioner._link.pid, spare, sys.getswitchinterval(), flush=True)
    time.sleep(600)
    """
)


def test_a_killed_server_leaves_its_tunnel_process_only_for_the_grace(
    tmp_path: Path, remote_env: AgentProcess
) -> None:
    grace = 4.0
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # the default mode
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(grace)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        pid_s, spare_s, interval = server.stdout.readline().split()
        pid, spare = int(pid_s), int(spare_s)
        assert float(interval) == 0.005  # the server's switch interval is left alone
        assert spare, "a spare tunnel process is ready for the next kernel"
        assert _alive(spare)
        server.kill()  # kill -9: no shutdown, no cleanup
        server.wait(10)
        server.stdout.close()
        time.sleep(1.0)
        assert _alive(pid), "the tunnel process must wait the grace for a re-adopting server"
        assert _wait_gone(spare, 10), "a spare (no link to keep) leaves with its server"
        assert _wait_gone(pid, grace + 15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
