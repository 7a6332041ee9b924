"""The cost quote shown before the wallet signs: deposit, time covered, the one-line text."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.core.quote import Quote, format_duration, make_quote
from jupyter_gpumarket.exceptions import ConfigError


def test_the_documented_example() -> None:
    q = make_quote(7, 1_840_000, budget=10_000_000, initial_hours=5_000_000 / 1_840_000)
    assert q.deposit == 5_000_000
    assert q.seconds_covered == 5_000_000 * 3600 // 1_840_000  # 9782 s
    assert q.text == "1.84 TUSD/h · deposit 5.00 ≈ 2 h 43 min · budget cap 10.00"
    data = q.to_json()
    assert data["token"] == {"symbol": "TUSD", "decimals": 6}
    assert Quote.from_json(data) == q


def test_the_deposit_is_capped_by_the_budget() -> None:
    q = make_quote(1, 3_600_000, budget=1_000_000, initial_hours=1.0)
    assert (q.deposit, q.seconds_covered) == (1_000_000, 1000)
    assert q.text.endswith("≈ 16 min · budget cap 1.00")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (59, "59 s"), (60, "1 min"), (3600, "1 h 0 min")]
)
def test_durations(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_confirmed_quote_covers_only_launches_that_cost_no_more() -> None:
    confirmed = make_quote(3, 1_000_000, budget=5_000_000, initial_hours=1.0)
    assert confirmed.covers(make_quote(3, 1_000_000, budget=5_000_000, initial_hours=1.0))
    assert confirmed.covers(make_quote(3, 900_000, budget=5_000_000, initial_hours=1.0))
    assert not confirmed.covers(make_quote(4, 1_000_000, budget=5_000_000, initial_hours=1.0))
    assert not confirmed.covers(make_quote(3, 1_100_000, budget=5_000_000, initial_hours=1.0))
    assert not confirmed.covers(make_quote(3, 1_000_000, budget=6_000_000, initial_hours=1.0))
    assert not confirmed.covers(make_quote(3, 1_000_000, budget=5_000_000, initial_hours=2.0))
    other_token = make_quote(3, 1_000_000, 5_000_000, 1.0, symbol="USDC")
    assert not confirmed.covers(other_token)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(deposit=-1),
        lambda d: d.update(deposit=1.5),
        lambda d: d.update(price_per_hour=True),
        lambda d: d.update(budget="10"),
        lambda d: d.update(offer_id=2**256),
        lambda d: d.update(extra=1),
        lambda d: d.update(token={"symbol": "T"}),
        lambda d: d.update(token={"symbol": "", "decimals": 6}),
        lambda d: d.update(token={"symbol": "T", "decimals": 99}),
        lambda d: d.pop("price_per_hour"),
    ],
)
def test_a_hostile_quote_is_refused_with_the_field_named(mutate: object) -> None:
    data = make_quote(1, 1_000_000, 5_000_000, 1.0).to_json()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ConfigError, match="quote"):
        Quote.from_json(data)


@pytest.mark.parametrize("hours", [0, -1, 10_000, float("nan"), "1"])
def test_initial_hours_are_checked(hours: object) -> None:
    with pytest.raises(ConfigError, match="initial_hours"):
        make_quote(1, 1_000_000, 5_000_000, hours)  # type: ignore[arg-type]
