"""Telemetry of a sandboxed kernel (bubblewrap, its slot's uid when the agent is root): the
samples count the kernel inside the sandbox, the kernel reads its file, and cannot make the
agent write its samples anywhere else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ, start_agent
from sandboxkit import ensure_sandbox, run_code

pytestmark = pytest.mark.slow

KERNEL_CODE = """
import json, os
from jupyter_gpumarket.telemetry_view import read_latest
path = os.environ["GPUMARKET_TELEMETRY_FILE"]
tmp = os.path.join(os.path.dirname(path), ".telemetry.json.tmp")
tried = {}
for name, act in [
    ("plant_link", lambda: os.symlink("/tmp/gpm-victim", tmp)),
    ("replace_file", lambda: os.replace(__import__("tempfile").mkstemp()[1], path)),
    ("write_file", lambda: open(path, "w").write("{}")),
]:
    try:
        act()
        tried[name] = "done"
    except OSError as exc:
        tried[name] = type(exc).__name__
print(json.dumps({"latest": read_latest(), "tried": tried}))
"""


@pytest.fixture
def sandboxed(tmp_path: Path) -> Iterator[AgentProcess]:
    ensure_sandbox()
    agent = start_agent(tmp_path, "--sandbox", "on", "--egress", "none", "--max-kernels", "1")
    try:
        with environ(agent.env()):
            yield agent
    finally:
        agent.stop()


def test_sandboxed_kernel_reads_its_samples_and_cannot_redirect_them(
    sandboxed: AgentProcess,
) -> None:
    import os

    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        deadline = time.monotonic() + 60
        while len(km.provisioner.telemetry()) < 2:
            assert time.monotonic() < deadline, "no telemetry from the sandboxed kernel"
            time.sleep(0.2)
        assert km.provisioner.telemetry()[-1]["ram_mib"] > 10  # the kernel inside bwrap
        result = run_code(kc, KERNEL_CODE)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert result["latest"]["ram_mib"] > 10
    assert result["latest"]["gpus"] == []
    if os.geteuid() == 0:  # the kernel runs as its slot's user; the agent owns the dir
        assert result["tried"]["plant_link"] == "PermissionError"
        assert result["tried"]["write_file"] == "PermissionError"
        assert result["tried"]["replace_file"] != "done"  # EACCES, or EXDEV from its tmpfs
