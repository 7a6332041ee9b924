"""The widgets' pure text: money, durations, offer rows and order, stepper, spend, sparklines."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.ui_format import (
    NONE,
    TIMES,
    Token,
    format_duration,
    format_money,
    offer_rows,
    offers_table_html,
    parse_token_amount,
    sort_offers,
)
from jupyter_gpumarket.core.ui_launch import (
    LaunchTrack,
    cull_text,
    sparkline_svg,
    spend_view,
)

T = Token("TUSD", 6)


@pytest.mark.parametrize(
    ("amount", "places", "text"),
    [
        (1_840_000, 2, "1.84 TUSD"),
        (5_000_000, 2, "5.00 TUSD"),
        (1_849_999, 2, "1.84 TUSD"),  # rounded down: never shows more than was spent
        (0, 2, "0.00 TUSD"),
        (123_456, 4, "0.1234 TUSD"),
        (-1, 2, "?"),
        (True, 2, "?"),
        ("12", 2, "?"),
    ],
)
def test_format_money(amount: object, places: int, text: str) -> None:
    assert format_money(amount, T, places=places) == text


def test_token_from_hostile_json_falls_back() -> None:
    assert Token.from_json({"symbol": "X\x1b[31m", "decimals": 18}) == Token("X?[31m", 18)
    assert Token.from_json({"symbol": "X", "decimals": 10**9}).decimals == 6
    assert Token.from_json(None) == Token()
    assert parse_token_amount(1.5, T) == 1_500_000
    assert parse_token_amount(float("nan"), T) is None
    assert parse_token_amount(-1, T) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (9780, "2 h 43 min"),
        (75, "1 min 15 s"),
        (120, "2 min"),
        (8.9, "8 s"),
        (90000, "1 d 1 h"),
        (None, NONE),
        (-3, NONE),
        (float("inf"), NONE),
    ],
)
def test_format_duration(seconds: object, text: str) -> None:
    assert format_duration(seconds) == text


OFFERS = [
    {
        "id": 3,
        "gpu_class": "H100",
        "gpu_model": "NVIDIA H100",
        "gpu_count": 2,
        "vram_mib": 81920,
        "price_per_hour": 3_000_000,
        "region": "eu",
        "latency_ms": 12.4,
        "free_kernels": 1,
        "verification": "detected",
        "reputation": 0.9,
        "usable": True,
        "reason": "",
        "position": 2,
        "simulated": True,
    },
    {
        "id": 5,
        "gpu_class": None,
        "gpu_model": "CPU",
        "gpu_count": 0,
        "vram_mib": 0,
        "price_per_hour": 1_000_000,
        "region": "us",
        "latency_ms": None,
        "free_kernels": None,
        "verification": "self-reported",
        "reputation": 0.5,
        "usable": False,
        "reason": "unreachable: <script>",
        "position": None,
    },
    {
        "id": 7,
        "gpu_class": "A100",
        "gpu_model": "A100",
        "gpu_count": 1,
        "vram_mib": 40960,
        "price_per_hour": 2_000_000,
        "region": "eu-west",
        "latency_ms": 30,
        "free_kernels": 0,
        "verification": "challenged",
        "reputation": 0.7,
        "usable": True,
        "reason": "",
        "position": 1,
    },
]


def test_offer_rows_keep_unusable_offers_with_their_reason() -> None:
    rows = offer_rows(OFFERS, T)
    assert [r.offer_id for r in rows] == [3, 5, 7]
    assert rows[0].gpu == f"2 {TIMES} H100 · 80 GiB (simulated)"
    assert rows[0].price == "3.00 TUSD/h"
    assert rows[0].latency == "12 ms"
    assert not rows[1].usable
    assert rows[1].reason == "unreachable: <script>"
    html = offers_table_html(rows, selected=7)
    assert "&lt;script&gt;" in html
    assert "<script>" not in html
    assert "gpumarket-unusable" in html
    assert "color:#999" in html
    assert "font-weight:bold" in html


def test_sort_offers_usable_first_missing_last() -> None:
    assert [o["id"] for o in sort_offers(OFFERS, "price")] == [7, 3, 5]
    assert [o["id"] for o in sort_offers(OFFERS, "price", descending=True)] == [3, 7, 5]
    assert [o["id"] for o in sort_offers(OFFERS, "rank")] == [7, 3, 5]
    assert [o["id"] for o in sort_offers(OFFERS, "latency")] == [3, 7, 5]


def _launch(state: str, elapsed: float, in_state: float, **kw: object) -> dict[str, object]:
    return {
        "type": "launch",
        "kernel_id": "k",
        "t": 0.0,
        "state": state,
        "elapsed_s": elapsed,
        "state_elapsed_s": in_state,
        "cancellable": state not in ("ready", "busy"),
        **kw,
    }


def test_stepper_rows_follow_the_launch() -> None:
    track = LaunchTrack()
    track.feed(_launch("choosing", 0, 0))
    track.feed(_launch("confirming", 1, 0))
    track.feed(_launch("opening_channel", 4, 0))
    track.feed(_launch("connecting", 9, 1))
    rows = track.rows()
    assert [r.status for r in rows] == ["done", "done", "done", "current"] + ["pending"] * 3
    assert rows[1].elapsed == "3 s"  # confirming lasted 1 -> 4
    assert rows[2].elapsed == "4 s"  # opening channel lasted 4 -> 8
    assert rows[3].text == "● connecting · 1 s"
    assert track.cancellable
    track.feed(_launch("busy", 20, 2, label="busy"))
    rows = track.rows()
    assert rows[-1].label == "busy"
    assert rows[-1].status == "done"
    assert rows[-1].elapsed == "20 s since launch"
    assert not track.cancellable


def test_stepper_failed_names_the_step() -> None:
    track = LaunchTrack()
    track.feed(_launch("connecting", 5, 0))
    track.feed(
        _launch(
            "failed",
            8,
            0,
            step="connecting",
            label="failed at connecting",
            message="the provider did not answer: pick another offer",
        )
    )
    rows = track.rows()
    assert rows[3].status == "failed"
    assert rows[3].label == "failed at connecting"
    assert track.message() == "the provider did not answer: pick another offer"
    track.feed({"type": "launch", "state": "no-such-state"})  # ignored
    assert track.state == "failed"


def test_spend_and_cull_texts() -> None:
    v = spend_view(
        {
            "type": "spend",
            "rate_per_hour": 1_840_000,
            "spent": 123_456,
            "deposit": 5_000_000,
            "deposit_left": 4_876_544,
            "budget": 10_000_000,
            "seconds_left": 9780,
            "token": {"symbol": "TUSD", "decimals": 6},
        }
    )
    assert (v.rate, v.spent, v.deposit_left, v.budget, v.time_left) == (
        "1.84 TUSD/h",
        "0.1234 TUSD",
        "4.87 TUSD",
        "10.00 TUSD",
        "2 h 43 min",
    )
    assert v.budget_fraction == pytest.approx(0.0123456)
    assert "in 25 min" in cull_text({"idle_s": 300, "cull_in_s": 1500})
    assert "culling is off" in cull_text({"idle_s": 300, "cull_in_s": None})
    held = {"idle_s": 300, "cull_in_s": None, "held_by": "connected", "timeout_s": 1800}
    assert "open notebook holds it" in cull_text(held)
    assert "after 30 min idle" in cull_text(held)
    assert "culling is off" not in cull_text(held)
    busy = {"idle_s": 0, "cull_in_s": None, "held_by": "busy", "timeout_s": 1800}
    assert cull_text(busy).startswith("busy")


def test_sparkline_svg_scales_and_skips_gaps() -> None:
    svg = sparkline_svg([0, 50, None, 100], hi=100, width=32, height=12)
    assert svg.startswith("<svg")
    assert svg.count(",") == 3
    assert "1.0,11.0" in svg
    assert "31.0,1.0" in svg
    assert "<polyline" not in sparkline_svg([None, None])
