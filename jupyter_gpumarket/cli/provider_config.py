"""`gpumarket provider serve --config FILE`: the same settings as the flags, in TOML.

    # provider.toml
    network = "devnet"
    wallet = "~/provider.json"
    price-per-hour = 1800000          # token base units per hour
    region = "eu"
    gpus = "0,1"                      # which GPUs to rent out ("all", "none", or indices)
    relay-fee = 10000

Keys are the long option names (dashes or underscores), at the top level or in a
``[provider]`` table. A flag given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["apply_config"]

_NOT_SETTINGS = {"help", "config", "func", "unpublish"}


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser, path: Path) -> None:
    """Fill ``args`` from the TOML file at ``path`` where no flag was given."""
    path = path.expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the provider config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("provider", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [provider] must be a table of settings")
    actions = {a.dest: a for a in parser._actions if a.dest not in _NOT_SETTINGS}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            known = ", ".join(sorted(a.replace("_", "-") for a in actions))
            raise ConfigError(f"{path}: unknown setting {key!r}; known: {known}")
        if getattr(args, dest) != action.default:
            continue  # given on the command line: the flag wins
        setattr(args, dest, _coerce(path, key, action, value))


def _coerce(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false")
        return value
    if isinstance(value, bool | dict | list):
        raise ConfigError(f"{path}: {key} must be a single value, not {value!r}")
    convert = action.type if callable(action.type) else str
    try:
        out = convert(value if convert is not Path else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:  # the flag's own checks
        raise ConfigError(f"{path}: {key} = {value!r} is not valid ({exc})") from None
    if action.choices is not None and out not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{path}: {key} must be one of {choices}")
    return out
