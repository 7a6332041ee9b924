"""The agent's GPU slices (agent/gpu_slices.py) through a fake NVML at the one seam agent/gpu.py
uses: the H100 readings of tests/fixtures/gpu/h100-nvml.json (MIG was off on that GPU: the MIG
devices and per-process memory below are made up in NVML's shape, pynvml's error codes real)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from jupyter_gpumarket.agent.gpu import GpuInventory, detect_gpus
from jupyter_gpumarket.agent.gpu_sim import simulated_inventory
from jupyter_gpumarket.agent.gpu_slices import (
    GpuSlicePool,
    NvmlVramReader,
    SimulatedVramReader,
    kernel_pids,
    mig_instances,
    mps_pipe_dir,
    plan_layout,
    watch_vram,
)
from jupyter_gpumarket.core.gpu_slices import GpuSlice, SliceMode, SliceTerms
from jupyter_gpumarket.exceptions import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
NVML_JSON = json.loads((FIXTURES / "h100-nvml.json").read_text())
H100_MIB = NVML_JSON["memory_total"] // (1024 * 1024)  # 81559
MIG_UUID = "MIG-5a1c0000-0000-0000-0000-00000000000{}"


class FakeNvml:
    """pynvml's functions that agent/gpu.py and agent/gpu_slices.py call, from H100 readings."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        *,
        mig: list[tuple[str, int]] | None = None,
        procs: list[tuple[int, int | None]] = (),  # type: ignore[assignment]
        mig_procs: dict[int, list[tuple[int, int]]] | None = None,
        init_error: int | None = None,
    ) -> None:
        self.mig = mig  # None: MIG off; else (profile, MiB) per MIG device position
        self.procs = list(procs)  # on the whole GPU
        self.mig_procs = mig_procs or {}  # on each MIG device
        self.init_error = init_error
        self.inits = 0

    def _fail(self, code: int) -> None:
        raise pynvml.NVMLError(code)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            self._fail(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return NVML_JSON["driver"]

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return NVML_JSON["cuda_driver"]

    def nvmlDeviceGetCount(self) -> int:
        return NVML_JSON["count"]

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if index != 0:
            self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ("gpu", 0)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        for i in range(len(self.mig or ())):
            if MIG_UUID.format(i) == uuid:
                return ("mig", i)
        self._fail(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetName(self, h: Any) -> str:
        if h[0] == "mig":
            return f"{NVML_JSON['name']} MIG {self.mig[h[1]][0]}"  # type: ignore[index]
        return NVML_JSON["name"]

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return MIG_UUID.format(h[1]) if h[0] == "mig" else NVML_JSON["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> SimpleNamespace:
        if h[0] == "mig":
            return SimpleNamespace(total=self.mig[h[1]][1] << 20, used=0)  # type: ignore[index]
        return SimpleNamespace(total=NVML_JSON["memory_total"], used=0)

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        return tuple(NVML_JSON["cc"])  # type: ignore[return-value]

    def nvmlDeviceGetPowerManagementLimit(self, h: Any) -> int:
        return NVML_JSON["power_limit_mw"]

    def nvmlDeviceGetMaxClockInfo(self, h: Any, clock: int) -> int:
        return NVML_JSON["sm_clock_max"]

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        return [1, 1] if self.mig is not None else list(NVML_JSON["mig_mode"])

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7 if self.mig is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> Any:
        if self.mig is None or i >= len(self.mig):
            self._fail(pynvml.NVML_ERROR_NOT_FOUND)
        return ("mig", i)

    def nvmlDeviceGetMinorNumber(self, h: Any) -> int:
        return 0

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:
        return 7 + h[1]

    def nvmlDeviceGetComputeInstanceId(self, h: Any) -> int:
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[SimpleNamespace]:
        procs = self.mig_procs.get(h[1], []) if h[0] == "mig" else self.procs
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in procs]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: Any) -> list[SimpleNamespace]:
        self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return []


def h100(nvml: FakeNvml | None = None) -> GpuInventory:
    return detect_gpus(nvml or FakeNvml())


def test_the_h100_readings_give_two_watched_slices() -> None:
    layout = plan_layout(h100(), slices=2, mig_profile=None)
    assert [s.name for s in layout.slices] == ["gpu0/slice0", "gpu0/slice1"]
    assert {s.vram_mib for s in layout.slices} == {H100_MIB // 2}
    assert {s.mode for s in layout.slices} == {SliceMode.WATCHED}
    assert layout.terms == SliceTerms("1/2", H100_MIB // 2)
    assert layout.describe() == "1/2 of an H100 80GB, 40 GB"
    info = layout.info()
    assert info["label"] == "1/2 of an H100 80GB, 40 GB"
    assert info["mode"] == "watched"
    assert info["count"] == 2


def test_mps_caps_slices_where_its_daemon_runs(tmp_path: Path) -> None:
    assert mps_pipe_dir({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}) is None  # no daemon
    (tmp_path / "control").write_text("")  # a file is no daemon's pipe
    assert mps_pipe_dir({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}) is None
    pipes = tmp_path / "mps"
    pipes.mkdir()
    os.mkfifo(pipes / "control")
    found = mps_pipe_dir({"CUDA_MPS_PIPE_DIRECTORY": str(pipes)})
    assert found == str(pipes)
    layout = plan_layout(h100(), slices=4, mig_profile=None, mps_dir=found)
    env = layout.slices[3].env()
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={H100_MIB // 4}M"
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipes)
    assert layout.info()["mode"] == "mps"


def test_mig_instances_listed_by_nvml_become_the_slices() -> None:
    nvml = FakeNvml(mig=[("1g.10gb", 9984)] * 3 + [("2g.20gb", 19968)])
    inv = h100(nvml)
    assert inv.gpus[0].mig_enabled
    layout = plan_layout(inv, slices=None, mig_profile=None, nvml=nvml)  # the common profile
    assert [s.mig_uuid for s in layout.slices] == [MIG_UUID.format(i) for i in range(3)]
    assert layout.terms == SliceTerms("1/7", 9984, "1g.10gb")
    assert layout.describe() == "MIG 1g.10gb, 1/7 of an H100 80GB, 9.8 GB"
    assert layout.slices[1].env()["CUDA_VISIBLE_DEVICES"] == MIG_UUID.format(1)
    two = plan_layout(inv, slices=2, mig_profile=None, nvml=nvml)
    assert len(two.slices) == 2
    big = plan_layout(inv, slices=None, mig_profile="2g.20gb", nvml=nvml)
    assert [s.mig_uuid for s in big.slices] == [MIG_UUID.format(3)]
    assert big.terms.share == "2/7"
    with pytest.raises(ConfigError, match=r"no MIG instance of profile 3g\.40gb"):
        plan_layout(inv, slices=None, mig_profile="3g.40gb", nvml=nvml)
    empty = FakeNvml(mig=[])
    with pytest.raises(ConfigError, match="lists no MIG instance"):
        plan_layout(h100(empty), slices=2, mig_profile=None, nvml=empty)


def test_a_sandboxed_mig_kernel_gets_its_instances_capability_nodes_only() -> None:
    nvml = FakeNvml(mig=[("1g.10gb", 9984)] * 2)
    minors = (
        "gpu0/gi7/access 60\ngpu0/gi7/ci0/access 61\ngpu0/gi8/access 69\ngpu0/gi8/ci0/access 70\n"
    )
    nvml.nvmlInit()
    found = mig_instances(nvml, 0, minors, exists=lambda path: True)
    assert [m.devices for m in found] == [
        ("/dev/nvidia-caps/nvidia-cap60", "/dev/nvidia-caps/nvidia-cap61"),
        ("/dev/nvidia-caps/nvidia-cap69", "/dev/nvidia-caps/nvidia-cap70"),
    ]
    # the nodes are not on this machine: none (a sandboxed kernel then sees no MIG device)
    assert [m.devices for m in mig_instances(nvml, 0, minors)] == [(), ()]
    layout = plan_layout(h100(nvml), slices=None, mig_profile=None, nvml=nvml, mig_minors=minors)
    assert [s.devices for s in layout.slices] == [(), ()]


def test_a_mig_profile_needs_mig_and_slices_need_a_gpu() -> None:
    with pytest.raises(ConfigError, match="MIG is off"):
        plan_layout(h100(), slices=None, mig_profile="1g.10gb")
    cpu = GpuInventory((), None, None, "CPU only: test")
    with pytest.raises(ConfigError, match="CPU only"):
        plan_layout(cpu, slices=2, mig_profile=None)


def test_the_pool_hands_each_slice_to_one_lease() -> None:
    pool = GpuSlicePool(plan_layout(h100(), slices=2, mig_profile=None).slices)
    a, b = pool.acquire(), pool.acquire()
    assert a is not None
    assert b is not None
    assert a != b
    assert pool.acquire() is None
    assert pool.free == 0
    pool.release(a)
    assert pool.acquire() == a


def test_nvml_accounting_counts_only_the_kernels_processes() -> None:
    s = GpuSlice(0, 0, 1000, SliceMode.WATCHED)
    nvml = FakeNvml(procs=[(100, 300 << 20), (101, 200 << 20), (999, 50_000 << 20)])
    reader = NvmlVramReader(nvml)
    assert reader.used_mib(s, frozenset({100, 101})) == 500  # not the neighbour's 50 GB
    assert reader.used_mib(s, frozenset({7})) == 0
    nvml.procs.append((100, 300 << 20))  # listed twice (compute and graphics): once
    assert reader.used_mib(s, frozenset({100})) == 300
    assert nvml.inits == 1  # NVML is initialized once per reader
    unknown = NvmlVramReader(FakeNvml(procs=[(100, None)]))  # no per-process accounting
    assert unknown.used_mib(s, frozenset({100})) is None
    # a MIG kernel that points CUDA_VISIBLE_DEVICES at its neighbour's instance: counted too
    mig = NvmlVramReader(
        FakeNvml(
            mig=[("1g.10gb", 9984)] * 2,
            mig_procs={0: [(5, 10 << 20), (6, 1 << 20)], 1: [(5, 2000 << 20), (6, 3 << 20)]},
        )
    )
    own = GpuSlice(0, 0, 9984, SliceMode.MIG, MIG_UUID.format(0))
    assert mig.used_mib(own, frozenset({5})) == 2010
    assert mig.used_mib(own, frozenset({6})) == 4
    lost = GpuSlice(1, 0, 9984, SliceMode.MIG, MIG_UUID.format(0))  # its GPU is gone
    assert mig.used_mib(lost, frozenset({5})) is None
    no_driver = NvmlVramReader(FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert no_driver.used_mib(s, frozenset({100})) is None


def test_kernel_pids_follow_the_process_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids = kernel_pids(os.getpid())
        assert os.getpid() in pids
        assert child.pid in pids
        assert kernel_pids(2**22 + 1) == frozenset({2**22 + 1})  # gone: itself only
    finally:
        child.kill()
        child.wait()


def test_a_simulated_gpus_memory_is_the_kernels_resident_ram() -> None:
    inv = simulated_inventory("H100")
    layout = plan_layout(inv, slices=2, mig_profile=None, slice_vram_mib=100)
    used = SimulatedVramReader().used_mib(layout.slices[0], kernel_pids(os.getpid()))
    assert used is not None
    assert used > 10  # this pytest process


class _Kernel:
    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.exit_code: int | None = None
        self.stop_reason = ""
        self.killed = 0

    @property
    def pid(self) -> int | None:
        return self._pid

    async def kill_group(self) -> None:
        self.killed += 1
        self.exit_code = -9


async def test_a_kernel_over_its_slice_is_warned_then_stopped() -> None:
    s = GpuSlice(0, 1, 1000, SliceMode.WATCHED)
    pid = os.getpid()
    nvml = FakeNvml(procs=[(pid, 1500 << 20)])
    kernel, notices = _Kernel(pid), []
    await asyncio.wait_for(
        watch_vram(kernel, s, NvmlVramReader(nvml), notices.append, interval=0.01, grace=0.05),
        10,
    )
    assert kernel.killed == 1
    assert "over its 1000 MiB GPU slice" in notices[0]
    assert notices[-1] == kernel.stop_reason
    assert "used 1500 MiB of GPU memory, over its 1000 MiB slice" in kernel.stop_reason


async def test_a_kernel_within_its_slice_is_left_alone() -> None:
    s = GpuSlice(0, 0, 1000, SliceMode.WATCHED)
    pid = os.getpid()
    kernel, notices = _Kernel(pid), []
    task = asyncio.ensure_future(
        watch_vram(
            kernel,
            s,
            NvmlVramReader(FakeNvml(procs=[(pid, 400 << 20)])),
            notices.append,
            interval=0.01,
            grace=0.01,
        )
    )
    await asyncio.sleep(0.2)
    kernel.exit_code = 0  # the kernel exits: the watch ends with it
    await asyncio.wait_for(task, 10)
    assert notices == []
    assert kernel.killed == 0


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU and NVML")
def test_real_nvml_slices_this_machines_gpu() -> None:
    inv = detect_gpus()
    layout = plan_layout(inv, slices=2, mig_profile=None, nvml=None)
    assert layout.slices
    assert NvmlVramReader().used_mib(layout.slices[0], frozenset({os.getpid()})) in (0, None)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_a_process_that_left_the_kernels_tree_still_counts_by_its_slot_user() -> None:
    """A kernel's process that double-forks or calls setsid is no longer its descendant; its
    slot user still names it (uid 65534 stands for a slot user here)."""
    escaped = subprocess.Popen(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "sleep", "30"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{escaped.pid}").stat().st_uid != 65534:  # setpriv has not run yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        kernel = 2**22 + 1  # the kernel's own pid: gone, its tree empty
        assert escaped.pid not in kernel_pids(kernel)
        assert escaped.pid in kernel_pids(kernel, uid=65534)
        assert kernel_pids(kernel, uid=0) == frozenset({kernel})  # root is never a slot
    finally:
        escaped.kill()
        escaped.wait()
