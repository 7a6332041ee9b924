"""The AGENT channel's telemetry op: parsed into a bounded sample, or refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.telemetry import TelemetryHistory, TelemetrySample
from jupyter_gpumarket.exceptions import ProtocolError

SAMPLE: dict[str, Any] = {
    "t": 1_764_150_606.0,
    "cpu_pct": 97.5,
    "ram_mib": 2048,
    "billed_seconds": 311,
    "spend": 86_389,
    "gpus": [{"index": 0, "util_pct": 100, "mem_used_mib": 2132, "mem_total_mib": 81559,
              "temp_c": 60, "power_w": 691.192}],
}  # fmt: skip


def wire(sample: Any, **extra: Any) -> bytes:
    return json.dumps({"op": "telemetry", "sample": sample, **extra}).encode()


def test_round_trip() -> None:
    msg = control.parse_agent_message(wire(SAMPLE))
    assert isinstance(msg, control.Telemetry)
    assert msg.sample == TelemetrySample.from_json(SAMPLE)
    assert control.parse_agent_message(control.dump(msg)) == msg
    cpu_only = control.parse_agent_message(wire({**SAMPLE, "gpus": []}))
    assert cpu_only.sample.gpus == ()


@pytest.mark.parametrize(
    "data",
    [
        wire({**SAMPLE, "padding": "x" * 100}),  # unknown field
        wire({**SAMPLE, "gpus": [{**SAMPLE["gpus"][0], "fan": 1}]}),
        wire({**SAMPLE, "gpus": [SAMPLE["gpus"][0]] * 2}),  # the same GPU twice
        wire({**SAMPLE, "cpu_pct": float("nan")}).replace(b"NaN", b"1e999"),
        wire({**SAMPLE, "gpus": [{"index": i} for i in range(65)]}),
        wire(SAMPLE, extra="x" * 40_000),  # an unknown field of the message
        wire({**SAMPLE, "ram_mib": "1" * 40_000}),  # far over the size of any sample
        wire([SAMPLE]),
        wire(None),
        b'{"op": "telemetry"}',
    ],
)
def test_hostile_telemetry_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        control.parse_agent_message(data)


def test_oversized_message_is_refused_before_use() -> None:
    big = json.dumps({"op": "telemetry", "sample": SAMPLE}, indent=40_000 // 8).encode()
    assert len(big) > 32 * 1024
    with pytest.raises(ProtocolError, match="too big"):
        control.parse_agent_message(big)


def test_history_snapshot_is_a_copy() -> None:
    h = TelemetryHistory(maxlen=2)
    h.add(TelemetrySample.from_json(SAMPLE))
    snap = h.snapshot()
    h.add(TelemetrySample.from_json({**SAMPLE, "t": SAMPLE["t"] + 1}))
    assert len(snap) == 1
    assert [s.t for s in h] == [SAMPLE["t"], SAMPLE["t"] + 1]
