"""A renter speaking the agent's tunnel protocol directly, and the swaps a hostile renter's
code makes in its working dir while the agent works there (tests/security's attack kit)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession

from agentproc import AgentProcess

ROUNDS_S = 6.0  # each race runs this long (or its round count), whichever ends first
REPLY_TIMEOUT = 15.0  # only detects a hang


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RawLease:
    """A renter speaking the tunnel protocol directly (no provisioner in between)."""

    def __init__(self, ws: ClientConnection, lease: str, workdir: Path) -> None:
        self.ws = ws
        self.lease = lease
        self.workdir = workdir
        self.me = TunnelSession()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, agent: AgentProcess) -> AsyncIterator[RawLease]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        async with connect(agent.url, ssl=ctx, compression=None, max_size=None) as ws:
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            welcome = control.parse_welcome(await ws.recv())
            workdir = agent.state_dir / "leases" / welcome.lease / "work"
            yield cls(ws, welcome.lease, workdir)

    async def send(self, msg: object, *data: bytes) -> None:
        await self.ws.send(self.me.send(Channel.AGENT, [control.dump(msg), *data]))

    async def reply(self, timeout: float = REPLY_TIMEOUT) -> tuple[Any, list[bytes]]:
        async with asyncio.timeout(timeout):
            while True:
                delivery = self.me.receive(await self.ws.recv())
                if delivery is not None and delivery.channel is Channel.AGENT:
                    head, *data = delivery.parts
                    msg = control.parse_agent_message(head)
                    # a provider notice or a telemetry sample, pushed unasked
                    if not isinstance(msg, (paymsgs.PaymentNotice, control.Telemetry)):
                        return msg, list(data)

    async def ask(self, msg: object, *data: bytes, timeout: float = REPLY_TIMEOUT) -> Any:
        await self.send(msg, *data)
        return (await self.reply(timeout))[0]

    async def fetch(self, blob: str) -> bytes | control.Refused:
        await self.send(control.FetchBlob(sha256=blob))
        out = b""
        while True:
            msg, data = await self.reply()
            if isinstance(msg, control.Refused):
                return msg
            assert isinstance(msg, control.BlobChunk)
            out += data[0]
            if msg.last:
                return out

    async def pull_manifest(self) -> dict[str, list[Any]]:
        reply = await self.ask(control.PullRequest())
        assert isinstance(reply, control.PullManifest), reply
        return reply.manifest["files"]

    async def sync(self, files: dict[str, tuple[bytes, int]]) -> Any:
        """Offer ``files`` (path -> (bytes, mtime_ns)), upload what is missing, commit."""
        manifest = {p: [len(d), sha(d), mt] for p, (d, mt) in files.items()}
        need = await self.ask(control.SyncOffer(manifest={"files": manifest}))
        if isinstance(need, control.Refused):
            return need
        by_sha = {sha(d): d for d, _ in files.values()}
        for blob in need.missing:
            await self.send(control.BlobChunk(sha256=blob, last=True), by_sha[blob])
        return await self.ask(control.SyncCommit())


@contextlib.contextmanager
def racing(flip: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``flip`` in a loop on a thread until the block ends; yields [flips done]."""
    stop = threading.Event()
    count = [0]

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                flip()
            count[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join(10)


# A renter's fastest swap: renameat2(RENAME_EXCHANGE) trades two names atomically, so the
# name is always there, a directory one instant and a symlink the next.
_EXCHANGER = """
import ctypes, sys
renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
while True:
    for a, b in pairs:
        renameat2(-100, a, -100, b, 2)
"""


@contextlib.contextmanager
def exchanging(*pairs: tuple[Path, Path]) -> Iterator[None]:
    """A separate process swapping each pair of names as fast as it can."""
    args = [str(p) for pair in pairs for p in pair]
    racer = subprocess.Popen([sys.executable, "-c", _EXCHANGER, *args])
    try:
        yield
    finally:
        racer.kill()
        racer.wait()


def swap_in(path: Path, make: Callable[[Path], None]) -> None:
    """Atomically replace ``path`` with what ``make`` creates at a temp name."""
    tmp = path.with_name(path.name + ".swap")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    make(tmp)
    os.replace(tmp, path)


def flip_dir(path: Path, outside: Path) -> None:
    """``path``: a directory one moment, a symlink to ``outside`` the next, and back."""
    real = path.with_name(path.name + ".real")
    with contextlib.suppress(OSError):
        os.rename(path, real)
    swap_in(path, lambda tmp: tmp.symlink_to(outside))
    time.sleep(0)
    os.unlink(path)
    os.rename(real, path)


_KERNEL_SWAPPER = """
import os, subprocess, sys
{setup}
code = 'import time; deadline = time.time() + {seconds}\\n' + {exchanger!r}.replace(
    'while True:', 'while time.time() < deadline:')
subprocess.Popen([sys.executable, '-c', code, *{args!r}])
"""


async def kernel_swapping(lease: RawLease, setup: str, *pairs: tuple[str, str]) -> None:
    """Start the lease's real kernel and have it run the swapper on ``pairs`` (names in its
    working dir) after ``setup`` (Python run in the kernel), as a hostile renter would."""
    from jupyter_client.session import Session

    key = os.urandom(16).hex()
    started = await lease.ask(control.StartKernel(key=key), timeout=60)
    assert isinstance(started, control.KernelStarted), started
    args = [name for pair in pairs for name in pair]
    code = _KERNEL_SWAPPER.format(
        setup=setup, seconds=ROUNDS_S + 20, exchanger=_EXCHANGER, args=args
    )
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}}
    request = Session(key=key.encode()).msg("execute_request", content)
    await lease.ws.send(lease.me.send(Channel.SHELL, Session(key=key.encode()).serialize(request)))
    deadline = time.monotonic() + 30
    first = lease.workdir / pairs[0][0]
    while not first.is_symlink():  # the first swap happened: the swapper runs
        assert time.monotonic() < deadline, "the kernel did not start the swapper"
        await asyncio.sleep(0.02)
