"""Shared GPU slices: one GPU rented to several kernels, what an offer says of its slice, and
when a kernel over its slice is warned and stopped. Pure: no NVML, no processes, no clock.

A provider slices a GPU in one of three ways (:class:`SliceMode`), best first:

.. code-block:: text

    mode     where                        the kernel gets               the memory cap
    MIG      the GPU has MIG instances    CUDA_VISIBLE_DEVICES=MIG-<id>  the hardware
    MPS      the CUDA MPS daemon runs     its GPU + MPS pinned limit     the MPS server
    WATCHED  any other GPU (time-shared)  its GPU                        the agent (VramWatch):
                                                                         NVML per-process memory,
                                                                         warned, then stopped

The agent watches every slice's memory (MIG and MPS too: a second line costs one NVML read).
An offer states its slice in the Registry metadata (``core.offer_meta``): ``slice=1/4``,
``slice_vram=20480`` (MiB) and, for MIG, ``mig=1g.10gb``; no contract change. The on-chain
``vram_mb`` stays the whole GPU's (the GPU class and the verification ladder read it); the
market uses the slice's VRAM wherever a renter filters or ranks by VRAM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "MAX_SLICES",
    "GpuSlice",
    "SliceMode",
    "SliceTerms",
    "VramWatch",
    "describe_slice",
    "mig_cap_nodes",
    "mig_profile_of",
    "parse_mig_profile",
    "time_slices",
]

MAX_SLICES = 64  # kernels per GPU
MAX_SLICE_VRAM_MIB = 2**31
WARN_FRACTION = 0.9  # tell the renter before its slice is full
OVER_GRACE_S = 10.0  # seconds a kernel may stay over its slice (to free memory) before it stops
_MIG_PROFILE = re.compile(r"([1-9]\d?)g\.([1-9]\d{0,3})gb(\+me)?", re.ASCII)
_SHARE = re.compile(r"([1-9]\d?)/([1-9]\d?)", re.ASCII)
_VRAM = re.compile(r"[1-9]\d{0,9}", re.ASCII)
_MIB_PER_GB = 1024
# Compute slices a MIG-capable GPU has (A30: 4; A100, H100, H200, B200: 7)
_MIG_COMPUTE_SLICES = {"A30": 4}


class SliceMode(Enum):
    MIG = "mig"
    MPS = "mps"
    WATCHED = "watched"


def parse_mig_profile(text: object) -> str:
    """``"1g.10gb"`` as given (lower case), or ConfigError naming the expected form."""
    profile = text.strip().lower() if isinstance(text, str) else None
    if profile is None or not _MIG_PROFILE.fullmatch(profile):
        raise ConfigError(
            f"MIG profile {text!r} is not like 1g.10gb or 3g.40gb "
            "(see `nvidia-smi mig -lgip` for the profiles this GPU has)"
        )
    return profile


def mig_profile_of(device_name: str) -> str | None:
    """The profile in NVML's MIG device name ("NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb")."""
    m = re.search(r"\bMIG\s+(\S+)", device_name, re.ASCII)
    if m is None:
        return None
    found = m.group(1).lower()
    return found if _MIG_PROFILE.fullmatch(found) else None


def _mig_share(profile: str, gpu_name: str) -> str:
    m = _MIG_PROFILE.fullmatch(profile)
    assert m is not None
    total = next((n for k, n in _MIG_COMPUTE_SLICES.items() if k in gpu_name.upper()), 7)
    return f"{min(int(m.group(1)), total)}/{total}"


@dataclass(frozen=True)
class SliceTerms:
    """What an offer says of its slice: ``share`` of the GPU ("1/4"), its VRAM, its MIG profile."""

    share: str
    vram_mib: int
    mig_profile: str | None = None

    def __post_init__(self) -> None:
        m = _SHARE.fullmatch(self.share) if isinstance(self.share, str) else None
        if m is None or not 0 < int(m.group(1)) < int(m.group(2)) <= MAX_SLICES:
            raise ConfigError(
                f"slice share must be k/n with 0 < k < n <= {MAX_SLICES}, not {self.share!r}"
            )
        v = self.vram_mib
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < MAX_SLICE_VRAM_MIB:
            raise ConfigError(f"slice vram_mib must be a positive integer, not {v!r}")
        if self.mig_profile is not None:
            object.__setattr__(self, "mig_profile", parse_mig_profile(self.mig_profile))

    @property
    def fraction(self) -> Fraction:
        num, den = self.share.split("/")
        return Fraction(int(num), int(den))

    @classmethod
    def for_mig(cls, profile: str, vram_mib: int, gpu_name: str) -> SliceTerms:
        return cls(_mig_share(parse_mig_profile(profile), gpu_name), vram_mib, profile)

    def to_meta(self) -> dict[str, object]:
        """The keys this slice adds to the offer's metadata (``core.offer_meta``)."""
        out: dict[str, object] = {"slice": self.share, "slice_vram": self.vram_mib}
        if self.mig_profile is not None:
            out["mig"] = self.mig_profile
        return out

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> SliceTerms | None:
        """The slice an offer's (hostile) metadata states; None when whole or malformed."""
        share, vram, mig = meta.get("slice"), meta.get("slice_vram", ""), meta.get("mig")
        if share is None or not _VRAM.fullmatch(vram):
            return None
        try:
            return cls(share, int(vram), mig)
        except ConfigError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {"share": self.share, "vram_mib": self.vram_mib, "mig_profile": self.mig_profile}


def _gb(mib: int) -> str:
    gb = mib / _MIB_PER_GB
    return f"{gb:.0f} GB" if gb >= 10 else f"{gb:.1f} GB"


def describe_slice(terms: SliceTerms, gpu_name: str) -> str:
    """Plain words for the picker: "1/4 of an A100 80GB, 20 GB" ("MIG 1g.10gb, 1/7 of …")."""
    name = " ".join(gpu_name.split()) or "GPU"
    article = "an" if name[0].upper() in "AEFHILMNORSX8" else "a"  # how the letter is said
    text = f"{terms.share} of {article} {name}, {_gb(terms.vram_mib)}"
    return f"MIG {terms.mig_profile}, {text}" if terms.mig_profile else text


@dataclass(frozen=True)
class GpuSlice:
    """One slice a kernel rents: GPU ``gpu_index``'s slice number ``number``."""

    gpu_index: int
    number: int
    vram_mib: int
    mode: SliceMode
    mig_uuid: str | None = None
    mps_pipe_dir: str | None = None
    share_percent: int = 100  # of the GPU's compute (MPS active thread percentage)
    devices: tuple[str, ...] = ()  # MIG: the instance's capability nodes, for the sandbox

    def __post_init__(self) -> None:
        for name in ("gpu_index", "number", "vram_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"GpuSlice.{name} must be an integer >= 0, not {value!r}")
        if (self.mode is SliceMode.MIG) != (self.mig_uuid is not None):
            raise ConfigError("a MIG slice has a MIG uuid, and only a MIG slice has one")
        if (self.mode is SliceMode.MPS) != (self.mps_pipe_dir is not None):
            raise ConfigError("an MPS slice has the daemon's pipe dir, and only an MPS slice")

    @property
    def name(self) -> str:
        return f"gpu{self.gpu_index}/slice{self.number}"

    def env(self) -> dict[str, str]:
        """The kernel's GPU variables (applied after the renter's: a renter cannot set them)."""
        env = {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": str(self.gpu_index),
            "GPUMARKET_GPU_SLICE": self.name,
            "GPUMARKET_GPU_SLICE_VRAM_MIB": str(self.vram_mib),
        }
        if self.mig_uuid is not None:
            uuid = self.mig_uuid
            env["CUDA_VISIBLE_DEVICES"] = uuid if uuid.startswith("MIG-") else f"MIG-{uuid}"
        if self.mps_pipe_dir is not None:
            env["CUDA_MPS_PIPE_DIRECTORY"] = self.mps_pipe_dir
            env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={self.vram_mib}M"  # device 0: its GPU
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(self.share_percent)
        return env


def mig_cap_nodes(mig_minors: str, gpu_minor: int, gi: int, ci: int) -> tuple[str, ...]:
    """The ``/dev/nvidia-caps`` nodes that open MIG instance (``gi``, ``ci``) of the GPU with
    device minor ``gpu_minor``, from the driver's ``/proc/driver/nvidia-caps/mig-minors``
    (lines ``gpu0/gi1/access 12``, ``gpu0/gi1/ci0/access 13``); () when it lists them not.

    A sandboxed kernel gets these nodes and no other instance's: that, not
    ``CUDA_VISIBLE_DEVICES``, keeps it off its neighbours' instances."""
    wanted = (f"gpu{gpu_minor}/gi{gi}/access", f"gpu{gpu_minor}/gi{gi}/ci{ci}/access")
    minors: dict[str, int] = {}
    for line in mig_minors.splitlines()[:100_000]:
        name, _, minor = line.strip().partition(" ")
        if name in wanted and re.fullmatch(r"\d{1,7}", minor.strip(), re.ASCII):
            minors[name] = int(minor)
    if len(minors) != len(wanted):
        return ()
    return tuple(f"/dev/nvidia-caps/nvidia-cap{minors[name]}" for name in wanted)


def time_slices(
    gpus: Mapping[int, int],
    count: int,
    *,
    vram_mib: int | None = None,
    mps_pipe_dir: str | None = None,
) -> tuple[GpuSlice, ...]:
    """``count`` time-shared slices of each GPU (``{index: memory MiB}``), each capped at
    ``vram_mib`` (default: an equal share). MPS caps them where its daemon runs."""
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= MAX_SLICES:
        raise ConfigError(f"--slices must be between 2 and {MAX_SLICES}, not {count!r}")
    if not gpus:
        raise ConfigError("--slices needs a GPU: this provider is CPU only")
    out: list[GpuSlice] = []
    for index, total in sorted(gpus.items()):
        each = total // count
        cap = each if vram_mib is None else vram_mib
        if not 0 < cap <= each:
            raise ConfigError(
                f"--slice-vram-mb {vram_mib} does not fit {count} slices of GPU {index} "
                f"({total} MiB): use at most {each}"
            )
        mode = SliceMode.MPS if mps_pipe_dir is not None else SliceMode.WATCHED
        out.extend(
            GpuSlice(index, n, cap, mode, None, mps_pipe_dir, max(1, 100 // count))
            for n in range(count)
        )
    return tuple(out)


@dataclass
class VramWatch:
    """When a kernel over its slice's memory is warned and stopped (the agent samples it).

    Near the slice (:data:`WARN_FRACTION`) the renter is warned once; over it, warned again and
    given ``grace`` seconds to free memory; still over after that, the kernel is stopped.
    ``observe`` returns ``("warn" | "stop", message)`` or None.
    """

    limit_mib: int
    grace: float = OVER_GRACE_S
    warn_fraction: float = WARN_FRACTION
    _near_warned: bool = False
    _over_since: float | None = None

    def observe(self, now: float, used_mib: int | None) -> tuple[str, str] | None:
        if used_mib is None:  # NVML could not say: nothing is made up
            return None
        if used_mib <= self.limit_mib:
            self._over_since = None
            if used_mib > self.limit_mib * self.warn_fraction and not self._near_warned:
                self._near_warned = True
                return "warn", (
                    f"the kernel uses {used_mib} MiB of its {self.limit_mib} MiB GPU slice; "
                    "past the slice the provider stops it: free GPU memory you no longer need"
                )
            return None
        if self._over_since is None:
            self._over_since = now
            return "warn", (
                f"the kernel uses {used_mib} MiB, over its {self.limit_mib} MiB GPU slice: free "
                f"GPU memory within {self.grace:.0f} s or the provider stops the kernel"
            )
        if now - self._over_since >= self.grace:
            return "stop", (
                f"the kernel used {used_mib} MiB of GPU memory, over its {self.limit_mib} MiB "
                f"slice for {self.grace:.0f} s, so the provider stopped it; use less GPU memory "
                "(smaller batches) or pick an offer with a bigger slice or a whole GPU"
            )
        return None
