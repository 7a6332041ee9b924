"""Telemetry samples from a hostile agent, and the renter's bounded history."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.telemetry import TelemetryHistory, TelemetrySample
from jupyter_gpumarket.exceptions import ProtocolError

# the H100 fixture under load: util 100 %, 691 W, 60 C, 2236416000 B used of 81559 MiB
GOOD = {
    "t": 1_764_150_606.0,
    "cpu_pct": 97.5,
    "ram_mib": 2048,
    "billed_seconds": 311,
    "spend": 86_389,
    "gpus": [
        {
            "index": 0,
            "util_pct": 100,
            "mem_used_mib": 2133,
            "mem_total_mib": 81559,
            "temp_c": 60,
            "power_w": 691.192,
        }
    ],
}


def test_round_trip():
    s = TelemetrySample.from_json(GOOD)
    assert s.gpus[0].power_w == pytest.approx(691.192)
    assert TelemetrySample.from_json(s.to_json()) == s
    cpu = TelemetrySample.from_json({**GOOD, "gpus": [{"index": 0}]})
    assert cpu.gpus[0].util_pct is None


@pytest.mark.parametrize(
    "patch",
    [
        {"t": float("nan")},
        {"t": "now"},
        {"cpu_pct": -1},
        {"ram_mib": 1.5},
        {"spend": True},
        {"billed_seconds": 10**30},
        {"gpus": [{"index": 0, "util_pct": 101}]},
        {"gpus": [{"index": 99}]},
        {"gpus": [{"index": 0, "power_w": float("inf")}]},
        {"gpus": [{"index": 0}] * 65},
        {"gpus": "all"},
    ],
)
def test_hostile_samples_are_refused(patch):
    with pytest.raises(ProtocolError):
        TelemetrySample.from_json({**GOOD, **patch})


def test_history_is_bounded_and_ordered():
    h = TelemetryHistory(maxlen=3)
    assert h.latest is None
    for t in (1.0, 2.0, 3.0, 4.0):
        assert h.add(TelemetrySample.from_json({**GOOD, "t": t}))
    assert not h.add(TelemetrySample.from_json({**GOOD, "t": 2.5}))  # replayed / reordered
    assert [s.t for s in h] == [2.0, 3.0, 4.0]
    assert h.latest.t == 4.0
    assert len(h.to_json()) == 3


@given(
    st.dictionaries(
        st.sampled_from(list(GOOD)), st.none() | st.integers() | st.floats() | st.text(max_size=3)
    )
)
def test_any_patch_parses_or_raises_protocol_error(patch):
    with contextlib.suppress(ProtocolError):
        TelemetrySample.from_json({**GOOD, **patch})
