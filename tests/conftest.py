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
