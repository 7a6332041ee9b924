"""The official kernel conformance suite against the `gpumarket` kernel behind a real agent."""

from __future__ import annotations

from collections.abc import Iterator

import jupyter_kernel_test as jkt
import pytest
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ


@pytest.fixture(scope="class")
def _remote_kernel(request: pytest.FixtureRequest, agent: AgentProcess) -> Iterator[None]:
    """Start the class's kernel with the GPUMARKET_* env set (setUpClass runs too early)."""
    with environ(agent.env()):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    request.cls.km, request.cls.kc = km, kc
    yield
    kc.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()


@pytest.mark.slow
@pytest.mark.usefixtures("_remote_kernel")
class TestGpuMarketKernel(jkt.KernelTests):
    @classmethod
    def setUpClass(cls) -> None:
        pass  # the _remote_kernel fixture starts it

    @classmethod
    def tearDownClass(cls) -> None:
        pass

    kernel_name = "gpumarket"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('remote error')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"
