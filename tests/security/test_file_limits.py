"""File operations that must not hang the agent, and uploads that must stay within the disk
quota, against a real agent process: a FIFO or device swapped in for a file after the pull
manifest (the fetch fails at once; SIGTERM still stops the agent), one blob laid out at many
paths, chunks nobody asked for or past the declared size, and the blob store's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rawlease import RawLease, sha, swap_in

from jupyter_gpumarket.core import control

from agentproc import AgentProcess, running_agent, start_agent

pytestmark = pytest.mark.slow

QUOTA_MB = 1  # the module agent's --kernel-disk-mb: its blob store keeps 4 quotas


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("quotaagent")
    with running_agent(tmp, "--max-kernels", "8", "--kernel-disk-mb", str(QUOTA_MB)) as proc:
        yield proc


# --- a FIFO or device swapped in -------------------------------------------------------------


async def test_a_fifo_or_device_in_place_of_a_file_fails_the_fetch_fast(
    agent: AgentProcess,
) -> None:
    async with RawLease.open(agent) as lease:
        work = lease.workdir
        kinds: dict[str, Callable[[Path], None]] = {
            "fifo.txt": lambda p: os.mkfifo(p),
            "zero.txt": lambda p: p.symlink_to("/dev/zero"),
        }
        if os.geteuid() == 0:  # a device node of its own needs root (or a careless sandbox)
            kinds["null.txt"] = lambda p: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        for name in kinds:
            (work / name).write_bytes(name.encode())  # a regular file when listed ...
        files = await lease.pull_manifest()
        for name, make in kinds.items():
            swap_in(work / name, make)  # ... something else when fetched
            result = await lease.fetch(files[name][1])  # a hang fails on REPLY_TIMEOUT
            assert isinstance(result, control.Refused), (name, result)
            assert "regular file" in result.message or "symlink" in result.message
        (work / "ok.txt").write_bytes(b"still serving")
        files = await lease.pull_manifest()
        assert await lease.fetch(files["ok.txt"][1]) == b"still serving"


def test_sigterm_stops_the_agent_while_a_fetch_meets_a_fifo(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "agent")
    try:

        async def attack() -> None:
            async with RawLease.open(agent) as lease:
                (lease.workdir / "out.txt").write_bytes(b"result")
                files = await lease.pull_manifest()
                swap_in(lease.workdir / "out.txt", lambda p: os.mkfifo(p))
                await lease.send(control.FetchBlob(sha256=files["out.txt"][1]))
                await asyncio.sleep(0.5)  # the fetch is in the agent now
                agent.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(Exception):
                    await lease.reply(5)

        asyncio.run(attack())
        try:
            code = agent.proc.wait(25)  # the agent's stop budget is 30 s; only detects a hang
        except subprocess.TimeoutExpired:
            pytest.fail(f"the agent ignored SIGTERM with a fetch pending:\n{agent.log()[-2000:]}")
        assert code == 0, agent.log()[-2000:]
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


# --- uploads and the disk quota ------------------------------------------------------------


async def test_one_blob_at_many_paths_counts_against_the_disk_quota(agent: AgentProcess) -> None:
    blob = os.urandom(1 << 20)
    async with RawLease.open(agent) as lease:
        many = {f"copy{i}.bin": (blob, 1) for i in range(300)}
        refused = await lease.sync(many)
        assert isinstance(refused, control.Refused), refused
        assert "quota" in refused.message
        assert not any(lease.workdir.iterdir())
        assert isinstance(await lease.sync({"one.bin": (blob, 1)}), control.SyncDone)


async def test_oversized_and_unrequested_chunks_are_refused(agent: AgentProcess) -> None:
    small = b"ten bytes!"
    async with RawLease.open(agent) as lease:
        offer = control.SyncOffer(manifest={"files": {"a.bin": [len(small), sha(small), 1]}})
        need = await lease.ask(offer)
        assert need.missing == (sha(small),)
        refused = await lease.ask(control.BlobChunk(sha256=sha(small)), b"x" * 65536)
        assert isinstance(refused, control.Refused), refused
        incoming = lease.workdir.parent / "incoming"
        assert sum(p.stat().st_size for p in incoming.glob("*")) <= len(small)

        assert isinstance(await lease.sync({"a.bin": (small, 1)}), control.SyncDone)
        await lease.ask(offer)  # the blob is stored now: nothing asked for
        refused = await lease.ask(control.BlobChunk(sha256=sha(small)), b"more")
        assert isinstance(refused, control.Refused), refused
        assert "not asked for" in refused.message


async def test_the_blob_store_stays_within_its_bound(agent: AgentProcess) -> None:
    bound = 4 * QUOTA_MB << 20
    async with RawLease.open(agent) as lease:
        for i in range(7):
            blob = os.urandom(QUOTA_MB << 20)
            done = await lease.sync({f"run{i}.bin": (blob, 1)})
            assert isinstance(done, control.SyncDone), done
    store = agent.state_dir / "blobs"
    held = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert held <= bound, f"the blob store holds {held} bytes, over its bound of {bound}"
