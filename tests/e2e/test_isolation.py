"""Provider isolation, attacked from inside real `gpumarket` kernels behind a sandboxed agent.

Each attempt must fail harmlessly: the agent's keys and state dir, another renter's working dir,
signals to the agent or another kernel, the agent's port, a fork bomb, a memory hog, a disk
filler. Afterwards the agent still serves kernels, and the next lease on a slot finds nothing of
the previous one. Needs a working bubblewrap (installed here when missing and we are root).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import test_conformance as conformance
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from jupyter_gpumarket.agent.sandbox import sandbox_available
from jupyter_gpumarket.chain.keystore import create_keystore

from agentproc import AgentProcess, environ, running_agent, start_agent

pytestmark = pytest.mark.slow

MB = 1024 * 1024
LIMITS = {"memory_mb": 1024, "pids": 64, "disk_mb": 50}
WALLET_KEY = "0x" + secrets.token_hex(32)  # the agent's wallet key: in no file but the keystore


def _ensure_sandbox() -> None:
    """Install bubblewrap (root, Debian) and the slot users, or skip with the reason."""
    missing = shutil.which("bwrap") is None or shutil.which("nft") is None
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq bubblewrap nftables",
            shell=True,
            capture_output=True,
            timeout=300,
        )
    ok, reason = sandbox_available()
    if not ok:
        pytest.skip(f"no kernel sandbox on this machine: {reason}")
    if os.geteuid() == 0:
        subprocess.run(
            [sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "setup", "--slots", "2"],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    _ensure_sandbox()
    tmp = tmp_path_factory.mktemp("iso")
    home = tmp / "gpmhome"
    home.mkdir(mode=0o700)
    create_keystore("pw", private_key=WALLET_KEY, path=home / "wallet.json")  # the real writer
    with environ({"GPUMARKET_HOME": str(home)}):
        agent = start_agent(
            tmp,
            *("--sandbox", "on", "--egress", "none", "--max-kernels", "2"),
            *("--kernel-memory-mb", str(LIMITS["memory_mb"])),
            *("--kernel-pids", str(LIMITS["pids"]), "--kernel-disk-mb", str(LIMITS["disk_mb"])),
        )
    try:
        with environ(agent.env()):
            yield agent
    finally:
        agent.stop()


@pytest.fixture
def kernels(sandboxed: AgentProcess) -> Iterator[list[tuple[KernelManager, BlockingKernelClient]]]:
    started: list[tuple[KernelManager, BlockingKernelClient]] = []
    yield started
    for km, kc in started:
        kc.stop_channels()
        try:
            km.shutdown_kernel(now=True)
        except Exception:  # the kernel may already be gone (disk test)
            km.cleanup_resources()


def _start(kernels: list[Any]) -> BlockingKernelClient:
    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    kernels.append((km, kc))
    return kc


def _run(kc: BlockingKernelClient, code: str, timeout: float = 60) -> Any:
    """Execute ``code``; it prints one JSON value as its last line, which is returned."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    return json.loads(text.strip().splitlines()[-1])


def _attempt(target: str) -> str:
    """Kernel code that tries ``target`` (an expression) and reports what happened."""
    return f"""
import json, os
try:
    r = {target}
    res = "OK " + repr(r)[:200]
except BaseException as e:
    res = type(e).__name__ + " " + str(e)[:200]
print(json.dumps(res))
"""


def _host_pids_of(uid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()
            if int(uids[1]) == uid:
                pids.append(int(p.name))
    return pids


def _descendants(pid: int) -> set[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [pid]
    while todo:
        cur = todo.pop()
        kids = [p for p, pp in parent.items() if pp == cur and p not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def _healthy(kc: BlockingKernelClient) -> None:
    assert _run(kc, "print(6 * 7)") == 42


# -- secrets -----------------------------------------------------------------------------------
def test_kernel_cannot_read_the_agents_keys_state_or_environment(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    state = sandboxed.state_dir
    info = _run(
        kc,
        f"""
import json, os
print(json.dumps({{"uid": os.getuid(), "env": dict(os.environ), "state": sorted(os.listdir({str(state)!r}))}}))
""",  # noqa: E501
    )
    assert info["uid"] not in (0, os.getuid()) or os.geteuid() != 0
    assert "tls-key.pem" not in info["state"]  # the state dir is an empty tmpfs in the sandbox
    assert "GPUMARKET_AGENT_SECRET" not in info["env"]
    assert not any(WALLET_KEY[2:] in v or v == "pw" for v in info["env"].values())
    for path in (state / "tls-key.pem", state / "tls-cert.pem", Path("/proc/1/environ")):
        res = _run(kc, _attempt(f"open({str(path)!r}).read()"))
        assert "ciphertext" not in res
        assert "PRIVATE KEY" not in res
        assert "GPUMARKET_AGENT_SECRET" not in res
    assert (state / "tls-key.pem").stat().st_mode & 0o077 == 0


def test_agent_keystore_is_hidden(sandboxed: AgentProcess, kernels: list[Any]) -> None:
    kc = _start(kernels)
    home = Path(sandboxed.log_path).parent / "gpmhome"
    res = _run(kc, _attempt(f"open({str(home / 'wallet.json')!r}).read()"))
    assert res.startswith("FileNotFoundError"), res
    st = (home / "wallet.json").stat()
    assert st.st_mode & 0o077 == 0  # 0600
    assert st.st_uid == os.getuid()  # the agent's user, not a kernel's


SCAN = """
import json, os
markers = {markers!r}
hits, files = [], 0
skip = {{".venv", "node_modules", ".git", "site-packages", "__pycache__"}}
own = os.getcwd()  # its IPython history holds this very code, markers included
for root in ["/etc", "/var", "/opt", "/srv", "/mnt", "/tmp", "/root", "/home", "/run", "/work",
             {state!r}]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and os.path.join(dirpath, d) != own]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 1 << 20:
                    continue
                data = open(path, "rb").read()
            except OSError:
                continue
            files += 1
            hits += [path for m in markers if m.encode() in data]
print(json.dumps([files, hits]))
"""


def test_no_agent_secret_in_any_file_the_kernel_can_read(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    key_body = (sandboxed.state_dir / "tls-key.pem").read_text().splitlines()[1]
    wallet = json.loads((sandboxed.log_path.parent / "gpmhome" / "wallet.json").read_text())
    markers = [wallet["crypto"]["ciphertext"], sandboxed.token, key_body]
    code = SCAN.format(markers=markers, state=str(sandboxed.state_dir))
    files, hits = _run(kc, code, timeout=120)
    assert files > 100  # it did read the system's files
    assert hits == [], hits


def test_signal_mode_interrupt_reaches_the_sandboxed_kernel(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    km = kernels[-1][0]
    assert km.kernel_spec.interrupt_mode == "signal"
    msg_id = kc.execute("import time; time.sleep(60)")
    time.sleep(0.5)
    t0 = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 2
    _healthy(kc)


# -- other renters and the agent ---------------------------------------------------------------
def test_kernel_cannot_see_or_signal_another_kernel_or_the_agent(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    victim, attacker = _start(kernels), _start(kernels)
    v = _run(victim, "import os, json; open('diary.txt','w').write('secret'); "
                     "print(json.dumps([os.getcwd(), os.getuid()]))")  # fmt: skip
    vdir, vuid = v
    a_uid = _run(attacker, "import os; print(os.getuid())")
    if os.geteuid() == 0:
        assert a_uid != vuid  # per-slot users
    for target in (f"os.listdir({vdir!r})", f"open({vdir + '/diary.txt'!r}).read()"):
        res = _run(attacker, _attempt(target))
        assert res.startswith(("FileNotFoundError", "PermissionError")), res
    host_pids = [*_host_pids_of(vuid), sandboxed.proc.pid] if os.geteuid() == 0 else []
    host_pids.append(sandboxed.proc.pid)
    res = _run(attacker, _attempt(f"[os.kill(p, 9) for p in {host_pids!r}]"))
    assert res.startswith(("ProcessLookupError", "PermissionError")), res
    ps = _run(attacker, "import os, json; print(json.dumps(sorted(int(p) for p in "
                        "os.listdir('/proc') if p.isdigit())))")  # fmt: skip
    assert max(ps) < 100  # its own PID namespace: only the sandbox's processes
    assert sandboxed.proc.poll() is None
    _healthy(victim)
    _healthy(attacker)


def test_agent_port_and_outside_network_unreachable_with_egress_none(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    port = urlparse(sandboxed.url).port
    res = _run(kc, _attempt(f"__import__('socket').create_connection(('127.0.0.1', {port}), 3)"))
    assert res.startswith("ConnectionRefusedError"), res
    res = _run(kc, _attempt("__import__('socket').create_connection(('1.1.1.1', 443), 3)"))
    assert res.startswith("OSError [Errno 101]"), res  # ENETUNREACH


# -- resource exhaustion -----------------------------------------------------------------------
FORK_BOMB = """
import errno, json, os, time
pids, err = [], None
for _ in range(1000):  # bounded: if the limit failed the test still ends
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    pids.append(pid)
for p in pids:
    os.kill(p, 9)
for p in pids:
    os.waitpid(p, 0)
print(json.dumps([len(pids), err]))
"""


def test_fork_bomb_is_bounded_by_the_pids_limit(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    other, kc = _start(kernels), _start(kernels)
    forked, err = _run(kc, FORK_BOMB)
    assert err == errno.EAGAIN
    assert forked < LIMITS["pids"]
    _healthy(kc)
    _healthy(other)


def test_memory_hog_hits_the_limit_and_nothing_else(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    other, kc = _start(kernels), _start(kernels)
    km = kernels[-1][0]
    hog = f"len(b'x' * ({2 * LIMITS['memory_mb']} * 1024 * 1024))"  # touches every page
    msg_id = kc.execute(_attempt(hog))
    reply = None
    deadline = time.monotonic() + 60
    while reply is None and km.is_alive() and time.monotonic() < deadline:
        try:
            reply = kc.get_shell_msg(timeout=0.5)
        except Exception:  # queue.Empty
            continue
    if reply is not None:  # RLIMIT_AS: the allocation fails inside the kernel
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "ok"
        assert _run(kc, _attempt(hog)).startswith("MemoryError")
        _healthy(kc)
    else:  # a memory cgroup: the OOM killer takes this kernel, and only it
        assert not km.is_alive()
    _healthy(other)
    assert sandboxed.proc.poll() is None


def test_disk_filler_is_stopped_and_only_its_kernel(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    other, kc = _start(kernels), _start(kernels)
    # one file can never pass the quota (RLIMIT_FSIZE) and /tmp is a tmpfs of that size
    chunk = f"b'x' * ({LIMITS['disk_mb'] + 10} * 1024 * 1024)"
    res = _run(kc, _attempt(f"open('big', 'wb').write({chunk})"))
    assert res.startswith("OSError [Errno 27]"), res  # EFBIG: file too large
    fill_tmp = "[open(f'/tmp/b{i}', 'wb').write(b'x' * 20 * 1024 * 1024) for i in range(5)]"
    res = _run(kc, _attempt(fill_tmp))
    assert res.startswith("OSError [Errno 28]"), res  # ENOSPC: the private /tmp is full
    _run(kc, "import os; os.remove('big'); print(len([os.remove(f'/tmp/b{i}') for i in range(3)]))")
    # many files under the cap each: the agent's watchdog stops the kernel
    km = kernels[-1][0]
    kc.execute(
        "import time\nfor i in range(20):\n"
        "    open(f'f{i}', 'wb').write(b'y' * 10 * 1024 * 1024); time.sleep(0.2)\n"
        "time.sleep(60)"
    )
    deadline = time.monotonic() + 30
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not km.is_alive()
    assert "over its disk quota" in sandboxed.log()
    _healthy(other)
    assert sandboxed.proc.poll() is None


# -- after the attacks -------------------------------------------------------------------------
def test_next_lease_on_a_slot_finds_nothing_of_the_previous(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    first = _run(kc, "import os, json; open('mine.txt','w').write('x'); "
                     "open('/tmp/mine.txt','w').write('x'); "
                     "print(json.dumps([os.getcwd(), os.getuid()]))")  # fmt: skip
    km, kc = kernels.pop()
    kc.stop_channels()
    km.shutdown_kernel()
    deadline = time.monotonic() + 10
    while Path(first[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(first[0]).exists()  # wiped on the host
    kc = _start(kernels)
    second = _run(kc, "import os, json; print(json.dumps([os.getcwd(), os.getuid(), "
                      "os.listdir('.'), os.listdir('/tmp')]))")  # fmt: skip
    assert second[1] == first[1]  # same slot (the lowest free one)
    assert second[0] != first[0]
    assert "mine.txt" not in second[2] + second[3]
    res = _run(kc, _attempt(f"os.listdir({first[0]!r})"))
    assert res.startswith("FileNotFoundError"), res


def test_agent_still_serves_and_labels_itself_sandboxed(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    _healthy(kc)
    assert sandboxed.proc.poll() is None
    assert "kernel isolation: bubblewrap sandbox" in sandboxed.log()
    info = kernels[-1][0].provisioner._link.agent_info  # the welcome's `agent` dict
    assert info["isolation"] == "sandboxed"
    assert info["egress"] == "none"
    assert info["limits"]["pids"] == LIMITS["pids"]


def test_egress_full_reaches_the_network_but_not_the_agent(tmp_path: Path) -> None:
    _ensure_sandbox()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("the agent's port guard needs root and nftables")
    listener = socket.create_server(("127.0.0.1", 0))  # some other local service
    other = listener.getsockname()[1]
    with running_agent(tmp_path, "--sandbox", "on", "--max-kernels", "2") as agent:
        port = urlparse(agent.url).port
        with environ(agent.env()):
            km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
        try:
            connect = "__import__('socket').create_connection(('127.0.0.1', {}), 3)"
            res = _run(kc, _attempt(connect.format(other)))
            assert res.startswith("OK"), res  # egress full: the host's network
            res = _run(kc, _attempt(connect.format(port)))
            assert res.startswith("ConnectionRefusedError"), res
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            listener.close()
    assert "cannot connect to the agent's port" in agent.log()
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"gpumarket_agent_{port}" not in listed  # removed when the agent stopped


def test_unsandboxed_agent_says_so_and_refuses_to_publish(tmp_path: Path) -> None:
    with running_agent(tmp_path / "dev", "--sandbox", "off") as agent, environ(agent.env()):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
        try:
            info = km.provisioner._link.agent_info
            assert info["isolation"] == "unsandboxed"
            assert "--sandbox off" in info["isolation_detail"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    cli = [sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve", "--sandbox", "off"]
    cli += ["--state-dir", str(tmp_path / "pub")]
    res = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "refusing to publish an offer without a kernel sandbox" in res.stderr
    res = subprocess.run([*cli, "--unsafe-no-sandbox"], capture_output=True, text=True, timeout=60)
    assert "refusing to publish" not in res.stderr  # past the sandbox check (then needs a chain)


def test_sandboxed_kernels_die_with_a_killed_agent(tmp_path: Path) -> None:
    """A grandchild that left the kernel's process group still dies: the PID namespace goes."""
    _ensure_sandbox()
    agent = start_agent(tmp_path, "--sandbox", "on", "--max-kernels", "2")
    with environ(agent.env()):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
        uid = _run(kc, "import os, subprocess; subprocess.Popen(['setsid', 'sleep', '300']); "
                       "print(os.getuid())")  # fmt: skip
    kc.stop_channels()
    # the kernel, its setsid'ed sleep and bwrap's init, by host pid (other agents may share uids)
    pids = _descendants(agent.proc.pid)
    assert len([p for p in pids if p in _host_pids_of(uid)]) >= 2 or os.geteuid() != 0
    agent.stop(signal.SIGKILL)
    km.cleanup_resources()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == []


# -- the sandboxed kernel is still a complete Jupyter kernel -----------------------------------
@pytest.fixture(scope="class")
def _remote_kernel(request: pytest.FixtureRequest, sandboxed: AgentProcess) -> Iterator[None]:
    """The conformance class's kernel, from the sandboxed agent (same name as its fixture)."""
    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    request.cls.km, request.cls.kc = km, kc
    yield
    kc.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()


class TestSandboxedConformance(conformance.TestGpuMarketKernel):
    """jupyter_kernel_test's suite against a sandboxed kernel (egress none, limits on)."""
