"""The table of known GPUs (``gpus.json``) and the normalization of GPU names to its classes.

An offer says ``"H100-SXM5-80GB"``, NVML says ``"NVIDIA H100 80GB HBM3"``: both are the class
``H100 SXM``. :func:`normalize` maps any such name (offer text, NVML / nvidia-smi name, the
agent's model slug) to a :class:`GpuClass`, or None for a name the table does not know. The table
is data, not code: one JSON file packaged with the module, rows tried in order (specific first).

Names come from providers, so they are hostile: a name longer than :data:`MAX_NAME_CHARS` is
refused before any regular expression runs, and the patterns are anchored on word boundaries
over a short canonical form (no nested quantifiers).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "MAX_NAME_CHARS",
    "GpuClass",
    "all_classes",
    "canonical_name",
    "get_class",
    "matches_gpu_query",
    "normalize",
]

MAX_NAME_CHARS = 128  # longest NVML name is ~40; an offer's model field longer than this is junk
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

# Words that name the vendor or brand line, never the model.
_NOISE = frozenset({"NVIDIA", "GEFORCE", "TESLA", "QUADRO", "GPU", "GRAPHICS", "GENERATION"})


@dataclass(frozen=True)
class GpuClass:
    """One row of the table. TFLOPS are dense peaks; None: no tensor-core path for it."""

    name: str  # "H100 SXM": what offers and UIs show
    family: str  # "H100": what a ``gpu=H100`` filter matches
    vendor: str
    arch: str
    vram_mib: int  # nominal; detected totals are up to ~7 % lower
    fp32_tflops: float
    tf32_tflops: float | None
    bf16_tflops: float | None
    fp16_tflops: float | None
    estimate: bool = False  # a figure is derived, not read off a spec sheet (see ``note``)
    note: str = ""
    min_efficiency: float | None = None  # honest floor (fraction of peak) when below the default

    def __post_init__(self) -> None:
        for field in ("name", "family", "vendor", "arch"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ConfigError(f"GPU table row: {field} must be a non-empty string")
        if isinstance(self.vram_mib, bool) or not isinstance(self.vram_mib, int):
            raise ConfigError(f"GPU table row {self.name}: vram_mib must be an integer")
        if self.vram_mib <= 0:
            raise ConfigError(f"GPU table row {self.name}: vram_mib must be positive")
        for p in PRECISIONS:
            value = getattr(self, f"{p}_tflops")
            if value is None and p != "fp32":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"GPU table row {self.name}: {p} must be positive TFLOPS")
        me = self.min_efficiency
        if me is not None and (isinstance(me, bool) or not isinstance(me, float) or not 0 < me < 1):
            raise ConfigError(f"GPU table row {self.name}: min_efficiency must be in (0, 1)")
        if self.bf16_tflops is None and self.fp16_tflops is None:
            raise ConfigError(f"GPU table row {self.name}: needs a bf16 or fp16 figure")

    @property
    def lowp_precision(self) -> str:
        """The tensor-core precision the challenge measures: bf16 where the GPU has it."""
        return "bf16" if self.bf16_tflops is not None else "fp16"

    @property
    def lowp_tflops(self) -> float:
        """Dense peak in :attr:`lowp_precision`."""
        value = self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops
        assert value is not None  # __post_init__ guarantees one of them
        return float(value)

    def peak(self, precision: str) -> float | None:
        """Dense peak TFLOPS in ``precision`` ("fp32", "tf32", "bf16", "fp16")."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}: use one of {PRECISIONS}")
        value = getattr(self, f"{precision}_tflops")
        return None if value is None else float(value)


def canonical_name(name: str) -> str:
    """``"NVIDIA GeForce RTX 4090"`` -> ``"RTX 4090"``, ``"H100-SXM5-80GB"`` -> ``"H100 SXM5 80GB"``

    Upper case, separators to single spaces, vendor/brand words dropped, ``80 GB`` joined to
    ``80GB`` and ``144G`` read as ``144GB``. ConfigError for a non-string or an over-long name.
    """
    if not isinstance(name, str):
        raise ConfigError(f"a GPU name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"GPU name of {len(name)} characters is too long (max {MAX_NAME_CHARS})")
    return _canonical(name)


_SEPARATORS = re.compile(r"[^A-Z0-9]+")
_SIZE = re.compile(r"\b(\d+) ?GB?\b")


@lru_cache(maxsize=4096)
def _canonical(name: str) -> str:
    tokens = [t for t in _SEPARATORS.split(name.upper()) if t and t not in _NOISE]
    return _SIZE.sub(r"\1GB", " ".join(tokens))


@dataclass(frozen=True)
class _Row:
    gpu: GpuClass
    patterns: tuple[re.Pattern[str], ...]


def _row(raw: Any) -> _Row:
    if not isinstance(raw, dict):
        raise ConfigError("GPU table: every row must be an object")
    try:
        gpu = GpuClass(
            name=raw["class"],
            family=raw["family"],
            vendor=raw["vendor"],
            arch=raw["arch"],
            vram_mib=raw["vram_mib"],
            fp32_tflops=raw["fp32"],
            tf32_tflops=raw["tf32"],
            bf16_tflops=raw["bf16"],
            fp16_tflops=raw["fp16"],
            estimate=bool(raw.get("estimate", False)),
            note=str(raw.get("note", "")),
            min_efficiency=raw.get("min_efficiency"),
        )
        patterns = tuple(re.compile(p) for p in raw["patterns"])
    except KeyError as exc:
        raise ConfigError(f"GPU table row {raw.get('class')!r} lacks {exc}") from None
    if not patterns:
        raise ConfigError(f"GPU table row {gpu.name!r} has no pattern")
    return _Row(gpu, patterns)


@lru_cache(maxsize=1)
def _table() -> tuple[_Row, ...]:
    text = resources.files("jupyter_gpumarket.core").joinpath("gpus.json").read_text("utf-8")
    rows = tuple(_row(r) for r in json.loads(text)["gpus"])
    names = [r.gpu.name for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError("GPU table: class names must be unique")
    return rows


def all_classes() -> tuple[GpuClass, ...]:
    """Every row of the table, in matching order."""
    return tuple(r.gpu for r in _table())


def get_class(name: str) -> GpuClass | None:
    """The row whose class name is exactly ``name`` (case-insensitive), else None."""
    want = name.strip().upper() if isinstance(name, str) else None
    return next((r.gpu for r in _table() if r.gpu.name.upper() == want), None)


@lru_cache(maxsize=4096)
def _normalize_canonical(text: str) -> GpuClass | None:
    exact = get_class(text)
    if exact is not None:
        return exact
    for row in _table():
        if any(p.search(text) for p in row.patterns):
            return row.gpu
    return None


def normalize(name: str) -> GpuClass | None:
    """The class of a GPU name from an offer, NVML or nvidia-smi; None when unknown.

    ``"NVIDIA H100 80GB HBM3"``, ``"H100-SXM5-80GB"``, ``"h100 sxm"`` -> ``H100 SXM``;
    ``"Tesla T4"`` -> ``T4``. Never raises for a string within :data:`MAX_NAME_CHARS` (an
    over-long or non-string name is unknown: None).
    """
    try:
        text = canonical_name(name)
    except ConfigError:
        return None
    return _normalize_canonical(text) if text else None


def matches_gpu_query(query: str, gpu: GpuClass | None) -> bool:
    """Whether a ``gpu=`` filter value selects ``gpu``: a family (``H100``: every H100 class) or a
    name that normalizes to exactly this class (``H100 PCIe``, ``NVIDIA A100-SXM4-80GB``)."""
    if gpu is None:
        return False
    try:
        text = canonical_name(query)
    except ConfigError:
        return False
    if text == canonical_name(gpu.family):
        return True
    return normalize(query) == gpu
