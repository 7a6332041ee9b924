"""Shared fixtures: a real provider agent on loopback, and the env that points kernels at it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

# hypothesis is imported at collection on purpose: its pytest plugin would otherwise import it
# lazily at terminal-summary time, and that AST rewrite hit CPython 3.11.7's "AST constructor
# recursion depth mismatch" SystemError after the threaded tunnel tests.
import hypothesis  # noqa: F401
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agentproc import AgentProcess, environ, running_agent


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One dev agent for the whole session (kernels get separate leases)."""
    with running_agent(tmp_path_factory.mktemp("agent"), "--max-kernels", "8") as proc:
        yield proc


@pytest.fixture
def remote_env(agent: AgentProcess) -> Iterator[AgentProcess]:
    """GPUMARKET_* variables pointing the `gpumarket` kernelspec at the session agent."""
    with environ(agent.env()):
        yield agent


def pytest_configure(config: pytest.Config) -> None:
    """Tests install nothing (scripts/setup.sh does): anvil from the user's tools dir is found
    through GPUMARKET_ANVIL also where a test moves GPUMARKET_HOME (its subprocesses inherit
    it), and an in-process attempt to install it fails, so a devnet falls back to the embedded
    chain instead of running npm."""
    import os

    from jupyter_gpumarket.chain import anvil
    from jupyter_gpumarket.exceptions import ChainError

    found = anvil.find_anvil()
    if found is not None:
        os.environ.setdefault("GPUMARKET_ANVIL", str(found))

    def no_install(timeout: float = 300.0) -> Path:
        raise ChainError("anvil is not installed, and tests install nothing: run scripts/setup.sh")

    anvil.install_anvil = no_install  # type: ignore[assignment]
    devnet = sys.modules.get("jupyter_gpumarket.chain.devnet")
    if devnet is not None:  # imported before this hook: it holds its own reference
        devnet.install_anvil = no_install  # type: ignore[attr-defined]


def _no_ratings_unless_asked() -> None:
    """Renters rate finished paid leases on chain (market/attest.py), which moves a settled
    channel from closed-paid to attested: tests that wait for a settle see it closed unless
    they ask for ratings (tests/e2e/test_market_attest.py sets GPUMARKET_ATTEST=1)."""
    import os

    os.environ.setdefault("GPUMARKET_ATTEST", "0")


_no_ratings_unless_asked()
