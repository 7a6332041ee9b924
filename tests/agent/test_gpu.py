"""GPU detection (agent/gpu.py): NVML through a fake built from real H100 readings, pure helpers.

The fixtures in tests/fixtures/gpu/ were read on one NVIDIA H100 80GB HBM3 (see their README).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from jupyter_gpumarket.agent.gpu import (
    GpuInfo,
    GpuInventory,
    allot,
    cuda_visible_devices,
    detect_gpus,
    format_inventory,
    gpu_env,
    gpu_model_slug,
)
from jupyter_gpumarket.agent.nvidia_smi import cross_check, parse_nvidia_smi_csv
from jupyter_gpumarket.exceptions import ProtocolError, ProviderRefused

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
NVML_JSON = json.loads((FIXTURES / "h100-nvml.json").read_text())
QUERY_CSV = (FIXTURES / "h100-query.csv").read_text()
SMI_XML = ET.parse(FIXTURES / "h100-nvidia-smi-q.xml").getroot()
SMI_TEXT = (FIXTURES / "h100-nvidia-smi.txt").read_text()
HAS_NVIDIA_SMI = shutil.which("nvidia-smi") is not None


class FakeNvml:
    """The pynvml functions detect_gpus uses, answering from h100-nvml.json-shaped readings.

    Errors are pynvml's own classes, so the error codes are the real ones.
    """

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[dict[str, Any]], **system: Any) -> None:
        self.gpus = gpus
        self.driver = system.get("driver", NVML_JSON["driver"])
        self.cuda_driver = system.get("cuda_driver", NVML_JSON["cuda_driver"])
        self.init_error: int | None = system.get("init_error")
        self.lost: set[int] = set(system.get("lost", ()))
        self.calls: list[str] = []

    def _fail(self, code: int) -> None:
        raise pynvml.NVMLError(code)

    def _gpu(self, handle: int, key: str) -> Any:
        value = self.gpus[handle].get(key)
        if value is None:
            self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            self._fail(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.lost:
            self._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        return index

    def nvmlDeviceGetName(self, h: int) -> str | bytes:
        return self._gpu(h, "name")

    def nvmlDeviceGetUUID(self, h: int) -> str | bytes:
        return self._gpu(h, "uuid")

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=self._gpu(h, "memory_total"), used=0)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return tuple(self._gpu(h, "cc"))  # type: ignore[return-value]

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return self._gpu(h, "power_limit_mw")

    def nvmlDeviceGetMaxClockInfo(self, h: int, clock: int) -> int:
        assert clock == pynvml.NVML_CLOCK_SM
        return self._gpu(h, "sm_clock_max")

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        return list(self._gpu(h, "mig_mode"))


def h100(**changes: Any) -> dict[str, Any]:
    return {**NVML_JSON, **changes}


def h100_inventory() -> GpuInventory:
    return detect_gpus(FakeNvml([h100()]))


# -- detect_gpus ----------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this machine has nvidia-smi")
def test_real_nvml_on_a_machine_without_nvidia_gpu_reports_cpu_only() -> None:
    inv = detect_gpus()
    assert inv.cpu_only
    assert inv.gpus == ()
    assert inv.driver_version is None
    assert inv.reason.startswith("CPU only: ")
    assert "NVML" in inv.reason or "nvidia-ml-py" in inv.reason


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVIDIA_SMI, reason="needs an NVIDIA GPU and nvidia-smi")
def test_real_nvml_on_a_gpu_machine_reports_its_gpus() -> None:
    inv = detect_gpus()
    assert not inv.cpu_only, inv.reason
    assert inv.driver_version


def test_h100_fixture_gives_exact_values() -> None:
    fake = FakeNvml([h100()])
    inv = detect_gpus(fake)
    assert not inv.cpu_only
    assert inv.driver_version == "580.159.04"
    assert inv.cuda_driver_version == "13.0"
    assert inv.reason == "NVML: 1 of 1 GPU(s) detected"
    (gpu,) = inv.gpus
    assert gpu == GpuInfo(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-00000000-0000-0000-0000-000000000000",
        memory_total_bytes=85_520_809_984,
        compute_capability=(9, 0),
        power_limit_mw=700_000,
        sm_clock_max_mhz=1980,
        mig_enabled=False,
    )
    assert gpu.memory_total_mib == 81559
    assert gpu.model == "H100-80GB"
    assert fake.calls == ["init", "shutdown"]


def test_h100_values_match_nvidia_smi_query_csv() -> None:
    (row,) = parse_nvidia_smi_csv(QUERY_CSV)
    inv = h100_inventory()
    gpu = inv.gpus[0]
    assert row["name"] == gpu.name
    assert row["uuid"] == gpu.uuid
    assert row["memory.total"] == str(gpu.memory_total_mib) == "81559"
    assert row["driver_version"] == inv.driver_version
    assert row["compute_cap"] == "{}.{}".format(*gpu.compute_capability)
    assert float(row["power.limit"] or 0) * 1000 == gpu.power_limit_mw
    assert row["clocks.max.sm"] == str(gpu.sm_clock_max_mhz)
    assert cross_check(inv, [row]) == ()


def test_h100_values_match_nvidia_smi_xml_and_text() -> None:
    inv = h100_inventory()
    gpu = inv.gpus[0]
    node = SMI_XML.find("gpu")
    assert node is not None
    assert SMI_XML.findtext("driver_version") == inv.driver_version
    assert SMI_XML.findtext("cuda_version") == inv.cuda_driver_version
    assert node.findtext("product_name") == gpu.name
    assert node.findtext("uuid") == gpu.uuid
    assert node.findtext("fb_memory_usage/total") == f"{gpu.memory_total_mib} MiB"
    assert node.findtext("max_clocks/sm_clock") == f"{gpu.sm_clock_max_mhz} MHz"
    assert node.findtext("gpu_power_readings/current_power_limit") == "700.00 W"
    assert node.findtext("mig_mode/current_mig") == "Disabled"
    assert not gpu.mig_enabled
    header = re.search(r"Driver Version: (\S+)\s+CUDA Version: (\S+)", SMI_TEXT)
    assert header is not None
    assert header.groups() == (inv.driver_version, inv.cuda_driver_version)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
            "CPU only: NVML not available (libnvidia-ml.so.1 not found)",
        ),
        (
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
            "CPU only: NVML not available (NVIDIA driver not loaded)",
        ),
        (
            pynvml.NVML_ERROR_NO_PERMISSION,
            "CPU only: NVML not available (Insufficient Permissions)",
        ),
    ],
)
@pytest.mark.skipif(sys.platform == "win32", reason="library name differs on Windows")
def test_nvml_init_failure_is_cpu_only_with_reason(code: int, expected: str) -> None:
    fake = FakeNvml([h100()], init_error=code)
    inv = detect_gpus(fake)
    assert inv.cpu_only
    assert inv.reason == expected
    assert (inv.driver_version, inv.cuda_driver_version) == (None, None)
    assert fake.calls == ["init"]  # no shutdown without a successful init


def test_missing_nvidia_ml_py_is_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    inv = detect_gpus()
    assert inv.cpu_only
    assert inv.reason == "CPU only: nvidia-ml-py (pynvml) is not installed"


def test_driver_without_gpus_is_cpu_only_but_names_the_driver() -> None:
    inv = detect_gpus(FakeNvml([]))
    assert inv.cpu_only
    assert inv.reason == "CPU only: NVML is installed but found no NVIDIA GPU"
    assert inv.driver_version == "580.159.04"


@pytest.mark.parametrize(
    ("mig_mode", "enabled"), [([1, 1], True), ([1, 0], True), ([0, 1], False), (None, False)]
)
def test_mig_flag_follows_current_mig_mode(mig_mode: list[int] | None, enabled: bool) -> None:
    inv = detect_gpus(FakeNvml([h100(mig_mode=mig_mode)]))
    assert inv.gpus[0].mig_enabled is enabled


def test_unsupported_optional_fields_are_none() -> None:
    inv = detect_gpus(FakeNvml([h100(power_limit_mw=None, sm_clock_max=None, mig_mode=None)]))
    gpu = inv.gpus[0]
    assert (gpu.power_limit_mw, gpu.sm_clock_max_mhz, gpu.mig_enabled) == (None, None, False)


def test_lost_gpu_is_left_out_and_named() -> None:
    second = h100(uuid="GPU-11111111-1111-1111-1111-111111111111")
    inv = detect_gpus(FakeNvml([h100(), second, second], lost={1}))
    assert [g.index for g in inv.gpus] == [0, 2]
    assert inv.reason.startswith("NVML: 2 of 3 GPU(s) detected (GPU 1 skipped: ")
    all_lost = detect_gpus(FakeNvml([h100()], lost={0}))
    assert all_lost.cpu_only
    assert all_lost.reason.startswith("CPU only: NVML found 1 GPU(s) but could not read any")


def test_old_pynvml_bytes_are_decoded() -> None:
    fake = FakeNvml([h100(name=b"Tesla T4", uuid=b"GPU-abc")], driver=b"470.1", cuda_driver=11040)
    inv = detect_gpus(fake)
    assert (inv.gpus[0].name, inv.gpus[0].uuid) == ("Tesla T4", "GPU-abc")
    assert (inv.driver_version, inv.cuda_driver_version) == ("470.1", "11.4")


# -- dataclasses and dict form ---------------------------------------------------------------------


def test_dict_form_round_trips_through_json() -> None:
    inv = detect_gpus(FakeNvml([h100(), h100(mig_mode=[1, 1], power_limit_mw=None)]))
    data = json.loads(json.dumps(inv.to_json()))
    assert data["count"] == 2
    assert data["cpu_only"] is False
    assert data["gpus"][0]["model"] == "H100-80GB"
    assert data["gpus"][0]["compute_capability"] == [9, 0]
    assert GpuInventory.from_json(data) == inv
    cpu = detect_gpus(FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    assert GpuInventory.from_json(json.loads(json.dumps(cpu.to_json()))) == cpu


@pytest.mark.parametrize(
    "data",
    [
        {"gpus": []},
        {"gpus": "none", "reason": "x"},
        {"gpus": [{"index": 0}], "reason": "x"},
        {
            "gpus": [{**h100_inventory().gpus[0].to_json(), "memory_total_bytes": "80GB"}],
            "reason": "x",
        },
    ],
)
def test_malformed_dict_raises_protocol_error(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        GpuInventory.from_json(data)


GOOD = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "uuid": "GPU-0",
    "memory_total_bytes": 1,
    "compute_capability": (9, 0),
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("index", -1),
        ("index", True),
        ("name", ""),
        ("uuid", None),
        ("memory_total_bytes", 0),
        ("compute_capability", (9,)),
        ("compute_capability", [9, 0]),
        ("compute_capability", (0, 0)),
        ("power_limit_mw", 0),
        ("sm_clock_max_mhz", 1.5),
        ("mig_enabled", 1),
    ],
)
def test_gpu_info_rejects_bad_field_and_names_it(field: str, value: Any) -> None:
    with pytest.raises(ProtocolError, match=re.escape(f"GpuInfo.{field}")):
        GpuInfo(**{**GOOD, field: value})


def test_inventory_rejects_duplicate_indices_and_empty_reason() -> None:
    gpu = GpuInfo(**GOOD)
    with pytest.raises(ProtocolError, match="duplicate"):
        GpuInventory((gpu, gpu), "580", "13.0", "NVML")
    with pytest.raises(ProtocolError, match="reason"):
        GpuInventory((), None, None, "")


# -- model slug, allotment, env -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100-16GB"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-ADA"),
        ("NVIDIA GeForce RTX 3090 Ti", "RTX-3090-TI"),
        ("NVIDIA", "UNKNOWN"),
    ],
)
def test_gpu_model_slug(name: str, slug: str) -> None:
    assert gpu_model_slug(name) == slug


def four_gpus() -> GpuInventory:
    gpus = [h100(uuid=f"GPU-{i}") for i in range(4)]
    return detect_gpus(FakeNvml(gpus))


def test_allot_picks_lowest_free_indices() -> None:
    inv = four_gpus()
    assert allot(inv, 2) == (0, 1)
    assert allot(inv, 2, in_use={0, 2}) == (1, 3)
    assert allot(inv, 0, in_use={0, 1, 2, 3}) == ()
    assert allot(inv, 1, in_use=[7]) == (0,)


def test_allot_refuses_when_not_enough_gpus_are_free() -> None:
    with pytest.raises(ProviderRefused, match="asks for 2 GPU\\(s\\) but 1 free \\(of 4\\)"):
        allot(four_gpus(), 2, in_use={0, 1, 2})
    cpu = detect_gpus(FakeNvml([]))
    assert allot(cpu, 0) == ()
    with pytest.raises(ProviderRefused, match="CPU only"):
        allot(cpu, 1)
    with pytest.raises(ProtocolError, match=re.escape("allot.n")):
        allot(cpu, -1)


def test_cuda_visible_devices_and_env() -> None:
    assert cuda_visible_devices((0, 2)) == "0,2"
    assert cuda_visible_devices(()) == ""  # CPU-only kernel: no GPU visible
    assert gpu_env((1,)) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}


# -- human text ----------------------------------------------------------------------------------


def test_format_inventory_cpu_only_says_so_with_reason() -> None:
    cpu = detect_gpus(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert format_inventory(cpu) == "CPU only: NVML not available (NVIDIA driver not loaded)"
    assert format_inventory(GpuInventory((), None, None, "no driver")) == "CPU only: no driver"


def test_format_inventory_lists_each_gpu() -> None:
    text = format_inventory(detect_gpus(FakeNvml([h100(), h100(mig_mode=[1, 1])])))
    head, first, second = text.splitlines()
    assert head.startswith("2 NVIDIA GPU(s), driver 580.159.04, CUDA 13.0")
    assert first == (
        "  [0] NVIDIA H100 80GB HBM3 (H100-80GB), 81559 MiB, compute 9.0, 700 W, SM 1980 MHz, "
        "GPU-00000000-0000-0000-0000-000000000000"
    )
    assert "MIG on" in second
    assert "MIG" not in first


# -- nvidia-smi CSV ------------------------------------------------------------------------------


def test_parse_nvidia_smi_csv_fixture() -> None:
    (row,) = parse_nvidia_smi_csv(QUERY_CSV)
    assert row == {
        "index": "0",
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-0000-0000-0000-000000000000",
        "memory.total": "81559",
        "memory.used": "0",
        "driver_version": "580.159.04",
        "compute_cap": "9.0",
        "pci.bus_id": "00000000:00:06.0",
        "power.limit": "700.00",
        "temperature.gpu": "43",
        "utilization.gpu": "0",
        "clocks.max.sm": "1980",
    }


def test_parse_nvidia_smi_csv_several_gpus_and_not_available() -> None:
    text = "index, name, power.limit [W]\n0, Tesla T4, 70.00 W\n1, NVIDIA A100-SXM4-80GB, [N/A]\n"
    rows = parse_nvidia_smi_csv(text)
    assert rows == (
        {"index": "0", "name": "Tesla T4", "power.limit": "70.00"},
        {"index": "1", "name": "NVIDIA A100-SXM4-80GB", "power.limit": None},
    )
    assert parse_nvidia_smi_csv("index, name\n") == ()


@pytest.mark.parametrize(
    "text", ["", "   \n", "index, name\n0, a, b\n", "No devices were found\n0"]
)
def test_parse_nvidia_smi_csv_rejects_malformed(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_nvidia_smi_csv(text)


def test_cross_check_names_each_difference() -> None:
    inv = h100_inventory()
    (row,) = parse_nvidia_smi_csv(QUERY_CSV)
    assert cross_check(inv, [{**row, "memory.total": "40960"}]) == (
        "GPU 0 memory.total: nvidia-smi '40960', NVML '81559'",
    )
    assert cross_check(inv, [row, {**row, "index": "1"}]) == (
        "nvidia-smi lists 2 GPU(s), NVML 1",
        "nvidia-smi GPU 1 is missing from NVML's inventory",
    )
    cpu = detect_gpus(FakeNvml([]))
    assert cross_check(cpu, [row])[0] == "nvidia-smi lists 1 GPU(s), NVML 0"
