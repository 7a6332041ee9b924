"""A fake of the pynvml functions agent/gpu.py uses, answering from real H100 readings
(tests/fixtures/gpu/, read on one NVIDIA H100 80GB HBM3: see their README)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

from jupyter_gpumarket.agent.gpu import GpuInventory, detect_gpus

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu"
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
