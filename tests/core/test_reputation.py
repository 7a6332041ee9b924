"""Reputation: probes, launches, and attestations weighed by the money that flowed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core import reputation as rp
from jupyter_gpumarket.exceptions import ConfigError

PROVIDER = "0x" + "11" * 20
RENTERS = ["0x" + f"{i:02x}" * 20 for i in range(0x20, 0x30)]
REF = 10_000_000  # ten hours at 1 token (6 decimals) per hour


def att(renter, paid, score=90, tflops=0, provider=PROVIDER):
    return rp.Attestation(renter, provider, paid, score, tflops)


def summary(atts, band=None):
    return rp.summarize_attestations(atts, PROVIDER, reference_amount=REF, expected_tflops=band)


def test_self_attestations_and_unpaid_channels_weigh_nothing():
    s = summary(
        [
            att(PROVIDER, 10**9, 100),
            att(RENTERS[0], 0, 100),
            att(RENTERS[1], 5, 90, provider=RENTERS[2]),
        ]
    )
    assert s.weight == 0
    assert s.ignored == 3
    assert s.verdict is None
    assert "no paid attestations" in s.reason


def test_one_renter_is_capped_at_the_reference_amount():
    one = summary([att(RENTERS[0], 100 * REF, 100)])
    assert one.weight == REF
    assert one.renters == 1
    many = summary([att(r, REF, 100) for r in RENTERS[:4]])
    assert many.weight == 4 * REF


def test_mean_score_is_weighted_by_payment():
    s = summary([att(RENTERS[0], REF, 100), att(RENTERS[1], REF // 4, 0)])
    assert s.mean_score == pytest.approx(0.8)
    assert s.verdict is True


def test_measured_figures_below_the_model_contradict():
    band = (445.0, 1137.0)  # an H100's BF16 band
    s = summary([att(r, REF, 95, tflops=13_500) for r in RENTERS[:3]], band)  # 135 TFLOPS
    assert s.verdict is False
    assert "measured below the model" in s.reason
    ok = summary([att(r, REF, 95, tflops=78_000) for r in RENTERS[:3]], band)
    assert ok.verdict is True


def test_reputation_explains_itself_and_rewards_paid_good_service():
    new = rp.reputation(
        probes=rp.History(), launches=rp.History(), attestations=summary([]), reference_amount=REF
    )
    assert new.score == pytest.approx(0.5)
    assert "never probed" in new.explanation
    good = rp.reputation(
        probes=rp.History(119, 1),
        launches=rp.History(39, 1),
        attestations=summary([att(r, REF, 95) for r in RENTERS[:5]]),
        reference_amount=REF,
    )
    assert good.score > 0.9
    assert "uptime 99% of 120 probes" in good.explanation
    assert "1 of 40 launches failed" in good.explanation
    self_rated = rp.reputation(
        probes=rp.History(119, 1),
        launches=rp.History(39, 1),
        attestations=summary([att(PROVIDER, 10**12, 100)] * 50),
        reference_amount=REF,
    )
    assert self_rated.score < good.score
    flaky = rp.reputation(
        probes=rp.History(10, 90),
        launches=rp.History(2, 8),
        attestations=summary([]),
        reference_amount=REF,
    )
    assert flaky.score < 0.4


def test_history_of_outcomes():
    assert rp.History.of([True, False, True]) == rp.History(2, 1)


def test_bad_attestations_are_refused():
    for kw in ({"score": 101}, {"paid": -1}, {"renter": "me"}, {"measured_tflops_x100": 2**32}):
        args = {"renter": RENTERS[0], "provider": PROVIDER, "paid": 1, "score": 1, **kw}
        with pytest.raises(ConfigError):
            rp.Attestation(**args)
    with pytest.raises(ConfigError):
        rp.summarize_attestations([], PROVIDER, reference_amount=0)


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.lists(
        st.tuples(
            st.sampled_from([*RENTERS, PROVIDER]), st.integers(0, 10**12), st.integers(0, 100)
        ),
        max_size=20,
    ),
)
def test_score_is_always_in_unit_interval(po, pf, lo, lf, raw):
    s = summary([att(r, paid, score) for r, paid, score in raw])
    r = rp.reputation(
        probes=rp.History(po, pf), launches=rp.History(lo, lf), attestations=s, reference_amount=REF
    )
    assert 0 <= r.score <= 1
