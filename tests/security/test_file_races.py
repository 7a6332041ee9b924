"""Attacks on the agent's file I/O in a renter's working dir, against a real agent process.

The renter's kernel keeps running while the agent lays out synced files and serves pulls, so it
can swap names in its working dir at any moment: a directory for a symlink (root writes outside
the dir), a file for a symlink to the agent's secrets (the agent reads them back to the renter).
The swapper is the renter's real kernel (code it runs), or a thread / process of the test (root,
like the agent) for more kinds of swaps; a raw tunnel client drives sync_offer / blob_chunk /
sync_commit / pull_request / fetch_blob meanwhile, and sees every byte the agent sends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawlease import (
    ROUNDS_S,
    RawLease,
    exchanging,
    flip_dir,
    kernel_swapping,
    racing,
    sha,
    swap_in,
)

from jupyter_gpumarket.core import control

from agentproc import AgentProcess, running_agent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("raceagent"), "--max-kernels", "8") as proc:
        yield proc


# --- the agent reads anything it can read --------------------------------------------------


@pytest.fixture
def secrets_outside(agent: AgentProcess, tmp_path: Path) -> dict[Path, bytes]:
    """Files outside any working dir the agent could be tricked into reading, with a marker
    that must never reach the renter."""
    private = tmp_path / "rootonly"
    private.mkdir(mode=0o700)
    secret = private / "f.txt"
    secret.write_bytes(b"ROOT-ONLY-SECRET " * 8)
    secret.chmod(0o600)
    return {
        secret: b"ROOT-ONLY-SECRET",
        agent.state_dir / "tls-key.pem": b"PRIVATE KEY",
        Path("/proc/self/environ"): b"GPUMARKET_AGENT_SECRET",  # the agent's environment
        Path("/proc/self/cmdline"): agent.token.encode(),  # its dev token
    }


async def test_flipping_files_and_dirs_to_symlinks_never_leaks_outside_files(
    agent: AgentProcess, secrets_outside: dict[Path, bytes]
) -> None:
    benign = b"benign result\n"
    targets = list(secrets_outside)
    markers = list(secrets_outside.values())
    async with RawLease.open(agent) as lease:
        work = lease.workdir
        (work / "d").mkdir()
        for rel in ("f.txt", "d/f.txt"):
            (work / rel).write_bytes(benign)
        which = [0]

        def flip() -> None:
            which[0] += 1
            target = targets[which[0] % len(targets)]
            swap_in(work / "f.txt", lambda tmp: tmp.symlink_to(target))  # leaf → secret
            swap_in(work / "f.txt", lambda tmp: tmp.write_bytes(benign))
            if which[0] % len(targets) == 0:  # a directory component → the secret's dir
                flip_dir(work / "d", targets[0].parent)

        served = 0
        with racing(flip) as flips:
            deadline = time.monotonic() + ROUNDS_S
            for _ in range(200):
                if time.monotonic() > deadline:
                    break
                reply = await lease.ask(control.PullRequest())
                if not isinstance(reply, control.PullManifest):
                    continue  # a listing that met a swap may be refused: ask again
                for blob in {entry[1] for entry in reply.manifest["files"].values()}:
                    data = await lease.fetch(blob)
                    if isinstance(data, bytes):
                        served += 1
                        leaked = [m for m in markers if m in data]
                        assert not leaked, f"the agent served {leaked} from outside the dir"
        assert flips[0] > 10  # the race really ran
        assert served > 0


async def test_hard_linked_names_are_never_listed_or_served(
    agent: AgentProcess, secrets_outside: dict[Path, bytes]
) -> None:
    secret = next(iter(secrets_outside))
    async with RawLease.open(agent) as lease:
        os.link(secret, lease.workdir / "hard.txt")  # a name linked in from outside (as root)
        (lease.workdir / "ok.txt").write_bytes(b"still serving")
        files = await lease.pull_manifest()
        assert "hard.txt" not in files
        assert sha(secret.read_bytes()) not in {e[1] for e in files.values()}
        assert await lease.fetch(files["ok.txt"][1]) == b"still serving"


async def test_kernel_code_swapping_links_cannot_make_the_agent_serve_its_secrets(
    agent: AgentProcess,
) -> None:
    targets = {
        "key": str(agent.state_dir / "tls-key.pem"),
        "env": "/proc/self/environ",  # resolved by whoever opens it: the agent
    }
    markers = [b"PRIVATE KEY", b"GPUMARKET_AGENT_SECRET"]
    setup = "".join(
        f"open('{n}.txt', 'wb').write(b'benign')\nos.symlink({t!r}, '{n}.lnk')\n"
        for n, t in targets.items()
    )
    async with RawLease.open(agent) as lease:
        await kernel_swapping(lease, setup, *((f"{n}.txt", f"{n}.lnk") for n in targets))
        served = 0
        deadline = time.monotonic() + ROUNDS_S
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            reply = await lease.ask(control.PullRequest())
            if not isinstance(reply, control.PullManifest):
                continue
            for path, entry in reply.manifest["files"].items():
                if path.split(".")[0] not in targets:
                    continue
                data = await lease.fetch(entry[1])
                if isinstance(data, bytes):
                    served += 1
                    leaked = [m for m in markers if m in data]
                    assert not leaked, f"the agent served {leaked} to the renter"
        assert served > 0
        await lease.send(control.StopKernel(end_lease=True))  # the swapper dies with it


async def test_kernel_code_swapping_dirs_cannot_make_the_agent_write_outside(
    agent: AgentProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "rootonly"
    outside.mkdir(mode=0o700)
    payload = b"RENTER-BYTES " * 10
    async with RawLease.open(agent) as lease:
        setup = f"os.makedirs('d')\nos.symlink({str(outside)!r}, 'd.lnk')\n"
        await kernel_swapping(lease, setup, ("d", "d.lnk"))
        results: list[str] = []
        deadline = time.monotonic() + ROUNDS_S
        for round_ in range(1, 200):
            if time.monotonic() > deadline:
                break
            results.append(type(await lease.sync({"d/f.txt": (payload, round_)})).__name__)
        await lease.send(control.StopKernel(end_lease=True))
        assert "SyncDone" in results
    written = list(outside.rglob("*"))
    assert written == [], f"the agent wrote renter bytes outside the working dir: {written}"


# --- root writes anywhere -----------------------------------------------------------------


async def test_swapping_dirs_for_symlinks_during_commit_never_writes_outside(
    agent: AgentProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "rootonly"
    outside.mkdir(mode=0o700)
    payload = b"RENTER-BYTES " * 10
    async with RawLease.open(agent) as lease:
        work = lease.workdir
        pairs = []
        for d in ("d", "n/e"):
            (work / d).mkdir(parents=True)
            link = work / f"{d}.lnk"
            link.symlink_to(outside)
            pairs.append((work / d, link))
        results: list[str] = []
        with exchanging(*pairs):
            deadline = time.monotonic() + ROUNDS_S
            for round_ in range(1, 200):
                if time.monotonic() > deadline:
                    break
                path = ("d/f.txt", "n/e/f.txt")[round_ % 2]  # a new mtime: laid out again
                results.append(type(await lease.sync({path: (payload, round_)})).__name__)
        assert "SyncDone" in results  # some commits passed: the race had its chances
    written = [p for p in outside.rglob("*")]
    assert written == [], f"the agent wrote renter bytes outside the working dir: {written}"
