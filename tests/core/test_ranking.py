"""Ranking: policies, constraints, unusable offers returned with their reason, a total order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpumarket.core.market_offer import Constraints, MarketOffer, Policy, ProbeResult
from jupyter_gpumarket.core.offer_terms import PublishedTerms
from jupyter_gpumarket.core.ranking import effective_tflops, rank, usable
from jupyter_gpumarket.core.verification import Assessment, Detected, Level
from jupyter_gpumarket.exceptions import ConfigError

TOKEN = "0x" + "ab" * 20


def offer(
    oid,
    model="H100 SXM",
    price=2_000_000,
    count=1,
    vram=81920,
    region="eu-west",
    meta="",
    provider=None,
    active=True,
):
    terms = PublishedTerms(
        f"wss://10.0.0.{oid}:8443",
        "sha256:" + f"{oid:064x}",
        model,
        count,
        vram,
        price,
        TOKEN,
        region,
        meta,
    )
    return MarketOffer(oid, provider or "0x" + f"{oid:040x}", terms, active)


def up(oid, latency=20.0, free=4, gpus=8, detected=None):
    return ProbeResult(
        oid, True, latency_ms=latency, free_kernels=free, free_gpus=gpus, detected=detected
    )


def test_cheapest_picks_the_lowest_price_and_says_why():
    offers = [offer(1, price=3_000_000), offer(2, price=1_000_000), offer(3, price=2_000_000)]
    probes = {o.offer_id: up(o.offer_id, latency=40.0) for o in offers}
    ranked = rank(offers, probes, Constraints(), Policy.CHEAPEST)
    assert [r.offer.offer_id for r in ranked] == [2, 3, 1]
    assert [r.position for r in ranked] == [1, 2, 3]
    assert ranked[0].reason == "cheapest self-reported H100 SXM within 40 ms"
    assert ranked[1].reason.startswith("#2 cheapest")


def test_the_issue_example_reason():
    o = offer(1, model="NVIDIA H100 80GB HBM3")
    ch = {1: Assessment(Level.CHALLENGED, "matched")}
    r = rank([o], {1: up(1, latency=40.0)}, Constraints(), Policy.CHEAPEST, assessments=ch)
    assert r[0].reason == "cheapest challenged H100 SXM within 40 ms"


def test_unreachable_full_mismatch_and_unprobed_are_returned_but_never_chosen():
    offers = [offer(i, price=100 + i) for i in range(1, 7)]
    rtx = Detected(("NVIDIA GeForce RTX 4090",), (24564,))
    probes = {
        1: ProbeResult.unreachable(1, "connection refused"),
        2: up(2, free=0),
        3: up(3, detected=rtx),
        4: up(4, gpus=0),
        # 5: not probed
        6: up(6),
    }
    ranked = rank(offers, probes, Constraints(), Policy.CHEAPEST)
    assert [r.offer.offer_id for r in usable(ranked)] == [6]
    why = {r.offer.offer_id: r.reason for r in ranked if not r.usable}
    assert why[1] == "unreachable: connection refused"
    assert why[2] == "full: 0 free kernels"
    assert why[3].startswith("mismatch: claims 1x H100 SXM")
    assert why[4] == "full: 0 free GPUs"
    assert why[5] == "not probed yet"
    assert all(r.position == 0 for r in ranked if not r.usable)
    # without require_probe an unprobed offer may be chosen (a listing, not a launch)
    loose = rank(offers, probes, Constraints(), Policy.CHEAPEST, require_probe=False)
    assert [r.offer.offer_id for r in usable(loose)] == [5, 6]


def test_constraints_drop_offers_and_verified_greys_the_unverified():
    h100 = Detected(("NVIDIA H100 80GB HBM3",), (81559,))
    offers = [
        offer(1, model="H100 PCIe", price=1),
        offer(2, model="A100-SXM4-80GB", price=2),
        offer(3, model="H100-SXM5-80GB", price=3),
        offer(4, model="RTX 4090", vram=24576, price=4),
        offer(5, model="H100 SXM", price=9_000_000),
        offer(6, model="H100 SXM", price=5, region="us-east"),
        offer(7, model="CPU", count=0, vram=0, price=6),
        offer(8, model="H100 SXM", price=7, active=False),
    ]
    probes = {o.offer_id: up(o.offer_id) for o in offers}
    probes[3] = up(3, detected=h100)
    c = Constraints(
        gpu="H100", min_vram_mib=40000, max_price=5_000_000, region="eu", min_level=Level.DETECTED
    )
    ranked = rank(offers, probes, c, Policy.CHEAPEST)
    assert {r.offer.offer_id for r in ranked} == {1, 3}
    assert [r.offer.offer_id for r in usable(ranked)] == [3]
    assert "detected or better wanted" in next(r.reason for r in ranked if r.offer.offer_id == 1)
    cpu = rank(offers, probes, Constraints(gpu="cpu"), Policy.CHEAPEST)
    assert [r.offer.offer_id for r in cpu] == [7]
    assert cpu[0].assessment.labels == ("cpu",)


def test_fastest_and_value_use_measured_figures_before_the_table():
    offers = [
        offer(1, model="H100 SXM", price=2_000_000),
        offer(2, model="RTX 4090", vram=24576, price=400_000),
    ]
    probes = {1: up(1), 2: up(2)}
    fast = rank(offers, probes, Constraints(), Policy.FASTEST)
    assert fast[0].offer.offer_id == 1
    assert "TFLOPS" in fast[0].reason
    value = rank(offers, probes, Constraints(), Policy.VALUE)
    # table: H100 989*0.3 / 2.0 = 148 per M; 4090 165*0.3 / 0.4 = 124 per M -> H100
    assert value[0].offer.offer_id == 1
    # the H100 measured poorly in its challenge: the 4090 is better value
    value = rank(offers, probes, Constraints(), Policy.VALUE, measured={1: 150.0})
    assert value[0].offer.offer_id == 2
    assert value[0].reason.startswith("best value")


def test_effective_tflops():
    o = offer(1, model="H100 SXM", count=8)
    assert effective_tflops(o, Level.CHALLENGED, 780.0) == 8 * 780.0
    assert effective_tflops(o, Level.DETECTED) == pytest.approx(8 * 989 * 0.6)
    assert effective_tflops(o, Level.MISMATCH, 780.0) == 0
    assert effective_tflops(offer(2, model="CPU", count=0, vram=0), Level.CHALLENGED) == 0
    assert effective_tflops(offer(3, model="Mystery"), Level.DETECTED) == 0


def test_reputation_breaks_ties_and_is_checked():
    offers = [offer(1), offer(2)]
    probes = {1: up(1), 2: up(2)}
    reps = {offers[0].provider: 0.2, offers[1].provider.upper(): 0.9}
    ranked = rank(offers, probes, Constraints(), Policy.CHEAPEST, reputations=reps)
    assert ranked[0].offer.offer_id == 2
    with pytest.raises(ConfigError, match="reputation"):
        rank(offers, probes, Constraints(), Policy.CHEAPEST, reputations={offers[0].provider: 2})
    with pytest.raises(ConfigError, match="twice"):
        rank([offers[0], offers[0]], probes, Constraints(), Policy.CHEAPEST)


def test_json_has_the_fields_the_cli_promises():
    o = offer(1, meta="gpumarket:isolation=sandboxed;simulated=1")
    j = rank([o], {1: up(1)}, Constraints(), Policy.CHEAPEST)[0].to_json()
    for key in (
        "id",
        "provider",
        "endpoint",
        "gpu_model",
        "gpu_class",
        "gpu_count",
        "vram_mib",
        "price_per_hour",
        "region",
        "reachable",
        "latency_ms",
        "free_kernels",
        "verification",
        "reputation",
        "reason",
        "simulated",
        "sandboxed",
    ):
        assert key in j
    assert j["simulated"] is True
    assert j["sandboxed"] is True
    assert j["gpu_class"] == "H100 SXM"
    assert "(simulated)" in j["reason"]


MODELS = ["H100 SXM", "H100 PCIe", "A100-SXM4-80GB", "RTX 4090", "L4", "CPU", "Mystery X"]


@st.composite
def fleets(draw):
    n = draw(st.integers(0, 25))
    offers, probes = [], {}
    for oid in range(1, n + 1):
        model = draw(st.sampled_from(MODELS))
        count = 0 if model == "CPU" else draw(st.integers(1, 8))
        offers.append(
            offer(
                oid,
                model=model,
                count=count,
                vram=draw(st.sampled_from([0, 24576, 81920])),
                price=draw(st.integers(1, 10**7)),
                region=draw(st.sampled_from(["eu-west", "us-east"])),
            )
        )
        kind = draw(st.sampled_from(["none", "down", "up", "full"]))
        if kind == "down":
            probes[oid] = ProbeResult.unreachable(oid, "timeout")
        elif kind != "none":
            probes[oid] = up(oid, latency=draw(st.floats(0, 500)), free=0 if kind == "full" else 2)
    return offers, probes


constraint_sets = st.builds(
    Constraints,
    gpu=st.sampled_from([None, "H100", "RTX 4090", "cpu", "A100"]),
    min_vram_mib=st.sampled_from([0, 40000]),
    max_price=st.sampled_from([None, 10**6]),
    region=st.sampled_from([None, "eu", "us-east"]),
    min_level=st.sampled_from([Level.SELF_REPORTED, Level.DETECTED]),
)


@given(fleets(), constraint_sets, st.sampled_from(list(Policy)), st.randoms())
@settings(max_examples=150, deadline=None)
def test_ranking_is_a_total_order_within_constraints(fleet, c, policy, rnd):
    offers, probes = fleet
    ranked = rank(offers, probes, c, policy)
    shuffled = list(offers)
    rnd.shuffle(shuffled)
    again = rank(shuffled, probes, c, policy)
    # the same order whatever order the offers came in: a total order
    assert [r.offer.offer_id for r in again] == [r.offer.offer_id for r in ranked]
    picks = usable(ranked)
    assert [r.position for r in picks] == list(range(1, len(picks) + 1))
    for r in ranked:
        o = r.offer
        # constraints are never violated, by usable and unusable entries alike
        assert o.terms.vram_mb >= c.min_vram_mib
        assert c.max_price is None or o.price_per_hour <= c.max_price
        assert c.region is None or o.terms.region.startswith(c.region)
        if r.usable:
            p = probes[o.offer_id]
            # unreachable, full and mismatched offers are never chosen
            assert p.reachable
            assert p.free_kernels != 0
            assert r.assessment.level >= c.min_level
            assert r.reason
        else:
            assert r.position == 0
            assert r.reason
    if policy is Policy.CHEAPEST and picks:
        prices = [r.offer.price_per_hour for r in picks]
        assert prices == sorted(prices)


def test_constraints_refuse_overlong_text():
    with pytest.raises(ConfigError, match="gpu must be text"):
        Constraints(gpu="x" * 500)
    with pytest.raises(ConfigError, match="region"):
        Constraints(region="")
