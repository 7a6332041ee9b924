"""Sizing a challenge for a claim, and how long the renter waits for each answer.

The renter's clock covers the rounds plus one round trip, so the rounds must take long enough
that the round trip and launch overheads are small next to them: :func:`plan_challenge` picks
``n`` (4096, or 8192 for fast tensor cores) and the rounds so that the claimed GPU, running at
:data:`EXPECTED_EFFICIENCY` of its dense peak, takes about ``target_s``. The deadline is the time
the same work takes at the bottom of the verdict's band, plus two round trips and a second:
whatever is slower would be a mismatch anyway, so the renter stops waiting there (a CPU posing
as a GPU times out instead of computing for hours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jupyter_gpumarket.core.challenge import MAX_ROUNDS, MatmulSpec
from jupyter_gpumarket.core.verification import Claim, band
from jupyter_gpumarket.core.vram_proof import VramSpec, fill_mib_for
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["EXPECTED_EFFICIENCY", "ChallengePlan", "plan_challenge"]

EXPECTED_EFFICIENCY = 0.78  # of dense peak: what the H100 fixture reached (77-79 %)
MAX_ROUNDS_AT_4096 = 256  # beyond this, use 8192 (fewer, longer rounds)
CPU_N = 128  # a CPU offer answers a small challenge (pure Python: ~0.7 s here)
VRAM_FILL_GBPS = 20.0  # the slowest fill rate we wait for (GB/s): a GPU fills far faster
SLACK_S = 1.0


@dataclass(frozen=True)
class ChallengePlan:
    """What the renter sends, and how long it waits for each answer (seconds)."""

    fp32: MatmulSpec
    lowp: MatmulSpec
    fp32_deadline_s: float
    lowp_deadline_s: float
    vram: VramSpec | None  # None: nothing to prove (CPU offers, unknown models)
    vram_fill_deadline_s: float
    vram_answer_deadline_s: float


def _size(peak_tflops: float, target_s: float) -> tuple[int, int]:
    rate = peak_tflops * EXPECTED_EFFICIENCY * 1e12
    for n in (4096, 8192):
        rounds = max(1, math.ceil(target_s * rate / (2 * n**3)))
        if rounds <= MAX_ROUNDS_AT_4096:
            return n, rounds
    return 8192, min(rounds, MAX_ROUNDS)


def _deadline(spec: MatmulSpec, peak_tflops: float, band_low: float, rtt_s: float) -> float:
    return spec.flops / (peak_tflops * band_low * 1e12) + 2 * rtt_s + SLACK_S


def plan_challenge(claim: Claim, *, rtt_s: float = 0.0, target_s: float = 0.25) -> ChallengePlan:
    """A fresh challenge (new seeds) sized for ``claim``; ``rtt_s``: the probe's round trip."""
    if not 0 <= rtt_s < 60 or not 0.01 <= target_s <= 10:
        raise ConfigError("plan_challenge: rtt_s in [0, 60) and target_s in [0.01, 10] seconds")
    cls = claim.gpu_class
    if claim.cpu_only or cls is None:
        # nothing to compare with the table: a small correctness check, CPU-sized (an agent with
        # numpy or a GPU answers at once; the pure-Python fallback within seconds)
        fp32 = MatmulSpec.fresh(CPU_N, 1, "fp32")
        lowp = MatmulSpec.fresh(CPU_N, 1, "bf16")
        wait = 60.0 + 2 * rtt_s
        return ChallengePlan(fp32, lowp, wait, wait, None, 0.0, 0.0)
    n32, r32 = _size(cls.fp32_tflops, target_s)
    nlp, rlp = _size(cls.lowp_tflops, target_s)
    fp32 = MatmulSpec.fresh(n32, r32, "fp32")
    lowp = MatmulSpec.fresh(nlp, rlp, cls.lowp_precision)
    vram = VramSpec.fresh(fill_mib_for(claim.vram_mib)) if claim.vram_mib else None
    fill_s = 0.0 if vram is None else vram.fill_mib * 2**20 / (VRAM_FILL_GBPS * 1e9)
    return ChallengePlan(
        fp32,
        lowp,
        _deadline(fp32, cls.fp32_tflops, band(cls, "fp32")[0], rtt_s),
        _deadline(lowp, cls.lowp_tflops, band(cls, cls.lowp_precision)[0], rtt_s),
        vram,
        fill_s + 2 * rtt_s + 10.0,
        2 * rtt_s + SLACK_S,
    )
