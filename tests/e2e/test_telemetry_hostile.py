"""A provider that sends malformed and oversized telemetry: each message is dropped with a log
line; the link, the kernel and the honest samples after them are unaffected."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_telemetry_agent import ATTACKS, start_hostile_telemetry_agent
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ

pytestmark = pytest.mark.slow


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[AgentProcess]:
    agent = start_hostile_telemetry_agent(tmp_path / "hostile")
    try:
        with environ(agent.env()):
            yield agent
    finally:
        agent.stop()


def test_bad_telemetry_is_dropped_and_the_link_lives(
    hostile: AgentProcess, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    # a tunnel process of its own: a spare started during an earlier test would log into that
    # test's captured stderr
    with environ({"GPUMARKET_TUNNEL_SPARE": "0"}):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    try:
        deadline = time.monotonic() + 60
        while len(km.provisioner.telemetry()) < 2:  # honest samples after the attacks
            assert time.monotonic() < deadline, "no honest telemetry after the attacks"
            time.sleep(0.2)
        reply = kc.execute_interactive("print(6 * 7)", timeout=60)
        assert reply["content"]["status"] == "ok"
        link = km.provisioner._link
        assert link.reconnects == 0
        assert link.dead_reason is None
        history = km.provisioner.telemetry()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert all(s["t"] > 1e9 for s in history), [s["t"] for s in history]  # no attack kept
    # logged by the tunnel process (its stderr is the server's), or the tunnel thread
    logged = [r.getMessage() for r in caplog.records] + capfd.readouterr().err.splitlines()
    dropped = [
        line
        for line in logged
        if "bad agent message from the provider" in line or "that nothing asked for" in line
    ]
    assert len(dropped) == len(ATTACKS), dropped
