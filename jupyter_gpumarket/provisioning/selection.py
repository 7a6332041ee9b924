"""Which provider a kernel launches on, and with what: the direct (dev) provider target, the
paid offer selection and its settings, and the part of the environment the remote kernel gets.

Each reads its settings through ``setting(env_name, trait_value)``, the provisioner's lookup
(the server's environment, then the launch environment, then the trait), and checks them before
any connection or chain call.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.exceptions import ConfigError, NoProviderSelected
from jupyter_gpumarket.provisioning.link import ProviderTarget

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "Setting",
    "forwarded_env",
    "paid_selected",
    "paid_settings",
    "provider_target",
]

Setting = Callable[[str, str], str]

# What of the Jupyter server's environment a remote kernel gets, besides the kernelspec's own
# `env` entries. The server's environment is never forwarded wholesale: it holds tokens, cloud
# credentials and wallet passwords.
DEFAULT_ENV_ALLOW = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME")


def forwarded_env(
    env: dict[str, str], spec_env: dict[str, str], allow: list[str] | tuple[str, ...]
) -> dict[str, str]:
    """The part of the launch environment that is sent to the provider."""
    names = set(allow) | set(spec_env)
    return {k: v for k, v in env.items() if k in names and not k.startswith("GPUMARKET_")}


def provider_target(
    setting: Setting, provider_url: str, tls_fingerprint: str, dev_token: str
) -> ProviderTarget:
    """The direct provider (GPUMARKET_PROVIDER_URL and its pin), checked."""
    url = setting("GPUMARKET_PROVIDER_URL", provider_url)
    if not url:
        raise NoProviderSelected(
            "no GPU provider selected for this kernel. To rent an offer: set "
            "GPUMARKET_NETWORK (a network profile, e.g. devnet; `gpumarket network list`) "
            "and GPUMARKET_OFFER (an offer id, or a filter such as "
            "region=eu,max_price=2500000), with GPUMARKET_WALLET_PASSWORD and "
            "GPUMARKET_BUDGET. For a dev provider: set GPUMARKET_PROVIDER_URL, "
            "GPUMARKET_DEV_TOKEN and GPUMARKET_TLS_FINGERPRINT (printed by "
            "`gpumarket provider serve --dev`). Both are also GpuMarketProvisioner traits "
            "in the Jupyter config"
        )
    if urlparse(url).scheme != "wss":
        raise ConfigError(f"provider URL {url!r} must start with wss:// (the tunnel is TLS)")
    pin = setting("GPUMARKET_TLS_FINGERPRINT", tls_fingerprint)
    if not pin:
        raise ConfigError(
            f"no TLS fingerprint for {url}: set GPUMARKET_TLS_FINGERPRINT to the "
            "'fingerprint sha256:…' the provider printed (also in its --ready-file)"
        )
    token = setting("GPUMARKET_DEV_TOKEN", dev_token)
    return ProviderTarget(url, normalize_fingerprint(pin), token)


def paid_selected(setting: Setting, provider_url: str, offer: str) -> bool:
    """A market offer is selected (and no direct provider URL overrides it)."""
    if setting("GPUMARKET_PROVIDER_URL", provider_url):
        return False
    return bool(setting("GPUMARKET_OFFER", offer)) or bool(setting("GPUMARKET_GRANT", ""))


def paid_settings(setting: Setting, budget: int, initial_hours: float) -> tuple[str, str, float]:
    """(wallet password, budget, initial hours), checked before any chain call."""
    password = setting("GPUMARKET_WALLET_PASSWORD", "")
    # a course grant with no budget set: its remaining cap is the budget (0 = read at open)
    grant = bool(setting("GPUMARKET_GRANT", ""))
    budget_text = setting("GPUMARKET_BUDGET", "" if grant else str(budget)) or "0"
    browser = setting("GPUMARKET_WALLET_MODE", "") == "browser"  # the browser wallet signs
    if not password and not browser:
        raise ConfigError("set GPUMARKET_WALLET_PASSWORD to unlock your wallet for this lease")
    if not budget_text.isdigit() or (int(budget_text) <= 0 and not grant):
        raise ConfigError(f"budget {budget_text!r} must be a positive number of token base units")
    hours_text = setting("GPUMARKET_INITIAL_HOURS", str(initial_hours))
    try:
        hours = float(hours_text)
    except ValueError:
        hours = -1.0
    if not 0 < hours < 10_000:
        raise ConfigError(
            f"initial hours {hours_text!r} must be a positive number of hours of deposit"
        )
    return password, budget_text, hours
