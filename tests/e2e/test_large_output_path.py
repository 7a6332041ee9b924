"""Large kernel output through the agent's scatter writes (frames held as buffers, written
without joining): byte-identical and in order, also when a cut forces a replay of them."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow

MB = 1024 * 1024


@pytest.fixture
def proxied(agent: AgentProcess) -> Iterator[tuple[ThreadedProxy, dict[str, str]]]:
    proxy = ThreadedProxy("127.0.0.1", int(agent.url.rsplit(":", 1)[1]))
    port = proxy.start()
    yield proxy, {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}
    proxy.stop()


def _chunk(i: int) -> str:
    return f"<{i:04d}>" + random.Random(i).randbytes(MB // 2).hex() + "\n"


def _expected(n: int) -> str:
    return "".join(f"small {i}\n" + _chunk(i) + f"after {i}\n" for i in range(n))


def _code(n: int, pause: float) -> str:
    """Prints, per i: a small line, 1 MB of hex (as _chunk), another small line."""
    return (
        "import random, sys, time\n"
        f"for i in range({n}):\n"
        "    print(f'small {i}', flush=True)\n"
        f"    sys.stdout.write(f'<{{i:04d}}>' + random.Random(i).randbytes({MB // 2}).hex()"
        " + '\\n')\n"
        "    sys.stdout.flush()\n"
        "    print(f'after {i}', flush=True)\n"
        f"    time.sleep({pause})\n"
    )


def _collect(kc: BlockingKernelClient, msg_id: str, timeout: float) -> str:
    """stdout of ``msg_id`` until its idle status (``timeout``: hang detection only)."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Exception:  # queue.Empty
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            assert msg["content"]["name"] == "stdout"
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
    raise AssertionError(f"no idle for {msg_id} within {timeout} s")


def _check(text: str, n: int) -> None:
    expected = _expected(n)
    if text != expected:  # say where, not 8 MB of diff
        at = next((k for k, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), None)
        raise AssertionError(
            f"{len(text)} chars arrived, {len(expected)} expected; first difference at {at}"
        )


def test_megabyte_outputs_arrive_byte_identical_and_in_order(remote_env: AgentProcess) -> None:
    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        _check(_collect(kc, kc.execute(_code(8, 0)), timeout=120), 8)
        kc.execute("print('still here')")  # small traffic after the large frames
        assert kc.get_shell_msg(timeout=30)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_megabyte_outputs_replayed_after_a_cut_arrive_whole(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=60)
    try:
        n = 12
        msg_id = kc.execute(_code(n, 0.25))
        time.sleep(1.5)  # some megabytes out, some in flight, more to come
        proxy.refuse()
        proxy.reset()
        time.sleep(2.0)  # the kernel keeps printing into the agent's replay buffer
        proxy.restore()
        _check(_collect(kc, msg_id, timeout=120), n)
        assert km.provisioner._link.reconnects >= 1  # type: ignore[union-attr]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
