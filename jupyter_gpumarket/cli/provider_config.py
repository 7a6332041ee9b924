"""`gpumarket provider serve --config FILE`: the same settings as the flags, in TOML.

    # provider.toml
    network = "devnet"
    wallet = "~/provider.json"
    price-per-hour = 1800000          # token base units per hour
    region = "eu"
    gpus = "0,1"                      # which GPUs to rent out ("all", "none", or indices)
    relay-fee = 10000

Keys are the long option names (dashes or underscores), at the top level or in a
``[provider]`` table. A flag given on the command line wins over the file, even when its
value is the flag's default: the file's values become the parser's defaults.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["config_defaults", "parse_with_config"]

_NOT_SETTINGS = {"help", "config", "func", "unpublish"}


def parse_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse ``argv``; when it names a ``--config`` file for a command that takes one, make
    the file's settings that command's defaults and parse again, so every flag on the
    command line wins (also one given with its default value)."""
    args = parser.parse_args(argv)
    sub = getattr(args, "serve_parser", None)
    if getattr(args, "config", None) is None or sub is None:
        return args
    sub.set_defaults(**config_defaults(sub, args.config))
    return parser.parse_args(argv)


def config_defaults(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The TOML file at ``path`` as ``parser`` defaults, each value through its flag's checks."""
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
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            known = ", ".join(sorted(a.replace("_", "-") for a in actions))
            raise ConfigError(f"{path}: unknown setting {key!r}; known: {known}")
        defaults[dest] = _coerce(path, key, action, value)
    return defaults


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
