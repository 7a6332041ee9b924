"""File-sync attacks on both sides, against real processes on loopback.

A hostile renter sends the agent manifests built to cost it gigabytes (deep paths, too many
files, too many directories): the agent refuses each with a clear message, its peak memory
stays bounded and another renter still gets a kernel. A hostile provider (the real agent with
its file-sync handler replaced, tests/hostile_agent.py) answers the renter's pull with blob
data nobody asked for, a file bigger than declared, a pull above the cap, a deep manifest and
every spelling of the never-pulled dirs: the renter drops or refuses each, writes nothing
denied, and its own peak memory stays bounded. A provider that never acknowledges an upload
fails the launch within the configured timeout; a pull that fails with a plain OSError still
ends the lease.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_agent import DENIED_PATHS, NOT_GIT, PLANTED, start_hostile_agent
from jupyter_client.manager import KernelManager
from traitlets.config import Config

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import PullPlan
from jupyter_gpumarket.exceptions import ProviderRefused, SyncTooLarge, UnsafePath
from jupyter_gpumarket.provisioning import files
from jupyter_gpumarket.provisioning.link import ProviderTarget, RemoteLink

from agentproc import AgentProcess, environ, start_agent

pytestmark = pytest.mark.slow

MB = 1 << 20
SHA = hashlib.sha256(b"x").hexdigest()


# -- memory of a process: the peak (VmHWM) since the last reset --------------------------------
def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> int:
    """Reset the peak resident size (clear_refs 5) and return the resident size now."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS of pid {pid} ({exc}); needs Linux /proc")
    return _status_bytes(pid, "VmRSS")


def _peak_growth(pid: int, baseline: int) -> int:
    return _status_bytes(pid, "VmHWM") - baseline


# -- a renter driven through its real file-sync code -------------------------------------------
def _quiet(text: str) -> None:
    pass


async def _pull_once(agent: AgentProcess, nb: Path, *, cap: int = 10**9) -> tuple[Any, RemoteLink]:
    """Push ``nb`` to a new lease, then pull; (PullPlan or the exception, the link)."""
    link = RemoteLink(ProviderTarget(agent.url, agent.fingerprint, agent.token), lambda c, p: None)
    await link.open()
    try:
        pushed = await files.push(link, nb, cap_bytes=10**9, timeout=60, progress=_quiet)
        try:
            result: Any = await files.pull(
                link, nb, pushed.manifest, cap_bytes=cap, timeout=60, progress=_quiet
            )
        except Exception as exc:  # the test asserts on it
            result = exc
        return result, link
    finally:
        await link.close()


def _notebook(root: Path, attack: str) -> Path:
    root.mkdir()
    (root / f".attack-{attack}").write_text("")
    (root / "notes.txt").write_text("mine")
    (root / "file.txt").write_text("mine too")
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    agent = start_hostile_agent(tmp_path_factory.mktemp("hostile"))
    try:
        yield agent
    finally:
        agent.stop()


def _attack(hostile: AgentProcess, nb: Path, **kw: Any) -> tuple[Any, RemoteLink, int]:
    baseline = _reset_peak(os.getpid())
    result, link = asyncio.run(_pull_once(hostile, nb, **kw))
    return result, link, _peak_growth(os.getpid(), baseline)


def test_unrequested_blob_chunks_are_dropped_not_kept(
    tmp_path: Path, hostile: AgentProcess
) -> None:
    nb = _notebook(tmp_path / "nb", "unrequested")
    plan, link, growth = _attack(hostile, nb)
    assert growth < 150 * MB, f"renter peak grew {growth // MB} MB for 200 MB nobody asked for"
    assert isinstance(plan, PullPlan), plan
    assert (nb / "ok.txt").read_bytes() == b"an honest result\n"
    assert link.dropped_bytes > 0


def test_a_file_bigger_than_declared_is_refused_early(
    tmp_path: Path, hostile: AgentProcess
) -> None:
    nb = _notebook(tmp_path / "nb", "oversize")
    error, _, growth = _attack(hostile, nb)
    assert growth < 150 * MB, f"renter peak grew {growth // MB} MB for a file declared as 1 byte"
    assert "more than the 1 B its manifest declared" in str(error)
    assert not (nb / "big.bin").exists()
    assert not [p.name for p in nb.iterdir() if "partial" in p.name]


def test_a_pull_above_the_cap_fetches_nothing(tmp_path: Path, hostile: AgentProcess) -> None:
    nb = _notebook(tmp_path / "nb", "overcap")
    error, _, _ = _attack(hostile, nb, cap=100 * 1000 * 1000)
    assert isinstance(error, SyncTooLarge), error
    assert "sync_cap_bytes" in str(error)
    assert not list(nb.glob("out*.bin"))
    assert not (nb / "ok.txt").exists()  # refused before the first fetch


def test_a_deep_pull_manifest_is_refused_in_bounded_memory(
    tmp_path: Path, hostile: AgentProcess
) -> None:
    nb = _notebook(tmp_path / "nb", "deep")
    error, _, growth = _attack(hostile, nb)
    assert growth < 150 * MB, f"renter peak grew {growth // MB} MB parsing a 600 kB manifest"
    assert isinstance(error, UnsafePath), error
    assert "levels deep" in str(error)
    assert not (nb / "ok.txt").exists()
    assert not list(nb.glob("d*"))


def test_never_pulled_dirs_in_any_spelling_are_not_written(
    tmp_path: Path, hostile: AgentProcess
) -> None:
    nb = _notebook(tmp_path / "nb", "denied")
    plan, _, _ = _attack(hostile, nb)
    assert isinstance(plan, PullPlan), plan
    written = sorted(item.local_path for item in plan.items)
    assert written == sorted(["ok.txt", NOT_GIT])
    for path in DENIED_PATHS:
        assert not os.path.lexists(nb / path), path
    planted = [p for p in nb.rglob("*") if p.is_file() and p.read_bytes().startswith(PLANTED)]
    assert [p.relative_to(nb).as_posix() for p in planted] == [NOT_GIT]
    assert (nb / "notes.txt").read_text() == "mine"
    assert (nb / "file.txt").read_text() == "mine too"
    skipped = {s.path for s in plan.skipped}
    assert set(DENIED_PATHS) <= skipped


# -- a hostile renter against a real agent ------------------------------------------------------
def _deep_manifest() -> dict[str, Any]:
    return {"files": {f"d{i}/" + "a/" * 2000 + "f": [1, SHA, 1] for i in range(150)}}


def _wide_manifest() -> dict[str, Any]:
    return {"files": {f"f{i}": [1, SHA, 1] for i in range(100_001)}}


def _many_dirs_manifest() -> dict[str, Any]:
    deep = "/".join(f"n{k}" for k in range(55))
    return {"files": {f"t{i}/{deep}/f": [1, SHA, 1] for i in range(2000)}}


async def _offer_attacks(agent: AgentProcess) -> list[str]:
    target = ProviderTarget(agent.url, agent.fingerprint, agent.token)
    link = RemoteLink(target, lambda c, p: None)
    await link.open()
    messages = []
    try:
        for manifest in (_deep_manifest(), _wide_manifest(), _many_dirs_manifest()):
            try:
                reply = await files.offer(link, manifest, 60)  # in pages, as a renter sends
            except ProviderRefused as exc:
                messages.append(str(exc))
            else:
                messages.append(f"accepted: {reply!r}"[:200])
        ok = {"files": {"a.txt": [1, SHA, 1]}}
        assert await link.request(control.SyncOffer(manifest=ok), "sync_need", 60)
    finally:
        await link.close()
    other = RemoteLink(target, lambda c, p: None)  # another renter still gets a kernel
    await other.open()
    try:
        await other.start_kernel("k" * 32, {}, 60)
        assert other.generation == 1
    finally:
        await other.close()
    return messages


def test_the_agent_refuses_costly_sync_offers_in_bounded_memory(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "agent")
    try:
        baseline = _reset_peak(agent.proc.pid)
        deep, wide, many_dirs = asyncio.run(_offer_attacks(agent))
        growth = _peak_growth(agent.proc.pid, baseline)
    finally:
        agent.stop()
    assert growth < 300 * MB, f"agent peak grew {growth // MB} MB"
    assert "levels deep, more than 64" in deep
    assert "100,001 files, more than the 100,000" in wide
    assert ".gpumarketignore" in wide
    assert "more than 100,000 directories" in many_dirs


# -- item 13: upload flow control and teardown --------------------------------------------------
def test_a_provider_that_never_acknowledges_fails_the_launch(tmp_path: Path) -> None:
    agent = start_hostile_agent(tmp_path / "agent", no_ack=True)
    nb = tmp_path / "nb"
    nb.mkdir()
    (nb / "data.bin").write_bytes(os.urandom(16 * MB))  # more than the 8 MB allowed in flight
    outcome: list[BaseException | None] = []
    km = KernelManager(
        kernel_name="gpumarket", config=Config({"GpuMarketProvisioner": {"launch_timeout": 3.0}})
    )

    def launch() -> None:
        try:
            km.start_kernel(cwd=str(nb))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with environ(agent.env()):
            thread = threading.Thread(target=launch, daemon=True)
            thread.start()
            thread.join(60)  # detects a hang only; the launch timeout is 3 s
        assert outcome, "the launch hung on a provider that never acknowledges"
        (error,) = outcome
        assert isinstance(error, ProviderRefused), error
        assert "acknowledged none" in str(error)
        assert "launch_timeout" in str(error)
        assert not km.has_kernel
        _wait_no_leases(agent)
    finally:
        agent.stop()


def _wait_no_leases(agent: AgentProcess, before: set[str] | None = None) -> None:
    leases = agent.state_dir / "leases"
    deadline = time.monotonic() + 15
    while set(os.listdir(leases)) != (before or set()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir(leases)) == (before or set()), "the lease was not ended"


def test_a_pull_failing_with_oserror_still_ends_the_lease(
    tmp_path: Path, agent: AgentProcess, caplog: pytest.LogCaptureFixture
) -> None:
    nb = tmp_path / "nb"
    (nb / "results").mkdir(parents=True)  # a local dir the sync ignores ...
    (nb / "results" / "old.txt").write_text("local")
    (nb / ".gpumarketignore").write_text("results/\n")
    before = set(os.listdir(agent.state_dir / "leases"))
    km = KernelManager(kernel_name="gpumarket")
    with environ(agent.env()):
        km.start_kernel(cwd=str(nb))
    try:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            # ... where the kernel writes a file: the pull's rename onto the dir is EISDIR
            reply = kc.execute_interactive("open('results', 'w').write('x')", timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
    finally:
        km.shutdown_kernel()  # the pull inside fails with IsADirectoryError
    assert "not pulled: [Errno 21] Is a directory" in caplog.text
    assert (nb / "results" / "old.txt").read_text() == "local"
    _wait_no_leases(agent, before)
