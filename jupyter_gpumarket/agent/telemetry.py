"""The agent's per-kernel telemetry: a sample about every second, sent to the renter on the
AGENT channel (``control.Telemetry``) and written for the kernel itself to read.

Each lease runs :func:`stream`: every :data:`INTERVAL` seconds, while its kernel runs, one
blocking read off the event loop (:meth:`Sampler.read`) takes

- the kernel's CPU and RAM from ``/proc``: the process tree under the kernel's pid (bounded to
  :data:`MAX_PROCS` processes), CPU as the change of its user+system time (reaped children
  included) over the wall time since the last sample, RAM as the sum of resident sets;
- its GPUs (the NVML indices pinned to it by ``CUDA_VISIBLE_DEVICES``) from a :class:`GpuReader`
  — :class:`NvmlReader`, whose ``nvml`` argument is the one seam tests replace. No NVML, no
  GPU or a CPU-only kernel: ``gpus`` is empty; a field NVML cannot read is ``None``. Nothing is
  ever made up;
- the lease's billed seconds and spend from its payment state (0 and 0 on a dev provider).

The sample is written atomically to the kernel's ``telemetry.json`` (in its private runtime dir,
which the agent owns once the kernel runs; the path is ``$GPUMARKET_TELEMETRY_FILE`` in the
kernel, see :mod:`jupyter_gpumarket.telemetry_view`) and sent to the renter while it is
connected (never queued for a renter that is away: a stale sample is worth nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.metering import amount_due
from jupyter_gpumarket.core.telemetry import GpuSample, TelemetrySample

__all__ = [
    "INTERVAL",
    "MAX_PROCS",
    "CpuMeter",
    "GpuReader",
    "NvmlReader",
    "Sampler",
    "encode_message",
    "gpu_sample",
    "parse_proc_stat",
    "read_process_tree",
    "stream",
    "write_latest",
]

log = logging.getLogger(__name__)

INTERVAL = 1.0
MAX_PROCS = 256  # processes of one kernel's tree read per sample; the rest is not counted
_MIB = 1024 * 1024
_NVML_TEMPERATURE_GPU = 0  # nvml.h: NVML_TEMPERATURE_GPU
_PAGE = os.sysconf("SC_PAGE_SIZE")
_HZ = os.sysconf("SC_CLK_TCK")


# -- /proc (pure parsing, then a bounded walk) ---------------------------------------------------


def parse_proc_stat(text: str) -> tuple[int, int]:
    """``/proc/<pid>/stat`` -> (user+system clock ticks incl. reaped children, resident pages).

    The command name (field 2) may hold spaces and parentheses, so fields are counted after the
    last ``)``. ValueError when the text is not a stat line.
    """
    rest = text.rsplit(")", 1)[1].split()
    if len(rest) < 22:
        raise ValueError("short /proc stat line")
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return utime + stime + max(cutime, 0) + max(cstime, 0), max(int(rest[21]), 0)


def _children(pid: int, budget: list[int]) -> list[int]:
    """Children of ``pid``, reading at most ``budget[0]`` ``children`` files (spent here)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:  # a thread that forked lists its children under its own task
        if budget[0] <= 0:
            break
        budget[0] -= 1
        path = f"/proc/{pid}/task/{tid}/children"
        with contextlib.suppress(OSError, ValueError), open(path) as f:
            kids.extend(int(x) for x in f.read().split())
    return kids


def read_process_tree(pid: int, max_procs: int = MAX_PROCS) -> tuple[int, int]:
    """(clock ticks of CPU used, resident bytes) of ``pid`` and its descendants; (0, 0) when
    ``pid`` is gone. Processes that exit during the walk are skipped. Bounded: at most
    ``max_procs`` processes and ``4 * max_procs`` thread files (a kernel of many threads or
    processes costs the agent no more than that per sample; what is past it is not counted)."""
    ticks = rss_pages = 0
    todo, seen, budget = [pid], set(), [4 * max_procs]
    while todo and len(seen) < max_procs:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                t, pages = parse_proc_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue
        ticks += t
        rss_pages += pages
        todo.extend(_children(p, budget))
    return ticks, rss_pages * _PAGE


class CpuMeter:
    """CPU percent of one core from cumulative clock ticks: 250 = two and a half cores."""

    def __init__(self, hz: int = _HZ) -> None:
        self._hz = hz
        self._last: tuple[float, int] | None = None

    def update(self, now: float, ticks: int) -> float:
        last, self._last = self._last, (now, ticks)
        if last is None or now <= last[0]:
            return 0.0
        used = max(ticks - last[1], 0) / self._hz  # a child reaped by nobody: no negative
        return round(min(100.0 * used / (now - last[0]), 100.0 * 4096), 1)


# -- GPUs ----------------------------------------------------------------------------------------


def _in(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


def gpu_sample(
    index: int,
    *,
    util_pct: Any = None,
    mem_used_bytes: Any = None,
    mem_total_bytes: Any = None,
    temp_c: Any = None,
    power_mw: Any = None,
) -> GpuSample:
    """One GPU's reading in the sample's units; a value NVML gave out of range is ``None``."""
    return GpuSample(
        index=index,
        util_pct=util_pct if _in(util_pct, 0, 100) else None,
        mem_used_mib=int(mem_used_bytes) // _MIB if _in(mem_used_bytes, 0, 2**51) else None,
        mem_total_mib=int(mem_total_bytes) // _MIB if _in(mem_total_bytes, 0, 2**51) else None,
        temp_c=temp_c if _in(temp_c, -50, 200) else None,
        power_w=round(power_mw / 1000, 3) if _in(power_mw, 0, 10_000_000) else None,
    )


class GpuReader(Protocol):
    def read(self, indices: Sequence[int]) -> tuple[GpuSample, ...]: ...


class NvmlReader:
    """Utilization, memory, temperature and power of GPUs by NVML index.

    ``nvml``: a module-like object with pynvml's functions and ``NVMLError`` (tests pass one
    answering from recorded readings); ``None`` imports nvidia-ml-py on first use. NVML is
    initialized once; when it cannot be (no package, driver or GPU), every read is empty.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None
        self._lock = threading.Lock()  # leases read from worker threads

    def _init(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as exc:  # ImportError, NVMLError: a CPU-only machine
                log.info("no GPU telemetry: %s", exc)
                self._ready = False
        return self._ready

    def read(self, indices: Sequence[int]) -> tuple[GpuSample, ...]:
        if not indices:
            return ()
        with self._lock:
            if not self._init():
                return ()
            return tuple(self._read_one(i) for i in indices)

    def _read_one(self, index: int) -> GpuSample:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError:
            return gpu_sample(index)

        def get(fn: str, *args: Any) -> Any:
            try:
                return getattr(nvml, fn)(handle, *args)
            except nvml.NVMLError:  # NOT_SUPPORTED, GPU_IS_LOST, ...: unknown, not zero
                return None

        util = get("nvmlDeviceGetUtilizationRates")
        mem = get("nvmlDeviceGetMemoryInfo")
        return gpu_sample(
            index,
            util_pct=getattr(util, "gpu", None),
            mem_used_bytes=getattr(mem, "used", None),
            mem_total_bytes=getattr(mem, "total", None),
            temp_c=get("nvmlDeviceGetTemperature", _NVML_TEMPERATURE_GPU),
            power_mw=get("nvmlDeviceGetPowerUsage"),
        )


_default_reader: NvmlReader | None = None


def default_reader() -> NvmlReader:
    """The agent's one NVML reader (NVML is initialized once per process)."""
    global _default_reader
    if _default_reader is None:
        _default_reader = NvmlReader()
    return _default_reader


# -- one lease's samples -------------------------------------------------------------------------


@dataclass
class Sampler:
    """Reads one kernel's sample; :meth:`read` blocks (``/proc``, NVML): run it on a thread."""

    gpus: tuple[int, ...]
    reader: GpuReader

    def __post_init__(self) -> None:
        self._cpu = CpuMeter()
        self._pid: int | None = None

    def read(self, pid: int, billed_seconds: int, spend: int) -> TelemetrySample:
        if pid != self._pid:  # a new kernel generation: its CPU time starts again
            self._cpu, self._pid = CpuMeter(), pid
        ticks, rss = read_process_tree(pid)
        now = time.time()
        return TelemetrySample(
            t=now,
            cpu_pct=self._cpu.update(time.monotonic(), ticks),
            ram_mib=rss // _MIB,
            billed_seconds=billed_seconds,
            spend=spend,
            gpus=self.reader.read(self.gpus),
        )


def write_latest(path: Path, sample: TelemetrySample) -> None:
    """Replace ``path`` with ``sample``'s JSON at once (a reader sees the old or the new one).

    The dir is the kernel's runtime dir, which the agent owns while the kernel runs: the
    temporary name is opened without following a link, and ``rename`` replaces a name, never
    what it points to. World-readable: a sandboxed kernel runs as another uid.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, json.dumps(sample.to_json(), separators=(",", ":")).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def encode_message(sample: TelemetrySample) -> bytes:
    """The AGENT-channel message carrying ``sample``."""
    return control.dump(control.Telemetry(sample=sample))


class _Lease(Protocol):  # what stream() uses of agent.lease.Lease
    ended: bool
    gpus: tuple[int, ...]
    payment: Any
    pipe: Any

    @property
    def kernel(self) -> Any: ...


def _bill(payment: Any) -> tuple[int, int]:
    if payment is None:
        return 0, 0
    billed = payment.clock.billed_seconds(time.monotonic())
    return billed, amount_due(payment.payments.terms.price_per_hour, billed)


async def stream(
    lease: _Lease, reader: GpuReader | None = None, interval: float = INTERVAL
) -> None:
    """Sample ``lease``'s kernel every ``interval`` s until the lease ends (its task)."""
    sampler = Sampler(lease.gpus, reader or default_reader())
    while not lease.ended:
        await asyncio.sleep(interval)
        kernel = lease.kernel
        pid = kernel.pid if kernel is not None and kernel.exit_code is None else None
        if pid is None or lease.ended:
            continue
        billed, spend = _bill(lease.payment)
        try:
            sample = await asyncio.to_thread(sampler.read, pid, billed, spend)
            await asyncio.to_thread(write_latest, kernel.telemetry_file, sample)
        except OSError as exc:  # the kernel's runtime dir went away with it: next one
            log.debug("telemetry of pid %s: %s", pid, exc)
            continue
        except Exception:  # a bug here must cost telemetry, never the lease
            log.exception("telemetry sampling failed; stopping it for this lease")
            return
        if lease.renter_connected:
            lease.pipe.send(Channel.AGENT, [encode_message(sample)])
