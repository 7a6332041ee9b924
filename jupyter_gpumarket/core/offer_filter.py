"""The ``GPUMARKET_OFFER`` grammar: an offer id, or ``key=value`` pairs separated by commas.

.. code-block:: text

    spec     := offer_id | pair ("," pair)*
    offer_id := digits                                   e.g. "7"
    pair     := key "=" value
    key      := policy | sort | gpu | min_vram | max_price | region | verified | level | provider

    policy=value,gpu=H100,min_vram=40000,verified=1

``policy`` (alias ``sort``): cheapest | fastest | value. ``gpu``: a family (H100) or class
(H100 PCIe) or cpu. ``min_vram``: MiB per GPU. ``max_price``: token base units per hour.
``verified=1``: at least ``detected``; ``level=challenged``: at least that rung. Every error names
the bad key or part and lists what is accepted. The text comes from an environment variable or a
config file, so it is bounded before it is split.
"""

from __future__ import annotations

import re

from jupyter_gpumarket.core.market_offer import Constraints, OfferQuery, Policy
from jupyter_gpumarket.core.verification import Level
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["KEYS", "MAX_FILTER_CHARS", "parse_offer_filter"]

MAX_FILTER_CHARS = 512
MAX_PARTS = 16
MAX_VALUE_CHARS = 128
KEYS = ("policy", "sort", "gpu", "min_vram", "max_price", "region", "verified", "level", "provider")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_WHERE = "GPUMARKET_OFFER"


def _int(key: str, value: str, limit: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > limit:
        raise ConfigError(
            f"{_WHERE}: {key}={value!r} must be a whole number (at most {limit} digits)"
        )
    return int(value)


def parse_offer_filter(text: str) -> int | OfferQuery:
    """``"7"`` -> 7; ``"policy=value,gpu=H100,verified=1"`` -> an :class:`OfferQuery`."""
    if not isinstance(text, str):
        raise ConfigError(f"{_WHERE} must be text, not {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise ConfigError(f"{_WHERE} is {len(text)} characters long (at most {MAX_FILTER_CHARS})")
    spec = text.strip()
    if not spec:
        raise ConfigError(
            f"{_WHERE} is empty: give an offer id or a filter such as policy=cheapest,gpu=H100"
        )
    if spec.isascii() and spec.isdigit():
        offer_id = _int("offer id", spec, 20)
        if offer_id < 1:
            raise ConfigError(f"{_WHERE}: offer ids start at 1, not {offer_id}")
        return offer_id
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > MAX_PARTS:
        raise ConfigError(f"{_WHERE} has {len(parts)} parts (at most {MAX_PARTS})")
    seen: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        raw_key, sep, value = part.partition("=")
        key, value = raw_key.strip().lower(), value.strip()
        if not sep or key not in KEYS:
            what = f"key {raw_key.strip()!r}" if sep else f"{part!r} (not key=value)"
            raise ConfigError(
                f"{_WHERE}: {what} is not understood: use an offer id, or "
                f"{', '.join(k + '=' for k in KEYS)} separated by commas"
            )
        if not value or len(value) > MAX_VALUE_CHARS:
            raise ConfigError(
                f"{_WHERE}: {key}= needs a value of 1 to {MAX_VALUE_CHARS} characters"
            )
        name = "policy" if key == "sort" else key
        if name in seen:
            raise ConfigError(f"{_WHERE}: {key} is given twice")
        seen[name] = value
    policy = Policy.CHEAPEST
    if "policy" in seen:
        try:
            policy = Policy.parse(seen["policy"])
        except ConfigError as exc:
            raise ConfigError(f"{_WHERE}: policy: {exc}") from None
    level = Level.SELF_REPORTED
    if "verified" in seen:
        flag = seen["verified"].lower()
        if flag not in ("0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{_WHERE}: verified={seen['verified']!r} must be 1 or 0")
        if flag in ("1", "true", "yes"):
            level = Level.DETECTED
    if "level" in seen:
        try:
            wanted = Level.parse(seen["level"])
        except ConfigError as exc:
            raise ConfigError(f"{_WHERE}: level: {exc}") from None
        if wanted is Level.MISMATCH:
            raise ConfigError(f"{_WHERE}: level=mismatch cannot be asked for")
        level = max(level, wanted)
    provider = seen.get("provider")
    if provider is not None and not _ADDRESS.fullmatch(provider):
        raise ConfigError(f"{_WHERE}: provider={provider!r} must be a 0x address")
    return OfferQuery(
        policy,
        Constraints(
            gpu=seen.get("gpu"),
            min_vram_mib=_int("min_vram", seen["min_vram"], 12) if "min_vram" in seen else 0,
            max_price=_int("max_price", seen["max_price"], 78) if "max_price" in seen else None,
            region=seen.get("region"),
            min_level=level,
            provider=provider,
        ),
    )
