"""The disk-quota watchdog walks a working dir its kernel keeps changing, as root: attacked from
inside a real kernel of a real agent. A directory swapped for a symlink mid-walk must never
point the walk elsewhere (a wrong usage stops an innocent kernel or hides a real one), and
files + directories count against an inode limit, warned about and then enforced like the
disk quota, so a kernel cannot make each walk endless with empty files.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from jupyter_gpumarket.agent.limits import dir_usage

from agentproc import AgentProcess, environ, running_agent
from sandboxkit import run_code

pytestmark = pytest.mark.slow

QUOTA_MB = 5
INODES = 1000
MB = 1024 * 1024


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside every working dir, holding far more than the quota."""
    out = tmp_path_factory.mktemp("outside")
    (out / "big").write_bytes(os.urandom(4 * QUOTA_MB * MB))
    return out


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("quotawalk")
    limits = ("--kernel-disk-mb", str(QUOTA_MB), "--kernel-inodes", str(INODES))
    with (
        running_agent(tmp, "--sandbox", "off", "--max-kernels", "4", *limits) as proc,
        environ(proc.env()),
    ):
        yield proc


@pytest.fixture
def kernel(agent: AgentProcess) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        try:
            km.shutdown_kernel(now=True)
        except Exception:  # stopped by the watchdog already
            km.cleanup_resources()


SWAP = (  # renameat2(RENAME_EXCHANGE): each a{i} is always there, a directory or a symlink
    "import ctypes, os\n"
    "_libc = ctypes.CDLL(None, use_errno=True)\n"
    "def exchange(x, y):\n"
    "    if _libc.renameat2(-100, x.encode(), -100, y.encode(), 2) != 0:\n"
    "        raise OSError(ctypes.get_errno(), 'renameat2')\n"
)
SWAPPED = 10


def _lay_out(target: Path) -> str:
    """Code (kernel or test) that makes many small dirs (a longer walk) and a{i} (directories)
    next to l{i} (symlinks to ``target``), in the current dir."""
    return (
        "for d in range(10):\n"
        "    os.makedirs(f'p{d}', exist_ok=True)\n"
        "    [open(f'p{d}/{i}', 'w').close() for i in range(40)]\n"
        f"for i in range({SWAPPED}):\n"
        f"    os.mkdir(f'a{{i}}'); os.symlink({str(target)!r}, f'l{{i}}')\n"
    )


def _flip(seconds: float) -> str:
    return (
        "import time\n"
        f"end, n = time.monotonic() + {seconds!r}, 0\n"
        "while time.monotonic() < end:\n"
        f"    [exchange(f'a{{i}}', f'l{{i}}') for i in range({SWAPPED})]; n += 1\n"
    )


def test_walk_never_follows_a_directory_swapped_for_a_symlink(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk itself, racing a swapper thread: never counts what lies outside."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env: dict[str, object] = {}
    exec(SWAP + _lay_out(outside), env)
    done = threading.Event()
    swapper = threading.Thread(target=lambda: (exec(SWAP + _flip(5.0), {}), done.set()))
    swapper.start()
    seen = []
    while not done.is_set() and len(seen) < 200:
        seen.append(dir_usage(work).bytes)
    swapper.join(30)
    assert max(seen) < QUOTA_MB * MB, max(seen)


def test_swapping_a_dir_for_a_symlink_does_not_mislead_the_watchdog(
    agent: AgentProcess, kernel: tuple[KernelManager, BlockingKernelClient], outside: Path
) -> None:
    km, kc = kernel
    code = SWAP + _lay_out(outside) + _flip(8.0) + "import json; print(json.dumps(n))\n"
    swaps = run_code(kc, code, timeout=60)
    assert swaps > 0
    assert km.is_alive(), agent.log()[-2000:]
    assert "over its disk quota" not in agent.log()


def _told(kc: BlockingKernelClient) -> list[str]:
    told = []
    with contextlib.suppress(Exception):  # queue.Empty ends the drain
        while True:
            msg = kc.get_iopub_msg(timeout=1)
            if msg["msg_type"] == "stream":
                told.append(msg["content"]["text"])
    return told


@pytest.mark.parametrize("kind", ["files", "dirs"])
def test_empty_files_and_dirs_count_against_the_inode_limit(
    agent: AgentProcess, kernel: tuple[KernelManager, BlockingKernelClient], kind: str
) -> None:
    km, kc = kernel
    make = "open(f'n{i}', 'w').close()" if kind == "files" else "os.mkdir(f'n{i}')"
    kc.execute(
        "import os, time\n"
        f"for i in range({int(INODES * 0.9)}):\n    {make}\n"
        "time.sleep(3)\n"
        f"for i in range({int(INODES * 0.9)}, {INODES * 2}):\n    {make}\n"
        "time.sleep(60)"
    )
    deadline = time.monotonic() + 60
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not km.is_alive()
    told = _told(kc)
    warned = [i for i, t in enumerate(told) if f"of its {INODES} files and directories" in t]
    stopped = [i for i, t in enumerate(told) if "stopped the kernel" in t and "files" in t]
    assert warned, told  # a warning first ...
    assert stopped, told  # ... then why it stopped
    assert warned[0] < stopped[0]
    assert f"more than {INODES} files and directories" in agent.log()
