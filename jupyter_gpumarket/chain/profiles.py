"""Network profiles: which chain, which RPC, which contracts.

A profile is a JSON file under ``$GPUMARKET_HOME/networks/<name>.json``::

    {"name": "devnet", "rpc_url": "http://127.0.0.1:8545", "chain_id": 31337,
     "contracts": {"token": "0x..", "escrow": "0x..", "registry": "0x.."},
     "close_delay": 3600, "token_symbol": "TUSD", "token_decimals": 6, "devnet": true}

``escrow`` / ``registry`` may be null for a real network where they are not deployed yet.
The active profile is ``$GPUMARKET_NETWORK``, else the name in ``networks/active``, else devnet.
Profiles hold no secrets: put API keys in the RPC URL only on your own machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import networks_dir
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "PRESETS",
    "NetworkProfile",
    "active_name",
    "active_profile",
    "list_profiles",
    "load_profile",
    "profile_path",
    "save_profile",
    "use_profile",
]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class NetworkProfile:
    """One network: RPC endpoint, chain id, contract addresses, token units."""

    name: str
    rpc_url: str
    chain_id: int
    token: str
    escrow: str | None = None
    registry: str | None = None
    close_delay: int | None = None
    token_symbol: str = "TUSD"
    token_decimals: int = 6
    devnet: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        from eth_utils import is_address, to_checksum_address

        if not self.name or not set(self.name) <= _NAME_CHARS:
            raise ConfigError(
                f"profile name {self.name!r} must be lowercase letters, digits, '-', '_' or '.'"
            )
        if not self.rpc_url.startswith(("http://", "https://", "ws://", "wss://")):
            raise ConfigError(
                f"profile {self.name}: rpc_url {self.rpc_url!r} must be an http(s) URL"
            )
        if (
            isinstance(self.chain_id, bool)
            or not isinstance(self.chain_id, int)
            or self.chain_id <= 0
        ):
            raise ConfigError(f"profile {self.name}: chain_id must be a positive int")
        for key in ("token", "escrow", "registry"):
            value = getattr(self, key)
            if value is None and key != "token":
                continue
            if not isinstance(value, str) or not is_address(value):
                raise ConfigError(
                    f"profile {self.name}: contracts.{key} {value!r} is not an address"
                )
            object.__setattr__(self, key, to_checksum_address(value))
        if self.close_delay is not None and self.close_delay < 0:
            raise ConfigError(f"profile {self.name}: close_delay must not be negative")

    def require_contracts(self) -> tuple[str, str, str]:
        """(token, escrow, registry), or ConfigError saying how to add the missing ones."""
        if self.escrow is None or self.registry is None:
            raise ConfigError(
                f"network {self.name} has no escrow/registry address yet: deploy them and run "
                f"`gpumarket network add {self.name} ... --escrow ADDR --registry ADDR`"
            )
        return self.token, self.escrow, self.registry

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "name": self.name,
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "contracts": {"token": self.token, "escrow": self.escrow, "registry": self.registry},
            "close_delay": self.close_delay,
            "token_symbol": self.token_symbol,
            "token_decimals": self.token_decimals,
            "devnet": self.devnet,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkProfile:
        try:
            known = {
                "name",
                "rpc_url",
                "chain_id",
                "contracts",
                "close_delay",
                "token_symbol",
                "token_decimals",
                "devnet",
            }
            contracts = data.get("contracts") or {}
            return cls(
                name=data["name"],
                rpc_url=data["rpc_url"],
                chain_id=data["chain_id"],
                token=contracts["token"],
                escrow=contracts.get("escrow"),
                registry=contracts.get("registry"),
                close_delay=data.get("close_delay"),
                token_symbol=data.get("token_symbol", "TUSD"),
                token_decimals=data.get("token_decimals", 6),
                devnet=bool(data.get("devnet", False)),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"network profile is missing or has a bad field: {exc}") from exc


# Real networks (stablecoin = USDC). Escrow/registry get added once deployed there.
PRESETS: dict[str, dict[str, Any]] = {
    "base-sepolia": {
        "rpc_url": "https://sepolia.base.org",
        "chain_id": 84532,
        "token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "token_symbol": "USDC",
        "token_decimals": 6,
        "close_delay": 3600,
    },
    "base": {
        "rpc_url": "https://mainnet.base.org",
        "chain_id": 8453,
        "token": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "token_symbol": "USDC",
        "token_decimals": 6,
        "close_delay": 3600,
    },
}


def profile_path(name: str) -> Path:
    return networks_dir() / f"{name}.json"


def save_profile(profile: NetworkProfile, path: Path | None = None) -> Path:
    """Write ``profile`` (atomically) to ``path`` or the networks dir; the path written."""
    path = path or profile_path(profile.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    statefile.write_json(path, profile.to_json(), mode=0o644, indent=2)
    return path


def load_profile(name_or_path: str | Path) -> NetworkProfile:
    """A profile by name (``devnet``) or by JSON file path."""
    text = str(name_or_path)
    path = Path(text) if text.endswith(".json") or os.sep in text else profile_path(text)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no network profile {text!r} ({path}): start `gpumarket devnet` or run "
            "`gpumarket network add`; `gpumarket network list` shows the known ones"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"network profile {path} is unreadable ({exc}); fix or delete it"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"network profile {path} is not a JSON object; fix or delete it")
    return NetworkProfile.from_json(data)


def list_profiles() -> list[NetworkProfile]:
    """Every readable profile in the networks dir, by name."""
    out = []
    for path in sorted(networks_dir().glob("*.json")):
        try:
            out.append(load_profile(path))
        except ConfigError:
            continue
    return out


def use_profile(name: str) -> NetworkProfile:
    """Make ``name`` the active profile."""
    profile = load_profile(name)
    networks_dir().mkdir(parents=True, exist_ok=True)
    (networks_dir() / "active").write_text(profile.name + "\n")
    return profile


def active_name() -> str:
    if env := os.environ.get("GPUMARKET_NETWORK"):
        return env
    try:
        return (networks_dir() / "active").read_text().strip() or "devnet"
    except FileNotFoundError:
        return "devnet"


def active_profile() -> NetworkProfile:
    """The profile commands use when none is named."""
    return load_profile(active_name())
