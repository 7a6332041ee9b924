"""A `gpumarket` kernel behind a real agent behaves like a local one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from agentproc import AgentProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel(remote_env: AgentProcess) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name="gpumarket")
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc: BlockingKernelClient, code: str, **kw: Any) -> tuple[dict[str, Any], str]:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=hook, timeout=60, **kw)
    return reply, "".join(out)


def test_runs_on_the_provider_in_its_own_working_dir(
    kernel: tuple[KernelManager, BlockingKernelClient], agent: AgentProcess
) -> None:
    _, kc = kernel
    reply, out = run(kc, "import os; print(os.getcwd())")
    assert reply["content"]["status"] == "ok"
    cwd = out.strip()
    assert cwd.startswith(str(agent.state_dir / "leases"))
    assert cwd.endswith("/work")


def test_server_environment_does_not_reach_the_kernel(
    remote_env: AgentProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUMARKET_TEST_SECRET", "server-side-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    km, kc = start_new_kernel(kernel_name="gpumarket")
    try:
        _, out = run(
            kc,
            "import os; print(sorted(k for k in os.environ if 'SECRET' in k or "
            "k.startswith('GPUMARKET') and k != 'GPUMARKET_TELEMETRY_FILE')); "
            "print(os.environ.get('LANG')); "
            "print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))",
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    secrets_seen, lang, cuda = out.strip().splitlines()
    assert secrets_seen == "[]"  # neither the server's nor the agent's GPUMARKET_AGENT_SECRET
    assert lang == "C.UTF-8"  # allow-listed locale is forwarded
    assert cuda == "''"  # CPU-only provider: no GPU visible, honestly


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_stops_a_long_sleep_quickly(remote_env: AgentProcess, mode: str) -> None:
    km = KernelManager(kernel_name="gpumarket")
    km.kernel_spec.interrupt_mode = mode
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        msg_id = kc.execute("import time; time.sleep(60)")
        _wait_busy(kc, msg_id)
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=10)
        elapsed = time.monotonic() - t0
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert elapsed < 2.0
        # the kernel is still usable afterwards
        assert run(kc, "print(6*7)")[1].strip() == "42"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _wait_busy(kc: BlockingKernelClient, msg_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            time.sleep(0.3)  # let the cell enter time.sleep
            return
    raise AssertionError("cell never started")


def test_input_round_trip(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    _, kc = kernel
    prompts: list[str] = []

    def answer(msg: dict[str, Any]) -> None:
        prompts.append(msg["content"]["prompt"])
        kc.input("Ada Lovelace")

    reply, out = run(
        kc, "name = input('your name? '); print('hello', name)", allow_stdin=True, stdin_hook=answer
    )
    assert reply["content"]["status"] == "ok"
    assert prompts == ["your name? "]
    assert out.strip() == "hello Ada Lovelace"


def test_widget_comm_round_trip(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    _, kc = kernel
    msg_id = kc.execute("import ipywidgets as w; s = w.IntSlider(value=1); s")
    model_id = None
    deadline = time.monotonic() + 30
    while model_id is None and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and content["data"]["state"].get("_model_name") == (
            "IntSliderModel"
        ):
            model_id = content["comm_id"]
    assert model_id is not None
    kc.get_shell_msg(timeout=30)  # execute_reply
    assert msg_id
    # browser -> kernel: the user drags the slider to 7
    update = kc.session.msg(
        "comm_msg",
        {
            "comm_id": model_id,
            "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []},
        },
    )
    kc.shell_channel.send(update)
    time.sleep(0.5)
    assert run(kc, "print(s.value)")[1].strip() == "7"
    # kernel -> browser: the kernel sets the value, the front end gets a comm update
    kc.execute("s.value = 3")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == model_id:
            assert msg["content"]["data"]["state"]["value"] == 3
            break
    else:
        raise AssertionError("no comm update from the kernel")


def test_restart_keeps_provider_and_working_dir_but_not_state(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    _, before = run(kc, "import os; x = 41; open('kept.txt', 'w').write('hi'); print(os.getcwd())")
    km.restart_kernel()
    kc.wait_for_ready(timeout=60)
    _, after = run(
        kc, "import os; print(os.getcwd()); print('x' in dir()); print(open('kept.txt').read())"
    )
    cwd, has_x, content = after.strip().splitlines()
    assert cwd == before.strip()
    assert has_x == "False"
    assert content == "hi"


def test_two_clients_both_see_iopub(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    km, kc = kernel
    # a second front end (another tab, `jupyter console --existing`): its own session id
    other = BlockingKernelClient()
    other.load_connection_info(km.get_connection_info())
    other.start_channels()
    try:
        other.wait_for_ready(timeout=30)
        msg_id = kc.execute("print('to everyone')")
        for client in (kc, other):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = client.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    assert msg["content"]["text"] == "to everyone\n"
                    break
            else:
                raise AssertionError("a client did not see the output")
        # and the second client can execute too
        assert run(other, "print(1+1)")[1].strip() == "2"
    finally:
        other.stop_channels()


def test_heartbeat_goes_through(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    _, kc = kernel
    time.sleep(1.5)  # the HB channel pings once per second
    assert kc.hb_channel.is_beating()


def test_shutdown_leaves_no_process_and_no_lease(remote_env: AgentProcess) -> None:
    km, kc = start_new_kernel(kernel_name="gpumarket")
    _, out = run(kc, "import os; print(os.getpid()); print(os.getcwd())")
    pid_s, cwd = out.strip().splitlines()
    kc.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_exists(int(pid_s)) or os.path.exists(cwd)):
        time.sleep(0.05)
    assert not _exists(int(pid_s))
    assert not os.path.exists(cwd)  # the lease's working dir was wiped


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
