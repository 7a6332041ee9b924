"""How this provider isolates kernels: the decisions `gpumarket provider serve` makes at start.

:func:`decide_sandbox` and :func:`check_publishable` are pure and tested; :func:`resolve_isolation`
gathers the facts (bwrap probe, root or not, slot users) and calls them; :func:`add_arguments`
and :func:`setup_slots` are the CLI's part (`provider serve` flags, `provider setup`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent.limits import DEFAULT_KERNEL_INODES, KernelLimits
from jupyter_gpumarket.agent.sandbox import (
    EGRESS_MODES,
    SandboxPolicy,
    default_policy,
    sandbox_available,
)
from jupyter_gpumarket.agent.slots import KernelSlot, find_slot_users, setup_commands
from jupyter_gpumarket.chain.keystore import keystore_path
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "SANDBOX_MODES",
    "Isolation",
    "add_arguments",
    "check_publishable",
    "decide_sandbox",
    "limits_from_args",
    "resolve_isolation",
    "setup_slots",
]

SANDBOX_MODES = ("auto", "on", "off")
_DEFAULT_TMP_BYTES = 1 << 30


def decide_sandbox(
    mode: str, *, probe_ok: bool, probe_reason: str, is_root: bool, slots: int, max_kernels: int
) -> tuple[bool, str]:
    """(sandbox on?, why) for ``--sandbox mode``; ConfigError when ``on`` cannot be honoured."""
    if mode not in SANDBOX_MODES:
        raise ConfigError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, got {mode!r}")
    if mode == "off":
        return False, "sandbox turned off (--sandbox off)"
    problem = None
    if not probe_ok:
        problem = probe_reason
    elif is_root and slots < max_kernels:
        problem = (
            f"the agent runs as root but only {slots} kernel slot user(s) exist for "
            f"--max-kernels {max_kernels}: run `gpumarket provider setup --slots {max_kernels}`"
        )
    if problem is None:
        who = "per-slot users" if is_root else "the agent's uid in a user namespace"
        return True, f"bubblewrap sandbox, kernels run as {who}"
    if mode == "on":
        raise ConfigError(f"--sandbox on, but {problem}")
    return False, f"no sandbox: {problem}"


def check_publishable(sandbox_ok: bool, unsafe_no_sandbox: bool) -> str:
    """The label of a non-dev offer, or ConfigError: strangers' code needs the sandbox."""
    if sandbox_ok:
        return "sandboxed"
    if unsafe_no_sandbox:
        return "unsandboxed"
    raise ConfigError(
        "refusing to publish an offer without a kernel sandbox: renters' code could read this "
        "machine's keys and files. Install bubblewrap (apt-get install bubblewrap), run "
        "`gpumarket provider setup` as root, or pass --unsafe-no-sandbox to publish it labelled "
        "unsandboxed"
    )


def check_port_guard(*, egress: str, sandboxed: bool, can_guard: bool, unsafe: bool) -> None:
    """A published provider's kernels must never reach its own port: with ``egress=full``
    that takes the nftables guard (root + nft); without it, refuse (``egress=none`` puts the
    kernels in their own network, which needs no guard)."""
    if not sandboxed or egress != "full" or can_guard or unsafe:
        return
    raise ConfigError(
        "--egress full lets kernels reach this agent's port unless the agent, as root with "
        "nftables (apt-get install nftables), blocks them: run it so, use --egress none, or "
        "pass --unsafe-no-sandbox to publish anyway (labelled unsandboxed)"
    )


@dataclass(frozen=True)
class Isolation:
    """What `provider serve` settled on: the kernel sandbox, limits, slots, and the label."""

    sandbox: SandboxPolicy | None
    limits: KernelLimits
    slots: tuple[KernelSlot, ...] = ()
    reason: str = ""
    label: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", "sandboxed" if self.sandbox else "unsandboxed")

    def info(self) -> dict[str, Any]:
        """For the welcome's ``agent`` dict and offers: renters see how kernels are isolated."""
        lim = self.limits
        return {
            "isolation": self.label,
            "isolation_detail": self.reason,
            "egress": self.sandbox.egress if self.sandbox else "full",
            "limits": {
                "memory_bytes": lim.memory_bytes,
                "cpus": lim.cpus,
                "pids": lim.pids,
                "disk_bytes": lim.disk_bytes,
                "inodes": lim.inodes,
            },
        }


def resolve_isolation(
    *,
    mode: str,
    egress: str,
    limits: KernelLimits,
    state_dir: Path,
    hidden: tuple[str, ...],
    masked: tuple[str, ...] = (),
    python: str = sys.executable,
    max_kernels: int,
    probe: Callable[[], tuple[bool, str]] = sandbox_available,
) -> Isolation:
    """Probe the machine and settle the isolation for `provider serve`."""
    if egress not in EGRESS_MODES:
        raise ConfigError(f"--egress must be one of {', '.join(EGRESS_MODES)}, got {egress!r}")
    is_root = os.geteuid() == 0
    slots = find_slot_users() if is_root else ()
    ok, why = probe() if mode != "off" else (False, "")
    on, reason = decide_sandbox(
        mode,
        probe_ok=ok,
        probe_reason=why,
        is_root=is_root,
        slots=len(slots),
        max_kernels=max_kernels,
    )
    if not on:
        if egress == "none":
            raise ConfigError(f"--egress none needs the kernel sandbox, and there is {reason}")
        return Isolation(None, limits, (), reason)
    tmp_bytes = limits.disk_bytes or _DEFAULT_TMP_BYTES
    policy = default_policy(
        state_dir,
        egress=egress,
        tmp_bytes=tmp_bytes,
        extra_hidden=hidden,
        masked=(str(keystore_path()), *masked),
        python=python,
    )
    return Isolation(policy, limits, slots if is_root else (), reason)


def add_arguments(serve: argparse.ArgumentParser) -> None:
    """`provider serve` flags for the sandbox and the per-kernel limits."""
    g = serve.add_argument_group("kernel isolation")
    g.add_argument(
        "--sandbox",
        choices=SANDBOX_MODES,
        default="auto",
        help="run kernels in a bubblewrap sandbox (auto: when it works here)",
    )
    g.add_argument(
        "--egress",
        choices=EGRESS_MODES,
        default="full",
        help="kernels' network: full, or none (own empty network namespace)",
    )
    g.add_argument("--kernel-cpus", type=float, help="CPUs per kernel (cgroup cpu.max or affinity)")
    g.add_argument("--kernel-pids", type=int, help="processes+threads per kernel")
    g.add_argument("--kernel-disk-mb", type=int, help="disk quota of a kernel's working dir")
    g.add_argument(
        "--kernel-inodes",
        type=int,
        default=DEFAULT_KERNEL_INODES,
        help="files + directories a kernel's working dir may hold (default %(default)s)",
    )
    g.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="allow publishing offers without a sandbox (labelled unsandboxed)",
    )


def limits_from_args(args: argparse.Namespace) -> KernelLimits:
    mb = 1024 * 1024
    return KernelLimits(
        memory_bytes=args.kernel_memory_mb * mb if args.kernel_memory_mb else None,
        cpus=args.kernel_cpus,
        pids=args.kernel_pids,
        disk_bytes=args.kernel_disk_mb * mb if args.kernel_disk_mb else None,
        inodes=getattr(args, "kernel_inodes", None),
    )


def setup_slots(count: int, *, dry_run: bool = False) -> list[str]:
    """Create the slot users ``gpm-slot-0..count-1`` (root only). Returns what was (to be) run."""
    cmds = setup_commands(count, find_slot_users())
    lines = [" ".join(c) for c in cmds]
    if dry_run or not cmds:
        return lines
    if os.geteuid() != 0:
        raise ConfigError("creating kernel slot users needs root: run it with sudo")
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise ConfigError(f"{' '.join(cmd)} failed: {res.stderr.strip()}; fix it and rerun")
    return lines
