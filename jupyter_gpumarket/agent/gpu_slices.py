"""The agent's shared GPU slices (``provider serve --slices N`` / ``--mig-profile P``): which
slices this machine has, handing them to leases, and watching each kernel's GPU memory.

NVML is reached through the same seam as :mod:`.gpu`: an ``nvml`` argument, a module-like
object with pynvml's functions and ``NVMLError`` (tests pass a fake; ``None`` imports
nvidia-ml-py). The decisions are pure (:mod:`jupyter_gpumarket.core.gpu_slices`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jupyter_gpumarket.agent.gpu import GpuInventory
from jupyter_gpumarket.core.gpu_slices import (
    GpuSlice,
    SliceMode,
    SliceTerms,
    VramWatch,
    describe_slice,
    mig_cap_nodes,
    mig_profile_of,
    parse_mig_profile,
    time_slices,
)
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "GpuSlicePool",
    "NvmlVramReader",
    "SimulatedVramReader",
    "SliceLayout",
    "VramReader",
    "kernel_pids",
    "mig_instances",
    "mps_pipe_dir",
    "plan_layout",
    "watch_vram",
]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
MAX_PROCS = 256
WATCH_INTERVAL = 2.0


MIG_MINORS = Path("/proc/driver/nvidia-caps/mig-minors")


@dataclass(frozen=True)
class MigInstance:
    gpu_index: int
    uuid: str
    profile: str
    memory_mib: int
    devices: tuple[str, ...] = ()  # its /dev/nvidia-caps nodes (() when unknown)


@dataclass(frozen=True)
class SliceLayout:
    """Every slice this agent rents, and what its offer says of one."""

    slices: tuple[GpuSlice, ...]
    terms: SliceTerms
    gpu_name: str

    def info(self) -> dict[str, Any]:
        """For the agent's hello/probe info (``slice``)."""
        modes = sorted({s.mode.value for s in self.slices})
        return {
            **self.terms.to_json(),
            "label": self.describe(),
            "mode": ",".join(modes),
            "count": len(self.slices),
        }

    def describe(self) -> str:
        return describe_slice(self.terms, self.gpu_name)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read_mig_minors(path: Path = MIG_MINORS) -> str:
    try:
        with path.open() as f:
            return f.read(1 << 20)
    except OSError:
        return ""


def mig_instances(
    nvml: Any,
    gpu_index: int,
    mig_minors: str | None = None,
    exists: Callable[[str], bool] = os.path.exists,
) -> list[MigInstance]:
    """The MIG devices NVML lists on GPU ``gpu_index`` (nvmlInit done by the caller), with
    their capability nodes from ``mig_minors`` (default: the driver's file)."""
    handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
    minors = _read_mig_minors() if mig_minors is None else mig_minors
    try:
        gpu_minor: int | None = int(nvml.nvmlDeviceGetMinorNumber(handle))
    except nvml.NVMLError:
        gpu_minor = None
    out = []
    for i in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            name = _text(nvml.nvmlDeviceGetName(mig))
            uuid = _text(nvml.nvmlDeviceGetUUID(mig))
            total = int(nvml.nvmlDeviceGetMemoryInfo(mig).total)
        except nvml.NVMLError:  # NOT_FOUND: no instance in this position
            continue
        profile = mig_profile_of(name)
        if profile is None:
            continue
        devices: tuple[str, ...] = ()
        with contextlib.suppress(nvml.NVMLError):
            gi = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
            ci = int(nvml.nvmlDeviceGetComputeInstanceId(mig))
            if gpu_minor is not None:
                devices = mig_cap_nodes(minors, gpu_minor, gi, ci)
        if devices and not all(exists(d) for d in devices):
            log.warning("MIG %s: no %s: a sandboxed kernel cannot open it", uuid, devices)
            devices = ()
        out.append(MigInstance(gpu_index, uuid, profile, total // _MIB, devices))
    return out


def mps_pipe_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """The CUDA MPS daemon's pipe dir when the daemon runs (its ``control`` pipe exists)."""
    path = Path(environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps")
    try:
        mode = (path / "control").lstat().st_mode
    except OSError:
        return None
    return str(path) if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def plan_layout(
    inventory: GpuInventory,
    *,
    slices: int | None,
    mig_profile: str | None,
    slice_vram_mib: int | None = None,
    nvml: Any = None,
    mps_dir: str | None = None,
    mig_minors: str | None = None,
) -> SliceLayout:
    """The slices of ``inventory``'s GPUs: MIG instances where the GPUs have MIG on (of
    ``mig_profile``, or their most common profile), else ``slices`` time-shared slices each."""
    gpus = inventory.gpus
    if not gpus:
        raise ConfigError("--slices/--mig-profile need a GPU: this provider is CPU only")
    name = gpus[0].model.replace("-", " ")
    if any(g.mig_enabled for g in gpus):
        return _mig_layout(inventory, slices, mig_profile, nvml, name, mig_minors)
    if mig_profile is not None:
        raise ConfigError(
            f"--mig-profile {mig_profile}: MIG is off on this GPU; turn it on "
            "(`nvidia-smi -mig 1`, then create instances) or use --slices N"
        )
    assert slices is not None
    layout = time_slices(
        {g.index: g.memory_total_mib for g in gpus},
        slices,
        vram_mib=slice_vram_mib,
        mps_pipe_dir=mps_dir,
    )
    return SliceLayout(layout, SliceTerms(f"1/{slices}", layout[0].vram_mib), name)


def _mig_layout(
    inventory: GpuInventory,
    count: int | None,
    profile: str | None,
    nvml: Any,
    name: str,
    mig_minors: str | None,
) -> SliceLayout:
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    try:
        found = [
            m
            for g in inventory.gpus
            if g.mig_enabled
            for m in mig_instances(nvml, g.index, mig_minors)
        ]
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    if profile is None:
        if not found:
            raise ConfigError(
                "MIG is on but NVML lists no MIG instance: create some "
                "(`nvidia-smi mig -cgi 1g.10gb -C`) or turn MIG off for --slices N"
            )
        profile = Counter(m.profile for m in found).most_common(1)[0][0]
    profile = parse_mig_profile(profile)
    chosen = [m for m in found if m.profile == profile][: count or None]
    if not chosen:
        have = sorted({m.profile for m in found}) or "none"
        raise ConfigError(
            f"no MIG instance of profile {profile} (this machine has {have}): create them with "
            f"`nvidia-smi mig -cgi {profile} -C`"
        )
    per_gpu: Counter[int] = Counter()
    slices = []
    for m in chosen:
        slices.append(
            GpuSlice(
                m.gpu_index,
                per_gpu[m.gpu_index],
                m.memory_mib,
                SliceMode.MIG,
                m.uuid,
                devices=m.devices,
            )
        )
        per_gpu[m.gpu_index] += 1
    vram = min(m.memory_mib for m in chosen)
    return SliceLayout(tuple(slices), SliceTerms.for_mig(profile, vram, name), name)


class GpuSlicePool:
    """Hands out free slices (lowest GPU, then slice number, first)."""

    def __init__(self, slices: Iterable[GpuSlice]) -> None:
        self._all = tuple(slices)
        self._busy: set[GpuSlice] = set()

    def acquire(self) -> GpuSlice | None:
        for s in self._all:
            if s not in self._busy:
                self._busy.add(s)
                return s
        return None

    def release(self, s: GpuSlice) -> None:
        self._busy.discard(s)

    @property
    def free(self) -> int:
        return len(self._all) - len(self._busy)


# -- reading a kernel's GPU memory -----------------------------------------------------------


class VramReader(Protocol):
    def used_mib(self, gpu_slice: GpuSlice, pids: frozenset[int]) -> int | None: ...


class NvmlVramReader:
    """GPU memory of a set of processes on a slice's device (NVML per-process accounting)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None
        self._lock = threading.Lock()

    def _init(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as exc:  # ImportError, NVMLError
                log.warning("GPU slices are not watched: NVML is not available (%s)", exc)
                self._ready = False
        return self._ready

    def used_mib(self, gpu_slice: GpuSlice, pids: frozenset[int]) -> int | None:
        """The kernel's memory on its slice's GPU. A MIG slice counts every MIG instance of
        its GPU: ``CUDA_VISIBLE_DEVICES`` is the kernel's to change, so memory it takes on a
        neighbour's instance counts against its own slice."""
        with self._lock:
            if not self._init():
                return None
            nvml = self._nvml
            try:
                parent = nvml.nvmlDeviceGetHandleByIndex(gpu_slice.gpu_index)
                handles = [parent] if gpu_slice.mig_uuid is None else _mig_handles(nvml, parent)
                used: dict[tuple[int, int], int | None] = {}
                for n, handle in enumerate(handles):
                    for p in _processes(nvml, handle):
                        pid = getattr(p, "pid", None)
                        if pid in pids:
                            used[(n, pid)] = getattr(p, "usedGpuMemory", None)
            except nvml.NVMLError as exc:
                log.debug("NVML processes of %s: %s", gpu_slice.name, exc)
                return None
        total = 0
        for mem in used.values():
            if not isinstance(mem, int) or isinstance(mem, bool) or not 0 <= mem < 2**51:
                return None  # NVML_VALUE_NOT_AVAILABLE (no accounting): unknown, not zero
            total += mem
        return total // _MIB


def _processes(nvml: Any, handle: Any) -> list[Any]:
    """Compute and graphics processes on ``handle`` (a process listed in both: once)."""
    procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    with contextlib.suppress(nvml.NVMLError):
        procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
    seen: dict[Any, Any] = {}
    for p in procs:
        seen.setdefault(getattr(p, "pid", None), p)
    return list(seen.values())


def _mig_handles(nvml: Any, parent: Any) -> list[Any]:
    out = []
    for i in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(parent))):
        with contextlib.suppress(nvml.NVMLError):
            out.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, i))
    return out


class SimulatedVramReader:
    """``--simulate-gpu``: a simulated GPU has no memory of its own, so a kernel's "GPU memory"
    is its resident RAM (a demo exceeds its slice by allocating). Never on a real GPU."""

    def used_mib(self, gpu_slice: GpuSlice, pids: frozenset[int]) -> int | None:
        pages = 0
        for pid in pids:
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/{pid}/statm") as f,
            ):
                pages += int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // _MIB


def kernel_pids(pid: int, uid: int | None = None, max_procs: int = MAX_PROCS) -> frozenset[int]:
    """``pid`` and its descendants (at most ``max_procs``; host pids, what NVML reports),
    and with ``uid`` (the kernel's slot user) every process of that user: a process that left
    the tree (double fork, setsid) is still the kernel's."""
    seen: set[int] = set()
    if uid is not None and uid > 0:
        with contextlib.suppress(OSError):
            for entry in os.scandir("/proc"):
                if len(seen) >= max_procs:
                    break
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_uid == uid:
                            seen.add(int(entry.name))
    seen.discard(pid)
    todo = [pid]
    while todo and len(seen) < max_procs:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task")[:max_procs]:
                with (
                    contextlib.suppress(OSError, ValueError),
                    open(f"/proc/{p}/task/{tid}/children") as f,
                ):
                    todo.extend(int(x) for x in f.read().split())
    return frozenset(seen)


def _kernel_used(reader: VramReader, gpu_slice: GpuSlice, pid: int, uid: int | None) -> int | None:
    return reader.used_mib(gpu_slice, kernel_pids(pid, uid))


class _Kernel(Protocol):  # what watch_vram uses of agent.kernels.KernelProcess
    stop_reason: str
    exit_code: int | None

    @property
    def pid(self) -> int | None: ...

    async def kill_group(self) -> None: ...


async def watch_vram(
    kernel: _Kernel,
    gpu_slice: GpuSlice,
    reader: VramReader,
    warn: Callable[[str], None],
    *,
    interval: float = WATCH_INTERVAL,
    grace: float | None = None,
    uid: int | None = None,
) -> None:
    """Sample the kernel's GPU memory until it exits; warn, then stop it over its slice.
    ``uid``: the kernel's slot user (its every process counts)."""
    watch = VramWatch(gpu_slice.vram_mib) if grace is None else VramWatch(gpu_slice.vram_mib, grace)
    while True:
        await asyncio.sleep(interval)
        pid = kernel.pid
        if pid is None or kernel.exit_code is not None:
            return
        try:
            used = await asyncio.to_thread(_kernel_used, reader, gpu_slice, pid, uid)
        except Exception:  # a bug here must cost the watch, never the lease
            log.exception("GPU memory watch of %s failed; not watching it", gpu_slice.name)
            return
        verdict = watch.observe(time.monotonic(), used)
        if verdict is None:
            continue
        level, message = verdict
        log.warning("kernel pid %s on %s: %s", pid, gpu_slice.name, message)
        if level == "warn":
            warn(message)
            continue
        kernel.stop_reason = message
        warn(message)
        await kernel.kill_group()
        return
