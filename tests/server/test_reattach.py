"""A Jupyter server that dies leaves its remote kernels running; the next one takes them back."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from websockets.sync.client import connect

from agentproc import AgentProcess, environ
from jupyterproc import execute, start_jupyter

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_gpumarket.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=True,
    )


def test_kernel_survives_a_server_crash_and_is_readopted(
    tmp_path: Path, agent: AgentProcess
) -> None:
    runtime = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    first = start_jupyter(tmp_path, agent.env())
    kernel = first.request("POST", "/api/kernels", {"name": "gpumarket"})
    kid = kernel["id"]
    with connect(first.ws_url(f"/api/kernels/{kid}/channels")) as ws:
        reply, _ = execute(ws, "x = 42; import os; pid = os.getpid()")
        assert reply["content"]["status"] == "ok"
    first.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown of its kernels
    first.proc.wait(10)

    listed = json.loads(_cli("kernels", "list", "--json", env=runtime).stdout)
    assert [k["kernel_id"] for k in listed] == [kid]
    assert "key" not in listed[0]
    assert "token" not in listed[0]

    # while no server runs, `gpumarket kernels attach` gives a console onto the same kernel
    with environ(runtime):
        attach = subprocess.Popen(
            [sys.executable, "-m", "jupyter_gpumarket.cli", "kernels", "attach", kid],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert attach.stdout is not None
            conn_file = attach.stdout.readline().strip()
            kc = BlockingKernelClient(connection_file=conn_file)
            kc.load_connection_file()
            kc.start_channels()
            out: list[str] = []
            kc.execute_interactive(
                "print(x)",
                timeout=30,
                output_hook=lambda m: out.append(m["content"].get("text", "")),
            )
            kc.stop_channels()
            assert "".join(out).strip() == "42"
        finally:
            attach.send_signal(signal.SIGINT)
            code = attach.wait(30)
            assert attach.stdout is not None
            attach.stdout.close()
        assert code == 0

    # a record whose lease the provider no longer has is dropped at the next start
    from jupyter_gpumarket.provisioning import records

    with environ(runtime):
        stale = dataclasses.replace(records.load(kid), kernel_id="stale-kernel", lease="gone")
        records.save(stale)

    second = start_jupyter(tmp_path, agent.env())
    try:
        deadline = time.monotonic() + 60
        ids: list[str] = []
        while kid not in ids and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                ids = [k["id"] for k in second.request("GET", "/api/kernels")]
            except urllib.error.HTTPError:  # jupyter_server lists a kernel still being added
                continue
        assert ids == [kid]  # same id, and the stale one is not there
        with connect(second.ws_url(f"/api/kernels/{kid}/channels")) as ws:
            reply, text = execute(ws, "print(x, pid == os.getpid())")
        assert reply["content"]["status"] == "ok"
        assert text.strip() == "42 True"  # the very same process, state intact
        deadline = time.monotonic() + 30  # re-adoption goes on after the first kernel
        while "dropped remote kernel stale" not in second.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "dropped remote kernel stale-kernel" in second.log()
        with environ(runtime):
            assert records.load("stale-kernel") is None
        second.request("DELETE", f"/api/kernels/{kid}")
        with environ(runtime):
            assert records.load(kid) is None  # shut down on purpose: forgotten
    finally:
        second.stop()
