"""A renter's environment and namespaces against the sandbox launcher, attacked for real.

The renter syncs payloads into its working dir (a shared library, a ``sitecustomize``, startup
scripts, executables named like the launcher's tools), reads the dir's host path from inside its
kernel, and restarts the kernel with ``LD_PRELOAD``, ``LD_LIBRARY_PATH``, ``PYTHONPATH``,
``PYTHONSTARTUP``, ``BASH_ENV``, ``ENV`` and ``PATH`` pointing at them. Every payload appends a
line to a marker file on the host that the sandbox cannot see: a line there is renter code that
ran outside the sandbox (as root, with a root agent). The variables must still reach the kernel
itself, inside the sandbox. Then: a root-mode kernel must not be able to create a user namespace.
Needs bubblewrap (installed here when missing and we are root) and a C compiler for the library.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from jupyter_gpumarket.exceptions import GpuMarketError

from agentproc import AgentProcess, environ, start_agent
from sandboxkit import attempt, descendants, ensure_sandbox, healthy, run_code

pytestmark = pytest.mark.slow

EVIL_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void gpm_evil(void) {
    char exe[256] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    int fd = open(MARKER, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        dprintf(fd, "LD_PRELOAD uid=%d exe=%s\n", (int)getuid(), exe);
        close(fd);
    }
}
"""
# The tools a launcher might look up on PATH: each records that it ran, then hands over.
TOOLS = ("bwrap", "setpriv", "env", "sh", "bash", "python", "python3", "unshare", "nsenter")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ensure_sandbox()
    tmp = tmp_path_factory.mktemp("escape")
    agent = start_agent(tmp, "--sandbox", "on", "--egress", "none", "--max-kernels", "2")
    try:
        with environ(agent.env()):
            yield agent
    finally:
        agent.stop()


def _payloads(notebook: Path, marker: Path) -> None:
    """Write the renter's payloads into the notebook dir (file sync carries them over)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build the LD_PRELOAD library")
    src = notebook.parent / "evil.c"
    src.write_text(EVIL_C)
    subprocess.run(
        [cc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(notebook / "evil.so"), str(src)],
        check=True,
    )

    def record(what: str) -> str:  # Python that notes it ran; silent where it cannot write
        return (
            f"import os\ntry:\n    with open({str(marker)!r}, 'a') as f:\n"
            f"        f.write('{what} uid=%d\\n' % os.getuid())\nexcept OSError:\n    pass\n"
        )

    (notebook / "py").mkdir()
    (notebook / "py" / "sitecustomize.py").write_text(record("PYTHONPATH"))
    (notebook / "startup.py").write_text(record("PYTHONSTARTUP"))
    (notebook / "env.sh").write_text(f'echo "BASH_ENV/ENV uid=$(id -u)" >> {marker} 2>/dev/null\n')
    bin_dir = notebook / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).write_text(
            f'#!/bin/sh\necho "PATH:{tool} uid=$(id -u)" >> {marker} 2>/dev/null\n'
            f'PATH=/usr/local/bin:/usr/bin:/bin exec {tool} "$@"\n'
        )
    (notebook / "lib").mkdir()
    shutil.copy(notebook / "evil.so", notebook / "lib" / "libcap-ng.so.0")


def _launchers(agent: AgentProcess) -> list[int]:
    """The agent's descendants that run outside the kernel: bwrap (and its init)."""
    found = []
    for pid in descendants(agent.proc.pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe) in ("bwrap", "setpriv"):
            found.append(pid)
    return found


def _renter_part(pid: int, renter: dict[str, str]) -> dict[str, str]:
    """What of process ``pid``'s environment the renter chose (a name, or a value in it)."""
    data = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(item.decode().split("=", 1) for item in data.split(b"\0") if item)
    work = os.path.dirname(renter["LD_PRELOAD"])
    return {
        k: v
        for k, v in env.items()
        if (k in renter and k != "PATH") or v == renter.get(k) or work in v
    }


def _restart_with(km: KernelManager, env: dict[str, str]) -> BlockingKernelClient:
    assert km.kernel_spec is not None
    km.kernel_spec.env = {**(km.kernel_spec.env or {}), **env}  # forwarded to the provider
    km.restart_kernel(now=True)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return kc


def test_renter_environment_reaches_the_kernel_but_never_the_launcher(
    agent: AgentProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"  # under the host's /tmp: the sandbox has its own /tmp
    outside.mkdir()
    outside.chmod(0o777)  # a launcher of any uid could record its run here
    marker = outside / "ran-outside-the-sandbox.log"
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    _payloads(notebook, marker)
    km = KernelManager(kernel_name="gpumarket")
    km.start_kernel(cwd=str(notebook))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        work = run_code(
            kc,
            "import os, json; [os.chmod('bin/' + t, 0o755) for t in os.listdir('bin')]; "
            "print(json.dumps(os.getcwd()))",
        )
        assert (Path(work) / "evil.so").exists()  # the same path on the host
        kc.stop_channels()
        env = {
            "LD_PRELOAD": f"{work}/evil.so",
            "LD_LIBRARY_PATH": f"{work}/lib",
            "PYTHONPATH": f"{work}/py",
            "PYTHONSTARTUP": f"{work}/startup.py",
            "BASH_ENV": f"{work}/env.sh",
            "ENV": f"{work}/env.sh",
            "PATH": f"{work}/bin:/usr/local/bin:/usr/bin:/bin",
            "MY_SETTING": "1",
        }
        try:
            kc = _restart_with(km, env)
        finally:  # even when the launch failed: did renter code run outside?
            ran = marker.read_text() if marker.exists() else ""
            assert ran == "", f"renter code ran outside the sandbox:\n{ran}"
        launchers = _launchers(agent)
        assert launchers, "no bwrap process found under the agent"
        # only the agent's own PATH may be there (a fixed one: not the renter's value)
        leaked = {pid: _renter_part(pid, env) for pid in launchers}
        # nor in their argv (world-readable in /proc: a renter's values may be its tokens)
        argv = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in launchers}
        for args in argv.values():
            assert not [a for a in args if b"evil.so" in a or b"MY_SETTING" in a], args
        seen = run_code(
            kc,
            "import os, json, sys; print(json.dumps([{k: os.environ.get(k) for k in "
            f"{list(env)!r}}}, open('/proc/self/maps').read().count('evil.so') > 0, sys.path]))",
        )
        kernel_env, preloaded, sys_path = seen
        assert not marker.exists(), marker.read_text()
        assert all(not part for part in leaked.values()), leaked
        # the kernel, inside the sandbox, still gets what the renter asked for
        assert kernel_env == env
        assert preloaded  # the loader did use the renter's library, in the kernel
        assert f"{work}/py" in sys_path
        healthy(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_root_mode_kernel_cannot_create_user_namespaces(agent: AgentProcess) -> None:
    km = KernelManager(kernel_name="gpumarket")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = (
            "__import__('subprocess').run(['unshare', '-U', 'true'], capture_output=1).returncode"
        )
        res = run_code(kc, attempt(code))
        assert res.startswith("OK"), res
        assert res != "OK 0", "unshare -U worked inside a root-mode kernel"
        libc = "__import__('ctypes').CDLL(None, use_errno=True)"
        res = run_code(
            kc, attempt(f"({libc}.unshare(0x10000000), __import__('ctypes').get_errno())")
        )
        assert res in ("OK (-1, 1)", "OK (-1, 28)"), res  # EPERM (seccomp) or ENOSPC (limit 0)
        # threads (clone without CLONE_NEWUSER) still work
        res = run_code(
            kc,
            attempt(
                "__import__('concurrent.futures').futures.ThreadPoolExecutor(4)"
                ".submit(lambda: 7).result()"
            ),
        )
        assert res == "OK 7", res
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_restart_creates_nothing_through_the_renters_symlinks(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """The kernel's HOME lies in its working dir: the renter may have made that a symlink."""
    target = tmp_path / "root-only"  # outside the sandbox, writable by root alone
    target.mkdir(mode=0o755)
    km = KernelManager(kernel_name="gpumarket")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        swap = (
            f"import os; os.rename('.gpumarket', 'old'); os.symlink({str(target)!r}, '.gpumarket')"
        )
        reply = kc.execute_interactive(swap, timeout=30)  # (IPython's history may complain)
        assert reply["content"]["status"] == "ok"
        kc.stop_channels()
        kc = _restart_with(km, {})
        assert list(target.iterdir()) == []  # nothing made there (by root, as the agent)
        reply = kc.execute_interactive("6 * 7", timeout=30)  # the kernel still runs
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


TAMPER = """
import json, os
hit = []
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        if os.fstat(fd).st_ino == {ino}:
            os.ftruncate(fd, 0)
            hit.append(fd)
    except OSError:
        pass
print(json.dumps(hit))
"""


def test_kernel_output_cannot_truncate_or_forge_the_agents_log(agent: AgentProcess) -> None:
    """The kernel's stdout/stderr are not the agent's own log file (an open fd outside)."""
    before = agent.log()
    assert "kernel isolation:" in before
    km = KernelManager(kernel_name="gpumarket")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        hit = run_code(kc, TAMPER.format(ino=agent.log_path.stat().st_ino))
        assert hit == [], "the kernel holds a writable fd of the agent's log"
        forge = "printf 'FORGED agent line\\n'; printf 'FORGED on stderr\\n' >&2"
        kc.execute_interactive(f"import os; os.system({forge!r})", timeout=30)
        healthy(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    after = agent.log()
    assert after.startswith(before)  # nothing truncated
    assert not [ln for ln in after.splitlines() if ln.startswith("FORGED")], after[-2000:]


SWAP_SOCKET = """
import json, os, threading, time
def _swap():  # as soon as the kernel binds iopub, put a symlink to the bait in its place
    args = open("/proc/self/cmdline", "rb").read().split(b"\\0")
    if b"ipykernel_launcher" not in args:
        return
    with open(args[args.index(b"-f") + 1]) as f:
        target = json.load(f)["ip"] + "-2"
    deadline = time.monotonic() + 30
    while not os.path.exists(target) and time.monotonic() < deadline:
        time.sleep(0.0001)
    try:
        os.rename(target, target + ".real")
        os.symlink(BAIT, target)
    except OSError:
        pass
threading.Thread(target=_swap, daemon=True).start()
"""


def test_agent_never_follows_the_kernels_symlinks_to_other_sockets(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """The agent (root) connects to the kernel's ipc sockets by path, in a dir the kernel
    writes: a symlink there must not make it connect to a socket of the host's."""
    bait_path = tmp_path / "host-service.sock"  # a host socket the sandbox cannot see
    bait = socket.socket(socket.AF_UNIX)
    bait.bind(str(bait_path))
    bait.listen(4)
    bait.settimeout(3)
    notebook = tmp_path / "notebook"
    (notebook / "py").mkdir(parents=True)
    code = SWAP_SOCKET.replace("BAIT", repr(str(bait_path)))
    (notebook / "py" / "sitecustomize.py").write_text(code)
    km = KernelManager(kernel_name="gpumarket")
    km.start_kernel(cwd=str(notebook))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        work = run_code(kc, "import os, json; print(json.dumps(os.getcwd()))")
        kc.stop_channels()
        assert km.kernel_spec is not None
        km.kernel_spec.env = {"PYTHONPATH": f"{work}/py"}
        with contextlib.suppress(GpuMarketError):  # refusing to start is fine too
            km.restart_kernel(now=True)
        try:
            conn, _ = bait.accept()
        except TimeoutError:
            conn = None
        assert conn is None, "the agent connected to a host socket through the kernel's symlink"
    finally:
        bait.close()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
