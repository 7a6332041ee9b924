"""The agent's telemetry readers: NVML (at its seam, answering with the H100's recorded
readings), /proc, the CPU meter, and the kernel's sample file."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_gpumarket.agent import telemetry
from jupyter_gpumarket.agent.gpu import detect_gpus
from jupyter_gpumarket.agent.telemetry import (
    CpuMeter,
    NvmlReader,
    Sampler,
    gpu_sample,
    parse_proc_stat,
    read_process_tree,
    write_latest,
)
from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.telemetry import GpuSample, TelemetrySample
from jupyter_gpumarket.telemetry_view import TELEMETRY_FILE_ENV, read_latest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
NVML_JSON = json.loads((FIXTURES / "h100-nvml.json").read_text())
_LOAD = re.search(
    r"telemetry under load .*?: (\[.*\])", (FIXTURES / "h100-matmul-and-telemetry.txt").read_text()
)
assert _LOAD is not None
# (util %, power mW, temp C, memory used B), three readings of the H100 under a matmul
UNDER_LOAD: list[tuple[int, int, int, int]] = ast.literal_eval(_LOAD.group(1))


class NvmlError(Exception):
    pass


class FixtureNvml:
    """The pynvml calls NvmlReader makes, answering from the H100's recorded readings."""

    NVMLError = NvmlError

    def __init__(self, reading: tuple[int, int, int, int], *, unsupported: set[str] = frozenset(),
                 lost: set[int] = frozenset(), init_error: bool = False) -> None:  # fmt: skip
        self.util, self.power_mw, self.temp, self.used = reading
        self.unsupported, self.lost, self.init_error = unsupported, lost, init_error
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error:
            raise NvmlError("Driver Not Loaded")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.lost or index >= NVML_JSON["count"]:
            raise NvmlError("GPU is lost")
        return index

    def _answer(self, name: str, value: Any) -> Any:
        if name in self.unsupported:
            raise NvmlError("Not Supported")
        return value

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return self._answer("util", SimpleNamespace(gpu=self.util, memory=40))

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        total = NVML_JSON["memory_total"]
        return self._answer("mem", SimpleNamespace(total=total, used=self.used, free=total))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return self._answer("temp", self.temp)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._answer("power", self.power_mw)


@pytest.mark.parametrize("reading", UNDER_LOAD)
def test_h100_readings_parse_into_the_sample(reading: tuple[int, int, int, int]) -> None:
    util, power_mw, temp, used = reading
    (gpu,) = NvmlReader(FixtureNvml(reading)).read((0,))
    assert gpu == GpuSample(
        index=0,
        util_pct=util,
        mem_used_mib=used // 2**20,
        mem_total_mib=81559,  # nvidia-smi's memory.total of this H100
        temp_c=temp,
        power_w=power_mw / 1000,
    )
    assert gpu.mem_used_mib == 2132  # 2,236,416,000 B
    # and it survives the wire
    msg = control.parse_agent_message(
        telemetry.encode_message(
            TelemetrySample(t=1.0, cpu_pct=99.0, ram_mib=1, billed_seconds=0, spend=0, gpus=(gpu,))
        )
    )
    assert msg.sample.gpus == (gpu,)


def test_unreadable_fields_are_none_never_invented() -> None:
    fake = FixtureNvml(UNDER_LOAD[0], unsupported={"power", "temp"}, lost={1})
    reader = NvmlReader(fake)
    zero, one = reader.read((0, 1))
    assert zero.power_w is None
    assert zero.temp_c is None
    assert zero.util_pct == 100
    assert one == GpuSample(1, None, None, None, None, None)  # lost GPU: all unknown
    reader.read((0,))
    assert fake.inits == 1  # NVML is initialized once


def test_no_nvml_means_no_gpus() -> None:
    assert NvmlReader(FixtureNvml(UNDER_LOAD[0], init_error=True)).read((0,)) == ()
    assert NvmlReader(FixtureNvml(UNDER_LOAD[0])).read(()) == ()  # a CPU-only kernel


@pytest.mark.skipif(not detect_gpus().cpu_only, reason="this machine has an NVIDIA GPU")
def test_real_nvml_on_a_machine_without_gpu_reports_none() -> None:
    assert NvmlReader().read((0,)) == ()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"util_pct": 255}, "util_pct"),
        ({"util_pct": -1}, "util_pct"),
        ({"temp_c": 1e9}, "temp_c"),
        ({"power_mw": -5}, "power_w"),
        ({"mem_used_bytes": True}, "mem_used_mib"),
        ({"mem_total_bytes": 2**60}, "mem_total_mib"),
    ],
)
def test_nonsense_readings_become_none(kw: dict[str, Any], field: str) -> None:
    assert getattr(gpu_sample(0, **kw), field) is None


def test_proc_stat_with_a_hostile_command_name() -> None:
    # comm may hold spaces and ")": fields count from the last ")"
    fields = ["S", "1"] + ["0"] * 9 + ["100", "50", "7", "3"] + ["0"] * 6 + ["321"] + ["0"] * 20
    text = "42 (evil) 1 2 (x) y) " + " ".join(fields)
    assert parse_proc_stat(text) == (160, 321)
    with pytest.raises(ValueError, match="short"):
        parse_proc_stat("42 (short) S 1")


def test_process_tree_counts_children(tmp_path: Path) -> None:
    _, own_rss = read_process_tree(os.getpid())
    assert own_rss > 10 * 2**20
    code = (
        "import sys, time; x = b'x' * (64 << 20); sys.stdout.write('go\\n'); "
        "sys.stdout.flush(); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"go\n"
        _, child_rss = read_process_tree(child.pid)
        _, tree_rss = read_process_tree(os.getpid())
        assert child_rss > 64 * 2**20
        assert tree_rss >= own_rss + 60 * 2**20  # the child is in our tree
        assert read_process_tree(2**22 + 1) == (0, 0)  # no such pid
        assert read_process_tree(os.getpid(), max_procs=1)[1] < tree_rss  # bounded walk
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]


def test_cpu_meter() -> None:
    meter = CpuMeter(hz=100)
    assert meter.update(10.0, 1000) == 0.0  # nothing to compare with yet
    assert meter.update(11.0, 1150) == 150.0  # one and a half cores
    assert meter.update(12.0, 1100) == 0.0  # ticks went down (never negative)
    assert meter.update(12.0, 5000) == 0.0  # no time passed


def test_sampler_reads_its_own_kernel_and_gpus() -> None:
    sampler = Sampler((0,), NvmlReader(FixtureNvml(UNDER_LOAD[1])))
    sample = sampler.read(os.getpid(), billed_seconds=311, spend=86_389)
    assert sample.ram_mib > 10
    assert sample.billed_seconds == 311
    assert sample.gpus[0].power_w == pytest.approx(698.191)
    assert TelemetrySample.from_json(sample.to_json()) == sample


def test_sample_file_round_trip_and_bad_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "telemetry.json"
    monkeypatch.delenv(TELEMETRY_FILE_ENV, raising=False)
    assert read_latest() is None  # not a gpumarket kernel
    monkeypatch.setenv(TELEMETRY_FILE_ENV, str(path))
    assert read_latest() is None  # no sample yet
    sample = Sampler((), NvmlReader(FixtureNvml(UNDER_LOAD[0]))).read(os.getpid(), 0, 0)
    write_latest(path, sample)
    assert read_latest() == sample.to_json()
    assert path.stat().st_mode & 0o777 == 0o644  # a sandboxed kernel runs as another uid
    for junk in (b"{", b'{"t": 1}', b"[]", b" " * 40_000 + b"{}", b"\xff"):
        path.write_bytes(junk)
        assert read_latest() is None


def test_sample_file_write_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".telemetry.json.tmp").symlink_to(victim)
    sample = TelemetrySample(t=1.0, cpu_pct=0, ram_mib=1, billed_seconds=0, spend=0, gpus=())
    with pytest.raises(OSError, match=r"symbolic links|Too many levels"):
        write_latest(tmp_path / "telemetry.json", sample)
    assert victim.read_text() == "keep"


class _Pipe:
    def __init__(self) -> None:
        self.ws: object | None = None
        self.sent: list[bytes] = []

    def send(self, channel: Any, parts: list[bytes]) -> None:
        self.sent.append(parts[0])


async def _until(ready: Any) -> None:
    import asyncio

    async with asyncio.timeout(30):  # only to detect a hang
        while not ready():  # noqa: ASYNC110 (polling what the task writes)
            await asyncio.sleep(0.01)


class _Lease(SimpleNamespace):
    @property
    def renter_connected(self) -> bool:  # as agent.lease.Lease's (no silent link here)
        return self.pipe.ws is not None and not self.ended


async def test_stream_bills_writes_and_sends_only_while_connected(tmp_path: Path) -> None:
    import asyncio
    import time

    from jupyter_gpumarket.core.metering import BillingClock, amount_due

    clock = BillingClock()
    clock.kernel_ready(time.monotonic() - 100)  # a paid lease whose kernel runs for 100 s
    price = 3_600_000  # base units per hour: 1000 a second
    kernel = SimpleNamespace(
        pid=os.getpid(), exit_code=None, telemetry_file=tmp_path / "telemetry.json"
    )
    lease = _Lease(
        ended=False,
        gpus=(0,),
        kernel=kernel,
        pipe=_Pipe(),
        payment=SimpleNamespace(
            clock=clock, payments=SimpleNamespace(terms=SimpleNamespace(price_per_hour=price))
        ),
    )
    task = asyncio.ensure_future(
        telemetry.stream(lease, NvmlReader(FixtureNvml(UNDER_LOAD[2])), interval=0.02)
    )
    try:
        await _until(lambda: read_latest(kernel.telemetry_file) is not None)
        assert lease.pipe.sent == []  # the renter is away: nothing queued for it
        lease.pipe.ws = object()
        await _until(lambda: bool(lease.pipe.sent))
    finally:
        lease.ended = True
        await asyncio.wait_for(task, 10)
    sample = control.parse_agent_message(lease.pipe.sent[0]).sample
    assert sample.billed_seconds >= 100
    assert sample.spend == amount_due(price, sample.billed_seconds)
    assert sample.gpus[0].temp_c == UNDER_LOAD[2][2]
    assert read_latest(kernel.telemetry_file)["billed_seconds"] >= 100
