"""Kernel backend: one ipykernel subprocess per lease generation (plain subprocess backend).

Each kernel gets its own process group (so signals and the final kill reach every child), its
own working dir, an environment built from an allow-list plus what the renter asked for, and
ZMQ ``ipc`` sockets in a private runtime dir (no TCP ports on the provider, nothing to race for).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_gpumarket.exceptions import KernelLaunchError

__all__ = [
    "AGENT_ENV_ALLOW",
    "CHANNEL_PORTS",
    "RENTER_ENV_DENY",
    "KernelProcess",
    "KernelSettings",
    "build_kernel_env",
]

log = logging.getLogger(__name__)

# Variables the kernel inherits from the agent's environment (the provider's own settings).
# Anything else in the agent's environment (wallet passwords, tokens, RPC keys) never reaches it.
AGENT_ENV_ALLOW = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
)
# Variables a renter may not set: the agent decides them.
RENTER_ENV_DENY = frozenset(
    {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "HOME", "PWD"}
)

# ipc "ports": the endpoint of channel c is ipc://<runtime>/k-<port>
CHANNEL_PORTS = {"shell": 1, "iopub": 2, "stdin": 3, "control": 4, "hb": 5}

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class KernelSettings:
    """Provider-side limits and options for every kernel this agent starts."""

    python: str = sys.executable
    memory_limit_bytes: int | None = None
    extra_env_allow: tuple[str, ...] = ()
    start_timeout: float = 60.0
    stop_timeout: float = 5.0
    extra_env: Mapping[str, str] = field(default_factory=dict)


def build_kernel_env(
    agent_env: Mapping[str, str],
    renter_env: Mapping[str, str],
    *,
    workdir: Path,
    gpu_env: Mapping[str, str],
    settings: KernelSettings,
) -> dict[str, str]:
    """The kernel's whole environment: allow-listed agent vars + renter's vars + pinned ones.

    ``gpu_env`` (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER) pins the GPUs allotted to the kernel.
    """
    allow = (*AGENT_ENV_ALLOW, *settings.extra_env_allow)
    env = {k: agent_env[k] for k in allow if k in agent_env}
    env.update(settings.extra_env)
    env.update({k: v for k, v in renter_env.items() if k not in RENTER_ENV_DENY})
    env["HOME"] = str(workdir)
    env.update(gpu_env)
    env.setdefault("PATH", os.defpath)
    return env


def _child_setup(memory_limit: int | None) -> None:  # pragma: no cover - runs in the child
    import resource

    # The kernel dies with the agent even if the agent is SIGKILLed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))


class KernelProcess:
    """One running ipykernel. ``start()`` returns once its sockets are bound."""

    def __init__(
        self,
        *,
        workdir: Path,
        key: str,
        env: dict[str, str],
        settings: KernelSettings,
    ) -> None:
        self.workdir = workdir
        self.settings = settings
        self.runtime = Path(tempfile.mkdtemp(prefix="gpm-"))  # short: ipc paths max ~107 chars
        self.ipc_base = str(self.runtime / "k")
        self.connection_file = self.runtime / "kernel.json"
        self._key = key
        self._env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None

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
        argv = [self.settings.python, "-m", "ipykernel_launcher", "-f", str(self.connection_file)]
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.workdir,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: _child_setup(self.settings.memory_limit_bytes),
            )
        except OSError as exc:
            raise KernelLaunchError(f"could not start the kernel process {argv[0]}: {exc}") from exc
        await self._wait_bound()

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

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def signal(self, signum: int) -> None:
        """Send a signal to the kernel's whole process group."""
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

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
        shutil.rmtree(self.runtime, ignore_errors=True)
