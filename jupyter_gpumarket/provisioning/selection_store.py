"""What the user chose in the widget/panel, kept for the kernels: the offer selection per
notebook (plus a default for new notebooks) and the renter's config, as JSON files under
``$GPUMARKET_HOME`` (``selections.json``, ``config.json``), each replaced atomically.

A kernel finds its notebook through ``JPY_SESSION_NAME`` (jupyter_server puts the notebook's
path there: relative to the server root, or absolute under it). The provisioner asks
:func:`launch_choice` for the settings of one launch; the order is: a direct provider
(GPUMARKET_PROVIDER_URL, handled by the provisioner) > a selection pinned in the kernelspec
(``metadata.gpumarket.selection``, written by ``gpumarket kernelspec add``) > the notebook's
stored selection > the default selection > the GPUMARKET_* environment and the traits.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.core.server_api import CONFIG_DEFAULTS, check_notebook_path, merge_config
from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.provisioning import wallet_memory

__all__ = [
    "MAX_NOTEBOOKS",
    "LaunchChoice",
    "delete_selection",
    "launch_choice",
    "load_config",
    "notebook_key",
    "save_config",
    "save_selection",
    "selections",
    "stored_selection",
]

MAX_NOTEBOOKS = 1000  # selections kept (the oldest go first beyond it)
MAX_FILE_BYTES = 8 * 1024 * 1024  # a state file larger than this is not read
_DEFAULT = ""  # the key of the default selection (no notebook path is empty)
_lock = threading.Lock()


def _path(name: str) -> Path:
    return gpumarket_home() / name


def _read(name: str) -> dict[str, Any]:
    path = _path(name)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); fix its permissions or delete it"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes; delete it")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; delete it and choose again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; delete it and choose again")
    return data


def _write(name: str, data: dict[str, Any]) -> None:
    path = _path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    statefile.write_json(path, data, indent=1)


def selections() -> dict[str, dict[str, Any]]:
    """Every stored selection by notebook path (``""``: the default)."""
    data = _read("selections.json").get("selections", {})
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}


def notebook_key(session_name: str | None, root_dir: str | None = None) -> str | None:
    """The stored key of a kernel's notebook: ``JPY_SESSION_NAME`` relative to the server
    root (None when it is missing, malformed, or an absolute path outside the root)."""
    if not session_name:
        return None
    name = session_name
    if os.path.isabs(name):
        if not root_dir:
            return None
        root = os.path.realpath(root_dir)
        full = os.path.realpath(name)
        if os.path.commonpath([root, full]) != root or full == root:
            return None
        name = os.path.relpath(full, root).replace(os.sep, "/")
    try:
        return check_notebook_path(name)
    except ConfigError:
        return None


def stored_selection(path: str | None, root_dir: str | None = None) -> dict[str, Any] | None:
    """The selection stored for notebook ``path`` (a ``JPY_SESSION_NAME``; None: the default
    for new notebooks), else None. Never falls back to the default by itself."""
    if path is None:
        key: str | None = _DEFAULT
    else:
        key = notebook_key(path, root_dir)
    if key is None:
        return None
    return selections().get(key)


def save_selection(path: str | None, selection: dict[str, Any]) -> dict[str, Any]:
    """Store ``selection`` (already checked) for ``path`` (None: the default)."""
    key = _DEFAULT if path is None else path
    with _lock:
        data = selections()
        data.pop(key, None)
        data[key] = selection  # newest last
        while len(data) > MAX_NOTEBOOKS:
            oldest = next(k for k in data if k != _DEFAULT)
            del data[oldest]
        _write("selections.json", {"selections": data})
    return selection


def delete_selection(path: str | None) -> None:
    key = _DEFAULT if path is None else path
    with _lock:
        data = selections()
        if data.pop(key, None) is not None:
            _write("selections.json", {"selections": data})


def load_config() -> dict[str, Any]:
    """The renter's config (the defaults where nothing was stored); a stored file that no
    longer passes the checks gives the defaults for the bad fields only."""
    stored = _read("config.json")
    out = dict(CONFIG_DEFAULTS)
    for key, value in stored.items():
        try:
            out = merge_config(out, {key: value})
        except ConfigError:
            continue
    return out


def stored_cull_timeout() -> int | None:
    """The ``cull_idle_timeout_s`` the user stored (PUT config), or None when they never set it
    (the extension's trait decides then) or the file is unreadable."""
    try:
        value = _read("config.json").get("cull_idle_timeout_s")
        checked = merge_config(dict(CONFIG_DEFAULTS), {"cull_idle_timeout_s": value})
    except ConfigError:
        return None
    return None if value is None else int(checked["cull_idle_timeout_s"])


def save_config(body: Any) -> dict[str, Any]:
    with _lock:
        config = merge_config(load_config(), body)
        _write("config.json", config)
    return config


class LaunchChoice:
    """The settings one launch takes from the stored choices, by GPUMARKET_* name; ``get``
    returns None where the environment and the traits decide."""

    def __init__(self, values: dict[str, str], launch_env: Mapping[str, str]) -> None:
        self.values = values
        self._env = launch_env

    def get(self, name: str) -> str | None:
        if name == "GPUMARKET_WALLET_PASSWORD":  # the environment's wins; then the unlock
            if os.environ.get(name) or self._env.get(name):
                return None
            return wallet_memory.password()
        return self.values.get(name)


def _as_settings(selection: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    out = {"GPUMARKET_OFFER": str(selection.get("offer") or "")}
    network = selection.get("network") or config.get("network")
    if network:
        out["GPUMARKET_NETWORK"] = str(network)
    budget = selection.get("budget")
    cap = config.get("budget_cap")
    if cap is not None:
        budget = cap if budget is None else min(int(budget), int(cap))
    if budget is not None:
        out["GPUMARKET_BUDGET"] = str(budget)
    if selection.get("initial_hours") is not None:
        out["GPUMARKET_INITIAL_HOURS"] = repr(float(selection["initial_hours"]))
    if config.get("auto_topup"):
        out["GPUMARKET_AUTO_TOP_UP"] = "1"
    if selection.get("wallet") == "browser":  # a browser wallet (EIP-1193) signs the opening
        out["GPUMARKET_WALLET_MODE"] = "browser"
        out["GPUMARKET_BROWSER_ADDRESS"] = str(selection.get("wallet_address") or "")
    return {k: v for k, v in out.items() if v}


def launch_choice(
    spec_metadata: Mapping[str, Any] | None,
    launch_env: Mapping[str, str],
    root_dir: str | None = None,
) -> LaunchChoice:
    """The settings of a launch from the kernelspec's pin, the notebook's selection or the
    default one (in that order; none: the environment and traits decide)."""
    pinned = (spec_metadata or {}).get("gpumarket", {})
    pin = pinned.get("selection") if isinstance(pinned, dict) else None
    chosen = pin if isinstance(pin, dict) and pin.get("offer") else None
    if chosen is None:
        chosen = stored_selection(launch_env.get("JPY_SESSION_NAME") or "", root_dir)
    if chosen is None:
        chosen = stored_selection(None)
    if chosen is None:
        return LaunchChoice({}, launch_env)
    return LaunchChoice(_as_settings(chosen, load_config()), launch_env)
