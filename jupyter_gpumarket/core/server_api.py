"""Checks of what the server API (docs/server-api.md) receives: offer queries, selections,
the renter's config. Pure: every error is a ConfigError whose message names the field and what
is accepted (the handlers answer it as 400)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from jupyter_gpumarket.core.market_offer import Constraints, OfferQuery, Policy
from jupyter_gpumarket.core.offer_filter import parse_offer_filter
from jupyter_gpumarket.core.verification import Level
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "CONFIG_DEFAULTS",
    "MAX_BODY_BYTES",
    "MAX_PATH_CHARS",
    "check_notebook_path",
    "merge_config",
    "parse_offers_query",
    "parse_selection",
]

MAX_BODY_BYTES = 64 * 1024  # a request body the API parses at all
MAX_PATH_CHARS = 1024
MAX_TEXT_CHARS = 128
MAX_QUOTE_BYTES = 4096
MAX_HOURS = 10_000.0
MAX_CULL_S = 30 * 24 * 3600
UINT256_MAX = 2**256 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
NETWORK_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")

OFFERS_PARAMS = ("gpu", "min_vram_gib", "max_price", "region", "verified", "policy", "network")
SELECTION_FIELDS = (
    "path",
    "offer",
    "network",
    "budget",
    "initial_hours",
    "confirmed_quote",
    "wallet",  # optional: "keystore" (default) or "browser" (an EIP-1193 wallet signs)
    "wallet_address",  # the browser wallet's address (with wallet "browser")
)
CONFIG_DEFAULTS: dict[str, Any] = {
    "budget_cap": None,
    "auto_topup": False,
    "network": "",  # "": the active network profile
    "policy": "cheapest",
    "verified_only": False,
    "cull_idle_timeout_s": 1800,
}


def _text(name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= limit:
        raise ConfigError(f"{name} must be text of 1 to {limit} characters, not {value!r:.60}")
    if not value.isprintable():
        raise ConfigError(f"{name} must be printable text")
    return value.strip()


def _network(name: str, value: Any) -> str:
    text = _text(name, value, 64)
    # a name, never a path: load_profile reads "x.json" (or anything with a slash) as a file
    if not set(text) <= NETWORK_CHARS or text.startswith(".") or text.endswith(".json"):
        raise ConfigError(
            f"{name} {text!r} is not a network profile name (lowercase letters, digits, - _ .); "
            "`gpumarket network list` shows the known ones"
        )
    return text


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= UINT256_MAX:
        raise ConfigError(
            f"{name} must be a positive whole number of token base units, not {value!r:.60}"
        )
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r:.60}")
    return value


def parse_offers_query(args: Mapping[str, str]) -> tuple[OfferQuery, str | None]:
    """``GET offers`` query arguments -> (the query ``gpumarket offers`` would run, the network
    profile asked for or None)."""
    unknown = sorted(set(args) - set(OFFERS_PARAMS))
    if unknown:
        raise ConfigError(
            f"unknown query parameter {unknown[0][:40]!r}: use {', '.join(OFFERS_PARAMS)}"
        )
    gpu = _text("gpu", args["gpu"], 64) if "gpu" in args else None
    region = _text("region", args["region"], 64) if "region" in args else None
    min_vram = 0
    if "min_vram_gib" in args:
        try:
            gib = float(args["min_vram_gib"])
        except ValueError:
            gib = -1.0
        if not 0 <= gib <= 1e6 or math.isnan(gib):
            raise ConfigError(
                f"min_vram_gib must be a number of GiB from 0 to 1000000, not "
                f"{args['min_vram_gib'][:40]!r}"
            )
        min_vram = round(gib * 1024)
    max_price = None
    if "max_price" in args:
        text = args["max_price"]
        if not text.isascii() or not text.isdigit() or len(text) > 78:
            raise ConfigError(
                f"max_price must be a whole number of token base units per hour, not {text[:40]!r}"
            )
        max_price = int(text)
    verified = args.get("verified", "0")
    if verified not in ("0", "1"):
        raise ConfigError(f"verified must be 0 or 1, not {verified[:40]!r}")
    policy = Policy.parse(args.get("policy", "cheapest")[:40])
    network = _network("network", args["network"]) if "network" in args else None
    constraints = Constraints(
        gpu=gpu,
        min_vram_mib=min_vram,
        max_price=max_price,
        region=region,
        min_level=Level.DETECTED if verified == "1" else Level.SELF_REPORTED,
    )
    return OfferQuery(policy, constraints), network


def check_notebook_path(value: Any) -> str | None:
    """A notebook path relative to the server root (``None``: the default for new notebooks),
    normalized: no leading slash, no ``.``/``..``/empty parts, no backslash or control
    characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PATH_CHARS:
        raise ConfigError(
            f"path must be a notebook path of 1 to {MAX_PATH_CHARS} characters, or null for "
            "the default of new notebooks"
        )
    if not value.isprintable() or "\\" in value:
        raise ConfigError("path must be printable and use / between folders")
    parts = value.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"path {value[:80]!r} must be relative to the server root, without . or .. parts"
        )
    return "/".join(parts)


def parse_selection(body: Any) -> tuple[str | None, dict[str, Any]]:
    """``POST selection`` body -> (notebook path or None, the Selection to store)."""
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object: a Selection and its path")
    unknown = sorted(set(body) - set(SELECTION_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown field {unknown[0][:40]!r}: a selection has {', '.join(SELECTION_FIELDS)}"
        )
    path = check_notebook_path(body.get("path"))
    offer = body.get("offer")
    if isinstance(offer, int) and not isinstance(offer, bool):
        offer = str(offer)
    if not isinstance(offer, str):
        raise ConfigError(
            "offer is required: an offer id or a filter such as policy=cheapest,gpu=H100 "
            "(`gpumarket offers` lists them)"
        )
    parse_offer_filter(offer)  # raises with the grammar's own message
    selection: dict[str, Any] = {
        "offer": offer.strip(),
        "network": None,
        "budget": None,
        "initial_hours": None,
        "confirmed_quote": None,
    }
    if body.get("network") is not None:
        selection["network"] = _network("network", body["network"])
    if body.get("budget") is not None:
        selection["budget"] = _positive_int("budget", body["budget"])
    hours = body.get("initial_hours")
    if hours is not None:
        if isinstance(hours, bool) or not isinstance(hours, int | float):
            raise ConfigError(f"initial_hours must be a number of hours, not {hours!r:.60}")
        if not 0 < hours < MAX_HOURS:
            raise ConfigError(f"initial_hours must be above 0 and below {MAX_HOURS:.0f}")
        selection["initial_hours"] = float(hours)
    quote = body.get("confirmed_quote")
    if quote is not None:
        if not isinstance(quote, dict) or len(json.dumps(quote)) > MAX_QUOTE_BYTES:
            raise ConfigError(
                f"confirmed_quote must be a Quote object (at most {MAX_QUOTE_BYTES} bytes) or null"
            )
        selection["confirmed_quote"] = quote
    wallet = body.get("wallet")
    if wallet is not None and wallet != "keystore":
        if wallet != "browser":
            raise ConfigError(f"wallet must be 'keystore' or 'browser', not {wallet!r:.40}")
        address = body.get("wallet_address")
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise ConfigError(
                "wallet_address must be the browser wallet's 0x address (connect it first)"
            )
        selection["wallet"], selection["wallet_address"] = "browser", address
    elif body.get("wallet_address") is not None:
        raise ConfigError("wallet_address goes with wallet 'browser'")
    return path, selection


def merge_config(current: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """``PUT config``: the fields given replace those of ``current``; each is checked."""
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object with Config fields")
    unknown = sorted(set(body) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown field {unknown[0][:40]!r}: the config has {', '.join(CONFIG_DEFAULTS)}"
        )
    out = {**CONFIG_DEFAULTS, **{k: v for k, v in current.items() if k in CONFIG_DEFAULTS}}
    for key, value in body.items():
        if key == "budget_cap":
            out[key] = None if value is None else _positive_int(key, value)
        elif key in ("auto_topup", "verified_only"):
            out[key] = _bool(key, value)
        elif key == "network":
            out[key] = "" if value in ("", None) else _network(key, value)
        elif key == "policy":
            out[key] = Policy.parse(_text(key, value, 16)).value
        else:  # cull_idle_timeout_s
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be a whole number of seconds, not {value!r:.60}")
            if not 0 <= value <= MAX_CULL_S:
                raise ConfigError(f"{key} must be 0 (never cull) to {MAX_CULL_S} seconds")
            out[key] = value
    return out
