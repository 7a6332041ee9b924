"""The tunnel survives the network: cuts, black holes, and honest liveness.

A TCP fault proxy (tests/netfault.py) sits between the provisioner and the agent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from agentproc import AgentProcess, environ, running_agent, start_remote_kernel, wait_dead
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow

CUT = 10.0


@pytest.fixture
def proxied(agent: AgentProcess) -> Iterator[tuple[ThreadedProxy, dict[str, str]]]:
    proxy = ThreadedProxy("127.0.0.1", int(agent.url.rsplit(":", 1)[1]))
    port = proxy.start()
    env = {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}
    yield proxy, env
    proxy.stop()


class IopubRecorder(threading.Thread):
    """Collects (arrival time, msg) for every IOPub message of a client, in a thread."""

    def __init__(self, kc: BlockingKernelClient) -> None:
        super().__init__(daemon=True)
        self.kc, self.stop = kc, threading.Event()
        self.msgs: list[tuple[float, dict[str, Any]]] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    msg = self.kc.get_iopub_msg(timeout=0.2)
                except Exception:  # queue.Empty
                    continue
                self.msgs.append((time.monotonic(), msg))
        finally:
            # jupyter_client's blocking calls made an event loop for this thread; close it
            asyncio.get_event_loop_policy().get_event_loop().close()

    def wait_idle(self, msg_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                m["parent_header"].get("msg_id") == msg_id
                and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"
                for _, m in list(self.msgs)
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"no idle for {msg_id} within {timeout} s")

    def stream(self, msg_id: str) -> list[tuple[float, str]]:
        return [
            (t, m["content"]["text"])
            for t, m in self.msgs
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream"
        ]


def _cut(proxy: ThreadedProxy, fault: str) -> None:
    if fault == "reset":
        proxy.refuse()
        proxy.reset()
    else:
        proxy.blackhole()


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_output_survives_a_10s_cut_exactly_once_in_order(
    proxied: tuple[ThreadedProxy, dict[str, str]], fault: str
) -> None:
    proxy, env = proxied
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    recorder = IopubRecorder(kc)
    recorder.start()
    n = int((CUT + 5) / 0.1)
    try:
        msg_id = kc.execute(
            f"import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.1)"
        )
        time.sleep(2)
        _cut(proxy, fault)
        time.sleep(1)
        queued = kc.execute("x = 6 * 7")  # sent while the link is down
        time.sleep(CUT - 1)
        restored = time.monotonic()
        proxy.restore()
        recorder.wait_idle(msg_id, timeout=60)
        recorder.wait_idle(queued, timeout=30)
        chunks = recorder.stream(msg_id)
        lines = [int(x) for _, text in chunks for x in text.split()]
        assert lines == list(range(n))  # nothing lost, duplicated or reordered
        after = [t for t, _ in chunks if t > restored]
        assert after, "no output after the link came back"
        assert after[0] - restored < 1.0  # resumed within 1 s
        # the request sent during the cut ran exactly once
        replies = []
        while True:
            try:
                replies.append(kc.get_shell_msg(timeout=1))
            except Exception:  # queue.Empty
                break
        assert [r["parent_header"]["msg_id"] for r in replies].count(queued) == 1
        kc.execute("print(x)")
        reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        recorder.stop.set()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_idle_kernel_keeps_its_state_through_a_cut(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    try:
        kc.execute_interactive("before = 'still here'", timeout=30)
        _cut(proxy, "reset")
        deadline = time.monotonic() + CUT
        while time.monotonic() < deadline:
            assert km.is_alive()  # poll() says None: no restart, no re-bill
            time.sleep(0.5)
        proxy.restore()
        out: list[str] = []
        reply = kc.execute_interactive(
            "print(before)",
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok"
        assert "".join(out).strip() == "still here"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_after_the_grace_the_kernel_is_reported_dead_and_the_client_is_told(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    km, kc = start_remote_kernel(env, grace=2.0, timeout=30)
    try:
        _cut(proxy, "reset")
        assert wait_dead(km, 15)
        texts = []
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except Exception:  # queue.Empty
                break
            if msg["msg_type"] == "stream":
                texts.append(msg["content"]["text"])
        assert any("remote kernel is lost" in t and "unreachable" in t for t in texts)
    finally:
        proxy.restore()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_shutdown_while_the_link_is_down_is_bounded(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    kc.stop_channels()
    proxy.blackhole()
    t0 = time.monotonic()
    km.shutdown_kernel()
    assert time.monotonic() - t0 < 20
    proxy.restore()


def test_output_lost_to_an_overflowing_buffer_is_reported(tmp_path: Path) -> None:
    with running_agent(tmp_path, "--replay-buffer-mb", "1") as small:
        proxy = ThreadedProxy("127.0.0.1", int(small.url.rsplit(":", 1)[1]))
        port = proxy.start()
        try:
            with environ({**small.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}):
                km, kc = start_new_kernel(kernel_name="gpumarket")
            recorder = IopubRecorder(kc)
            recorder.start()
            try:
                msg_id = kc.execute(
                    "import time\ntime.sleep(2)\n"
                    "for i in range(30):\n    print(i, 'x' * 100_000, flush=True)"
                )
                time.sleep(1.5)  # the cell sleeps; cut now, it prints 3 MB into a 1 MB buffer
                _cut(proxy, "reset")
                time.sleep(4)
                proxy.restore()
                recorder.wait_idle(msg_id, timeout=60)
                texts = [m["content"].get("text", "") for _, m in list(recorder.msgs)]
                notices = [t for t in texts if "were lost while the link" in t]
                assert notices, "the loss was silent"
                assert "--replay-buffer-mb" in notices[0]
                got = [int(t.split()[0]) for _, t in recorder.stream(msg_id)]
                assert len(got) < 30  # some output really was dropped …
                assert got == sorted(set(got))  # … and what came is in order, once
            finally:
                recorder.stop.set()
                kc.stop_channels()
                km.shutdown_kernel(now=True)
        finally:
            proxy.stop()


def test_restart_during_a_black_hole_finishes_once_the_link_returns(
    proxied: tuple[ThreadedProxy, dict[str, str]],
) -> None:
    proxy, env = proxied
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    try:
        kc.execute_interactive("gone_after_restart = 1", timeout=30)
        proxy.blackhole()
        done = threading.Event()
        errors: list[BaseException] = []

        def restart() -> None:
            try:
                km.restart_kernel()
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                asyncio.get_event_loop_policy().get_event_loop().close()
                done.set()

        t0 = time.monotonic()
        threading.Thread(target=restart, daemon=True).start()
        time.sleep(3)
        proxy.restore()
        assert done.wait(60), "restart hung"
        assert not errors, errors
        assert time.monotonic() - t0 < 30
        kc.wait_for_ready(timeout=30)
        out: list[str] = []
        kc.execute_interactive(
            "print('gone_after_restart' in dir())",
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        assert "".join(out).strip() == "False"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
