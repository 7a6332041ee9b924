"""The server's spare tunnel process (provisioning.tunnel_spare): real tunnel processes.

A kernel's start takes the ready spare and a new one starts behind it; a spare started under
other GPUMARKET_* variables is not used; a spare whose controller leaves exits at once; the
spare can be turned off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from jupyter_gpumarket.provisioning import tunnel_spare
from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

from agentproc import environ


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def no_spare() -> Iterator[None]:
    _wait(lambda: not tunnel_spare._filling)
    client = tunnel_spare.take()
    if client is not None:
        client.discard()
    yield
    _wait(lambda: not tunnel_spare._filling)
    client = tunnel_spare.take()
    if client is not None:
        client.discard()


def test_a_start_takes_the_ready_spare_and_another_follows() -> None:
    tunnel_spare.refill(TunnelClient.start)
    assert _wait(lambda: tunnel_spare._spare is not None), "no spare started"
    first = tunnel_spare.take()
    assert first is not None
    assert first.usable()
    assert _alive(first.pid)
    assert tunnel_spare.take() is None  # one spare, taken
    tunnel_spare.refill(TunnelClient.start)
    assert _wait(lambda: tunnel_spare._spare is not None)
    second = tunnel_spare.take()
    assert second is not None
    assert second.pid != first.pid
    for client in (first, second):
        client.discard()
        assert _wait(lambda c=client: not _alive(c.pid), 10), "an unused spare must exit"


def test_a_spare_started_under_another_environment_is_not_used() -> None:
    tunnel_spare.refill(TunnelClient.start)
    assert _wait(lambda: tunnel_spare._spare is not None)
    assert tunnel_spare._spare is not None
    pid = tunnel_spare._spare[1].pid
    with environ({"GPUMARKET_PROVIDER_URL": "wss://elsewhere:1"}):  # sent with `open`
        client = tunnel_spare.take()
        assert client is not None, "a variable the process never reads must not waste it"
    tunnel_spare._spare = (tunnel_spare._env_key(), client)  # put it back
    other = "websockets" if os.environ.get("GPUMARKET_TUNNEL_WS") == "picows" else "picows"
    with environ({"GPUMARKET_TUNNEL_WS": other}):  # read by the process when it started
        assert tunnel_spare.take() is None
    assert _wait(lambda: not _alive(pid), 10), "the stale spare is let go"


def test_a_dead_spare_is_not_used() -> None:
    tunnel_spare.refill(TunnelClient.start)
    assert _wait(lambda: tunnel_spare._spare is not None)
    assert tunnel_spare._spare is not None
    client = tunnel_spare._spare[1]
    os.kill(client.pid, 9)
    assert _wait(lambda: not client.usable(), 10)
    assert tunnel_spare.take() is None


def test_the_spare_can_be_turned_off() -> None:
    with environ({"GPUMARKET_TUNNEL_SPARE": "0"}):
        tunnel_spare.refill(TunnelClient.start)
        assert not tunnel_spare._filling
        assert tunnel_spare.take() is None
