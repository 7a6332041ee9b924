"""Per-kernel telemetry the agent streams every second on the agent channel, and the renter's
short history of it. Pure: samples are parsed from the (hostile) agent's JSON, bounded, and kept.

A sample (``TelemetrySample.to_json``)::

    {"t": 1732960000.5, "cpu_pct": 97.5, "ram_mib": 2048, "billed_seconds": 311,
     "spend": 86389, "gpus": [{"index": 0, "util_pct": 100, "mem_used_mib": 2133,
     "mem_total_mib": 81559, "temp_c": 60, "power_w": 691.2}]}

GPU fields the agent cannot read are ``null``; a CPU-only kernel has ``"gpus": []``. ``index`` is
the provider's NVML index of a GPU pinned to the kernel. Unknown keys are refused (an agent that
pads a sample is misbehaving, and nothing of it is kept). The history keeps the latest ``maxlen``
samples in order; a sample older than the latest is dropped (a replayed or reordered message).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["MAX_GPUS", "MAX_SAMPLE_BYTES", "GpuSample", "TelemetryHistory", "TelemetrySample"]

MAX_GPUS = 64
# The wire form of a sample: 64 GPUs of six numbers each fit in ~10 KiB; anything above is junk.
MAX_SAMPLE_BYTES = 32 * 1024
_GPU_KEYS = frozenset({"index", "util_pct", "mem_used_mib", "mem_total_mib", "temp_c", "power_w"})
_SAMPLE_KEYS = frozenset({"t", "cpu_pct", "ram_mib", "billed_seconds", "spend", "gpus"})
_BIG = 2**53  # any JSON number above this is junk for these fields


def _known_keys(data: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = sorted(str(k)[:40] for k in data if k not in allowed)
    if extra:
        raise ProtocolError(f"{what} has unknown field(s) {extra[:4]}")


def _num(
    data: dict[str, Any],
    key: str,
    lo: float,
    hi: float,
    *,
    optional: bool = False,
    integer: bool = False,
) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        raise ProtocolError(f"telemetry {key} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ProtocolError(f"telemetry {key}={value!r} is outside [{lo}, {hi}]")
    return value


@dataclass(frozen=True)
class GpuSample:
    index: int
    util_pct: float | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    temp_c: float | None
    power_w: float | None

    @classmethod
    def from_json(cls, data: Any) -> GpuSample:
        if not isinstance(data, dict):
            raise ProtocolError("a GPU telemetry entry must be an object")
        _known_keys(data, _GPU_KEYS, "a GPU telemetry entry")
        return cls(
            index=_num(data, "index", 0, MAX_GPUS - 1, integer=True),
            util_pct=_num(data, "util_pct", 0, 100, optional=True),
            mem_used_mib=_num(data, "mem_used_mib", 0, 2**31, optional=True, integer=True),
            mem_total_mib=_num(data, "mem_total_mib", 0, 2**31, optional=True, integer=True),
            temp_c=_num(data, "temp_c", -50, 200, optional=True),
            power_w=_num(data, "power_w", 0, 10_000, optional=True),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TelemetrySample:
    t: float  # the agent's wall clock, seconds since the epoch
    cpu_pct: float  # of one core: 250 = two and a half cores busy
    ram_mib: int
    billed_seconds: int
    spend: int  # token base units billed so far on this lease
    gpus: tuple[GpuSample, ...]

    @classmethod
    def from_json(cls, data: Any) -> TelemetrySample:
        """From the agent's message (already size-capped and decoded); ProtocolError if bad."""
        if not isinstance(data, dict):
            raise ProtocolError("a telemetry sample must be an object")
        _known_keys(data, _SAMPLE_KEYS, "a telemetry sample")
        gpus = data.get("gpus", [])
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise ProtocolError(f"telemetry gpus must be a list of at most {MAX_GPUS}")
        parsed = tuple(GpuSample.from_json(g) for g in gpus)
        if len({g.index for g in parsed}) != len(parsed):
            raise ProtocolError("telemetry gpus lists a GPU index twice")
        return cls(
            t=_num(data, "t", 0, _BIG),
            cpu_pct=_num(data, "cpu_pct", 0, 100 * 4096),
            ram_mib=_num(data, "ram_mib", 0, 2**40, integer=True),
            billed_seconds=_num(data, "billed_seconds", 0, _BIG, integer=True),
            spend=_num(data, "spend", 0, _BIG, integer=True),
            gpus=parsed,
        )

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "gpus"}
        out["gpus"] = [g.to_json() for g in self.gpus]
        return out


class TelemetryHistory:
    """The latest ``maxlen`` samples of one kernel, oldest first."""

    def __init__(self, maxlen: int = 300) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or not 1 <= maxlen <= 86_400:
            raise ProtocolError(f"telemetry history length must be 1 to 86400, not {maxlen!r}")
        self._samples: deque[TelemetrySample] = deque(maxlen=maxlen)

    def add(self, sample: TelemetrySample) -> bool:
        """Keep ``sample``; False (and dropped) when it is not newer than the latest."""
        if self._samples and sample.t <= self._samples[-1].t:
            return False
        self._samples.append(sample)
        return True

    @property
    def latest(self) -> TelemetrySample | None:
        return self._samples[-1] if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[TelemetrySample]:
        return iter(self.snapshot())

    def snapshot(self) -> tuple[TelemetrySample, ...]:
        """The samples now, oldest first: safe to call from another thread than :meth:`add`'s
        (copying a deque is one C call under the GIL)."""
        return tuple(self._samples)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.snapshot()]
