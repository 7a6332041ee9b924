"""Provider isolation, attacked from inside real `gpumarket` kernels behind a sandboxed agent.

Each attempt must fail harmlessly: the agent's keys and state dir, another renter's working dir,
signals to the agent or another kernel, the agent's port, a fork bomb, a memory hog, a disk
filler. Afterwards the agent still serves kernels, and the next lease on a slot finds nothing of
the previous one. Needs a working bubblewrap (installed here when missing and we are root).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from jupyter_gpumarket.chain.keystore import create_keystore

from agentproc import AgentProcess, environ, start_agent
from sandboxkit import attempt, ensure_sandbox, healthy, host_pids_of, run_code, skip_unless_root

pytestmark = pytest.mark.slow

MB = 1024 * 1024
LIMITS = {"memory_mb": 1024, "pids": 64, "disk_mb": 50}
WALLET_KEY = "0x" + secrets.token_hex(32)  # the agent's wallet key: in no file but the keystore


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ensure_sandbox()
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


# -- secrets -----------------------------------------------------------------------------------
def test_kernel_cannot_read_the_agents_keys_state_or_environment(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    state = sandboxed.state_dir
    info = run_code(
        kc,
        f"""
import json, os
print(json.dumps({{"uid": os.getuid(), "env": dict(os.environ), "state": sorted(os.listdir({str(state)!r}))}}))
""",  # noqa: E501
    )
    assert "tls-key.pem" not in info["state"]  # the state dir is an empty tmpfs in the sandbox
    assert "GPUMARKET_AGENT_SECRET" not in info["env"]
    assert not any(WALLET_KEY[2:] in v or v == "pw" for v in info["env"].values())
    for path in (state / "tls-key.pem", state / "tls-cert.pem", Path("/proc/1/environ")):
        res = run_code(kc, attempt(f"open({str(path)!r}).read()"))
        assert "ciphertext" not in res
        assert "PRIVATE KEY" not in res
        assert "GPUMARKET_AGENT_SECRET" not in res
    assert (state / "tls-key.pem").stat().st_mode & 0o077 == 0
    skip_unless_root("the kernel runs as a slot user only when the agent runs as root")
    assert info["uid"] not in (0, os.getuid())


def test_agent_keystore_is_hidden(sandboxed: AgentProcess, kernels: list[Any]) -> None:
    kc = _start(kernels)
    home = Path(sandboxed.log_path).parent / "gpmhome"
    res = run_code(kc, attempt(f"open({str(home / 'wallet.json')!r}).read()"))
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
    files, hits = run_code(kc, code, timeout=120)
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
    healthy(kc)


# -- other renters and the agent ---------------------------------------------------------------
def test_kernel_cannot_see_or_signal_another_kernel_or_the_agent(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    victim, attacker = _start(kernels), _start(kernels)
    v = run_code(victim, "import os, json; open('diary.txt','w').write('secret'); "
                     "print(json.dumps([os.getcwd(), os.getuid()]))")  # fmt: skip
    vdir, vuid = v
    a_uid = run_code(attacker, "import os; print(os.getuid())")
    for target in (f"os.listdir({vdir!r})", f"open({vdir + '/diary.txt'!r}).read()"):
        res = run_code(attacker, attempt(target))
        assert res.startswith(("FileNotFoundError", "PermissionError")), res
    host_pids = [*host_pids_of(vuid), sandboxed.proc.pid] if os.geteuid() == 0 else []
    host_pids.append(sandboxed.proc.pid)
    res = run_code(attacker, attempt(f"[os.kill(p, 9) for p in {host_pids!r}]"))
    assert res.startswith(("ProcessLookupError", "PermissionError")), res
    ps = run_code(attacker, "import os, json; print(json.dumps(sorted(int(p) for p in "
                        "os.listdir('/proc') if p.isdigit())))")  # fmt: skip
    assert max(ps) < 100  # its own PID namespace: only the sandbox's processes
    assert sandboxed.proc.poll() is None
    healthy(victim)
    healthy(attacker)
    skip_unless_root("kernels get their own slot users only when the agent runs as root")
    assert a_uid != vuid  # per-slot users


def test_agent_port_and_outside_network_unreachable_with_egress_none(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    port = urlparse(sandboxed.url).port
    res = run_code(kc, attempt(f"__import__('socket').create_connection(('127.0.0.1', {port}), 3)"))
    assert res.startswith("ConnectionRefusedError"), res
    res = run_code(kc, attempt("__import__('socket').create_connection(('1.1.1.1', 443), 3)"))
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
    forked, err = run_code(kc, FORK_BOMB)
    assert err == errno.EAGAIN
    assert forked < LIMITS["pids"]
    healthy(kc)
    healthy(other)


def test_memory_hog_hits_the_limit_and_nothing_else(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    other, kc = _start(kernels), _start(kernels)
    km = kernels[-1][0]
    hog = f"len(b'x' * ({2 * LIMITS['memory_mb']} * 1024 * 1024))"  # touches every page
    msg_id = kc.execute(attempt(hog))
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
        assert run_code(kc, attempt(hog)).startswith("MemoryError")
        healthy(kc)
    else:  # a memory cgroup: the OOM killer takes this kernel, and only it
        assert not km.is_alive()
    healthy(other)
    assert sandboxed.proc.poll() is None


def test_disk_filler_is_stopped_and_only_its_kernel(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    other, kc = _start(kernels), _start(kernels)
    # one file can never pass the quota (RLIMIT_FSIZE) and /tmp is a tmpfs of that size
    # (the capped file goes at once: at the cap, the watchdog would stop this kernel early)
    chunk = f"b'x' * ({LIMITS['disk_mb'] + 10} * 1024 * 1024)"
    res = run_code(kc, attempt(f"open('big', 'wb').write({chunk})").replace(
        "print(json.dumps(res))", "os.remove('big'); print(json.dumps(res))"
    ))  # fmt: skip
    assert res.startswith("OSError [Errno 27]"), res  # EFBIG: file too large
    fill_tmp = "[open(f'/tmp/b{i}', 'wb').write(b'x' * 20 * 1024 * 1024) for i in range(5)]"
    res = run_code(kc, attempt(fill_tmp))
    assert res.startswith("OSError [Errno 28]"), res  # ENOSPC: the private /tmp is full
    run_code(kc, "print(len([__import__('os').remove(f'/tmp/b{i}') for i in range(3)]))")
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
    told = []  # the notebook is told why, not just that the kernel died
    with contextlib.suppress(Exception):  # queue.Empty ends the drain
        while True:
            msg = kc.get_iopub_msg(timeout=1)
            if msg["msg_type"] == "stream":
                told.append(msg["content"]["text"])
    warned = [i for i, t in enumerate(told) if "of its 50 MB disk quota" in t]
    stopped = [i for i, t in enumerate(told) if "stopped the kernel" in t and "disk" in t]
    assert warned, told  # a warning first ...
    assert stopped, told  # ... then why it stopped
    assert warned[0] < stopped[0]
    healthy(other)
    assert sandboxed.proc.poll() is None


# -- after the attacks -------------------------------------------------------------------------
def test_next_lease_on_a_slot_finds_nothing_of_the_previous(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    first = run_code(kc, "import os, json; open('mine.txt','w').write('x'); "
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
    second = run_code(kc, "import os, json; print(json.dumps([os.getcwd(), os.getuid(), "
                      "os.listdir('.'), os.listdir('/tmp')]))")  # fmt: skip
    assert second[1] == first[1]  # same slot (the lowest free one)
    assert second[0] != first[0]
    assert "mine.txt" not in second[2] + second[3]
    res = run_code(kc, attempt(f"os.listdir({first[0]!r})"))
    assert res.startswith("FileNotFoundError"), res


def test_agent_still_serves_and_labels_itself_sandboxed(
    sandboxed: AgentProcess, kernels: list[Any]
) -> None:
    kc = _start(kernels)
    healthy(kc)
    assert sandboxed.proc.poll() is None
    assert "kernel isolation: bubblewrap sandbox" in sandboxed.log()
    info = kernels[-1][0].provisioner._link.agent_info  # the welcome's `agent` dict
    assert info["isolation"] == "sandboxed"
    assert info["egress"] == "none"
    assert info["limits"]["pids"] == LIMITS["pids"]
