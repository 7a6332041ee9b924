"""Kernel backend: one ipykernel subprocess per lease generation.

Each kernel gets its own process group (so signals and the final kill reach every child), its
own working dir, an environment built from an allow-list plus what the renter asked for, and
ZMQ ``ipc`` sockets in a private runtime dir (no TCP ports on the provider, nothing to race for).
With a :class:`~jupyter_gpumarket.agent.sandbox.SandboxPolicy` the kernel runs inside bubblewrap
(as its slot's uid when the agent is root), the runtime dir bound in at the same path; limits
come from :mod:`jupyter_gpumarket.agent.limits` (cgroup v2 when possible, rlimits otherwise).
Nothing of the renter's reaches a process outside the sandbox: the launcher runs with a fixed
environment from ``/`` (:mod:`~jupyter_gpumarket.agent.kernel_env`), the kernel's own environment
is applied inside; its stdout/stderr are a pipe the agent logs from
(:mod:`~jupyter_gpumarket.agent.kernel_output`), never the agent's log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from jupyter_gpumarket.agent.disk_quota import quota_stop_reason, quota_warnings
from jupyter_gpumarket.agent.kernel_env import (
    AGENT_ENV_ALLOW,
    LAUNCHER_ENV,
    RENTER_ENV_DENY,
    build_kernel_env,
    shim_argv,
    write_env_file,
)
from jupyter_gpumarket.agent.kernel_output import OutputPipe
from jupyter_gpumarket.agent.limits import (
    WALK_MAX_ENTRIES,
    KernelCgroup,
    KernelLimits,
    cgroup_parent,
    cpu_set,
    dir_usage,
    rlimit_plan,
)
from jupyter_gpumarket.agent.sandbox import (
    SandboxMounts,
    SandboxPolicy,
    build_bwrap_argv,
    gpu_device_nodes,
    lock_runtime,
)
from jupyter_gpumarket.agent.seccomp import userns_filter_fd
from jupyter_gpumarket.agent.slots import KernelSlot
from jupyter_gpumarket.core.kernel_args import check_kernel_args
from jupyter_gpumarket.exceptions import KernelLaunchError
from jupyter_gpumarket.telemetry_view import TELEMETRY_FILE_ENV

__all__ = [
    "AGENT_ENV_ALLOW",
    "CHANNEL_PORTS",
    "RENTER_ENV_DENY",
    "KernelProcess",
    "KernelSettings",
    "build_kernel_env",
]

log = logging.getLogger(__name__)

# ipc "ports": the endpoint of channel c is ipc://<runtime>/k-<port>
CHANNEL_PORTS = {"shell": 1, "iopub": 2, "stdin": 3, "control": 4, "hb": 5}

_PR_SET_PDEATHSIG = 1
# CUDA reserves address space for the GPU's memory: an H200 kernel failed at 8 GiB, ran at 32.
_CUDA_MIN_AS = 32 << 30


@dataclass(frozen=True)
class KernelSettings:
    """Provider-side limits and options for every kernel this agent starts."""

    python: str = sys.executable
    memory_limit_bytes: int | None = None  # kept for callers; limits.memory_bytes wins
    extra_env_allow: tuple[str, ...] = ()
    start_timeout: float = 60.0
    stop_timeout: float = 5.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    sandbox: SandboxPolicy | None = None
    limits: KernelLimits = field(default_factory=KernelLimits)
    disk_check_interval: float = 1.0

    @property
    def effective_limits(self) -> KernelLimits:
        if self.limits.memory_bytes is None and self.memory_limit_bytes is not None:
            return replace(self.limits, memory_bytes=self.memory_limit_bytes)
        return self.limits


def _child_setup(
    rlimits: list[tuple[int, int]], cgroup: KernelCgroup | None, cpus: set[int] | None
) -> None:  # pragma: no cover - runs in the child
    import resource

    if cgroup is not None:
        cgroup.join()
    # The kernel dies with the agent even if the agent is SIGKILLed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    for res, value in rlimits:
        resource.setrlimit(res, (value, value))
    if cpus:
        os.sched_setaffinity(0, cpus)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        pass
    kids = []  # no CONFIG_PROC_CHILDREN: find them by their parent pid
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    from jupyter_gpumarket.safefs import chown_tree  # never through a link swapped in

    chown_tree(root, uid, gid)


class KernelProcess:
    """One running ipykernel. ``start()`` returns once its sockets are bound."""

    def __init__(
        self,
        *,
        workdir: Path,
        key: str,
        env: dict[str, str],
        settings: KernelSettings,
        slot: KernelSlot | None = None,
        gpus: tuple[int, ...] = (),
        on_warning: Callable[[str], None] | None = None,
        kernel_args: Sequence[str] = (),
        gpu_devices: tuple[str, ...] = (),  # more device nodes: a MIG slice's capabilities
    ) -> None:
        self.workdir = workdir
        # the renter's options for ipykernel, checked again where the argv is built
        self.kernel_args = check_kernel_args(kernel_args)
        self._on_warning = on_warning or (lambda text: None)
        self.settings = settings
        self.slot = slot
        self.gpus = gpus
        self.gpu_devices = gpu_devices
        self.runtime = Path(tempfile.mkdtemp(prefix="gpm-"))  # short: ipc paths max ~107 chars
        self.ipc_base = str(self.runtime / "k")
        self.connection_file = self.runtime / "kernel.json"
        self.env_file = self.runtime / "kernel-env.json"  # read (and removed) by the shim
        # by absolute path: the shim execs it without a PATH lookup
        self.python = os.path.abspath(shutil.which(settings.python) or settings.python)
        self._key = key
        # the agent's latest telemetry sample of this kernel (agent.telemetry), for the kernel
        self.telemetry_file = self.runtime / "telemetry.json"
        self._env = {**env, TELEMETRY_FILE_ENV: str(self.telemetry_file)}
        self.proc: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None
        self.stop_reason = ""  # why the agent stopped it (disk quota), for KernelExited
        self.sandboxed = settings.sandbox is not None
        self._inner_pgid: int | None = None  # the kernel's process group inside the sandbox
        self._cgroup: KernelCgroup | None = None
        self._disk_watch: asyncio.Task[None] | None = None
        self._output: OutputPipe | None = None

    def endpoint(self, channel: str) -> str:
        return f"ipc://{self.ipc_base}-{CHANNEL_PORTS[channel]}"

    async def start(self) -> None:
        info = {
            "transport": "ipc",
            "ip": self.ipc_base,
            **{f"{c}_port": p for c, p in CHANNEL_PORTS.items()},
            "key": self._key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        }
        self.connection_file.write_text(json.dumps(info))
        self.connection_file.chmod(0o600)
        python = self.python
        argv = [python, "-m", "ipykernel_launcher", "-f", str(self.connection_file)]
        argv += self.kernel_args  # options only (core.kernel_args): -f stays the agent's
        seccomp_fd: int | None = None
        if self.sandboxed:
            # The launcher runs outside the sandbox (as root for a real provider): it gets the
            # fixed LAUNCHER_ENV and "/" as cwd; the renter's variables reach only the kernel,
            # through a file the shim reads inside the sandbox as the kernel's uid.
            write_env_file(self.env_file, self._env)
            if self.slot is not None and self.slot.uid is not None:  # root: no userns for it
                seccomp_fd = userns_filter_fd()
            argv = self._sandboxed(shim_argv(python, str(self.env_file), argv), seccomp_fd)
            env, cwd = dict(LAUNCHER_ENV), "/"
        else:  # no sandbox: the kernel runs as the agent's uid; nothing to keep apart
            os.makedirs(self._env.get("HOME", self.workdir), exist_ok=True)
            env, cwd = self._env, str(self.workdir)
        self._output = OutputPipe()
        try:
            await self._launch(argv, env, cwd, seccomp_fd)
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)

    async def _launch(
        self, argv: list[str], env: dict[str, str], cwd: str, seccomp_fd: int | None
    ) -> None:
        if self.sandboxed and self.slot is not None and self.slot.uid is not None:
            # the slot's user owns the kernel's dirs (a big synced dir: off the event loop)
            await asyncio.to_thread(self._hand_over, self.slot.uid, self.slot.gid or 0)
        limits = self.settings.effective_limits
        if limits.any:
            found = cgroup_parent(limits)
            if found is not None:
                parent, controllers = found
                name = f"gpm-{self.runtime.name}"
                try:
                    self._cgroup = KernelCgroup(parent, name, limits, controllers)
                except OSError as exc:
                    log.warning("no cgroup for the kernel (%s); limits fall back to rlimits", exc)
        enforced = self._cgroup.controllers if self._cgroup is not None else frozenset()
        plan = rlimit_plan(limits, cgroup=enforced)
        if self.gpus and dict(plan).get(resource.RLIMIT_AS, _CUDA_MIN_AS) < _CUDA_MIN_AS:
            log.warning(
                "kernel memory limit is an address-space limit (no cgroup v2 here) below 32 GiB: "
                "CUDA cannot initialize under it; raise --kernel-memory-mb or delegate a cgroup"
            )
        output = self._output
        assert output is not None
        cpus = None
        if "cpu" not in enforced and self.slot is not None:
            cpus = cpu_set(self.slot.index, limits.cpus, sorted(os.sched_getaffinity(0)))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output.write_fd,  # never the agent's own log file (see
                stderr=output.write_fd,  # kernel_output): read, bounded, escaped
                start_new_session=True,
                preexec_fn=lambda: _child_setup(plan, self._cgroup, cpus),
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
            )
        except OSError as exc:
            raise KernelLaunchError(f"could not start the kernel process {argv[0]}: {exc}") from exc
        await output.drain(f"kernel pid {self.proc.pid}")
        await self._wait_bound()
        if self.sandboxed:
            self._inner_pgid = self._find_inner_pgid()
        if limits.disk_bytes is not None or limits.inodes is not None:
            self._disk_watch = asyncio.ensure_future(
                self._watch_disk(limits.disk_bytes, limits.inodes or WALK_MAX_ENTRIES)
            )

    def _sandboxed(self, argv: list[str], seccomp_fd: int | None = None) -> list[str]:
        """Wrap ``argv`` in bwrap (and setpriv to the slot's uid when the agent is root)."""
        policy = self.settings.sandbox
        if policy is None:
            return argv
        uid = gid = None
        if os.geteuid() == 0 and (self.slot is None or self.slot.uid is None):
            # bwrap run by root without a slot user would map the kernel to root outside.
            raise KernelLaunchError(
                "the provider runs as root but has no kernel slot user for this kernel: "
                "run `gpumarket provider setup` there, then restart the agent"
            )
        if self.slot is not None and self.slot.uid is not None:
            uid, gid = self.slot.uid, self.slot.gid
        mounts = SandboxMounts(
            workdir=str(self.workdir),
            runtime=str(self.runtime),
            devices=gpu_device_nodes(self.gpus) + self.gpu_devices,
            uid=uid,
            gid=gid,
        )
        return build_bwrap_argv(policy, mounts, argv, seccomp_fd=seccomp_fd)

    def _hand_over(self, uid: int, gid: int) -> None:
        _chown_tree(self.workdir, uid, gid)
        os.chown(self.runtime, uid, gid)
        os.chown(self.connection_file, uid, gid)
        os.chown(self.env_file, uid, gid)

    def _find_inner_pgid(self) -> int | None:
        """bwrap -> its init (pid 1 inside, session leader) -> the kernel: signals must reach
        the kernel's group; the init ignores them (a namespace's init gets only what it handles).
        """
        assert self.proc is not None
        for init in _children(self.proc.pid):
            for kid in _children(init):
                with contextlib.suppress(OSError):
                    return os.getpgid(kid)
        log.warning("kernel pid %s: no process inside the sandbox found", self.proc.pid)
        return None

    async def _watch_disk(self, quota: int | None, inodes: int) -> None:
        """Stop the kernel when its working dir passes its disk quota or inode limit (each
        warned about first); the walk reads at most ``inodes`` + 1 entries."""
        warned: set[str] = set()
        loop = asyncio.get_running_loop()
        walked = 0.0  # a long walk (a big tree) waits 10x its time: at most ~10 % of a core
        while self.proc is not None and self.proc.returncode is None:
            await asyncio.sleep(max(self.settings.disk_check_interval, 10 * walked))
            start = loop.time()
            usage = await asyncio.to_thread(dir_usage, self.workdir, inodes + 1)
            walked = loop.time() - start
            for kind, warning in quota_warnings(usage, quota, inodes):
                if kind not in warned:
                    warned.add(kind)
                    self._on_warning(warning)
            reason = quota_stop_reason(usage, quota, inodes)
            if reason:
                self.stop_reason = reason
                log.warning("kernel pid %s: %s", self.proc.pid, self.stop_reason)
                await self.kill_group()
                return

    async def _wait_bound(self) -> None:
        assert self.proc is not None
        paths = [Path(f"{self.ipc_base}-{p}") for p in CHANNEL_PORTS.values()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.start_timeout
        while not all(p.exists() for p in paths):
            if self.proc.returncode is not None:
                raise KernelLaunchError(
                    f"the kernel exited with code {self.proc.returncode} while starting; "
                    "the provider's log has its output"
                )
            if loop.time() > deadline:
                await self.kill_group()
                raise KernelLaunchError(
                    f"the kernel did not open its sockets within {self.settings.start_timeout:.0f}"
                    " s; the provider may be overloaded — try again or pick another offer"
                )
            await asyncio.sleep(0.005)
        if self.sandboxed and self.slot is not None and self.slot.uid is not None:
            try:
                lock_runtime(self.runtime, paths, self.slot.uid)
            except (OSError, KernelLaunchError):
                await self.kill_group()
                raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def signal(self, signum: int) -> None:
        """Send a signal to the kernel's whole process group (inside the sandbox if any)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        target = self._inner_pgid if self._inner_pgid is not None else self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(target, signum)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.exit_code = code
        # Children the kernel left behind die with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return code

    async def kill_group(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            # bwrap itself too: its init dies with it and takes the whole PID namespace along.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self._cgroup is not None:
                self._cgroup.kill()
            await self.proc.wait()

    async def stop(self) -> int | None:
        """SIGTERM the group, then SIGKILL after the stop timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), self.settings.stop_timeout)
            except TimeoutError:
                log.warning("kernel pid %s ignored SIGTERM; killing its group", self.proc.pid)
        await self.kill_group()
        return self.proc.returncode

    def cleanup(self) -> None:
        if self._disk_watch is not None:
            self._disk_watch.cancel()
        if self._output is not None:
            self._output.close()
        shutil.rmtree(self.runtime, ignore_errors=True)
        if self._cgroup is not None:
            self._cgroup.remove()
