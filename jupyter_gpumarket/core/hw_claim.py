"""What an offer claims about its hardware, and that claim against the table and against what
the agent's NVML detects (the ``detected`` rung of the ladder in
:mod:`~jupyter_gpumarket.core.verification`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jupyter_gpumarket.core.gpu_catalog import GpuClass, canonical_name, normalize
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

__all__ = [
    "MAX_GPUS",
    "VRAM_TOLERANCE",
    "Claim",
    "Detected",
    "Finding",
    "claim_consistency",
    "compare_detected",
]

VRAM_TOLERANCE = 0.08  # NVML totals run up to ~7 % under the nominal size (T4: 15360 of 16384)
MAX_GPUS = 64  # in one probe answer; more is junk
_CPU_WORDS = frozenset({"", "CPU", "NONE"})


@dataclass(frozen=True)
class Claim:
    """What an offer says about its hardware (``vram_mib`` is per GPU)."""

    gpu_model: str
    gpu_count: int
    vram_mib: int
    simulated: bool = False

    cpu_only: bool = field(init=False, compare=False)
    gpu_class: GpuClass | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.gpu_model, str):
            raise ConfigError(f"claim gpu_model must be a string, not {self.gpu_model!r}")
        for name in ("gpu_count", "vram_mib"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"claim {name} must be an integer >= 0, not {v!r}")
        try:
            cpu = self.gpu_count == 0 or canonical_name(self.gpu_model) in _CPU_WORDS
        except ConfigError:  # an over-long model name: not a CPU word, and no class either
            cpu = False
        object.__setattr__(self, "cpu_only", cpu)
        object.__setattr__(self, "gpu_class", None if cpu else normalize(self.gpu_model))

    def describe(self) -> str:
        if self.cpu_only:
            return "CPU only"
        name = self.gpu_class.name if self.gpu_class else repr(self.gpu_model)
        return f"{self.gpu_count}x {name}"


@dataclass(frozen=True)
class Detected:
    """What the agent's NVML reports (the probe's ``gpus`` entries): names and MiB per GPU."""

    names: tuple[str, ...]
    vram_mib: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.vram_mib) or len(self.names) > MAX_GPUS:
            raise ProtocolError(
                f"detected GPUs: {len(self.names)} names for {len(self.vram_mib)} sizes"
            )

    @classmethod
    def from_json(cls, data: Any) -> Detected:
        """From the agent's inventory JSON (``{"gpus": [{"name", "memory_total_bytes"}, ...]}``);
        ProtocolError for anything malformed (a peer sent it)."""
        gpus = data.get("gpus") if isinstance(data, dict) else None
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise ProtocolError(f"detected GPUs must be a list of at most {MAX_GPUS}")
        names, sizes = [], []
        for g in gpus:
            name = g.get("name") if isinstance(g, dict) else None
            size = g.get("memory_total_bytes") if isinstance(g, dict) else None
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise ProtocolError("a detected GPU needs a name of 1 to 128 characters")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < 2**50:
                raise ProtocolError(f"detected GPU {name!r}: memory_total_bytes is not a size")
            names.append(name)
            sizes.append(size // (1024 * 1024))
        return cls(tuple(names), tuple(sizes))


@dataclass(frozen=True)
class Finding:
    """One rung's answer: ``ok`` True (agrees), False (contradicts), None (nothing to compare)."""

    ok: bool | None
    reason: str


def _same_model(claim: Claim, name: str) -> bool:
    want, got = claim.gpu_class, normalize(name)
    if want is None or got is None:
        try:
            return got is None and canonical_name(name) == canonical_name(claim.gpu_model)
        except ConfigError:
            return False
    if want == got:
        return True
    # a claim that names only the family ("H100") accepts any of its classes
    return got.family == want.family and canonical_name(claim.gpu_model) == canonical_name(
        want.family
    )


def claim_consistency(claim: Claim) -> Finding:
    """The claim against the table alone: more memory than the model has is a contradiction."""
    cls = claim.gpu_class
    if claim.cpu_only:
        return Finding(True, "CPU offer")
    if cls is None:
        return Finding(None, f"GPU model {claim.gpu_model!r} is not in the GPU table")
    if claim.vram_mib > cls.vram_mib * (1 + VRAM_TOLERANCE):
        return Finding(
            False, f"claims {claim.vram_mib} MiB but the {cls.name} has {cls.vram_mib} MiB"
        )
    return Finding(True, f"{cls.name} as listed")


def compare_detected(claim: Claim, detected: Detected | None) -> Finding:
    """The claim against what the agent detects (model class, count, VRAM per GPU)."""
    if detected is None:
        return Finding(None, "not probed")
    have = len(detected.names)
    if claim.cpu_only:
        return Finding(True, "CPU offer" + (f" ({have} GPU(s) unused)" if have else ""))
    if have < claim.gpu_count:
        what = "no GPU" if have == 0 else f"{have} GPU(s)"
        return Finding(False, f"claims {claim.describe()}, the agent detects {what}")
    matching = [
        mib
        for name, mib in zip(detected.names, detected.vram_mib, strict=True)
        if _same_model(claim, name)
    ]
    if len(matching) < claim.gpu_count:
        return Finding(
            False,
            f"claims {claim.describe()}, the agent detects "
            + ", ".join(sorted(set(detected.names))[:3]),
        )
    low = sorted(matching, reverse=True)[claim.gpu_count - 1]
    if low < claim.vram_mib * (1 - VRAM_TOLERANCE):
        return Finding(False, f"claims {claim.vram_mib} MiB per GPU, the agent detects {low} MiB")
    return Finding(True, f"NVML agrees: {claim.describe()}, {low} MiB")
