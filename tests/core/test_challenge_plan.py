"""Challenge sizing: long enough to time, deadlines that let an honest GPU finish."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.challenge_plan import EXPECTED_EFFICIENCY, plan_challenge
from jupyter_gpumarket.core.verification import Claim
from jupyter_gpumarket.exceptions import ConfigError


@pytest.mark.parametrize("model", ["H100", "RTX 4090", "T4", "B200", "A100-80GB"])
def test_an_honest_gpu_spends_about_the_target_and_finishes_in_time(model):
    claim = Claim(model, 1, 16384)
    plan = plan_challenge(claim, rtt_s=0.05, target_s=0.25)
    cls = claim.gpu_class
    for spec, peak, deadline in (
        (plan.fp32, cls.fp32_tflops, plan.fp32_deadline_s),
        (plan.lowp, cls.lowp_tflops, plan.lowp_deadline_s),
    ):
        honest_s = spec.flops / (peak * EXPECTED_EFFICIENCY * 1e12)
        assert 0.2 <= honest_s <= 0.6, (model, spec.n, spec.rounds)
        assert deadline > honest_s + 0.1
    assert plan.lowp.precision == cls.lowp_precision
    assert plan.vram.fill_mib == int(16384 * 0.85)
    assert plan.vram_answer_deadline_s == pytest.approx(1.1)


def test_the_h100_uses_8192_for_bf16_and_a_cpu_cannot_meet_its_deadline():
    plan = plan_challenge(Claim("H100", 1, 81920))
    assert plan.lowp.n == 8192
    assert plan.fp32.n == 4096
    # this machine's pure-Python agent does ~1e7 multiply-adds a second: hours, not seconds
    assert plan.fp32.flops / 2e7 > 100 * plan.fp32_deadline_s


def test_cpu_and_unknown_offers_get_a_small_check():
    for claim in (Claim("CPU", 0, 0), Claim("Mystery X1", 1, 1000)):
        plan = plan_challenge(claim)
        assert plan.fp32.n == 128
        assert plan.vram is None
    with pytest.raises(ConfigError):
        plan_challenge(Claim("H100", 1, 1), rtt_s=-1)
    assert (
        plan_challenge(Claim("H100", 1, 1)).fp32.seed
        != plan_challenge(Claim("H100", 1, 1)).fp32.seed
    )
