"""A class on one GPU box: a real agent (`--simulate-gpu H100 --slices 2`) serves two kernels at
once on one GPU, each pinned to its own slice; the probe states the slice; a third renter is
refused; a kernel over its slice's memory is warned, then stopped, and its neighbour runs on.

A simulated GPU has no memory of its own: the agent counts a kernel's resident RAM as its GPU
memory (agent.gpu_slices.SimulatedVramReader), so a kernel exceeds its slice by allocating.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel
from websockets.asyncio.client import connect

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.verification import Claim
from jupyter_gpumarket.exceptions import ProviderRefused
from jupyter_gpumarket.market.probe import probe_endpoint
from jupyter_gpumarket.market.verify import verify_offer
from jupyter_gpumarket.provisioning.link import ProviderTarget, RemoteLink

from agentproc import AgentProcess, environ, start_agent
from sandboxkit import ensure_sandbox

pytestmark = pytest.mark.slow

SLICE_MIB = 300


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    agent = start_agent(
        tmp_path_factory.mktemp("sliced"),
        "--simulate-gpu", "H100",
        "--slices", "2",
        "--slice-vram-mb", str(SLICE_MIB),
        "--slice-grace", "2",
        "--max-kernels", "3",  # a kernel slot is free: the slices are what is full
    )  # fmt: skip
    try:
        yield agent
    finally:
        agent.stop()


def run(kc: BlockingKernelClient, code: str) -> str:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def probe(agent: AgentProcess) -> dict[str, Any]:
    report = asyncio.run(probe_endpoint(agent.url, agent.fingerprint, offer_id=1, timeout=30))
    assert report.result.reachable, report.result.reason
    assert report.reply is not None
    return dict(report.reply)


async def third_renter(agent: AgentProcess) -> str:
    link = RemoteLink(ProviderTarget(agent.url, agent.fingerprint, agent.token), lambda c, p: None)
    try:
        await link.open()
    except Exception as exc:  # the test asserts on it
        return str(exc)
    finally:
        await link.close()
    return "opened a lease"


def stderr_until(kc: BlockingKernelClient, *phrases: str, timeout: float = 90.0) -> str:
    """IOPub stderr text until every phrase was seen (the timeout only detects a hang)."""
    text, deadline = "", time.monotonic() + timeout
    while not all(p in text for p in phrases):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {phrases} in the kernel's stderr:\n{text}")
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
            text += msg["content"]["text"]
    return text


def test_two_kernels_share_one_gpu_each_on_its_slice(sliced: AgentProcess) -> None:
    before = probe(sliced)
    assert before["simulated"] is True
    assert before["slice"]["share"] == "1/2"
    assert before["slice"]["vram_mib"] == SLICE_MIB
    assert before["slice"]["label"].startswith("1/2 of an H100")
    assert before["slice"]["mode"] == "watched"
    assert before["free_gpus"] == 2  # free slices

    with ExitStack() as stack, environ(sliced.env()):
        clients = []
        for _ in range(2):
            km, kc = start_new_kernel(kernel_name="gpumarket")
            stack.callback(km.shutdown_kernel, now=True)
            stack.callback(kc.stop_channels)
            clients.append(kc)
        code = (
            "import os\n"
            "print(os.environ['GPUMARKET_GPU_SLICE'], os.environ['CUDA_VISIBLE_DEVICES'], "
            "os.environ['GPUMARKET_GPU_SLICE_VRAM_MIB'])"
        )
        seen = sorted(run(kc, code).split() for kc in clients)
        assert seen == [["gpu0/slice0", "0", str(SLICE_MIB)], ["gpu0/slice1", "0", str(SLICE_MIB)]]
        assert probe(sliced)["free_gpus"] == 0

        refused = asyncio.run(third_renter(sliced))
        assert "every GPU slice of this provider is in use" in refused

        greedy, neighbour = clients
        # touched pages: resident. Not run(): execute_interactive drops IOPub messages of no
        # parent, and the provider's first warning can come while the cell still runs.
        greedy.execute(f"_x = b'x' * ({SLICE_MIB + 150} << 20)")
        said = stderr_until(greedy, "GPU slice", "the provider stopped the kernel")
        assert f"over its {SLICE_MIB} MiB GPU slice" in said
        assert f"over its {SLICE_MIB} MiB slice for 2 s, so the provider stopped it" in said
        assert said.index("GPU slice: free GPU memory") < said.index("the provider stopped")
        # the neighbour on the same GPU runs on
        assert run(neighbour, "print(6 * 7)").strip() == "42"
        assert "slice" in sliced.log()


def test_a_sandboxed_kernel_over_its_slice_is_stopped(tmp_path: Path) -> None:
    """In bubblewrap (as its slot's user when the agent is root) the kernel's processes are
    counted and stopped the same way."""
    ensure_sandbox()
    agent = start_agent(
        tmp_path,
        "--sandbox", "on", "--egress", "none", "--max-kernels", "1",
        "--simulate-gpu", "H100", "--slices", "2",
        "--slice-vram-mb", str(SLICE_MIB), "--slice-grace", "2",
    )  # fmt: skip
    try:
        with environ(agent.env()):
            km, kc = start_new_kernel(kernel_name="gpumarket")
            try:
                assert run(kc, "import os; print(os.environ['GPUMARKET_GPU_SLICE'])").strip() == (
                    "gpu0/slice0"
                )
                kc.execute(f"_x = b'x' * ({SLICE_MIB + 150} << 20)")  # as above: not run()
                said = stderr_until(kc, "GPU slice", "the provider stopped the kernel")
                assert f"over its {SLICE_MIB} MiB slice" in said
            finally:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
    finally:
        agent.stop()


def test_no_challenge_takes_the_whole_gpu_while_a_slice_is_rented(tmp_path: Path) -> None:
    """A stranger's verification challenge would fill the whole GPU's memory under the
    classmates' kernels: a sliced agent runs one only while no slice is rented."""

    async def scenario(agent: AgentProcess) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        async with connect(agent.url, ssl=ctx, compression=None) as ws:  # one slice rented
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            control.parse_welcome(await ws.recv())
            await verify_offer(agent.url, agent.fingerprint, Claim("H100", 1, 81920), offer_id=1)

    agent = start_agent(tmp_path, "--simulate-gpu", "H100", "--slices", "2", "--max-kernels", "4")
    try:
        with pytest.raises(ProviderRefused, match="GPU slices are rented out"):
            asyncio.run(scenario(agent))
    finally:
        agent.stop()


def test_slice_flags_are_checked_before_serving(tmp_path: Path) -> None:
    for flags, words in (
        (("--simulate-gpu", "H100", "--slices", "1"), "2 to 64"),
        (("--simulate-gpu", "H100", "--slices", "2", "--gpus-per-kernel", "2"), "one GPU"),
        (("--slices", "2", "--gpus", "none"), "CPU only"),
        (("--simulate-gpu", "H100", "--mig-profile", "1g.10gb"), "MIG is off"),
        (("--simulate-gpu", "H100", "--slice-vram-mb", "100"), "needs --slices"),
    ):
        with pytest.raises(RuntimeError, match=words):
            start_agent(tmp_path / str(abs(hash(flags))), *flags, timeout=60)
