"""Attacks on the agent's file I/O in a renter's working dir, against a real agent process.

The renter's kernel keeps running while the agent lays out synced files and serves pulls, so it
can swap names in its working dir at any moment: a directory for a symlink (root writes outside
the dir), a file for a symlink to the agent's secrets (the agent reads them back to the renter),
a file for a FIFO or device (the fetch blocks the lease and the agent's shutdown). The attacker
here is a thread of the test (root, like the agent) flipping names in the lease's working dir
while a raw tunnel client drives sync_offer / blob_chunk / sync_commit / pull_request /
fetch_blob. Uploads are also checked against the disk quota and the blob store's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession

from agentproc import AgentProcess, running_agent, start_agent

pytestmark = pytest.mark.slow

QUOTA_MB = 1  # the module agent's --kernel-disk-mb: its blob store keeps 4 quotas
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
                    if not isinstance(msg, paymsgs.PaymentNotice):  # a provider notice
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


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("raceagent")
    with running_agent(tmp, "--max-kernels", "8", "--kernel-disk-mb", str(QUOTA_MB)) as proc:
        yield proc


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


# --- item 3: the agent reads anything it can read ------------------------------------------


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


async def test_hard_links_and_fifos_and_devices_are_never_served(
    agent: AgentProcess, secrets_outside: dict[Path, bytes]
) -> None:
    secret = next(iter(secrets_outside))
    async with RawLease.open(agent) as lease:
        work = lease.workdir
        os.link(secret, work / "hard.txt")  # a name linked in from outside (as root)
        files = await lease.pull_manifest()
        assert "hard.txt" not in files
        assert sha(secret.read_bytes()) not in {e[1] for e in files.values()}

        kinds: dict[str, Callable[[Path], None]] = {
            "fifo.txt": lambda p: os.mkfifo(p),
            "zero.txt": lambda p: p.symlink_to("/dev/zero"),
            "null.txt": lambda p: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3)),
        }
        if os.geteuid() != 0:
            kinds.pop("null.txt")
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


# --- item 2: root writes anywhere ----------------------------------------------------------


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


# --- item 11: uploads and the disk quota --------------------------------------------------


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
