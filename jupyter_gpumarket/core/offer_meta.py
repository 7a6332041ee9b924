"""The ``metadata_uri`` string of a Registry offer: ``gpumarket:key=value;key=value``.

Providers publish facts renters need before they connect: ``isolation`` (sandboxed or
unsandboxed) and ``relay_fee`` (token base units the provider takes for relaying a gasless
channel opening). Unknown keys are kept, so newer providers can add some; a string that is not
ours (a URI some other tool wrote) parses to no keys at all.
"""

from __future__ import annotations

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["DEFAULT_RELAY_FEE", "PREFIX", "offer_metadata", "parse_offer_metadata", "relay_fee_of"]

PREFIX = "gpumarket:"
DEFAULT_RELAY_FEE = 10_000  # token base units (0.01 of a 6-decimal stablecoin)


def offer_metadata(**fields: object) -> str:
    """``offer_metadata(isolation="sandboxed", relay_fee=10000)`` -> the metadata string."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not key.isidentifier() or any(c in text for c in ";=") or not text:
            raise ConfigError(f"offer metadata {key}={text!r}: keys are names, values plain text")
        parts.append(f"{key}={text}")
    return PREFIX + ";".join(parts)


def parse_offer_metadata(metadata: str) -> dict[str, str]:
    """The key/value pairs of an offer's metadata (empty for anything that is not ours)."""
    if not isinstance(metadata, str) or not metadata.startswith(PREFIX):
        return {}
    out: dict[str, str] = {}
    for part in metadata[len(PREFIX) :].split(";"):
        key, sep, value = part.partition("=")
        if sep and key:
            out.setdefault(key, value)
    return out


def relay_fee_of(metadata: str) -> int | None:
    """The relay fee the offer asks (None: this provider does not relay openings)."""
    raw = parse_offer_metadata(metadata).get("relay_fee")
    if raw is None or not raw.isdigit():
        return None
    return int(raw)
