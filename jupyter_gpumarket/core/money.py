"""Money math: integer token base units everywhere; decimals only when formatting.

The cost of ``seconds`` at ``price_per_hour`` is ``price_per_hour * seconds // 3600`` — the same
rounding (down) as ``Registry.cost`` on chain, so Python and the contract never disagree.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

from jupyter_gpumarket.exceptions import PaymentError

__all__ = ["SECONDS_PER_HOUR", "cost", "format_amount", "parse_amount"]

SECONDS_PER_HOUR = 3600


def _non_negative_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PaymentError(f"{name} must be an int in token base units, got {value!r}")
    if value < 0:
        raise PaymentError(f"{name} must not be negative, got {value}")


def cost(price_per_hour: int, seconds: int) -> int:
    """Cost in base units of ``seconds`` at ``price_per_hour`` base units, rounded down."""
    _non_negative_int("price_per_hour", price_per_hour)
    _non_negative_int("seconds", seconds)
    return price_per_hour * seconds // SECONDS_PER_HOUR


def format_amount(amount: int, decimals: int = 6, symbol: str = "") -> str:
    """``1234500, 6, "TUSD"`` -> ``"1.2345 TUSD"``: exact, trailing zeros trimmed (keeps 2)."""
    _non_negative_int("amount", amount)
    _non_negative_int("decimals", decimals)
    whole, frac = divmod(amount, 10**decimals)
    text = str(whole)
    if decimals:
        digits = str(frac).rjust(decimals, "0").rstrip("0")
        text += "." + digits.ljust(min(2, decimals), "0")
    return f"{text} {symbol}" if symbol else text


def parse_amount(text: str, decimals: int = 6) -> int:
    """``"1.5", 6`` -> ``1500000``; refuses more fractional digits than the token has."""
    _non_negative_int("decimals", decimals)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise PaymentError(f"{text!r} is not an amount; write it like 12.5") from None
    if not value.is_finite() or value < 0:
        raise PaymentError(f"{text!r} is not a non-negative amount; write it like 12.5")
    # Decimal's default 28 significant digits would round large amounts: scale exactly.
    with localcontext(prec=max(28, len(text) + decimals + 2)):
        scaled = value.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise PaymentError(f"{text!r} has more than {decimals} decimal places; round it")
        return int(scaled)
