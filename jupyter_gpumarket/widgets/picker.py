"""``jupyter_gpumarket.pick(**filters)``: filter the market's offers, confirm the cost once, and
use one for this notebook (docs/server-api.md: ``GET offers``, ``GET quote``, ``POST selection``).

"Use" stores the selection for this notebook's path, then switches the notebook's kernel to the
``gpumarket`` kernelspec through the server's sessions API (``PATCH /api/sessions/{id}``; JupyterLab
picks the new kernel up on its next sessions poll). When there is no session to switch, it says
exactly which kernel to pick.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from jupyter_gpumarket.core.ui_format import (
    SORT_KEYS,
    Token,
    clean,
    format_money,
    offer_rows,
    offers_table_html,
    parse_token_amount,
    sort_offers,
)
from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.widgets.client import ServerClient

__all__ = ["KERNEL_DISPLAY_NAME", "KERNEL_NAME", "OfferPicker"]

KERNEL_NAME = "gpumarket"
KERNEL_DISPLAY_NAME = "Python 3 (GPU Market)"
MANUAL_SWITCH = f"Kernel → Change Kernel → {KERNEL_DISPLAY_NAME}"
_FILTERS = ("gpu", "min_vram_gib", "max_price", "region", "verified", "policy")


class OfferPicker(w.VBox):
    """Filters, the offers table, the cost confirmation and the Use button."""

    def __init__(
        self,
        client: ServerClient,
        *,
        path: str | None = None,
        switch_kernel: bool = True,
        load: bool = True,
        **filters: Any,
    ) -> None:
        unknown = sorted(set(filters) - set(_FILTERS))
        if unknown:
            raise TypeError(f"pick() got unknown filter(s) {unknown}; use {list(_FILTERS)}")
        self.client = client
        self.path = path
        self.switch_kernel = switch_kernel
        self.token = Token()
        self.network: str | None = None
        self.offers: list[Mapping[str, Any]] = []
        self.quote: dict[str, Any] | None = None
        self._quote_line = ""
        self.confirmed_quote: dict[str, Any] | None = None
        self.selection: dict[str, Any] | None = None
        self.switch_thread: threading.Thread | None = None

        self.gpu = w.Text(value=str(filters.get("gpu") or ""), description="GPU", placeholder="any")
        self.min_vram = w.BoundedIntText(
            value=int(filters.get("min_vram_gib") or 0), min=0, max=100_000, description="min GiB"
        )
        self.max_price = w.BoundedFloatText(
            value=float(filters.get("max_price") or 0), min=0, max=1e12, description="max /h"
        )
        self.region = w.Text(value=str(filters.get("region") or ""), description="region")
        self.verified = w.Checkbox(value=bool(filters.get("verified")), description="verified only")
        self.policy = w.Dropdown(
            options=["cheapest", "fastest", "value"],
            value=filters.get("policy") or "cheapest",
            description="policy",
        )
        self.sort_by = w.Dropdown(options=list(SORT_KEYS), value="rank", description="sort by")
        self.descending = w.Checkbox(value=False, description="descending")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.table = w.HTML("<i>loading offers…</i>")
        self.offer = w.Dropdown(options=[], description="offer")
        self.budget = w.BoundedFloatText(value=10.0, min=0, max=1e12, description="budget")
        self.hours = w.BoundedFloatText(value=1.0, min=0.01, max=720, description="hours ahead")
        self.quote_text = w.HTML("")
        self.confirm = w.Button(description="Confirm cost", button_style="info", disabled=True)
        self.use = w.Button(description="Use", button_style="success", disabled=True, icon="check")
        self.message = w.HTML("")

        for box in (self.gpu, self.region):
            box.continuous_update = False
        for f in (self.gpu, self.min_vram, self.max_price, self.region, self.verified, self.policy):
            f.observe(self._on_filter, names="value")
        for f in (self.sort_by, self.descending):
            f.observe(self._on_sort, names="value")
        for f in (self.offer, self.budget, self.hours):
            f.observe(self._on_offer, names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.confirm.on_click(self._on_confirm)
        self.use.on_click(self._on_use)
        super().__init__(
            [
                w.HTML("<b>Pick a GPU</b>"),
                w.HBox([self.gpu, self.min_vram, self.max_price]),
                w.HBox([self.region, self.verified, self.policy]),
                w.HBox([self.sort_by, self.descending, self.refresh_button]),
                self.table,
                w.HBox([self.offer, self.budget, self.hours]),
                self.quote_text,
                w.HBox([self.confirm, self.use]),
                self.message,
            ]
        )
        self.add_class("gpumarket-picker")
        if load:
            self._load_context()
            self.refresh()

    # --- data ---
    def query(self) -> dict[str, Any]:
        """The filter row as ``GET offers`` query parameters (prices in base units)."""
        q: dict[str, Any] = {"policy": self.policy.value}
        if self.gpu.value.strip():
            q["gpu"] = self.gpu.value.strip()
        if self.min_vram.value:
            q["min_vram_gib"] = self.min_vram.value
        price = parse_token_amount(self.max_price.value, self.token)
        if price:
            q["max_price"] = price
        if self.region.value.strip():
            q["region"] = self.region.value.strip()
        if self.verified.value:
            q["verified"] = 1
        return q

    def _load_context(self) -> None:
        """Token, network and default budget from the server; defaults when it won't say."""
        try:
            wallet = self.client.api("GET", "wallet")
            self.token = Token.from_json((wallet or {}).get("token"))
        except GpuMarketError:
            pass
        try:
            config = self.client.api("GET", "config") or {}
        except GpuMarketError:
            config = {}
        network = config.get("network")
        self.network = network if isinstance(network, str) and network else None  # "": active
        cap = config.get("budget_cap")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            self.budget.value = cap / 10**self.token.decimals
        if self.path is None:
            try:
                self.path = self.client.notebook_path()
            except GpuMarketError:
                self.path = None

    def refresh(self) -> None:
        """Fetch the offers for the current filters and redraw."""
        self.message.value = ""
        try:
            body = self.client.api("GET", "offers", **self.query())
        except GpuMarketError as e:
            self.table.value = _note(str(e), "#d93025")
            return
        offers = (body or {}).get("offers") if isinstance(body, Mapping) else None
        self.offers = [o for o in offers or [] if isinstance(o, Mapping)]
        self._redraw()

    def _redraw(self) -> None:
        ordered = sort_offers(self.offers, self.sort_by.value, descending=self.descending.value)
        selected = self.offer.value
        self.table.value = offers_table_html(offer_rows(ordered, self.token), selected)
        rows = [r for r in offer_rows(ordered, self.token) if r.usable]
        options = [(f"#{r.offer_id} · {r.gpu} · {r.price} · {r.region}", r.offer_id) for r in rows]
        self.offer.options = options
        ids = [v for _, v in options]
        if ids:  # keep the chosen offer; else the best-ranked usable one
            self.offer.value = selected if selected in ids else ids[0]

    # --- observers ---
    def _on_filter(self, _: Any) -> None:
        self.refresh()

    def _on_sort(self, _: Any) -> None:
        self._redraw()

    def _on_offer(self, _: Any) -> None:
        """A new offer, budget or horizon: fetch its quote; the confirmation starts over."""
        self.quote = self.confirmed_quote = None
        self.use.disabled = True
        self.confirm.disabled = True
        self.table.value = offers_table_html(
            offer_rows(
                sort_offers(self.offers, self.sort_by.value, descending=self.descending.value),
                self.token,
            ),
            self.offer.value,
        )
        if self.offer.value is None:
            self.quote_text.value = ""
            return
        budget = parse_token_amount(self.budget.value, self.token)
        try:
            quote = self.client.api(
                "GET",
                "quote",
                offer=self.offer.value,
                budget=budget,
                initial_hours=self.hours.value,
            )
        except GpuMarketError as e:
            self.quote_text.value = _note(str(e), "#d93025")
            return
        if not isinstance(quote, dict):
            self.quote_text.value = _note("the server sent no quote; press Refresh", "#d93025")
            return
        self.quote = quote
        self.token = Token.from_json(quote.get("token")) if "token" in quote else self.token
        text = quote.get("text")
        if not isinstance(text, str):
            text = f"{format_money(quote.get('price_per_hour'), self.token)}/h"
        self._quote_line = html.escape(clean(text, 200))
        self.quote_text.value = f"<span class='gpumarket-quote'>{self._quote_line}</span>"
        self.confirm.disabled = False

    def _on_confirm(self, _: Any) -> None:
        if self.quote is None:
            return
        self.confirmed_quote = self.quote
        self.confirm.disabled = True
        self.use.disabled = False
        self.quote_text.value = (
            f"<span class='gpumarket-quote'>{self._quote_line} "
            "<b class='gpumarket-confirmed' style='color:#188038'>✓ confirmed</b></span>"
        )

    def _on_use(self, _: Any) -> None:
        if self.confirmed_quote is None or self.offer.value is None:
            return
        body = {
            "path": self.path,
            "offer": str(self.offer.value),
            "network": self.network,
            "budget": parse_token_amount(self.budget.value, self.token),
            "initial_hours": self.hours.value,
            "confirmed_quote": self.confirmed_quote,
        }
        try:
            self.selection = self.client.api("POST", "selection", body)
        except GpuMarketError as e:
            self.message.value = _note(str(e), "#d93025")
            return
        self.use.disabled = True
        where = self.path or "new notebooks"
        if not self.switch_kernel:
            self.message.value = _note(
                f"offer #{self.offer.value} stored for {where}. Now: {MANUAL_SWITCH}", "#188038"
            )
            return
        self._switch()

    def _switch(self) -> None:
        """PATCH this notebook's session to the gpumarket kernel, in a thread: the server shuts
        this (local) kernel down as part of the switch."""
        try:
            session = self.client.notebook_session()
        except GpuMarketError:
            session = None
        if session is None:
            self.message.value = _note(
                f"offer #{self.offer.value} stored for {self.path or 'new notebooks'}. "
                f"Now switch the kernel: {MANUAL_SWITCH}",
                "#188038",
            )
            return
        self.message.value = _note(
            f"offer #{self.offer.value} stored; switching this notebook to {KERNEL_DISPLAY_NAME} "
            f"(the launch takes a few seconds). If the kernel name at the top right does not "
            f"change: {MANUAL_SWITCH}",
            "#188038",
        )

        def patch() -> None:
            try:
                self.client.request(
                    "PATCH",
                    f"api/sessions/{session['id']}",
                    {"kernel": {"name": KERNEL_NAME}},
                    timeout=600,
                )
            except GpuMarketError as e:  # this kernel may already be gone: then nobody sees it
                self.message.value = _note(f"{e}. Switch by hand: {MANUAL_SWITCH}", "#d93025")

        self.switch_thread = threading.Thread(target=patch, name="gpumarket-switch", daemon=True)
        self.switch_thread.start()


def _note(text: str, color: str) -> str:
    return f"<span style='color:{color}'>{html.escape(text)}</span>"
