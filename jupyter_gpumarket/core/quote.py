"""What a paid launch will cost, shown before the wallet signs (pure).

``make_quote`` turns an offer's price, the renter's budget and initial hours into the deposit
the channel opens with (``core.metering.initial_deposit``, the same rule the provisioner
uses), the seconds that deposit covers, and one line every UI shows word for word::

    1.84 TUSD/h · deposit 5.00 ≈ 2 h 43 min · budget cap 10.00

A quote the user confirmed ``covers`` a launch when it is for the same offer and token and
the launch would cost no more: price, deposit and budget each at most the confirmed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_gpumarket.core.metering import initial_deposit
from jupyter_gpumarket.core.money import SECONDS_PER_HOUR, format_amount
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["Quote", "format_duration", "make_quote"]

_MAX_INT = 2**256 - 1
_KEYS = frozenset(
    {"offer_id", "price_per_hour", "deposit", "budget", "seconds_covered", "token", "text"}
)


def format_duration(seconds: int) -> str:
    """``9780`` -> ``"2 h 43 min"``; ``600`` -> ``"10 min"``; ``42`` -> ``"42 s"``."""
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _amount(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_INT:
        raise ConfigError(f"quote {name} must be a whole number of token base units, got {value!r}")
    return value


@dataclass(frozen=True)
class Quote:
    offer_id: int
    price_per_hour: int
    deposit: int
    budget: int
    seconds_covered: int
    symbol: str
    decimals: int

    def __post_init__(self) -> None:
        _amount("offer_id", self.offer_id)
        _amount("price_per_hour", self.price_per_hour, 1)
        _amount("deposit", self.deposit, 1)
        _amount("budget", self.budget, 1)
        _amount("seconds_covered", self.seconds_covered)
        if not isinstance(self.symbol, str) or not 0 < len(self.symbol) <= 16:
            raise ConfigError(f"quote token symbol must be 1 to 16 characters: {self.symbol!r}")
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int):
            raise ConfigError(f"quote token decimals must be an int, got {self.decimals!r}")
        if not 0 <= self.decimals <= 36:
            raise ConfigError(f"quote token decimals must be 0 to 36, got {self.decimals}")

    @property
    def text(self) -> str:
        def amount(value: int) -> str:
            return format_amount(value, self.decimals)

        return (
            f"{amount(self.price_per_hour)} {self.symbol}/h · deposit {amount(self.deposit)} "
            f"≈ {format_duration(self.seconds_covered)} · budget cap {amount(self.budget)}"
        )

    def covers(self, launch: Quote) -> bool:
        """This (confirmed) quote allows ``launch``: same offer and token, costs no more."""
        return (
            self.offer_id == launch.offer_id
            and (self.symbol, self.decimals) == (launch.symbol, launch.decimals)
            and launch.price_per_hour <= self.price_per_hour
            and launch.deposit <= self.deposit
            and launch.budget <= self.budget
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "price_per_hour": self.price_per_hour,
            "deposit": self.deposit,
            "budget": self.budget,
            "seconds_covered": self.seconds_covered,
            "token": {"symbol": self.symbol, "decimals": self.decimals},
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: Any) -> Quote:
        """A quote from JSON a client sent (hostile): exactly the documented fields."""
        if not isinstance(data, dict):
            raise ConfigError("quote must be a JSON object as GET /gpumarket/api/quote returns")
        extra = sorted(str(k)[:40] for k in data if k not in _KEYS)
        if extra:
            raise ConfigError(f"quote has unknown field(s) {extra[:4]}")
        token = data.get("token")
        if not isinstance(token, dict) or set(token) != {"symbol", "decimals"}:
            raise ConfigError('quote token must be {"symbol": ..., "decimals": ...}')
        return cls(
            offer_id=_amount("offer_id", data.get("offer_id")),
            price_per_hour=_amount("price_per_hour", data.get("price_per_hour")),
            deposit=_amount("deposit", data.get("deposit")),
            budget=_amount("budget", data.get("budget")),
            seconds_covered=data.get("seconds_covered", 0),
            symbol=token["symbol"],
            decimals=token["decimals"],
        )


def make_quote(
    offer_id: int,
    price_per_hour: int,
    budget: int,
    initial_hours: float,
    symbol: str = "TUSD",
    decimals: int = 6,
) -> Quote:
    """The quote of a launch on ``offer_id``: the deposit it opens with and what it covers."""
    _amount("price_per_hour", price_per_hour, 1)
    _amount("budget", budget, 1)
    if isinstance(initial_hours, bool) or not isinstance(initial_hours, int | float):
        raise ConfigError(f"initial_hours must be a number of hours, got {initial_hours!r}")
    if not 0 < initial_hours < 10_000:
        raise ConfigError(f"initial_hours must be above 0 and below 10000, got {initial_hours}")
    deposit = initial_deposit(budget, price_per_hour, initial_hours)
    covered = deposit * SECONDS_PER_HOUR // price_per_hour
    return Quote(offer_id, price_per_hour, deposit, budget, covered, symbol, decimals)
