"""A slow link is not a dead link, and a stalled one is noticed while it stalls, then used
again when it returns (no new handshake), or replaced when only a new path works.

The provisioner reaches the agent through tests/linkemu.py (one-way delay, bandwidth cap,
stalls that hold bytes). Timeouts here only detect hangs; the detection time itself is a
benchmark figure (benchmarks/wan.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from linkemu import ThreadedLink

from agentproc import AgentProcess, environ, running_agent, start_remote_kernel, wait_dead

pytestmark = pytest.mark.slow

MB = 1024 * 1024
STALL = 10.0


@pytest.fixture
def slow_link(agent: AgentProcess) -> Iterator[tuple[ThreadedLink, dict[str, str]]]:
    # 150 ms round trip, 1 MB/s each way: a pong behind 1 MB of output waits a second
    link = ThreadedLink("127.0.0.1", int(agent.url.rsplit(":", 1)[1]), delay=0.075, rate=1e6)
    port = link.start()
    yield link, {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}
    link.stop()


def _tunnel(km: KernelManager) -> Any:
    return km.provisioner._link  # type: ignore[union-attr]


def _collect(kc: BlockingKernelClient, msg_id: str, timeout: float) -> str:
    """The stdout text of ``msg_id`` until its idle status (``timeout``: hang detection)."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Exception:  # queue.Empty
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
    raise AssertionError(f"no idle for {msg_id} within {timeout} s")


def _numbered(n: int, size: int) -> str:
    """Code printing ``n`` numbered lines of ``size`` bytes each (newline included)."""
    return (
        "import sys\n"
        f"for i in range({n}):\n"
        f"    sys.stdout.write(f'{{i:08d}}' + 'x' * {size - 9} + '\\n')\n"
        "    sys.stdout.flush()\n"
    )


def _paced(n: int, size: int) -> str:
    """:func:`_numbered`, a line every 0.1 s."""
    return _numbered(n, size).replace("flush()\n", "flush()\n    __import__('time').sleep(0.1)\n")


def _check_numbered(text: str, n: int, size: int) -> None:
    lines = text.split("\n")[:-1]
    assert [int(line[:8]) for line in lines] == list(range(n))  # none lost, doubled, reordered
    assert all(len(line) == size - 1 for line in lines)


def test_large_output_on_a_slow_link_needs_no_reconnect(
    slow_link: tuple[ThreadedLink, dict[str, str]],
) -> None:
    _, env = slow_link
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        tunnel = _tunnel(km)
        n, size = 8, MB  # 8 MB: 8 s at the link's rate, queued at once by the kernel
        text = _collect(kc, kc.execute(_numbered(n, size)), timeout=120)
        _check_numbered(text, n, size)
        assert tunnel.reconnects == 0
        assert tunnel.stalls == 0
        assert km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_stall_is_noticed_while_it_lasts_and_output_resumes_whole(
    slow_link: tuple[ThreadedLink, dict[str, str]],
) -> None:
    link, env = slow_link
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        tunnel = _tunnel(km)
        n, size = 60, 20_000  # 0.1 s apart: output flows before, during and after the stall
        msg_id = kc.execute(_paced(n, size))
        time.sleep(2)
        link.stall()  # bytes held both ways: no reset, no FIN, the sockets stay open
        stalled = time.monotonic()
        while tunnel.lost_since is None and time.monotonic() - stalled < STALL:
            time.sleep(0.05)
        noticed = tunnel.lost_since is not None
        time.sleep(max(0.0, STALL - (time.monotonic() - stalled)))
        link.unstall()
        assert noticed, f"a {STALL:.0f} s stall went unnoticed while it lasted"
        assert tunnel.stalls == 1  # noticed by the silence, not by a reset
        assert km.is_alive()  # within the grace: never reported dead
        _check_numbered(_collect(kc, msg_id, timeout=120), n, size)
        # the silent link was kept: when the path returned it carried on, like TCP under ssh
        assert (tunnel.revivals, tunnel.reconnects) == (1, 0)
        assert tunnel.lost_since is None
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_when_only_a_new_path_works_the_silent_link_is_replaced_and_nothing_lost(
    slow_link: tuple[ThreadedLink, dict[str, str]],
) -> None:
    link, env = slow_link
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        tunnel = _tunnel(km)
        n, size = 80, 20_000
        msg_id = kc.execute(_paced(n, size))
        time.sleep(2)
        # the open connection hangs (its bytes held, no reset), a new one goes through: the
        # agent's writer, blocked on the old connection, must move to the new one
        link.stall(existing_only=True)
        try:
            _check_numbered(_collect(kc, msg_id, timeout=120), n, size)
        finally:
            link.unstall()
        assert (tunnel.stalls, tunnel.reconnects, tunnel.revivals) == (1, 1, 0)
        assert km.is_alive()
        reply = kc.execute_interactive("print('after')", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_stall_past_the_grace_ends_the_kernel_and_a_late_return_does_not_revive_it(
    slow_link: tuple[ThreadedLink, dict[str, str]],
) -> None:
    link, env = slow_link
    km, kc = start_remote_kernel(env, grace=2.0)
    try:
        tunnel = _tunnel(km)
        link.stall()
        assert wait_dead(km, 30)  # 4 s of silence, then the 2 s grace
        link.unstall()
        time.sleep(2)  # what the silent link held now arrives: too late, it was closed
        assert not km.is_alive()
        assert tunnel.revivals == 0
        assert "unreachable" in (tunnel.dead_reason or "")
    finally:
        link.unstall()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_provider_keeps_a_silent_renter_past_its_own_timeout_and_takes_it_back(
    tmp_path: Path,
) -> None:
    # the agent declares a renter silent after 8 s and would stop the kernel 4 s later; a 10 s
    # stall ends in between: the same connection carries on and the agent's grace is called off
    with running_agent(tmp_path, "--client-grace", "4") as agent:
        link = ThreadedLink("127.0.0.1", int(agent.url.rsplit(":", 1)[1]), delay=0.075, rate=1e6)
        env = {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{link.start()}"}
        try:
            km, kc = start_remote_kernel(env)
            try:
                tunnel = _tunnel(km)
                n, size = 170, 2_000  # 17 s of lines, the stall in the middle
                msg_id = kc.execute(_paced(n, size))
                time.sleep(1)
                link.stall()
                time.sleep(STALL)
                link.unstall()
                _check_numbered(_collect(kc, msg_id, timeout=120), n, size)
                assert (tunnel.revivals, tunnel.reconnects) == (1, 0)
                log = agent.log()
                assert "no byte from the renter" in log
                assert "silent link is back" in log
                assert "stopping it" not in log  # the grace did not run out
                assert km.is_alive()
            finally:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
        finally:
            link.stop()
