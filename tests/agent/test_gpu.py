"""GPU detection (agent/gpu.py): NVML through a fake built from real H100 readings
(tests/nvmlfake.py), checked against nvidia-smi's own readings of the same GPU."""

from __future__ import annotations

import re
import sys

import pynvml
import pytest
from nvmlfake import (
    HAS_NVIDIA_SMI,
    QUERY_CSV,
    SMI_TEXT,
    SMI_XML,
    FakeNvml,
    h100,
    h100_inventory,
)

from jupyter_gpumarket.agent.gpu import (
    GpuInfo,
    detect_gpus,
)
from jupyter_gpumarket.agent.nvidia_smi import cross_check, parse_nvidia_smi_csv

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
