"""argparse ``type=`` validators for every numeric flag of `gpumarket`.

A bad value is argparse's one-line ``error: argument --flag: …`` with exit status 2, never a
traceback and never a value silently bent into another one (a port above 65535, a negative
fee). The same callables check the provider's ``--config`` TOML file, so they also take the
ints and floats TOML gives (a float is never a whole number: ``price-per-hour = 1e80`` fails).

Money bounds are the contracts': an escrow channel holds at most 2**88-1 base units
(``escrow_channels.vy``), a relay fee is below the deposit, ERC-20 amounts are uint256.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from jupyter_gpumarket.core.escrow_model import MAX_AMOUNT

__all__ = [
    "BASE_UNITS_MAX",
    "UINT256_MAX",
    "base_units",
    "chain_id",
    "close_delay",
    "count",
    "cpus",
    "days",
    "int_in",
    "kernel_inodes",
    "megabytes",
    "port",
    "price_per_hour",
    "relay_fee",
    "retype",
    "seconds",
    "token_amount",
    "token_decimals",
]

BASE_UNITS_MAX = MAX_AMOUNT  # 2**88-1: the most one escrow channel holds
UINT256_MAX = 2**256 - 1
_INT = re.compile(r"[+-]?[0-9]{1,90}")
_TEN_YEARS = 10 * 365 * 86400.0

Value = str | int | float


def _whole(value: Value, hint: str) -> int:
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number; {hint}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not _INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{str(value)[:40]!r} is not a whole number; {hint}")
    return int(text)


def int_in(low: int, high: int, hint: str) -> Callable[[Value], int]:
    """A whole number in ``low..high``; ``hint`` says what the flag wants."""

    def check(value: Value) -> int:
        n = _whole(value, hint)
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{n} is out of range; {hint}")
        return n

    return check


def seconds(
    *, zero_ok: bool = False, high: float = _TEN_YEARS, unit: str = "seconds"
) -> Callable[[Value], float]:
    """A finite number of seconds (or ``unit``), above 0 (or 0 too), at most ``high``."""
    least = "0 or more" if zero_ok else "more than 0"
    hint = f"give {unit}, {least} and at most {high:.0f}"

    def check(value: Value) -> float:
        if isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"{value!r} is not a number; {hint}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{str(value)[:40]!r} is not a number; {hint}"
            ) from None
        if not math.isfinite(f) or f < 0 or (f == 0 and not zero_ok) or f > high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; {hint}")
        return f

    return check


def token_amount(value: Value) -> str:
    """A token amount as written (``12.5``): finite, above 0, at most uint256 even in whole
    tokens. The exact base units come later, with the network's decimals."""
    hint = "write a positive amount of tokens like 12.5"
    text = str(value).strip()
    try:
        amount = Decimal(text) if len(text) <= 100 else Decimal("NaN")
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an amount; {hint}")
    if amount <= 0 or amount > UINT256_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range; {hint}")
    return text


port = int_in(0, 65535, "a port is 1-65535, or 0 to pick a free one")
price_per_hour = int_in(
    1,
    BASE_UNITS_MAX,
    "token base units per hour, 1 to 2**88-1 (an hour must fit in one escrow channel)",
)
relay_fee = int_in(
    0,
    BASE_UNITS_MAX - 1,
    "token base units, 0 to 2**88-2 (the escrow takes fees below the deposit)",
)


def count(what: str, high: int = 1024) -> Callable[[Value], int]:
    """How many of ``what``: 1..``high``."""
    return int_in(1, high, f"the number of {what}, 1 to {high}")


def megabytes(high: int) -> Callable[[Value], int]:
    """A size in MiB: 1..``high``."""
    return int_in(1, high, f"a size in MB, 1 to {high}")


kernel_inodes = int_in(
    64, 2**32, "the number of files and directories a kernel's working dir may hold, 64 to 2**32"
)


def cpus(value: Value) -> float:
    """CPUs per kernel: a finite number above 0, at most 4096."""
    hint = "give CPUs per kernel, more than 0 and at most 4096 (e.g. 1.5)"
    try:
        f = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not (math.isfinite(f) and 0 < f <= 4096):
        raise argparse.ArgumentTypeError(f"{str(value)[:40]!r} is not valid; {hint}")
    return f


close_delay = int_in(0, 2**32 - 1, "the challenge period in seconds, 0 to 4294967295")
chain_id = int_in(1, 2**64 - 1, "an EVM chain id, 1 to 2**64-1")
token_decimals = int_in(0, 77, "the token's decimals, 0 to 77")
days = seconds(high=3650, unit="days")  # `pool grant --days`


def retype(parser: argparse.ArgumentParser, **types: Callable[[Value], object]) -> None:
    """Give flags another module added (by dest) these validators."""
    actions = {a.dest: a for a in parser._actions}
    for dest, check in types.items():
        actions[dest].type = check


def base_units(amount: str, decimals: int, what: str) -> int:
    """``amount`` (checked by :func:`token_amount`) in base units of a ``decimals`` token; a
    ConfigError when it has too many decimals or is above what a uint256 holds."""
    from jupyter_gpumarket.core.money import parse_amount
    from jupyter_gpumarket.exceptions import ConfigError

    units = parse_amount(amount, decimals)
    if units > UINT256_MAX:
        raise ConfigError(
            f"{what} {amount} is {units:.3e} base units, above the 2**256-1 a contract takes: "
            "give a smaller amount"
        )
    return units


def pool_id(value: Value) -> str:
    """A credit pool id: 0x + 64 hex digits (lowercased)."""
    text = str(value).strip().lower()
    if len(text) != 66 or not text.startswith("0x") or not all(c in _HEX for c in text[2:]):
        raise argparse.ArgumentTypeError(f"{value!r} is not a pool id (0x + 64 hex digits)")
    return text


_HEX = frozenset("0123456789abcdef")
