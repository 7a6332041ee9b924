"""Per-kernel resource limits: memory, CPU, process count, disk.

A cgroup v2 group per kernel when the agent can create one (memory.max counts the page cache and
tmpfs too, pids.max counts every thread, cpu.max is a hard share); rlimits otherwise (RLIMIT_AS
for memory, RLIMIT_NPROC for processes, which is per uid and so per kernel with per-slot uids,
CPU affinity for CPUs). The disk quota is RLIMIT_FSIZE (one file can never pass it) plus the
watchdog in :mod:`jupyter_gpumarket.agent.kernels` that stops a kernel whose working dir passes it
or its inode limit (empty files and directories cost no bytes but make each walk longer).

The plans (:func:`rlimit_plan`, :func:`cgroup_files`, :func:`cpu_set`) are pure; the rest is the
thin I/O around them.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.safefs import TreeUsage, tree_usage

__all__ = [
    "CGROUP_ROOT",
    "DEFAULT_KERNEL_INODES",
    "WALK_MAX_ENTRIES",
    "KernelCgroup",
    "KernelLimits",
    "cgroup_files",
    "cgroup_parent",
    "cpu_set",
    "dir_usage",
    "rlimit_plan",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CPU_PERIOD_US = 100_000
DEFAULT_KERNEL_INODES = 200_000  # files + directories in a kernel's working dir
WALK_MAX_ENTRIES = 2_000_000  # the most one quota walk reads when no inode limit is set
_AGENT_LEAF = "agent"  # where the agent's own processes go when it delegates its group


@dataclass(frozen=True)
class KernelLimits:
    """What one kernel may use; None = no limit of that kind."""

    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    disk_bytes: int | None = None
    inodes: int | None = None  # files + directories in the working dir (the watchdog's walk)

    def __post_init__(self) -> None:
        lows = (("memory_bytes", 64 << 20), ("pids", 16), ("disk_bytes", 1 << 20), ("inodes", 64))
        for name, low in lows:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                raise ConfigError(f"kernel limit {name} must be an int >= {low}, got {v!r}")
        if self.cpus is not None and (
            not isinstance(self.cpus, int | float) or not 0 < self.cpus <= 4096
        ):
            raise ConfigError(f"kernel limit cpus must be a number in (0, 4096], got {self.cpus!r}")

    @property
    def any(self) -> bool:
        return any(
            v is not None for v in (self.memory_bytes, self.cpus, self.pids, self.disk_bytes)
        )


def rlimit_plan(limits: KernelLimits, *, cgroup: Collection[str] = ()) -> list[tuple[int, int]]:
    """(resource, limit) pairs to set in the kernel's process before exec.

    What the kernel's cgroup controllers (``cgroup``) enforce is left to them: RLIMIT_AS breaks
    CUDA's large virtual reservations, so it is only the fallback for a missing memory one.
    """
    plan = [(resource.RLIMIT_CORE, 0)]
    if limits.disk_bytes is not None:
        plan.append((resource.RLIMIT_FSIZE, limits.disk_bytes))
    if limits.memory_bytes is not None and "memory" not in cgroup:
        plan.append((resource.RLIMIT_AS, limits.memory_bytes))
    if limits.pids is not None and "pids" not in cgroup:
        plan.append((resource.RLIMIT_NPROC, limits.pids))
    return plan


def cgroup_files(
    limits: KernelLimits, controllers: Collection[str] | None = None
) -> dict[str, str]:
    """The cgroup v2 interface files to write for ``limits`` (file name -> content), only for
    ``controllers`` when given."""
    files: dict[str, str] = {}
    if limits.memory_bytes is not None:
        files["memory.max"] = str(limits.memory_bytes)
        files["memory.swap.max"] = "0"
    if limits.pids is not None:
        files["pids.max"] = str(limits.pids)
    if limits.cpus is not None:
        files["cpu.max"] = f"{math.ceil(limits.cpus * _CPU_PERIOD_US)} {_CPU_PERIOD_US}"
    if controllers is not None:
        files = {k: v for k, v in files.items() if k.split(".")[0] in controllers}
    return files


def cpu_set(slot: int, cpus: float | None, available: Sequence[int]) -> set[int] | None:
    """CPUs for slot ``slot`` when there is no cgroup: ceil(cpus) of them, slots spread apart."""
    if cpus is None or not available:
        return None
    n = min(len(available), math.ceil(cpus))
    start = (slot * n) % len(available)
    return {available[(start + i) % len(available)] for i in range(n)}


def _controllers(group: Path) -> set[str]:
    try:
        return set((group / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def cgroup_parent(
    limits: KernelLimits, root: Path = CGROUP_ROOT, own: str | None = None
) -> tuple[Path, frozenset[str]] | None:
    """The cgroup v2 group under which kernel groups can be made and the controllers of those
    that ``limits`` use it can give them, or None (rlimits for everything).

    Needs a unified hierarchy and the agent's own group writable (root, or systemd's
    ``Delegate=yes``). A group holding processes cannot give controllers to children, so the
    first time the agent moves its group's processes into a leaf ``agent`` and enables the
    controllers it needs and has; kernel groups are then the leaf's siblings.
    """
    if own is None:
        try:
            own = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    lines = [ln for ln in own.splitlines() if ln.startswith("0::")]
    if not lines or not (root / "cgroup.controllers").exists():
        return None  # cgroup v1 or hybrid without a usable unified tree
    group = root / lines[0][3:].lstrip("/")
    need = {name.split(".")[0] for name in cgroup_files(limits)}
    if group.name == _AGENT_LEAF and need & _controllers(group.parent):
        return group.parent, frozenset(need & _controllers(group.parent))  # delegated before
    if need and need <= _controllers(group):
        return group, frozenset(need)  # the root group, or one whose processes live elsewhere
    return _delegate(group, need) if need else None


def _delegate(group: Path, need: set[str]) -> tuple[Path, frozenset[str]] | None:
    try:
        usable = need & set((group / "cgroup.controllers").read_text().split())
        if not usable or not os.access(group, os.W_OK):
            return None
        leaf = group / _AGENT_LEAF
        leaf.mkdir(exist_ok=True)
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                (leaf / "cgroup.procs").write_text(pid)
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(usable)))
    except OSError:
        return None
    return group, frozenset(usable)


class KernelCgroup:
    """One kernel's cgroup v2 group: made with its limits, joined by the child, removed after."""

    def __init__(
        self, parent: Path, name: str, limits: KernelLimits, controllers: Collection[str]
    ) -> None:
        self.path = parent / name
        self.controllers = frozenset(controllers)
        self.path.mkdir(exist_ok=True)
        try:
            for fname, value in cgroup_files(limits, controllers).items():
                if fname == "memory.swap.max" and not (self.path / fname).exists():
                    continue  # no swap accounting: memory.max alone
                (self.path / fname).write_text(value)
        except OSError:
            self.remove()
            raise

    def join(self) -> None:  # pragma: no cover - runs in the child before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def dir_usage(path: Path, max_entries: int = WALK_MAX_ENTRIES) -> TreeUsage:
    """Bytes allocated (st_blocks, so sparse files count what they hold) and inodes under
    ``path``, walked through directory fds (never through a symlink), at most ``max_entries``
    entries: a kernel's working dir is written by the kernel while the agent walks it."""
    return tree_usage(path, max_entries=max_entries)
