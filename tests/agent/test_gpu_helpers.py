"""agent/gpu.py's pure helpers: the dict form and its checks, model slugs, allotment, the
CUDA environment, the human text; agent/nvidia_smi.py's CSV parser and cross-check."""

from __future__ import annotations

import json
import re
from typing import Any

import pynvml
import pytest
from nvmlfake import (
    QUERY_CSV,
    FakeNvml,
    h100,
    h100_inventory,
)

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
