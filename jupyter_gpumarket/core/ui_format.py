"""What the widgets show, as text: money in token units, durations, the offers table's rows.

Pure (no widgets, no I/O): the server API (docs/server-api.md) hands integer base units and
``gpumarket offers --json`` objects; these functions turn them into cells. Every string from an
offer is chain data a stranger wrote: :func:`clean` keeps it printable and short, and the HTML
renderers escape it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jupyter_gpumarket.core.money import format_amount

__all__ = [
    "SORT_KEYS",
    "OfferRow",
    "Token",
    "clean",
    "format_duration",
    "format_money",
    "offer_rows",
    "offers_table_html",
    "parse_token_amount",
    "sort_offers",
]

_MAX_DECIMALS = 36
NONE = "\u2013"  # an en dash: no value
TIMES = "\u00d7"


@dataclass(frozen=True)
class Token:
    symbol: str = "TUSD"
    decimals: int = 6

    @classmethod
    def from_json(cls, data: Any) -> Token:
        """``{"symbol", "decimals"}`` from the server; anything odd falls back to the default."""
        if not isinstance(data, Mapping):
            return cls()
        symbol = data.get("symbol")
        decimals = data.get("decimals")
        ok_decimals = (
            isinstance(decimals, int)
            and not isinstance(decimals, bool)
            and 0 <= decimals <= _MAX_DECIMALS
        )
        return cls(
            clean(symbol, 12) if isinstance(symbol, str) and symbol else cls.symbol,
            decimals if ok_decimals else cls.decimals,  # type: ignore[arg-type]
        )


def clean(text: Any, width: int = 64) -> str:
    """Chain data for display: printable characters only, cut to ``width`` with an ellipsis."""
    out = "".join(c if c.isprintable() else "?" for c in str(text))
    return out if len(out) <= width else out[: width - 1] + "…"


def format_money(amount: Any, token: Token, *, places: int = 2, symbol: bool = True) -> str:
    """Base units -> ``"1.84 TUSD"``: rounded down to ``places`` decimals (never shows more than
    was spent); ``"?"`` for a value that is not a non-negative int."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return "?"
    places = min(places, token.decimals)
    step = 10 ** (token.decimals - places)
    text = format_amount(amount // step, places)
    if places and "." in text:
        whole, frac = text.split(".")
        text = f"{whole}.{frac.ljust(places, '0')}"
    return f"{text} {token.symbol}" if symbol else text


def parse_token_amount(value: float, token: Token) -> int | None:
    """A user's ``1.5`` (token units) -> base units; None for negative, NaN or infinite."""
    if not math.isfinite(value) or value < 0:
        return None
    # via the shortest decimal text of the float: 0.29 stays 290000, not 289999
    return int(Decimal(repr(float(value))).scaleb(token.decimals).to_integral_value())


def format_duration(seconds: Any) -> str:
    """``9780`` -> ``"2 h 43 min"``, ``75`` -> ``"1 min 15 s"``, ``8`` -> ``"8 s"``; NONE (an en
    dash) for None or junk. Rounded down: a time left is never overstated."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return NONE
    if not math.isfinite(seconds) or seconds < 0:
        return NONE
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


# The offers table: sort keys (label -> how to order) and one row per offer.
SORT_KEYS: dict[str, str] = {
    "rank": "position",
    "price": "price_per_hour",
    "latency": "latency_ms",
    "VRAM": "vram_mib",
    "free": "free_kernels",
    "reputation": "reputation",
}


@dataclass(frozen=True)
class OfferRow:
    offer_id: int
    gpu: str  # "2 x H100 · 80 GiB" (with a multiplication sign) (simulated offers say so)
    price: str  # "1.84 TUSD/h"
    region: str
    latency: str
    free: str
    verification: str
    reputation: str
    reason: str
    usable: bool

    def cells(self) -> tuple[str, ...]:
        return (
            str(self.offer_id),
            self.gpu,
            self.price,
            self.region,
            self.latency,
            self.free,
            self.verification,
            self.reputation,
            self.reason,
        )


HEADERS = ("ID", "GPU", "price/h", "region", "latency", "free", "verified", "reputation", "reason")


def _gpu_cell(o: Mapping[str, Any]) -> str:
    name = clean(o.get("gpu_class") or o.get("gpu_model") or "?", 28)
    count = o.get("gpu_count")
    if isinstance(count, int) and count > 1:
        name = f"{count} {TIMES} {name}"
    vram = o.get("vram_mib")
    if isinstance(vram, int) and not isinstance(vram, bool) and vram > 0:
        name += f" · {vram / 1024:.0f} GiB"
    if o.get("simulated"):
        name += " (simulated)"
    return name


def _offer_id(o: Mapping[str, Any]) -> int:
    v = o.get("id")
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def offer_rows(offers: Iterable[Mapping[str, Any]], token: Token) -> list[OfferRow]:
    """One row per offer, unusable ones included (greyed by the renderer, with their reason)."""
    rows = []
    for o in offers:
        lat = o.get("latency_ms")
        free = o.get("free_kernels")
        rep = o.get("reputation")
        usable = o.get("usable") is True
        reason = clean(o.get("reason") or "", 80)
        if not usable and not reason:
            reason = "not usable"
        rows.append(
            OfferRow(
                offer_id=_offer_id(o),
                gpu=_gpu_cell(o),
                price=format_money(o.get("price_per_hour"), token) + "/h",
                region=clean(o.get("region") or "?", 16),
                latency=NONE if not isinstance(lat, int | float) else f"{lat:.0f} ms",
                free="?" if not isinstance(free, int) else str(free),
                verification=clean(o.get("verification") or "?", 20),
                reputation=NONE if not isinstance(rep, int | float) else f"{rep:.2f}",
                reason=reason,
                usable=usable,
            )
        )
    return rows


def sort_offers(
    offers: Iterable[Mapping[str, Any]], key: str, *, descending: bool = False
) -> list[Mapping[str, Any]]:
    """Offers ordered by a :data:`SORT_KEYS` label; usable first, missing values last."""
    field = SORT_KEYS.get(key, "position")
    items = list(offers)

    def value(o: Mapping[str, Any]) -> float:
        v = o.get(field)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return math.inf
        return -float(v) if descending else float(v)

    return sorted(items, key=lambda o: (o.get("usable") is not True, value(o)))


def offers_table_html(rows: Iterable[OfferRow], selected: int | None = None) -> str:
    """The table as escaped HTML; unusable rows grey with their reason, the selected one bold."""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in HEADERS)
    body = []
    for r in rows:
        style = "padding:2px 8px"
        row_style = "color:#999" if not r.usable else ""
        if r.offer_id == selected:
            row_style += ";font-weight:bold;background:#e8f0fe"
        cells = "".join(f"<td style='{style}'>{html.escape(c)}</td>" for c in r.cells())
        state = "usable" if r.usable else "unusable"
        body.append(
            f"<tr class='gpumarket-offer gpumarket-{state}' data-offer='{r.offer_id}' "
            f"style='{row_style}'>{cells}</tr>"
        )
    if not body:
        return "<i>no offer matches: widen the filter</i>"
    return (
        "<table class='gpumarket-offers' style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
