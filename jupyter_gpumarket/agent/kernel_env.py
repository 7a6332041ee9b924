"""A kernel's environment, and the fixed one its sandbox launcher runs with instead.

The renter chooses variables for its kernel (through its kernelspec's ``env``). Those must reach
the kernel only: the launcher (bwrap, then setpriv inside it) runs outside the sandbox or before
it drops privileges, as the agent's uid (root for a real provider), and a renter variable there
(``LD_PRELOAD`` of a library the renter synced, ``LD_LIBRARY_PATH``, ``PATH`` into the working
dir, ...) would run renter code with the launcher's rights. So, by construction:

- the launcher's environment is :data:`LAUNCHER_ENV`, a constant: no renter byte is in it;
- the kernel's environment (:func:`build_kernel_env`) is written to a file in the kernel's
  runtime dir, and :data:`ENV_SHIM`, run as the kernel's own first program *inside* the
  sandbox after privileges are dropped (``python -I -S``: no ``PYTHON*`` variable, no site
  hooks), reads it, makes the kernel's HOME, and ``execve``\\ s the kernel with it.

The values are not put in any argv: argv is world-readable in ``/proc`` and the renter's values
may be its tokens. Names and values are checked and bounded (:func:`check_renter_env`) before use.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_gpumarket.exceptions import ProtocolError

if TYPE_CHECKING:
    from jupyter_gpumarket.agent.kernels import KernelSettings

__all__ = [
    "AGENT_ENV_ALLOW",
    "ENV_SHIM",
    "LAUNCHER_ENV",
    "MAX_RENTER_ENV_BYTES",
    "MAX_RENTER_ENV_VALUE_BYTES",
    "MAX_RENTER_ENV_VARS",
    "RENTER_ENV_DENY",
    "build_kernel_env",
    "check_renter_env",
    "shim_argv",
    "write_env_file",
]

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
# The whole environment of the sandbox launcher (bwrap, setpriv, the shim before its exec).
# bwrap and setpriv are started by absolute path; PATH is only for their own error paths.
LAUNCHER_ENV: Mapping[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}

# Bounds on what a renter sends (Linux allows 128 KiB per string, ~2 MiB for argv + env).
MAX_RENTER_ENV_VARS = 256
MAX_RENTER_ENV_NAME_BYTES = 256
MAX_RENTER_ENV_VALUE_BYTES = 32 * 1024
MAX_RENTER_ENV_BYTES = 256 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Runs inside the sandbox as the kernel's uid: argv = [env file, kernel argv...].
ENV_SHIM = """\
import json, os, sys
path = sys.argv[1]
with open(path, "rb") as f:
    env = json.load(f)
os.unlink(path)
try:
    os.makedirs(env["HOME"], exist_ok=True)
except (KeyError, OSError):
    pass
os.execve(sys.argv[2], sys.argv[2:], env)
"""


def check_renter_env(renter_env: object) -> dict[str, str]:
    """The renter's variables, or ProtocolError naming the first that is not acceptable."""
    if not isinstance(renter_env, Mapping):
        raise ProtocolError("start_kernel.env must be an object of name: value strings")
    if len(renter_env) > MAX_RENTER_ENV_VARS:
        raise ProtocolError(
            f"start_kernel.env has {len(renter_env)} variables, more than the "
            f"{MAX_RENTER_ENV_VARS} a kernel may get: send only the ones the kernel needs"
        )
    total = 0
    for name, value in renter_env.items():
        if (
            not isinstance(name, str)
            or len(name) > MAX_RENTER_ENV_NAME_BYTES
            or not _NAME.fullmatch(name)
        ):
            raise ProtocolError(
                f"start_kernel.env name {str(name)[:80]!r} is not a variable name "
                "(letters, digits and _, not starting with a digit): rename it"
            )
        if not isinstance(value, str) or "\0" in value:
            raise ProtocolError(f"start_kernel.env[{name!r}] must be a string without NUL")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError(f"start_kernel.env[{name!r}] is not valid UTF-8 text") from None
        if size > MAX_RENTER_ENV_VALUE_BYTES:
            raise ProtocolError(
                f"start_kernel.env[{name!r}] is {size} bytes, over the "
                f"{MAX_RENTER_ENV_VALUE_BYTES} a value may have: put large data in a file"
            )
        total += len(name) + size + 2
    if total > MAX_RENTER_ENV_BYTES:
        raise ProtocolError(
            f"start_kernel.env holds {total} bytes, over the {MAX_RENTER_ENV_BYTES} a kernel's "
            "environment may have: put large data in a file"
        )
    return dict(renter_env)


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
    This is the kernel's environment only; a sandbox launcher runs with :data:`LAUNCHER_ENV`.
    """
    renter = check_renter_env(renter_env)
    allow = (*AGENT_ENV_ALLOW, *settings.extra_env_allow)
    env = {k: agent_env[k] for k in allow if k in agent_env}
    env.update(settings.extra_env)
    env.update({k: v for k, v in renter.items() if k not in RENTER_ENV_DENY})
    # HOME inside the working dir's .gpumarket/ (which file sync never copies back): IPython's
    # profile, pip --user and caches survive restarts of the lease but stay out of results.
    env["HOME"] = str(workdir / ".gpumarket" / "home")
    env.update(gpu_env)
    env.setdefault("PATH", os.defpath)
    return env


def shim_argv(python: str, env_file: str, kernel_argv: Sequence[str]) -> list[str]:
    """The command run inside the sandbox: the shim, which execs ``kernel_argv`` with the
    environment in ``env_file`` (``kernel_argv[0]`` must be an absolute path)."""
    if not os.path.isabs(kernel_argv[0]) or not os.path.isabs(env_file):
        raise ValueError("the kernel's program and env file need absolute paths")
    return [python, "-I", "-S", "-c", ENV_SHIM, env_file, *kernel_argv]


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """The kernel's environment for the shim: a new 0600 file (in the agent's fresh runtime
    dir; never through a name that already exists)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(env), f)
