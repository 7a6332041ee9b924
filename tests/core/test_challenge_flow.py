"""The whole challenge, renter and agent sides, on this CPU: the pure-Python agent answers
correctly, and the verdict still tells a CPU from the GPU it claims (without reading the
``simulated`` label)."""

from __future__ import annotations

import secrets
import time

from jupyter_gpumarket.core import challenge as ch
from jupyter_gpumarket.core import challenge_reference as ref
from jupyter_gpumarket.core import vram_proof as vp
from jupyter_gpumarket.core.verification import (
    ChallengeMeasurement,
    Claim,
    Level,
    assess,
    challenge_verdict,
)


def run_challenge(claim: Claim, n: int = 48) -> ChallengeMeasurement:
    """What the renter's side does with a CPU agent (reference answers, in process)."""
    cls = claim.gpu_class
    lowp = cls.lowp_precision if cls else "bf16"
    figures = {}
    ok, why = True, ""
    for precision in ("fp32", lowp):
        spec = ch.MatmulSpec.fresh(n, rounds=1, precision=precision)
        start = time.perf_counter()
        commit, products, sums = ref.reference_answer(spec)  # the agent's work
        elapsed = time.perf_counter() - start
        sample = ch.choose_sample(spec, secrets.token_bytes(32))
        check = ch.check_reveal(spec, commit, sample, ref.reveal_for(sample, products, sums))
        ok, why = ok and check.ok, why or (check.reason if not check.ok else "")
        figures[precision] = ch.measured_tflops(spec, elapsed)
    vspec = vp.VramSpec.fresh(1)  # a CPU agent can hold 1 MiB; the claim needs far more
    slices = vp.choose_slices(vspec, secrets.token_bytes(32), count=4, length=64)
    answers = [vp.slice_answer(vspec, o, slices.length) for o in slices.offsets]
    proof = vp.vram_verdict(vspec, slices, answers, 0.01, 1.0)
    return ChallengeMeasurement(
        backend="cuda",  # a lying agent says so; the figures give it away
        rows_ok=ok,
        rows_reason=why,
        fp32_tflops=figures["fp32"],
        lowp_tflops=figures[lowp],
        lowp_precision=lowp,
        vram_proven_mib=proof.proven_mib,
    )


def test_a_simulated_h100_on_this_cpu_is_a_mismatch():
    claim = Claim("H100", 1, 81920, simulated=True)
    m = run_challenge(claim)
    assert m.rows_ok, m.rows_reason  # the answers are right: only the speed betrays it
    verdict = challenge_verdict(claim, m)
    assert verdict.result == "mismatch"
    assert "of the H100 SXM's 67 dense peak" in verdict.reason
    a = assess(claim, challenge=verdict)
    assert a.level is Level.MISMATCH
    assert a.labels == ("simulated",)


def test_a_cpu_offer_answering_correctly_is_cpu():
    claim = Claim("CPU", 0, 0)
    m = run_challenge(claim)
    verdict = challenge_verdict(claim, m)
    assert verdict.result == "cpu"
    a = assess(claim, challenge=verdict)
    assert a.level is Level.CHALLENGED
    assert a.labels == ("cpu",)
