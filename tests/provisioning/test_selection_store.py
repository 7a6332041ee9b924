"""Stored selections and config under $GPUMARKET_HOME, the order a launch takes its settings
in, and the wallet password kept in memory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.provisioning import selection_store as store
from jupyter_gpumarket.provisioning import wallet_memory


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GPUMARKET_WALLET_PASSWORD", raising=False)
    wallet_memory.lock()
    return tmp_path / "home"


def _sel(offer: str, **more: object) -> dict[str, object]:
    return {"offer": offer, "network": None, "budget": None, "initial_hours": None, **more}


def test_selections_are_stored_per_notebook_and_by_default(home: Path) -> None:
    assert store.stored_selection("nb.ipynb") is None
    store.save_selection("dir/nb.ipynb", _sel("7"))
    store.save_selection(None, _sel("gpu=H100"))
    assert store.stored_selection("dir/nb.ipynb") == _sel("7")
    assert store.stored_selection(None) == _sel("gpu=H100")
    assert store.stored_selection("other.ipynb") is None  # no silent fallback here
    path = home / "selections.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]
    store.delete_selection("dir/nb.ipynb")
    assert store.stored_selection("dir/nb.ipynb") is None
    assert store.stored_selection(None) is not None


def test_the_store_keeps_at_most_max_notebooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_NOTEBOOKS", 3)
    store.save_selection(None, _sel("1"))
    for i in range(5):
        store.save_selection(f"nb{i}.ipynb", _sel("2"))
    kept = store.selections()
    assert len(kept) == 3
    assert "" in kept
    assert "nb4.ipynb" in kept
    assert "nb0.ipynb" not in kept


@pytest.mark.parametrize("content", [b"{", b"[1]", b" " * (store.MAX_FILE_BYTES + 1)])
def test_a_damaged_store_says_what_to_do(home: Path, content: bytes) -> None:
    home.mkdir(parents=True)
    (home / "selections.json").write_bytes(content)
    with pytest.raises(ConfigError, match="delete it"):
        store.stored_selection("nb.ipynb")


def test_jpy_session_name_maps_to_the_notebook_key(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert store.notebook_key("sub/nb.ipynb") == "sub/nb.ipynb"
    assert store.notebook_key(str(root / "sub" / "nb.ipynb"), str(root)) == "sub/nb.ipynb"
    assert store.notebook_key(str(root / "sub" / "nb.ipynb"), None) is None
    assert store.notebook_key(str(tmp_path / "elsewhere.ipynb"), str(root)) is None
    assert store.notebook_key(str(root / ".." / "x.ipynb"), str(root)) is None
    assert store.notebook_key("../x.ipynb") is None
    assert store.notebook_key("") is None


def test_a_launch_takes_pin_then_notebook_then_default_then_nothing(tmp_path: Path) -> None:
    env = {"JPY_SESSION_NAME": "nb.ipynb"}
    assert store.launch_choice(None, env).get("GPUMARKET_OFFER") is None  # env decides
    store.save_selection(None, _sel("gpu=cpu"))
    assert store.launch_choice(None, env).get("GPUMARKET_OFFER") == "gpu=cpu"
    store.save_selection("nb.ipynb", _sel("7", budget=900, initial_hours=0.5, network="devnet"))
    choice = store.launch_choice({}, env)
    assert choice.get("GPUMARKET_OFFER") == "7"
    assert choice.get("GPUMARKET_BUDGET") == "900"
    assert choice.get("GPUMARKET_INITIAL_HOURS") == "0.5"
    assert choice.get("GPUMARKET_NETWORK") == "devnet"
    assert choice.get("GPUMARKET_PROVIDER_URL") is None  # a direct provider is never chosen here
    pinned = {"gpumarket": {"selection": _sel("9")}}
    assert store.launch_choice(pinned, env).get("GPUMARKET_OFFER") == "9"


def test_the_config_caps_the_budget_and_names_the_network() -> None:
    store.save_config({"budget_cap": 500, "network": "testnet", "auto_topup": True})
    store.save_selection(None, _sel("7", budget=900))
    choice = store.launch_choice(None, {})
    assert choice.get("GPUMARKET_BUDGET") == "500"
    assert choice.get("GPUMARKET_NETWORK") == "testnet"
    assert choice.get("GPUMARKET_AUTO_TOP_UP") == "1"
    store.save_selection(None, _sel("7"))
    assert store.launch_choice(None, {}).get("GPUMARKET_BUDGET") == "500"


def test_a_stored_config_with_a_bad_field_keeps_the_good_ones(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "config.json").write_text(json.dumps({"budget_cap": -4, "policy": "value"}))
    config = store.load_config()
    assert config["budget_cap"] is None
    assert config["policy"] == "value"


def test_the_unlocked_password_serves_a_launch_only_without_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "GPUMARKET_WALLET_PASSWORD"
    assert store.launch_choice(None, {}).get(name) is None
    wallet_memory.unlock("s3cret", 60)
    assert store.launch_choice(None, {}).get(name) == "s3cret"
    assert store.launch_choice(None, {name: "from-launch-env"}).get(name) is None
    monkeypatch.setenv(name, "from-server-env")
    assert store.launch_choice(None, {}).get(name) is None
    monkeypatch.delenv(name)
    wallet_memory.lock()
    assert store.launch_choice(None, {}).get(name) is None


def test_the_unlock_expires() -> None:
    wallet_memory.unlock("s3cret", 0.05)
    assert wallet_memory.password() == "s3cret"
    assert 0 < (wallet_memory.expires_in() or 0) <= 0.05
    time.sleep(0.1)
    assert wallet_memory.password() is None
    assert wallet_memory.expires_in() is None


def test_the_password_never_reaches_disk(home: Path) -> None:
    wallet_memory.unlock("very-secret-password", 60)
    store.save_selection(None, _sel("7"))
    store.save_config({"budget_cap": 5})
    for path in home.rglob("*"):
        if path.is_file():
            assert b"very-secret-password" not in path.read_bytes()
    assert "very-secret-password" not in "".join(os.environ.values())


def test_a_direct_provider_wins_over_every_stored_selection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provisioner's lookup (choice, then the server's env, then the launch env, then the
    trait) with a selection stored: GPUMARKET_PROVIDER_URL still picks the direct provider."""
    from jupyter_gpumarket.provisioning.selection import paid_selected

    store.save_selection(None, _sel("7"))
    launch_env = {"GPUMARKET_PROVIDER_URL": "wss://127.0.0.1:1"}
    choice = store.launch_choice(None, launch_env)

    def setting(name: str, trait: str) -> str:
        return choice.get(name) or os.environ.get(name) or launch_env.get(name) or trait

    assert not paid_selected(setting, "", "")
    launch_env.clear()
    assert paid_selected(setting, "", "")
