"""Kernel options (``extra_arguments``) reach the remote kernel as they reach a local one.

nbclient passes its ``extra_arguments`` (and, for kernels named python/python3 only, its
``--HistoryManager.hist_file=:memory:``) to ``KernelManager.start_kernel``; a notebook that checks
it (nbclient's own "Check History in Memory") runs through a real dev agent; options given to
``KernelManager.start_kernel`` take effect in the remote kernel, also after a restart and
inside the sandbox (root agent with slot users); options the provider refuses fail on the
renter's side before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from jupyter_gpumarket.exceptions import ConfigError

from agentproc import AgentProcess, environ, start_agent
from sandboxkit import ensure_sandbox, run_code

pytestmark = pytest.mark.slow

HIST_CHECK = """\
ip = get_ipython()
assert ip.history_manager.hist_file == ":memory:", ip.history_manager.hist_file
print("history in memory")
"""
OPTIONS = ["--IPKernelApp.exec_lines=x=41", "--HistoryManager.hist_file=:memory:"]
REPORT = "import json; print(json.dumps([x + 1, str(get_ipython().history_manager.hist_file)]))"


def test_nbclient_keeps_history_in_memory_on_the_remote_kernel(remote_env: AgentProcess) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(HIST_CHECK)])
    # nbclient adds this option itself only where km.ipykernel (the kernel's name is python*)
    hist = ["--HistoryManager.hist_file=:memory:"]
    NotebookClient(nb, kernel_name="gpumarket", timeout=120, extra_arguments=hist).execute()
    assert nb.cells[0].outputs[0]["text"] == "history in memory\n"


def _options_reach_the_kernel(km: KernelManager) -> None:
    km.start_kernel(extra_arguments=OPTIONS)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        assert run_code(kc, REPORT) == [42, ":memory:"]
        km.restart_kernel(now=True)  # a restart starts the kernel with the same options
        kc.wait_for_ready(timeout=60)
        assert run_code(kc, REPORT) == [42, ":memory:"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_start_kernel_extra_arguments_reach_the_remote_kernel(remote_env: AgentProcess) -> None:
    _options_reach_the_kernel(KernelManager(kernel_name="gpumarket"))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("-f", "not a kernel option"),
        ("--ConnectionFileMixin.connection_file=/tmp/k.json", "connection_file"),
        ("--HistoryManager.hist_file=/etc/passwd", "outside the kernel's working dir"),
    ],
)
def test_refused_options_fail_on_the_renters_side(
    remote_env: AgentProcess, option: str, message: str
) -> None:
    km = KernelManager(kernel_name="gpumarket")
    with pytest.raises(ConfigError, match=message):
        km.start_kernel(extra_arguments=["--debug", option])
    assert not km.has_kernel


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    ensure_sandbox()
    agent = start_agent(tmp_path_factory.mktemp("kopts"), "--sandbox", "on", "--max-kernels", "1")
    try:
        with environ(agent.env()):
            yield agent
    finally:
        agent.stop()


def test_sandboxed_kernel_gets_the_options(sandboxed: AgentProcess) -> None:
    _options_reach_the_kernel(KernelManager(kernel_name="gpumarket"))
