"""The verification ladder: detected-vs-claimed, challenge verdicts calibrated on the real H100
fixture, and how the rungs combine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_gpumarket.core import verification as v
from jupyter_gpumarket.core.gpu_catalog import normalize
from jupyter_gpumarket.core.reputation import AttestationSummary
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gpu"
H100 = v.Claim("H100-SXM5-80GB", 1, 81920)


def fixture_detected() -> v.Detected:
    nvml = json.loads((FIXTURES / "h100-nvml.json").read_text())
    return v.Detected.from_json(
        {"gpus": [{"name": nvml["name"], "memory_total_bytes": nvml["memory_total"]}]}
    )


def measured(**kw) -> v.ChallengeMeasurement:
    # the fixture's H100 80GB HBM3: matmul 8192 FP32 51.6, BF16 781.1 TFLOPS
    base = dict(
        backend="cuda",
        rows_ok=True,
        rows_reason="ok",
        fp32_tflops=51.6,
        lowp_tflops=781.1,
        lowp_precision="bf16",
        vram_proven_mib=69_632,
    )
    return v.ChallengeMeasurement(**{**base, **kw})


def test_the_fixture_h100_is_detected_as_the_claimed_h100_sxm():
    det = fixture_detected()
    assert normalize(det.names[0]).name == "H100 SXM"
    assert det.vram_mib == (81559,)
    finding = v.compare_detected(H100, det)
    assert finding.ok is True, finding.reason


@pytest.mark.parametrize(
    ("claim", "names", "mib", "ok", "words"),
    [
        (v.Claim("H100", 1, 81920), ["NVIDIA H100 PCIe"], [81559], True, "NVML agrees"),
        (v.Claim("H100 SXM", 1, 81920), ["NVIDIA H100 PCIe"], [81559], False, "detects"),
        (H100, ["NVIDIA GeForce RTX 4090"], [24564], False, "RTX 4090"),
        (H100, [], [], False, "no GPU"),
        (v.Claim("H100", 2, 81920), ["NVIDIA H100 80GB HBM3"], [81559], False, "1 GPU"),
        (v.Claim("T4", 1, 16384), ["Tesla T4"], [15360], True, "15360"),
        (v.Claim("A100-80GB", 1, 81920), ["NVIDIA A100-SXM4-40GB"], [40536], False, "detects"),
        (v.Claim("A100", 1, 81920), ["NVIDIA A100-SXM4-40GB"], [40536], False, "40536 MiB"),
        (v.Claim("CPU", 0, 0), [], [], True, "CPU offer"),
        (v.Claim("Mystery X1", 1, 1000), ["Mystery X1"], [1000], True, "agrees"),
    ],
)
def test_detected_against_claimed(claim, names, mib, ok, words):
    finding = v.compare_detected(claim, v.Detected(tuple(names), tuple(mib)))
    assert finding.ok is ok
    assert words in finding.reason


def test_hostile_probe_inventories_are_refused():
    for bad in (
        [],
        {"gpus": "H100"},
        {"gpus": [{"name": "x" * 500, "memory_total_bytes": 1}]},
        {"gpus": [{"name": "H100", "memory_total_bytes": -1}]},
        {"gpus": [{"name": "H100", "memory_total_bytes": True}]},
        {"gpus": [{"name": "H100", "memory_total_bytes": 1}] * 65},
    ):
        with pytest.raises(ProtocolError):
            v.Detected.from_json(bad)


def test_the_real_h100_figures_match():
    verdict = v.challenge_verdict(H100, measured())
    assert verdict.result == "match", verdict.reason
    assert 0.75 < verdict.fp32_of_peak < 0.8
    assert 0.77 < verdict.lowp_of_peak < 0.8


@pytest.mark.parametrize(
    ("what", "claim", "m", "words"),
    [
        # an RTX 4090 claiming an H100: FP32 (82.6 peak) looks fine, BF16 gives it away
        ("4090 as H100", H100, measured(fp32_tflops=60.0, lowp_tflops=135.0), "BF16 135.0"),
        # an A100 claiming an H100
        ("A100 as H100", H100, measured(fp32_tflops=15.0, lowp_tflops=250.0), "FP32 15.0"),
        # tensor cores used for the FP32 run (or a faster part throttled): ratio off
        ("ratio", H100, measured(fp32_tflops=70.0, lowp_tflops=480.0), "BF16/FP32"),
        ("above peak", H100, measured(lowp_tflops=1500.0), "above what"),
        ("cpu backend", H100, measured(backend="cpu"), "ran on CPU"),
        ("wrong rows", H100, measured(rows_ok=False, rows_reason="round 0 row 3"), "row 3"),
        ("timeout", H100, measured(timed_out=True, seconds=30.0), "30.0 s"),
        ("vram", H100, measured(vram_proven_mib=20_000), "VRAM proof"),
        ("vram failed", H100, measured(vram_proven_mib=0), "VRAM proof"),
        ("unknown", v.Claim("Mystery X1", 1, 1000), measured(), "not in the GPU table"),
        ("no bf16 on T4", v.Claim("T4", 1, 16384), measured(fp32_tflops=5.0), "no BF16"),
    ],
)
def test_challenge_mismatches(what, claim, m, words):
    verdict = v.challenge_verdict(claim, m)
    assert verdict.result == "mismatch", what
    assert words in verdict.reason


def test_a_t4_honestly_measured_in_fp16_matches_even_power_limited():
    t4 = v.Claim("Tesla T4", 1, 16384)
    for fp16 in (40.0, 20.0):  # 20 TFLOPS: 31 % of peak, below the default floor
        m = measured(
            fp32_tflops=4.5, lowp_tflops=fp16, lowp_precision="fp16", vram_proven_mib=13_926
        )
        assert v.challenge_verdict(t4, m).result == "match", fp16
    assert v.band(t4.gpu_class, "fp16") == (0.25, 1.15)
    assert v.band(H100.gpu_class, "bf16") == v.LOWP_BAND


def test_a_cpu_offer_that_answered_is_cpu_and_a_simulated_gpu_on_cpu_is_mismatch():
    cpu = measured(backend="cpu", fp32_tflops=0.08, lowp_tflops=0.02, vram_proven_mib=None)
    assert v.challenge_verdict(v.Claim("CPU", 0, 0), cpu).result == "cpu"
    # the simulated H100 claims CUDA and answers correctly, but at CPU speed: caught by figures
    sim = v.Claim("H100", 1, 81920, simulated=True)
    fake = measured(fp32_tflops=0.08, lowp_tflops=0.02)
    assert v.challenge_verdict(sim, fake).result == "mismatch"


def test_levels_are_ordered_and_parse():
    assert v.Level.MISMATCH < v.Level.SELF_REPORTED < v.Level.DETECTED
    assert v.Level.DETECTED < v.Level.CHALLENGED < v.Level.ATTESTED
    assert v.Level.parse("self-reported") is v.Level.SELF_REPORTED
    assert v.Level.CHALLENGED.label == "challenged"
    with pytest.raises(ConfigError, match="self-reported"):
        v.Level.parse("gold")


def _att(weight, agree):
    return AttestationSummary(weight, agree, 0.9, 2, 0, "2 paying renter(s)")


def test_assess_climbs_the_ladder_and_any_contradiction_wins():
    det = v.compare_detected(H100, fixture_detected())
    good = v.challenge_verdict(H100, measured())
    assert v.assess(H100).level is v.Level.SELF_REPORTED
    assert v.assess(H100, detected=det).level is v.Level.DETECTED
    assert v.assess(H100, detected=det, challenge=good).level is v.Level.CHALLENGED
    top = v.assess(H100, detected=det, challenge=good, attestations=_att(100, 100))
    assert top.level is v.Level.ATTESTED
    bad = v.challenge_verdict(H100, measured(lowp_tflops=100.0))
    worst = v.assess(H100, detected=det, challenge=bad, attestations=_att(100, 100))
    assert worst.level is v.Level.MISMATCH
    assert "BF16" in worst.reason
    assert not worst.usable
    assert v.assess(H100, attestations=_att(100, 0)).level is v.Level.MISMATCH
    # a claim the table contradicts (80 GB on a 24 GB card) is a mismatch without any probe
    assert v.assess(v.Claim("RTX 4090", 1, 81920)).level is v.Level.MISMATCH


def test_labels_cpu_and_simulated():
    assert v.assess(v.Claim("CPU", 0, 0)).labels == ("cpu",)
    assert v.assess(v.Claim("H100", 1, 81920, simulated=True)).labels == ("simulated",)


def test_attested_band_is_the_lowp_band():
    lo, hi = v.attested_band(H100)
    assert lo == pytest.approx(989 * v.LOWP_BAND[0])
    assert hi == pytest.approx(989 * v.LOWP_BAND[1])
    assert v.attested_band(v.Claim("Mystery", 1, 1)) is None


def test_verify_json_has_the_keys_the_cli_promises():
    m = measured()
    j = v.verify_json(7, H100, m, v.challenge_verdict(H100, m))
    for key in (
        "offer_id",
        "verdict",
        "claimed_model",
        "fp32_tflops",
        "lowp_tflops",
        "vram_proven_mib",
        "seconds",
    ):
        assert key in j
    assert j["verdict"] == "match"
    assert j["claimed_class"] == "H100 SXM"
