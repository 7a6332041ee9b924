"""A launch that cannot succeed fails fast, says what to do, and leaves nothing running."""

from __future__ import annotations

import os
import socket

import pytest
from jupyter_client.manager import KernelManager

from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    ConfigError,
    NoProviderSelected,
    ProviderUnreachable,
    TlsFingerprintMismatch,
)

from agentproc import AgentProcess, environ

pytestmark = pytest.mark.slow


def _leases(agent: AgentProcess) -> list[str]:
    return sorted(os.listdir(agent.state_dir / "leases"))


def _start(env: dict[str, str]) -> KernelManager:
    km = KernelManager(kernel_name="gpumarket")
    with environ(env):
        km.start_kernel()
    return km


def test_wrong_fingerprint_is_refused_before_the_token_is_sent(agent: AgentProcess) -> None:
    before = _leases(agent)
    env = {**agent.env(), "GPUMARKET_TLS_FINGERPRINT": "sha256:" + "ab" * 32}
    km = KernelManager(kernel_name="gpumarket")
    with (
        pytest.raises(TlsFingerprintMismatch, match="not the pinned sha256:abab") as info,
        environ(env),
    ):
        km.start_kernel()
    assert "GPUMARKET_TLS_FINGERPRINT" in str(info.value)
    assert not km.has_kernel
    assert _leases(agent) == before


def test_wrong_token_is_refused(agent: AgentProcess) -> None:
    before = _leases(agent)
    km = KernelManager(kernel_name="gpumarket")
    with (
        pytest.raises(AuthenticationFailed, match="GPUMARKET_DEV_TOKEN"),
        environ({**agent.env(), "GPUMARKET_DEV_TOKEN": "not-the-token"}),
    ):
        km.start_kernel()
    assert not km.has_kernel
    assert _leases(agent) == before


def test_unreachable_provider_says_so(agent: AgentProcess) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"wss://127.0.0.1:{port}"
    env = {**agent.env(), "GPUMARKET_PROVIDER_URL": url}
    km = KernelManager(kernel_name="gpumarket")
    with (
        pytest.raises(
            ProviderUnreachable, match=f"cannot reach the provider at wss://127.0.0.1:{port}"
        ),
        environ(env),
    ):
        km.start_kernel()
    assert not km.has_kernel


def test_no_provider_selected_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GPUMARKET_PROVIDER_URL",
        "GPUMARKET_TLS_FINGERPRINT",
        "GPUMARKET_DEV_TOKEN",
        "GPUMARKET_OFFER",
    ):
        monkeypatch.delenv(name, raising=False)
    km = KernelManager(kernel_name="gpumarket")
    with pytest.raises(NoProviderSelected) as err:
        km.start_kernel()
    for name in ("GPUMARKET_PROVIDER_URL", "GPUMARKET_NETWORK", "GPUMARKET_OFFER"):
        assert name in str(err.value)  # the dev path and the market path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GPUMARKET_PROVIDER_URL": "ws://127.0.0.1:1"}, "must start with wss://"),
        ({"GPUMARKET_TLS_FINGERPRINT": "deadbeef"}, "64 hex digits"),
        ({"GPUMARKET_TLS_FINGERPRINT": ""}, "no TLS fingerprint"),
    ],
)
def test_bad_settings_are_config_errors(
    agent: AgentProcess, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for k, v in {**agent.env(), **env}.items():
        monkeypatch.setenv(k, v)
    km = KernelManager(kernel_name="gpumarket")
    with pytest.raises(ConfigError, match=message):
        km.start_kernel()
