"""Per-kernel telemetry from a real agent: the renter's history, the kernel's own file, REST."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from agentproc import AgentProcess
from jupyterproc import JupyterServer, start_jupyter

pytestmark = pytest.mark.slow

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll until ``probe`` returns something (the timeout only detects a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def kernel(remote_env: AgentProcess) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name="gpumarket")
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc: BlockingKernelClient, code: str) -> str:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def test_samples_follow_the_kernels_cpu_and_memory(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    history = wait_for("three samples", lambda: len(h := km.provisioner.telemetry()) >= 3 and h)
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(history)]
    assert all(0.5 <= g <= 5 for g in gaps), gaps  # about one a second
    for s in history:  # a CPU-only dev provider: no GPU, no bill; nothing made up
        assert s["gpus"] == []
        assert s["billed_seconds"] == s["spend"] == 0
        assert s["ram_mib"] > 10  # an ipykernel's resident set
    idle_ram = history[-1]["ram_mib"]

    # a busy loop, until the kernel's own samples show it (on a shared 2-core machine a busy
    # kernel still gets a good fifth of a core)
    run(
        kc,
        "import time\n"
        "from jupyter_gpumarket.telemetry_view import read_latest\n"
        "_end, _n = time.time() + 60, 0\n"
        "while time.time() < _end:\n"
        "    _n += 1\n"
        "    if _n % 200_000 == 0 and (read_latest() or {}).get('cpu_pct', 0) > 20:\n"
        "        break\n",
    )
    busy = wait_for(
        "a busy sample",
        lambda: next((s for s in km.provisioner.telemetry() if s["cpu_pct"] > 20), None),
    )
    assert busy["cpu_pct"] <= 100 * 64

    run(kc, "_x = b'x' * (200 << 20)")  # touched pages: resident
    grown = wait_for(
        "RSS up by 200 MB",
        lambda: (s := km.provisioner.telemetry()[-1])["ram_mib"] >= idle_ram + 180 and s,
    )

    # the kernel reads the same samples through its environment
    out = run(
        kc,
        "import json, os\n"
        "from jupyter_gpumarket.telemetry_view import read_latest\n"
        "print(os.environ['GPUMARKET_TELEMETRY_FILE'])\n"
        "print(json.dumps(read_latest()))",
    )
    path, latest = out.strip().splitlines()
    sample = json.loads(latest)
    assert Path(path).name == "telemetry.json"
    assert sample["ram_mib"] >= idle_ram + 180
    assert sample["gpus"] == []
    assert sample["t"] >= grown["t"] - 5


@pytest.fixture
def jupyter(tmp_path: Path, agent: AgentProcess) -> Iterator[JupyterServer]:
    server = start_jupyter(tmp_path, agent.env())
    yield server
    server.stop()


def test_rest_endpoint_returns_the_kernels_history(jupyter: JupyterServer) -> None:
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket"})
    try:
        body = wait_for(
            "two samples over REST",
            lambda: (
                (b := jupyter.request("GET", f"/gpumarket/telemetry?kernel_id={kernel['id']}"))
                and len(b["history"]) >= 2
                and b
            ),
        )
        assert body["kernel_id"] == kernel["id"]
        assert body["latest"] == body["history"][-1]
        assert body["latest"]["gpus"] == []
        assert body["latest"]["ram_mib"] > 10
        for bad in ("kernel_id=nope", ""):
            with pytest.raises(urllib.error.HTTPError) as err:
                jupyter.request("GET", f"/gpumarket/telemetry?{bad}")
            err.value.close()
            assert err.value.code == 404
    finally:
        jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")
