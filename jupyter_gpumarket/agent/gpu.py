"""GPU detection for the provider agent, and which GPUs a kernel gets.

:func:`detect_gpus` is the only function that touches NVML (nvidia-ml-py, ``import pynvml``); its
``nvml`` argument is the one seam tests replace. Everything else here is pure: the inventory
dataclasses, their dict form for the agent's hello message, the model slug that market filters
match on (``gpu=H100``), and allotting free GPUs to a kernel. (Comparing NVML with ``nvidia-smi``:
:mod:`.nvidia_smi`.)

A machine without NVIDIA GPUs, driver or NVML is a normal case, not an error: the inventory is
empty, ``cpu_only`` is true and ``reason`` says why. No GPU is ever invented.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.exceptions import ProtocolError, ProviderRefused

__all__ = [
    "GpuInfo",
    "GpuInventory",
    "allot",
    "cuda_visible_devices",
    "detect_gpus",
    "format_inventory",
    "gpu_env",
    "gpu_model_slug",
]

# NVML ABI constants (nvml.h); stable across driver versions, so a fake NVML need not define them.
_NVML_CLOCK_SM = 1
_NVML_DEVICE_MIG_ENABLE = 1
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12
_NVML_LIBRARY = "nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1"
_MIB = 1024 * 1024


def _require_int(owner: str, field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolError(f"{owner}.{field} must be an int >= {minimum}, got {value!r}")


def _require_text(owner: str, field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{owner}.{field} must be a non-empty string, got {value!r}")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as NVML reports it. ``index`` is NVML's (PCI bus order)."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    compute_capability: tuple[int, int]
    power_limit_mw: int | None = None
    sm_clock_max_mhz: int | None = None
    mig_enabled: bool = False

    def __post_init__(self) -> None:
        _require_int("GpuInfo", "index", self.index, 0)
        _require_text("GpuInfo", "name", self.name)
        _require_text("GpuInfo", "uuid", self.uuid)
        _require_int("GpuInfo", "memory_total_bytes", self.memory_total_bytes, 1)
        cc = self.compute_capability
        if not (isinstance(cc, tuple) and len(cc) == 2):
            raise ProtocolError(f"GpuInfo.compute_capability must be (major, minor), got {cc!r}")
        _require_int("GpuInfo", "compute_capability[0]", cc[0], 1)
        _require_int("GpuInfo", "compute_capability[1]", cc[1], 0)
        if self.power_limit_mw is not None:
            _require_int("GpuInfo", "power_limit_mw", self.power_limit_mw, 1)
        if self.sm_clock_max_mhz is not None:
            _require_int("GpuInfo", "sm_clock_max_mhz", self.sm_clock_max_mhz, 1)
        if not isinstance(self.mig_enabled, bool):
            raise ProtocolError(f"GpuInfo.mig_enabled must be a bool, got {self.mig_enabled!r}")

    @property
    def model(self) -> str:
        """Market model slug, e.g. ``H100-80GB``."""
        return gpu_model_slug(self.name)

    @property
    def memory_total_mib(self) -> int:
        """Total memory in MiB, the unit nvidia-smi prints."""
        return self.memory_total_bytes // _MIB

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``model`` included for readers that filter on it)."""
        return {
            "index": self.index,
            "name": self.name,
            "model": self.model,
            "uuid": self.uuid,
            "memory_total_bytes": self.memory_total_bytes,
            "compute_capability": list(self.compute_capability),
            "power_limit_mw": self.power_limit_mw,
            "sm_clock_max_mhz": self.sm_clock_max_mhz,
            "mig_enabled": self.mig_enabled,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GpuInfo:
        """Inverse of :meth:`to_json` (``model`` is derived, so ignored); ProtocolError if bad."""
        try:
            cc = data["compute_capability"]
            return cls(
                index=data["index"],
                name=data["name"],
                uuid=data["uuid"],
                memory_total_bytes=data["memory_total_bytes"],
                compute_capability=tuple(cc) if isinstance(cc, list | tuple) else cc,
                power_limit_mw=data.get("power_limit_mw"),
                sm_clock_max_mhz=data.get("sm_clock_max_mhz"),
                mig_enabled=data.get("mig_enabled", False),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"GPU entry is malformed ({exc!r}): {dict(data)!r}") from None


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """What the agent detected. Empty ``gpus`` means CPU only; ``reason`` always says why."""

    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    cuda_driver_version: str | None
    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, tuple) or not all(isinstance(g, GpuInfo) for g in self.gpus):
            raise ProtocolError(f"GpuInventory.gpus must be a tuple of GpuInfo, got {self.gpus!r}")
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise ProtocolError(f"GpuInventory.gpus has duplicate indices: {indices}")
        for field in ("driver_version", "cuda_driver_version"):
            value = getattr(self, field)
            if value is not None:
                _require_text("GpuInventory", field, value)
        _require_text("GpuInventory", "reason", self.reason)

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict for the agent's hello message and `provider info --json`."""
        return {
            "cpu_only": self.cpu_only,
            "count": len(self.gpus),
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "reason": self.reason,
            "gpus": [g.to_json() for g in self.gpus],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GpuInventory:
        """Inverse of :meth:`to_json` (derived keys ignored); ProtocolError if malformed."""
        try:
            gpus = data["gpus"]
            if not isinstance(gpus, list | tuple):
                raise TypeError("gpus is not a list")
            return cls(
                gpus=tuple(GpuInfo.from_json(g) for g in gpus),
                driver_version=data.get("driver_version"),
                cuda_driver_version=data.get("cuda_driver_version"),
                reason=data["reason"],
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"GPU inventory is malformed ({exc!r})") from None


# -- detection (the I/O shell around NVML) -----------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(raw: int) -> str:
    """NVML's 13000 -> "13.0", 12040 -> "12.4"."""
    return f"{raw // 1000}.{raw % 1000 // 10}"


def _nvml_unavailable(exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if code == _NVML_ERROR_LIBRARY_NOT_FOUND:
        return f"NVML not available ({_NVML_LIBRARY} not found)"
    if code == _NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVML not available (NVIDIA driver not loaded)"
    return f"NVML not available ({exc})"


def _read_gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def optional(fn: str, *args: Any) -> Any:
        try:
            return getattr(nvml, fn)(handle, *args)
        except nvml.NVMLError:  # NOT_SUPPORTED and friends: the field is simply unknown
            return None

    mig = optional("nvmlDeviceGetMigMode")
    power = optional("nvmlDeviceGetPowerManagementLimit")
    clock = optional("nvmlDeviceGetMaxClockInfo", _NVML_CLOCK_SM)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_total_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
        compute_capability=(int(major), int(minor)),
        power_limit_mw=int(power) if power else None,  # 0 means "not reported"
        sm_clock_max_mhz=int(clock) if clock else None,
        mig_enabled=mig is not None and mig[0] == _NVML_DEVICE_MIG_ENABLE,
    )


def detect_gpus(nvml: Any = None) -> GpuInventory:
    """Ask NVML which NVIDIA GPUs this machine has. Never raises for a missing GPU or driver.

    ``nvml`` is a module-like object with pynvml's functions and ``NVMLError`` (tests pass a
    fake); ``None`` imports nvidia-ml-py. A GPU NVML cannot read is left out and named in
    ``reason``.
    """
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return GpuInventory((), None, None, "CPU only: nvidia-ml-py (pynvml) is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuInventory((), None, None, f"CPU only: {_nvml_unavailable(exc)}")
    try:
        return _inventory(nvml)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _inventory(nvml: Any) -> GpuInventory:
    try:
        driver: str | None = _text(nvml.nvmlSystemGetDriverVersion()).strip() or None
    except nvml.NVMLError:
        driver = None
    try:
        cuda: str | None = _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
    except nvml.NVMLError:
        cuda = None
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        return GpuInventory((), driver, cuda, f"CPU only: NVML could not count GPUs ({exc})")
    gpus: list[GpuInfo] = []
    skipped: list[str] = []
    for index in range(count):
        try:
            gpus.append(_read_gpu(nvml, index))
        except (nvml.NVMLError, ProtocolError) as exc:
            skipped.append(f"GPU {index} skipped: {exc}")
    if count == 0:
        reason = "CPU only: NVML is installed but found no NVIDIA GPU"
    elif not gpus:
        reason = f"CPU only: NVML found {count} GPU(s) but could not read any"
    else:
        reason = f"NVML: {len(gpus)} of {count} GPU(s) detected"
    if skipped:
        reason += " (" + "; ".join(skipped) + ")"
    return GpuInventory(tuple(gpus), driver, cuda, reason)


# -- pure helpers --------------------------------------------------------------------------------

# Words that name the vendor, brand line, board form factor or memory type, not the model.
_SLUG_NOISE = frozenset(
    {"NVIDIA", "GEFORCE", "TESLA", "QUADRO", "GPU", "GENERATION"}
    | {"PCIE", "SXM", "SXM2", "SXM3", "SXM4", "SXM5"}
    | {"HBM2", "HBM2E", "HBM3", "HBM3E", "GDDR6", "GDDR6X"}
)


def gpu_model_slug(name: str) -> str:
    """Normalize an NVML/nvidia-smi name to the market's model slug.

    "NVIDIA H100 80GB HBM3" -> "H100-80GB", "NVIDIA A100-SXM4-80GB" -> "A100-80GB",
    "NVIDIA GeForce RTX 4090" -> "RTX-4090", "Tesla T4" -> "T4". "UNKNOWN" if nothing is left.
    """
    tokens = re.split(r"[\s\-_/]+", name.upper())
    kept = [t for t in (re.sub(r"[^A-Z0-9.]", "", t) for t in tokens) if t]
    return "-".join(t for t in kept if t not in _SLUG_NOISE) or "UNKNOWN"


def allot(inventory: GpuInventory, n: int, in_use: Iterable[int] = ()) -> tuple[int, ...]:
    """Choose ``n`` free GPU indices (lowest first) for a kernel; ``()`` when ``n`` is 0.

    Raises ProviderRefused when fewer than ``n`` GPUs are free.
    """
    _require_int("allot", "n", n, 0)
    busy = set(in_use)
    free = [g.index for g in sorted(inventory.gpus, key=lambda g: g.index) if g.index not in busy]
    if n > len(free):
        have = "this provider is CPU only" if inventory.cpu_only else f"{len(free)} free"
        raise ProviderRefused(
            f"kernel asks for {n} GPU(s) but {have} (of {len(inventory.gpus)}): "
            "ask for fewer GPUs, wait for a kernel to stop, or pick another offer"
        )
    return tuple(free[:n])


def cuda_visible_devices(indices: Sequence[int]) -> str:
    """Value for CUDA_VISIBLE_DEVICES; ``""`` hides every GPU (a CPU-only kernel)."""
    return ",".join(str(i) for i in indices)


def gpu_env(indices: Sequence[int]) -> dict[str, str]:
    """Environment that pins a kernel to these NVML indices.

    CUDA numbers devices fastest-first by default, NVML by PCI bus; PCI_BUS_ID order makes the
    indices in CUDA_VISIBLE_DEVICES mean the GPUs NVML reported.
    """
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": cuda_visible_devices(indices),
    }


def format_inventory(inv: GpuInventory) -> str:
    """Human text for `gpumarket provider info`."""
    if inv.cpu_only:
        return inv.reason if inv.reason.startswith("CPU only") else f"CPU only: {inv.reason}"
    lines = [
        f"{len(inv.gpus)} NVIDIA GPU(s), driver {inv.driver_version or 'unknown'}, "
        f"CUDA {inv.cuda_driver_version or 'unknown'}  [{inv.reason}]"
    ]
    for g in inv.gpus:
        extra = [f"compute {g.compute_capability[0]}.{g.compute_capability[1]}"]
        if g.power_limit_mw is not None:
            extra.append(f"{g.power_limit_mw / 1000:g} W")
        if g.sm_clock_max_mhz is not None:
            extra.append(f"SM {g.sm_clock_max_mhz} MHz")
        if g.mig_enabled:
            extra.append("MIG on")
        lines.append(
            f"  [{g.index}] {g.name} ({g.model}), {g.memory_total_mib} MiB, "
            f"{', '.join(extra)}, {g.uuid}"
        )
    return "\n".join(lines)


def select_gpus(inventory: GpuInventory, spec: str) -> GpuInventory:
    """The GPUs a provider rents out: ``all``, ``none`` or indices such as ``0,2``."""
    from jupyter_gpumarket.exceptions import ConfigError

    spec = (spec or "all").strip().lower()
    if spec == "all":
        return inventory
    if spec == "none":
        wanted: set[int] = set()
    else:
        try:
            wanted = {int(part) for part in spec.split(",") if part.strip()}
        except ValueError:
            raise ConfigError(f"--gpus {spec!r}: use all, none, or indices like 0,2") from None
        have = {g.index for g in inventory.gpus}
        if missing := sorted(wanted - have):
            raise ConfigError(
                f"--gpus asks for GPU {missing} but this machine has "
                f"{sorted(have) or 'none'} (see `gpumarket provider info`)"
            )
    kept = tuple(g for g in inventory.gpus if g.index in wanted)
    reason = f"{inventory.reason}; renting out {len(kept)} of {len(inventory.gpus)} (--gpus)"
    return dataclasses.replace(inventory, gpus=kept, reason=reason)
