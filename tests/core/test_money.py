"""core.money: integer base units, one rounding rule, exact formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core.money import cost, format_amount, parse_amount
from jupyter_gpumarket.exceptions import PaymentError


def test_cost_rounds_down_per_second():
    assert cost(3_600_000, 1) == 1_000
    assert cost(1_850_000, 1) == 513  # $1.85/h for one second = 513.88.. base units
    assert cost(1_850_000, 3600) == 1_850_000
    assert cost(1, 3599) == 0


@given(st.integers(0, 10**24), st.integers(0, 10**9), st.integers(0, 10**9))
def test_cost_is_monotonic_and_never_above_exact(price, a, b):
    lo, hi = sorted((a, b))
    assert cost(price, lo) <= cost(price, hi)
    assert cost(price, hi) * 3600 <= price * hi


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_cost_refuses_non_int_or_negative(bad):
    with pytest.raises(PaymentError, match="price_per_hour"):
        cost(bad, 1)


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0, "0.00 TUSD"), (1, "0.000001 TUSD"), (1_234_500, "1.2345 TUSD"), (10**10, "10000.00 TUSD")],
)
def test_format_amount(amount, text):
    assert format_amount(amount, 6, "TUSD") == text


def test_format_without_decimals_or_symbol():
    assert format_amount(42, 0) == "42"


@given(st.integers(0, 10**30))
def test_parse_inverts_format(amount):
    assert parse_amount(format_amount(amount, 6), 6) == amount


@pytest.mark.parametrize("bad", ["abc", "-1", "1.0000001", "nan", "inf"])
def test_parse_refuses_bad_text(bad):
    with pytest.raises(PaymentError):
        parse_amount(bad, 6)
