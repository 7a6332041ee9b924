"""The verification ladder and the verdicts that move an offer on it.

.. code-block:: text

    level           rung reached when                                          evidence
    self-reported   always (the offer's own words)                             Claim
    detected        NVML, through the probe, agrees with the claim             compare_detected
    challenged      the seeded challenge matched the claimed model's figures   challenge_verdict
    attested        paying renters' on-chain attestations agree                AttestationSummary
    mismatch        ANY rung contradicts the claim (it outranks every other)

An offer's level is the highest rung it reached, unless some rung contradicts the claim: then it
is ``mismatch`` whatever else agrees. Two labels travel with the level: ``cpu`` (the offer is
CPU-only, or the challenge ran on CPU for a CPU offer) and ``simulated`` (the provider said it is a
dev agent claiming hardware it lacks). The verdicts never read ``simulated``: a simulated GPU is
caught by what it fails to do.

Challenge bands (measured on the renter's clock, so they include launch overheads): FP32 and the
tensor-core precision must land within [40 %, 115 %] and [45 %, 115 %] of the claimed model's
dense peak (a table row's ``min_efficiency`` lowers the floor: the power-limited T4), and their
ratio within 0.5x to 2x of the table's. An H100 80GB HBM3 measured 51.6
FP32 / 781 BF16 TFLOPS = 77 % / 79 % of peak, ratio 15.1 vs the table's 14.8. FP32 alone cannot
tell GPUs apart (an RTX 4090's FP32 peak is above an H100's); its BF16 peak is 17 % of an H100's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from jupyter_gpumarket.core.gpu_catalog import GpuClass
from jupyter_gpumarket.core.hw_claim import (
    VRAM_TOLERANCE,
    Claim,
    Detected,
    Finding,
    claim_consistency,
    compare_detected,
)
from jupyter_gpumarket.core.reputation import AttestationSummary
from jupyter_gpumarket.core.vram_proof import fill_mib_for
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "FP32_BAND",
    "LOWP_BAND",
    "RATIO_BAND",
    "VRAM_TOLERANCE",
    "Assessment",
    "ChallengeMeasurement",
    "ChallengeVerdict",
    "Claim",
    "Detected",
    "Finding",
    "Level",
    "assess",
    "attested_band",
    "band",
    "challenge_verdict",
    "claim_consistency",
    "compare_detected",
    "verify_json",
]

FP32_BAND = (0.40, 1.15)  # measured / dense peak (a table row's min_efficiency lowers the floor)
LOWP_BAND = (0.45, 1.15)


def band(cls: GpuClass, precision: str) -> tuple[float, float]:
    """The (floor, ceiling) fraction of ``cls``'s peak an honest ``precision`` run lands in."""
    low, high = FP32_BAND if precision == "fp32" else LOWP_BAND
    if cls.min_efficiency is not None:
        low = min(low, cls.min_efficiency)
    return low, high


RATIO_BAND = (0.5, 2.0)  # (measured lowp / fp32) / (table lowp / fp32)


class Level(IntEnum):
    """The ladder, ordered: ``Level.CHALLENGED > Level.DETECTED``; MISMATCH is below all."""

    MISMATCH = -1
    SELF_REPORTED = 0
    DETECTED = 1
    CHALLENGED = 2
    ATTESTED = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Level:
        """``"challenged"`` -> Level.CHALLENGED; ConfigError naming the choices otherwise."""
        for level in cls:
            if level.label == str(text).strip().lower():
                return level
        choices = ", ".join(level.label for level in cls)
        raise ConfigError(f"unknown verification level {text!r}: use one of {choices}")


@dataclass(frozen=True)
class ChallengeMeasurement:
    """What the renter measured. TFLOPS come from :func:`~jupyter_gpumarket.core.challenge.
    measured_tflops` (the renter's clock), ``rows_ok`` from ``check_reveal`` of every precision,
    ``vram_proven_mib`` from ``vram_verdict`` (None: the VRAM proof was not run)."""

    backend: str  # what the agent says it ran on: "cuda", "rocm", "cpu"
    rows_ok: bool
    rows_reason: str
    fp32_tflops: float | None
    lowp_tflops: float | None
    lowp_precision: str = "bf16"
    vram_proven_mib: int | None = None
    seconds: float = 0.0
    timed_out: bool = False

    def __post_init__(self) -> None:
        for name in ("fp32_tflops", "lowp_tflops", "seconds"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf
            ):
                raise ConfigError(f"challenge {name} must be a finite number >= 0, not {v!r}")
        if not isinstance(self.backend, str) or len(self.backend) > 32:
            raise ConfigError(f"challenge backend must be a short name, not {self.backend!r}")
        if not isinstance(self.rows_ok, bool) or not isinstance(self.timed_out, bool):
            raise ConfigError("challenge rows_ok and timed_out must be bools")
        vp = self.vram_proven_mib
        if vp is not None and (isinstance(vp, bool) or not isinstance(vp, int) or vp < 0):
            raise ConfigError(f"challenge vram_proven_mib must be an integer >= 0, not {vp!r}")
        if self.lowp_precision not in ("bf16", "fp16"):
            raise ConfigError(
                f"challenge lowp_precision must be bf16 or fp16, not {self.lowp_precision!r}"
            )


@dataclass(frozen=True)
class ChallengeVerdict:
    result: str  # "match" | "mismatch" | "cpu"
    reason: str
    fp32_of_peak: float | None = None
    lowp_of_peak: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.result,
            "reason": self.reason,
            "fp32_of_peak": self.fp32_of_peak,
            "lowp_of_peak": self.lowp_of_peak,
        }


def _out_of_band(
    label: str, value: float | None, peak: float | None, limits: tuple[float, float], model: str
) -> str | None:
    if value is None:
        return f"no {label} figure was measured"
    if peak is None:
        return f"the {model} has no {label} tensor cores, yet {label} was measured"
    ratio = value / peak
    if ratio < limits[0]:
        return (
            f"{label} {value:.1f} TFLOPS is {ratio:.0%} of the {model}'s {peak:g} dense peak "
            f"(at least {limits[0]:.0%} expected)"
        )
    if ratio > limits[1]:
        return f"{label} {value:.1f} TFLOPS is above what the {model} can do ({peak:g} peak)"
    return None


def challenge_verdict(claim: Claim, m: ChallengeMeasurement) -> ChallengeVerdict:
    """``match``, ``mismatch`` or ``cpu`` (a CPU offer that answered correctly), with the reason."""
    if m.timed_out:
        return ChallengeVerdict("mismatch", f"no correct answer within {m.seconds:.1f} s")
    if not m.rows_ok:
        return ChallengeVerdict("mismatch", f"wrong result: {m.rows_reason}")
    if claim.cpu_only:
        fp32 = f"{m.fp32_tflops:.3g}" if m.fp32_tflops is not None else "?"
        return ChallengeVerdict("cpu", f"CPU offer: correct result, {fp32} TFLOPS FP32")
    cls = claim.gpu_class
    if cls is None:
        return ChallengeVerdict(
            "mismatch",
            f"GPU model {claim.gpu_model!r} is not in the GPU table: no figures to check against",
        )
    if m.backend.strip().lower() == "cpu":
        return ChallengeVerdict("mismatch", f"ran on CPU, but the offer claims {claim.describe()}")
    fp32_peak, lowp_peak = cls.fp32_tflops, cls.peak(m.lowp_precision)
    for label, value, peak, limits in (
        ("FP32", m.fp32_tflops, fp32_peak, band(cls, "fp32")),
        (m.lowp_precision.upper(), m.lowp_tflops, lowp_peak, band(cls, m.lowp_precision)),
    ):
        problem = _out_of_band(label, value, peak, limits, cls.name)
        if problem:
            return ChallengeVerdict("mismatch", problem, *_ratios(m, fp32_peak, lowp_peak))
    if not (m.fp32_tflops and m.lowp_tflops and lowp_peak):  # pragma: no cover - _band refused
        return ChallengeVerdict("mismatch", "incomplete figures")
    ratio = (m.lowp_tflops / m.fp32_tflops) / (lowp_peak / fp32_peak)
    if not RATIO_BAND[0] <= ratio <= RATIO_BAND[1]:
        return ChallengeVerdict(
            "mismatch",
            f"{m.lowp_precision.upper()}/FP32 = {m.lowp_tflops / m.fp32_tflops:.1f}, "
            f"the {cls.name} gives {lowp_peak / fp32_peak:.1f}",
            *_ratios(m, fp32_peak, lowp_peak),
        )
    vram = ""
    if m.vram_proven_mib is not None:
        need = fill_mib_for(claim.vram_mib)
        if m.vram_proven_mib < need:
            return ChallengeVerdict(
                "mismatch",
                f"VRAM proof: {m.vram_proven_mib} MiB proven, {need} MiB needed",
                *_ratios(m, fp32_peak, lowp_peak),
            )
        vram = f", {m.vram_proven_mib} MiB proven"
    f32, lp = _ratios(m, fp32_peak, lowp_peak)
    return ChallengeVerdict(
        "match",
        f"{cls.name}: {m.lowp_precision.upper()} {m.lowp_tflops:.0f} TFLOPS ({lp:.0%} of peak), "
        f"FP32 {m.fp32_tflops:.1f} ({f32:.0%}){vram}",
        f32,
        lp,
    )


def verify_json(
    offer_id: int, claim: Claim, m: ChallengeMeasurement, verdict: ChallengeVerdict
) -> dict[str, Any]:
    """The object ``gpumarket offers verify --json`` prints (keys other tools rely on)."""
    return {
        "offer_id": offer_id,
        "verdict": verdict.result,
        "reason": verdict.reason,
        "claimed_model": claim.gpu_model,
        "claimed_class": claim.gpu_class.name if claim.gpu_class else None,
        "backend": m.backend,
        "fp32_tflops": m.fp32_tflops,
        "lowp_tflops": m.lowp_tflops,
        "lowp_precision": m.lowp_precision,
        "fp32_of_peak": verdict.fp32_of_peak,
        "lowp_of_peak": verdict.lowp_of_peak,
        "vram_proven_mib": m.vram_proven_mib,
        "rows_ok": m.rows_ok,
        "seconds": m.seconds,
    }


def _ratios(
    m: ChallengeMeasurement, fp32_peak: float, lowp_peak: float | None
) -> tuple[float | None, float | None]:
    f = m.fp32_tflops / fp32_peak if m.fp32_tflops is not None else None
    lp = m.lowp_tflops / lowp_peak if m.lowp_tflops is not None and lowp_peak else None
    return f, lp


def attested_band(claim: Claim) -> tuple[float, float] | None:
    """The TFLOPS an attestation's measured figure must fall in to agree with the claim (the
    tensor-core precision's band), None when the claim has no table row."""
    cls = claim.gpu_class
    if cls is None:
        return None
    low, high = band(cls, cls.lowp_precision)
    return cls.lowp_tflops * low, cls.lowp_tflops * high


@dataclass(frozen=True)
class Assessment:
    """An offer's place on the ladder, why, and its labels (``cpu``, ``simulated``)."""

    level: Level
    reason: str
    labels: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.level is not Level.MISMATCH


def assess(
    claim: Claim,
    *,
    detected: Finding | None = None,
    challenge: ChallengeVerdict | None = None,
    attestations: AttestationSummary | None = None,
) -> Assessment:
    """Combine the rungs (see the module docstring): any contradiction -> MISMATCH."""
    labels = tuple(
        label
        for label, on in (
            ("cpu", claim.cpu_only or (challenge is not None and challenge.result == "cpu")),
            ("simulated", claim.simulated),
        )
        if on
    )
    rungs: list[tuple[Level, Finding]] = [(Level.SELF_REPORTED, claim_consistency(claim))]
    if detected is not None:
        rungs.append((Level.DETECTED, detected))
    if challenge is not None:
        rungs.append((Level.CHALLENGED, Finding(challenge.result != "mismatch", challenge.reason)))
    if attestations is not None and attestations.verdict is not None:
        rungs.append((Level.ATTESTED, Finding(attestations.verdict, attestations.reason)))
    for _, finding in rungs:
        if finding.ok is False:
            return Assessment(Level.MISMATCH, finding.reason, labels)
    level, finding = max(
        ((lv, f) for lv, f in rungs if f.ok),
        default=(Level.SELF_REPORTED, rungs[0][1]),
        key=lambda x: x[0],
    )
    return Assessment(level, finding.reason, labels)
